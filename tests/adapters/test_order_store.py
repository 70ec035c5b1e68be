"""Orders and idempotency keys in the gateway's database, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import autocommit, create_engine, inventory_positions, upgrade
from gateway.ledger import InventoryLedger, Reservation
from gateway.orders.delivery import carried_submission, load_submission, submission_payload
from gateway.orders.store import (
    Claim,
    ClaimState,
    Destination,
    IdempotencyKeys,
    KeyTakenOver,
    NewOrder,
    OrderReader,
    accepted,
    insert_order,
    reserve_and_insert,
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
    failing = await keys.claim("web", failed, "hash-1", "O-FAILED", NOW)
    placing = await keys.claim("web", placed, "hash-1", "O-PLACED", NOW)
    async with engine.begin() as connection:
        await IdempotencyKeys.complete(connection, "web", placed)

    # when both are forgotten and then sent again to another process
    assert failing.owner is not None
    assert placing.owner is not None
    await keys.forget("web", failed, failing.owner)
    await keys.forget("web", placed, placing.owner)
    retried = await other_keys.claim("web", failed, "hash-1", "O-RETRY", NOW)
    replayed = await other_keys.claim("web", placed, "hash-1", "O-OTHER", NOW)

    # then the failed one starts afresh, the placed one still answers with its order
    assert retried == Claim(ClaimState.NEW, "O-RETRY")
    assert replayed == Claim(ClaimState.DONE, "O-PLACED")


async def test_a_renewed_lease_is_never_taken_over_and_a_lapsed_one_is_within_a_lease(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    # given a placement that claimed its key (a 3 s lease) and renewed it after 2 s
    key, lease = uuid.uuid4().hex, timedelta(seconds=3)
    here, there = IdempotencyKeys(engine, lease), IdempotencyKeys(other_engine, lease)
    first = await here.claim("web", key, "hash-1", "O-FIRST", NOW)
    assert first.owner is not None
    renewed = await here.renew("web", key, first.owner, NOW + timedelta(seconds=2))

    # when the same request comes to another process 4 s in (the first lease is over, the
    # renewed one is not), and again once the first has stopped renewing for a whole lease
    while_renewed = await there.claim("web", key, "hash-1", "O-SECOND", NOW + timedelta(seconds=4))
    after_lapse = await there.claim("web", key, "hash-1", "O-THIRD", NOW + timedelta(seconds=6))

    # then the live placement kept its key; the dead one's is taken over under its order id,
    # and the first, should it come back, can neither renew, complete nor forget it
    assert renewed
    assert while_renewed == Claim(ClaimState.IN_PROGRESS, "O-FIRST")
    assert after_lapse == Claim(ClaimState.NEW, "O-FIRST")
    assert after_lapse.owner not in (None, first.owner)
    assert not await here.renew("web", key, first.owner, NOW + timedelta(seconds=7))
    with pytest.raises(KeyTakenOver):
        async with engine.begin() as connection:
            await IdempotencyKeys.complete(connection, "web", key, first.owner)
    await here.forget("web", key, first.owner)
    assert await there.claim("web", key, "hash-1", "O-4", NOW + timedelta(seconds=7)) == Claim(
        ClaimState.IN_PROGRESS, "O-FIRST"
    )


async def test_an_order_written_under_a_key_taken_over_is_rolled_back_whole(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    # given a key claimed, then taken over by another process after its lease ran out
    key, order_id = uuid.uuid4().hex, _order_id()
    lease = timedelta(seconds=3)
    first = await IdempotencyKeys(engine, lease).claim("web", key, "hash-1", order_id, NOW)
    taken = await IdempotencyKeys(other_engine, lease).claim(
        "web", key, "hash-1", _order_id(), NOW + timedelta(seconds=4)
    )
    assert taken.state is ClaimState.NEW

    # when the first writes its order under the key it no longer holds
    with pytest.raises(KeyTakenOver):
        async with engine.begin() as connection:
            await insert_order(connection, _new_order(order_id), (), ("web", key), first.owner)

    # then nothing of that order was written
    assert await OrderReader(engine).by_ids([order_id]) == {}


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_one_statement_under_a_key_taken_over_holds_and_writes_nothing(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    # given the positions of an order's allocations, each with plenty to promise, and its key
    # claimed and then taken over by another process after its lease ran out
    order = _new_order(_order_id())
    holds = [Reservation(a.location_id, a.sku, a.quantity) for a in order.allocations]
    rows = [
        {"location_id": h.location_id, "sku": h.sku, "on_hand": 50, "updated_at": NOW}
        for h in holds
    ]
    async with engine.begin() as connection:
        await connection.execute(delete(inventory_positions))
        await connection.execute(insert(inventory_positions), rows)
    key, lease = uuid.uuid4().hex, timedelta(seconds=3)
    first = await IdempotencyKeys(engine, lease).claim("web", key, "hash-1", order.id, NOW)
    await IdempotencyKeys(other_engine, lease).claim(
        "web", key, "hash-1", _order_id(), NOW + timedelta(seconds=4)
    )
    assert first.owner is not None

    # when the first holds and writes its order in one statement under the key it lost
    with pytest.raises(KeyTakenOver):
        async with autocommit(engine).connect() as connection:
            await reserve_and_insert(connection, order, holds, (), ("web", key), first.owner)

    # then no unit is held and nothing of the order was written
    async with engine.connect() as connection:
        held = (await connection.execute(select(inventory_positions.c.reserved))).scalars().all()
    assert held == [0] * len(holds)
    assert await OrderReader(engine).by_ids([order.id]) == {}


async def test_a_new_claim_on_postgresql_reads_the_positions_a_ledger_read_gives(
    engine: AsyncEngine, database_url: str
) -> None:
    # given positions of two SKUs at two locations, and a third SKU nowhere
    rows = [
        {"location_id": where, "sku": sku, "on_hand": units, "updated_at": NOW}
        for where, sku, units in [("S002", "SKU-A", 4), ("S001", "SKU-A", 2), ("DC1", "SKU-B", 9)]
    ]
    async with engine.begin() as connection:
        await connection.execute(delete(inventory_positions))
        await connection.execute(insert(inventory_positions), rows)
    keys = IdempotencyKeys(engine)
    wanted = ["SKU-B", "SKU-A", "SKU-NONE", "SKU-A"]

    # when a new key is claimed for an order of them, and another key for no SKUs
    first = await keys.claim("web", uuid.uuid4().hex, "hash-1", _order_id(), NOW, wanted)
    again = await keys.claim("web", "k-" + uuid.uuid4().hex, "hash-1", _order_id(), NOW)

    # then on PostgreSQL the first claim carries what the ledger reads; nothing else does
    assert first.state is ClaimState.NEW
    if database_url.startswith("postgresql"):
        assert first.positions == await InventoryLedger(engine).positions(wanted)
    else:
        assert first.positions is None
    assert again.positions is None
