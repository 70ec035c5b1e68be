"""Orders and idempotency keys in the gateway's database, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade
from gateway.orders.delivery import carried_submission, load_submission, submission_payload
from gateway.orders.store import (
    Claim,
    ClaimState,
    Destination,
    IdempotencyKeys,
    NewOrder,
    OrderReader,
    accepted,
    insert_order,
)
from gateway.promotions import Shopper
from gateway.sourcing import Allocation
from tests.unit.test_promotions_rules import Kind, line, price, rule

NOW = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated database (PostgreSQL's is shared: every test here uses ids of its own)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def other_engine(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The same database through another pool, as another gateway process sees it."""
    other = create_engine(database_url)
    yield other
    await other.dispose()


def _order_id() -> str:
    return f"O-{uuid.uuid4().hex[:16].upper()}"


def _new_order(order_id: str) -> NewOrder:
    """Two lines, one of them discounted, sourced from two locations, placed at a Berlin time
    with a delivery address."""
    priced = price(
        [line("SKU-BOOT", 2, "79.99", ["footwear"]), line("SKU-SOCK", 3, "4.95")],
        [rule("R-BOOTS", Kind.PERCENT_OFF, "15", categories=["footwear"])],
        Shopper("C0042"),
    )
    return NewOrder(
        id=order_id,
        channel="web",
        customer_id="C0042",
        fulfillment="SHIP_TO_HOME",
        store_id=None,
        attributed_store_id="S001",
        destination=Destination(48.1374, 11.5755, "80331"),
        priced=priced,
        allocations=(
            Allocation("SKU-SOCK", 3, "DC1"),
            Allocation("SKU-BOOT", 1, "S001"),
            Allocation("SKU-BOOT", 1, "DC1"),
        ),
        coupon_codes=(),
        placed_at=datetime(2031, 3, 1, 10, 30, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin")),
    )


# --------------------------------------------------------------------------- orders


async def test_a_new_order_reads_back_exactly_as_placement_answers_without_reading_it(
    engine: AsyncEngine,
) -> None:
    # given an order with a promotion, a destination and allocations in no particular order
    new = _new_order(_order_id())
    assert new.priced.applied_promotions

    # when it is written in a transaction
    async with engine.begin() as connection:
        await insert_order(connection, new)

    # then what placement answers (built from what it wrote) is what a reader finds, down to
    # the time zone its times are shown in
    found = (await OrderReader(engine).by_ids([new.id]))[new.id]
    answered = accepted(new)
    assert answered == found
    assert answered.placed_at.isoformat() == found.placed_at.isoformat()


async def test_the_oms_hand_off_a_new_order_carries_is_what_its_tables_would_give(
    engine: AsyncEngine,
) -> None:
    # given an order with a line split over two locations, written in a transaction
    new = _new_order(_order_id())
    async with engine.begin() as connection:
        await insert_order(connection, new)

    # when its submission is carried in its outbox payload, and read from its tables
    carried = carried_submission(new.id, json.loads(json.dumps(submission_payload(new))))
    async with engine.connect() as connection:
        loaded = await load_submission(connection, new.id)

    # then both are the same, line for line and to the cent
    assert carried == loaded
    assert [line.location_id for line in carried.lines] == ["DC1", "S001", "DC1"]


def test_a_payload_without_a_submission_carries_none_and_a_broken_one_is_refused() -> None:
    assert carried_submission("O-1", {}) is None
    with pytest.raises(ValueError, match="not a submission"):
        carried_submission("O-1", {"submission": {"lines": []}})


# --------------------------------------------------------------------------- idempotency keys


async def test_a_claimed_key_is_seen_at_once_by_another_process_and_done_once_its_order_is(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    # given a request that claims its key in one process
    key, order_id = uuid.uuid4().hex, _order_id()
    here, there = IdempotencyKeys(engine), IdempotencyKeys(other_engine)
    first = await here.claim("web", key, "hash-1", order_id, NOW)

    # when the same key comes to another process, with the same request and with another one,
    # before and after the first request completes it in its order's transaction
    running = await there.claim("web", key, "hash-1", _order_id(), NOW)
    reused = await there.claim("web", key, "hash-2", _order_id(), NOW)
    async with engine.begin() as connection:
        await IdempotencyKeys.complete(connection, "web", key)
    replayed = await there.claim("web", key, "hash-1", _order_id(), NOW + timedelta(minutes=5))

    # then the first owns the key, the other process waits, then gets the first's order
    assert first == Claim(ClaimState.NEW, order_id)
    assert running == Claim(ClaimState.IN_PROGRESS, order_id)
    assert reused == Claim(ClaimState.REUSED)
    assert replayed == Claim(ClaimState.DONE, order_id)


async def test_a_forgotten_key_is_free_again_and_a_done_one_is_never_forgotten(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    # given one key whose request failed and one whose order was placed
    failed, placed = uuid.uuid4().hex, uuid.uuid4().hex
    keys, other_keys = IdempotencyKeys(engine), IdempotencyKeys(other_engine)
    await keys.claim("web", failed, "hash-1", "O-FAILED", NOW)
    await keys.claim("web", placed, "hash-1", "O-PLACED", NOW)
    async with engine.begin() as connection:
        await IdempotencyKeys.complete(connection, "web", placed)

    # when both are forgotten and then sent again to another process
    await keys.forget("web", failed)
    await keys.forget("web", placed)
    retried = await other_keys.claim("web", failed, "hash-1", "O-RETRY", NOW)
    replayed = await other_keys.claim("web", placed, "hash-1", "O-OTHER", NOW)

    # then the failed one starts afresh, the placed one still answers with its order
    assert retried == Claim(ClaimState.NEW, "O-RETRY")
    assert replayed == Claim(ClaimState.DONE, "O-PLACED")
