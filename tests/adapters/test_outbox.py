"""The outbox and its worker on SQLite and PostgreSQL, delivering to the simulated OMS and
loyalty platform over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import RowMapping, delete, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.loyalty_rest import RestLoyalty
from adapters.oms_rest import RestOmsOrderIntake
from gateway.db import create_engine, upgrade
from gateway.orders.delivery import handlers
from gateway.orders.outbox import (
    Backoff,
    Delivered,
    MessageKind,
    NewMessage,
    OutboxMessage,
    OutboxWorker,
    PointsMovement,
    enqueue,
    enqueue_many,
    purge_delivered,
)
from gateway.orders.tables import (
    order_allocations,
    order_lines,
    order_returns,
    orders,
    outbox,
)
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.support import start_systems, write_systems

NOW = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
STEADY = Backoff(first=timedelta(seconds=0.5), factor=2, most=timedelta(seconds=60), jitter=0)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --------------------------------------------------------------------------- systems


@pytest.fixture(scope="module")
def systems(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    data_dir = tmp_path_factory.mktemp("outbox")
    write_systems(truth, data_dir, ["loyalty"])
    running = start_systems(data_dir, ("oms", "loyalty"))
    yield running
    running.stop()


def reset(url: str) -> str:
    """Counters and knobs back to their start (the OMS keeps the orders it received)."""
    httpx.post(f"{url}/_sim/reset", timeout=5).raise_for_status()
    return url


@pytest.fixture
def oms_url(systems: RunningEstate) -> str:
    return reset(systems.urls["oms"])


@pytest.fixture
def loyalty_url(systems: RunningEstate) -> str:
    return reset(systems.urls["loyalty"])


@pytest.fixture
async def intake(oms_url: str) -> AsyncIterator[RestOmsOrderIntake]:
    adapter = RestOmsOrderIntake(oms_url)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def loyalty(loyalty_url: str, systems: RunningEstate) -> AsyncIterator[RestLoyalty]:
    adapter = RestLoyalty(loyalty_url, systems.api_key)
    yield adapter
    await adapter.aclose()


async def knobs(url: str, **values: object) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        (await client.post(f"{url}/_sim/knobs", json=values)).raise_for_status()


async def oms_get(url: str, path: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{url}{path}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def balance(loyalty: RestLoyalty, customer_id: str) -> int:
    return (await loyalty.accounts([customer_id]))[customer_id].points


# --------------------------------------------------------------------------- database


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated database with no orders and no messages (PostgreSQL's is shared)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        for table in (outbox, order_returns, order_allocations, order_lines, orders):
            await connection.execute(delete(table))
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def worker(
    engine: AsyncEngine, intake: RestOmsOrderIntake, loyalty: RestLoyalty, clock: Clock
) -> OutboxWorker:
    return OutboxWorker(engine, handlers(intake, loyalty, clock), clock=clock, backoff=STEADY)


def two_stores(truth: DemoEstate) -> tuple[str, str]:
    first, second = sorted(location.code for location in truth.locations)[:2]
    return first, second


def two_skus(truth: DemoEstate) -> tuple[str, str]:
    return truth.products[0].variants[0].sku, truth.products[1].variants[0].sku


async def write_order(
    connection: AsyncConnection,
    truth: DemoEstate,
    order_id: str,
    now: datetime,
    **changes: object,
) -> None:
    """A pickup order of two lines: 3 of the first SKU for 10.00 after discounts, allocated 2 at
    one store and 1 at another, and 1 of the second SKU for 4.99 at the first store."""
    (store_a, store_b), (sku_a, sku_b) = two_stores(truth), two_skus(truth)
    order: dict[str, object] = {
        "id": order_id,
        "channel": "WEB",
        "customer_id": truth.customers[0].id,
        "fulfillment": "PICKUP_IN_STORE",
        "store_id": store_a,
        "attributed_store_id": store_a,
        "status": "ACCEPTED",
        "currency": "EUR",
        "subtotal": Decimal("17.49"),
        "discount_total": Decimal("2.50"),
        "total": Decimal("14.99"),
        "points_redeemed": 0,
        "points_value": Decimal("0"),
        "amount_due": Decimal("14.99"),
        "points_earned": 14,
        "coupon_codes": [],
        "promotions": [],
        "placed_at": now,
        "updated_at": now,
    }
    order.update(changes)
    line = {"order_id": order_id, "points_earned": 7}
    lines = [
        {**line, "line_no": 1, "sku": sku_a, "quantity": 3, "unit_price": Decimal("4.00")}
        | {"subtotal": Decimal("12.00"), "line_total": Decimal("10.00")},
        {**line, "line_no": 2, "sku": sku_b, "quantity": 1, "unit_price": Decimal("5.49")}
        | {"subtotal": Decimal("5.49"), "line_total": Decimal("4.99")},
    ]
    allocations = [
        {"order_id": order_id, "location_id": store_a, "sku": sku_a, "quantity": 2},
        {"order_id": order_id, "location_id": store_b, "sku": sku_a, "quantity": 1},
        {"order_id": order_id, "location_id": store_a, "sku": sku_b, "quantity": 1},
    ]
    await connection.execute(insert(orders).values(**order))
    await connection.execute(insert(order_lines), lines)
    await connection.execute(insert(order_allocations), allocations)


async def place_order(engine: AsyncEngine, truth: DemoEstate, **changes: object) -> str:
    """Write an order and its OMS_SUBMIT message in one transaction; returns its id."""
    order_id = f"O-{uuid.uuid4().hex[:12]}"
    async with engine.begin() as connection:
        await write_order(connection, truth, order_id, NOW, **changes)
        await enqueue(connection, MessageKind.OMS_SUBMIT, order_id, {}, NOW)
    return order_id


async def queue_points(engine: AsyncEngine, *moves: tuple[MessageKind, str, int]) -> None:
    """Enqueue one loyalty message per (kind, customer, points), each with its own request."""
    messages = [
        NewMessage(
            kind, "O-points", PointsMovement(customer, points, uuid.uuid4().hex, "test").payload()
        )
        for kind, customer, points in moves
    ]
    async with engine.begin() as connection:
        await enqueue_many(connection, messages, NOW)


async def outbox_rows(engine: AsyncEngine) -> list[RowMapping]:
    async with engine.connect() as connection:
        result = await connection.execute(select(outbox).order_by(outbox.c.id))
        return list(result.mappings())


async def order_row(engine: AsyncEngine, order_id: str) -> RowMapping:
    async with engine.connect() as connection:
        result = await connection.execute(select(orders).where(orders.c.id == order_id))
        return result.mappings().one()


# --------------------------------------------------------------------------- the OMS


async def test_an_accepted_order_reaches_the_oms_once_and_becomes_submitted(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate
) -> None:
    # given an accepted order with its OMS message
    order_id = await place_order(engine, truth)

    # when the worker runs twice
    first_round = await worker.run_once()
    second_round = await worker.run_once()

    # then the OMS holds the order once, one line per allocation, the total split exactly
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert (first_round, second_round, received["submissions"]) == (1, 0, 1)
    (store_a, store_b), (sku_a, sku_b) = two_stores(truth), two_skus(truth)
    lines = received["order"]["orderLines"]
    assert [
        (line["itemNo"], line["qty"], line["shipNode"], line["lineTotal"]) for line in lines
    ] == [
        (sku_a, 2, store_a, "6.67"),
        (sku_a, 1, store_b, "3.33"),
        (sku_b, 1, store_a, "4.99"),
    ]
    assert sum(Decimal(line["lineTotal"]) for line in lines) == Decimal(
        received["order"]["orderTotal"]
    )
    # and the order is SUBMITTED under the OMS's number, its message delivered
    order = await order_row(engine, order_id)
    assert (order["status"], order["oms_order_number"]) == ("SUBMITTED", received["omsOrderNo"])
    assert [(row["delivered_at"], row["attempts"]) for row in await outbox_rows(engine)] == [
        (NOW, 0)
    ]
    assert await worker.pending() == 0


async def test_a_hand_off_carried_in_its_message_reaches_the_oms_without_reading_the_order(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate
) -> None:
    # given an accepted order whose OMS message carries its submission (as placement writes it)
    order_id = f"O-{uuid.uuid4().hex[:12]}"
    (store_a, store_b), (sku_a, sku_b) = two_stores(truth), two_skus(truth)
    carried = {
        "channel": "WEB",
        "customer_id": truth.customers[0].id,
        "fulfillment": "PICKUP_IN_STORE",
        "currency": "EUR",
        "total": "14.99",
        "placed_at": NOW.isoformat(),
        "postal_code": None,
        "lines": [
            [sku_a, 2, store_a, "4.00", "6.67"],
            [sku_a, 1, store_b, "4.00", "3.33"],
            [sku_b, 1, store_a, "5.49", "4.99"],
        ],
    }
    async with engine.begin() as connection:
        await write_order(connection, truth, order_id, NOW)
        await enqueue(connection, MessageKind.OMS_SUBMIT, order_id, {"submission": carried}, NOW)

    # when the worker delivers it, while its statements are watched
    sent: list[str] = []

    def record(connection: object, cursor: object, statement: str, *_: object) -> None:
        sent.append(" ".join(statement.split()[:3]).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        delivered = await worker.run_once()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    # then the OMS got the carried submission, and the worker only claimed and marked
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert delivered == 1
    assert [
        (line["itemNo"], line["qty"], line["shipNode"], line["lineTotal"])
        for line in received["order"]["orderLines"]
    ] == [(sku_a, 2, store_a, "6.67"), (sku_a, 1, store_b, "3.33"), (sku_b, 1, store_a, "4.99")]
    assert not [statement for statement in sent if statement.startswith("SELECT")]
    assert (await order_row(engine, order_id))["status"] == "SUBMITTED"


async def test_an_oms_outage_reschedules_the_order_until_the_oms_is_back(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, clock: Clock, truth: DemoEstate
) -> None:
    # given an order, and the OMS down
    order_id = await place_order(engine, truth)
    await knobs(oms_url, outage=True)

    # when the worker runs
    delivered = await worker.run_once()

    # then nothing is delivered: one attempt counted, the next one after the first backoff
    [row] = await outbox_rows(engine)
    assert delivered == 0
    assert (row["attempts"], row["next_attempt_at"]) == (1, NOW + STEADY.first)
    assert row["last_error"].startswith("BackendUnavailable: oms: HTTP 503")
    assert (await order_row(engine, order_id))["status"] == "ACCEPTED"

    # when the OMS is back but the backoff has not passed, then the message waits
    await knobs(oms_url, outage=False)
    assert await worker.run_once() == 0

    # when the backoff has passed, then the order goes through
    clock.now = NOW + STEADY.first
    assert await worker.run_once() == 1
    order = await order_row(engine, order_id)
    assert order["status"] == "SUBMITTED"
    assert (await oms_get(oms_url, f"/api/orders/{order_id}")) is not None


async def test_an_order_the_oms_refuses_is_retried_at_the_longest_interval_and_logged(
    worker: OutboxWorker,
    engine: AsyncEngine,
    oms_url: str,
    clock: Clock,
    truth: DemoEstate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given an order whose fulfilment the OMS does not know
    order_id = await place_order(engine, truth, fulfillment="TELEPORT")

    # when the worker runs twice, the second time when the message is due again
    with caplog.at_level(logging.ERROR, logger="gateway.orders.outbox"):
        first_round = await worker.run_once()
        clock.now = NOW + STEADY.most
        second_round = await worker.run_once()

    # then it is never delivered and never dropped: two attempts, each waiting the longest
    [row] = await outbox_rows(engine)
    assert (first_round, second_round) == (0, 0)
    assert (row["attempts"], row["next_attempt_at"]) == (2, NOW + 2 * STEADY.most)
    assert row["delivered_at"] is None
    assert row["last_error"].startswith("BackendRejected: oms: HTTP 422")
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.ERROR]
    assert (await order_row(engine, order_id))["status"] == "ACCEPTED"
    assert await oms_get(oms_url, f"/api/orders/{order_id}") is None


async def test_a_cancelled_order_keeps_its_status_but_records_the_oms_number(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate
) -> None:
    # given an order cancelled before its OMS message went out
    order_id = await place_order(engine, truth, status="CANCELLED")

    # when the worker delivers it
    delivered = await worker.run_once()

    # then it stays cancelled, with the number the OMS gave it
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    order = await order_row(engine, order_id)
    assert delivered == 1
    assert (order["status"], order["oms_order_number"]) == ("CANCELLED", received["omsOrderNo"])


async def test_an_order_rolled_back_takes_its_message_with_it(
    worker: OutboxWorker, engine: AsyncEngine, truth: DemoEstate
) -> None:
    # given an order and its message written in a transaction that then fails
    async def place_then_fail() -> None:
        async with engine.begin() as connection:
            await write_order(connection, truth, "O-rolled-back", NOW)
            await enqueue(connection, MessageKind.OMS_SUBMIT, "O-rolled-back", {}, NOW)
            raise RuntimeError("placement failed")

    with pytest.raises(RuntimeError, match="placement failed"):
        await place_then_fail()

    # when the worker runs
    delivered = await worker.run_once()

    # then there was nothing to deliver
    assert (delivered, await worker.pending(), await outbox_rows(engine)) == (0, 0, [])


# --------------------------------------------------------------------------- loyalty


async def test_points_movements_change_the_balance_once_however_often_delivered(
    worker: OutboxWorker, engine: AsyncEngine, loyalty: RestLoyalty, truth: DemoEstate
) -> None:
    # given an earn, a refund and a reversal for one customer
    customer = next(c.id for c in truth.customers if c.points >= 100)
    before = await balance(loyalty, customer)
    await queue_points(
        engine,
        (MessageKind.LOYALTY_EARN, customer, 120),
        (MessageKind.LOYALTY_REFUND, customer, 30),
        (MessageKind.LOYALTY_REVERSE, customer, 50),
    )

    # when they are delivered, and then delivered all over again
    first_round = await worker.run_once()
    after_first = await balance(loyalty, customer)
    async with engine.begin() as connection:
        await connection.execute(update(outbox).values(delivered_at=None, next_attempt_at=NOW))
    second_round = await worker.run_once()

    # then the balance moved by earn + refund - reversal, once
    assert (first_round, second_round) == (3, 3)
    assert after_first - before == 120 + 30 - 50
    assert await balance(loyalty, customer) == after_first


async def test_a_reversal_beyond_the_balance_is_delivered_with_a_note(
    worker: OutboxWorker,
    engine: AsyncEngine,
    loyalty: RestLoyalty,
    truth: DemoEstate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a reversal of more points than the customer holds (they spent them)
    customer = truth.customers[1].id
    held = await balance(loyalty, customer)
    await queue_points(engine, (MessageKind.LOYALTY_REVERSE, customer, held + 1000))

    # when it is delivered
    with caplog.at_level(logging.WARNING, logger="gateway.orders.delivery"):
        delivered = await worker.run_once()

    # then it counts as delivered, the balance is untouched, and an operator can see why
    [row] = await outbox_rows(engine)
    assert (delivered, row["delivered_at"], row["attempts"]) == (1, NOW, 0)
    assert f"who holds {held}" in row["last_error"]
    assert await balance(loyalty, customer) == held
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


async def test_a_worker_claims_only_the_kinds_it_has_handlers_for(
    engine: AsyncEngine,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    oms_url: str,
    clock: Clock,
    truth: DemoEstate,
) -> None:
    # given an OMS message and a loyalty message, and a worker that only knows loyalty
    order_id = await place_order(engine, truth)
    await queue_points(engine, (MessageKind.LOYALTY_EARN, truth.customers[2].id, 5))
    every = handlers(intake, loyalty, clock)
    known = {MessageKind.LOYALTY_EARN: every[MessageKind.LOYALTY_EARN]}
    worker = OutboxWorker(engine, known, clock=clock)

    # when it runs
    delivered = await worker.run_once()

    # then the OMS message is left alone for another worker
    [oms_row, points_row] = await outbox_rows(engine)
    assert delivered == 1
    assert (oms_row["delivered_at"], oms_row["attempts"]) == (None, 0)
    assert points_row["delivered_at"] is not None
    assert await oms_get(oms_url, f"/api/orders/{order_id}") is None


# --------------------------------------------------------------------------- several workers


async def test_a_claim_left_by_a_dead_worker_is_delivered_by_another_after_its_lease(
    worker: OutboxWorker,
    engine: AsyncEngine,
    database_url: str,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    oms_url: str,
    truth: DemoEstate,
) -> None:
    # given a message claimed by a worker that never finished it (its process died)
    order_id = await place_order(engine, truth)
    claimed = await worker.claim()
    other_clock = Clock(NOW + timedelta(seconds=1))
    other_engine = create_engine(database_url)  # another process's
    other = OutboxWorker(other_engine, handlers(intake, loyalty, other_clock), clock=other_clock)
    try:
        # when another worker runs within the lease, then it leaves the message be
        assert await other.run_once() == 0

        # when it runs after the lease, then it delivers the message
        other_clock.now = NOW + timedelta(seconds=30)
        assert await other.run_once() == 1
    finally:
        await other_engine.dispose()

    # and when the first worker comes back to its old claim, it delivers to the OMS again
    # (which only counts the repeat) and records the same receipt again (its effect is
    # idempotent) but does not mark the message a second time
    assert await worker.deliver(claimed) == 0
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert [message.order_id for message in claimed] == [order_id]
    assert received["submissions"] == 2
    [row] = await outbox_rows(engine)
    assert row["delivered_at"] == other_clock.now
    order = await order_row(engine, order_id)
    assert (order["status"], order["oms_order_number"]) == ("SUBMITTED", received["omsOrderNo"])


@pytest.mark.postgres
async def test_two_workers_deliver_sixty_orders_each_exactly_once(
    pg_database: str,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    oms_url: str,
    clock: Clock,
    truth: DemoEstate,
) -> None:
    # given 60 due orders, a slowish OMS, and two workers on engines of their own (two processes)
    await upgrade(pg_database)
    engines = [create_engine(pg_database), create_engine(pg_database)]
    async with engines[0].begin() as connection:
        for table in (outbox, order_returns, order_allocations, order_lines, orders):
            await connection.execute(delete(table))
    order_ids = [await place_order(engines[0], truth) for _ in range(60)]
    await knobs(oms_url, latency_ms=20)
    # Small batches mean many rounds, so the two workers' claims often overlap: without row
    # locks in the claim, some orders would reach the OMS twice.
    workers = [
        OutboxWorker(engine, handlers(intake, loyalty, clock), clock=clock, batch=3)
        for engine in engines
    ]

    # when both run rounds concurrently until nothing is pending
    try:
        async with asyncio.timeout(60):
            counts = await asyncio.gather(*(drain(worker) for worker in workers))
    finally:
        for engine in engines:
            await engine.dispose()

    # then every order reached the OMS exactly once, and each message was marked once
    listed = await oms_get(oms_url, "/api/orders")
    stats = await oms_get(oms_url, "/_sim/stats")
    assert listed is not None
    assert stats is not None
    ours = [entry for entry in listed["orders"] if entry["externalOrderId"] in set(order_ids)]
    assert sum(counts) == 60
    assert sorted(entry["externalOrderId"] for entry in ours) == sorted(order_ids)
    assert {entry["submissions"] for entry in ours} == {1}
    assert stats["calls"]["SubmitOrder"] == 60


async def drain(worker: OutboxWorker) -> int:
    """Run rounds until no message is pending; returns how many this worker delivered."""
    delivered = 0
    while await worker.pending():
        this_round = await worker.run_once()
        delivered += this_round
        if this_round == 0:
            await asyncio.sleep(0.01)  # the rest is claimed by the other worker
    return delivered


# --------------------------------------------------------------------------- the loop


async def test_run_delivers_until_stopped(
    engine: AsyncEngine,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    clock: Clock,
    truth: DemoEstate,
) -> None:
    # given an order and a worker running in the background
    order_id = await place_order(engine, truth)
    worker = OutboxWorker(
        engine, handlers(intake, loyalty, clock), clock=clock, idle_interval=timedelta(0.01)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    # when the order has gone out and the worker is asked to stop
    async with asyncio.timeout(30):
        while await worker.pending():  # noqa: ASYNC110 (the database has no event to wait on)
            await asyncio.sleep(0.01)
        stop.set()
        await running

    # then the order was submitted and the loop ended of its own accord
    assert (await order_row(engine, order_id))["status"] == "SUBMITTED"
    assert running.done()
    assert not running.cancelled()


async def test_run_outlives_failing_rounds(
    tmp_path: Path,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
) -> None:
    # given a worker over a database that has no outbox at all
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.sqlite")
    worker = OutboxWorker(engine, handlers(intake, loyalty), idle_interval=timedelta(seconds=0.01))
    stop = asyncio.Event()
    errors = StopAfter(3, stop)
    outbox_log = logging.getLogger("gateway.orders.outbox")
    outbox_log.addHandler(errors)

    # when it runs until three rounds have failed
    try:
        async with asyncio.timeout(30):
            await worker.run(stop)
    finally:
        outbox_log.removeHandler(errors)
        await engine.dispose()

    # then each failed round was logged with its traceback, and the loop kept going until stopped
    assert len(errors.records) == 3
    assert all(record.exc_info is not None for record in errors.records)


class StopAfter(logging.Handler):
    """Collects error records and sets ``stop`` at the ``count``-th."""

    def __init__(self, count: int, stop: asyncio.Event) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._count = count
        self._stop = stop

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self._count:
            self.records.append(record)
        if len(self.records) == self._count:
            self._stop.set()


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_first_to_most() -> None:
    # given the default schedule without jitter
    backoff = Backoff(jitter=0)

    # when
    delays = [backoff.delay(attempts).total_seconds() for attempts in range(1, 10)]

    # then
    assert delays == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]


@given(
    first_ms=st.integers(1, 10_000),
    room_ms=st.integers(0, 600_000),
    factor=st.floats(1, 10),
    jitter=st.floats(0, 1),
    attempts=st.integers(1, 10_000),
    spread=st.floats(0, 1, exclude_max=True),
)
def test_backoff_never_shrinks_and_stays_within_its_bounds(
    first_ms: int, room_ms: int, factor: float, jitter: float, attempts: int, spread: float
) -> None:
    # given any schedule
    first = timedelta(milliseconds=first_ms)
    most = first + timedelta(milliseconds=room_ms)
    backoff = Backoff(first=first, factor=factor, most=most, jitter=jitter)

    # when
    plain = [backoff.delay(n) for n in (1, attempts, attempts + 1)]
    jittered = backoff.delay(attempts, spread)

    # then it starts at first, never shrinks, never passes most, and jitter only adds its share
    assert plain[0] == first
    assert plain[0] <= plain[1] <= plain[2] <= most
    tolerance = timedelta(microseconds=1)  # timedelta arithmetic rounds to microseconds
    assert plain[1] <= jittered <= plain[1] * (1 + jitter) + tolerance


# --------------------------------------------------------------------------- unrecorded deliveries


async def test_a_hand_off_the_oms_took_from_a_worker_that_died_unrecorded_is_not_sent_again(
    worker: OutboxWorker,
    engine: AsyncEngine,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    oms_url: str,
    truth: DemoEstate,
    clock: Clock,
) -> None:
    # given a hand-off a worker claimed and delivered, and whose process died before it could
    # record the OMS's answer
    order_id = await place_order(engine, truth)
    [claimed] = await worker.claim()
    await handlers(intake, loyalty, clock)[MessageKind.OMS_SUBMIT](claimed, engine)

    # when a worker claims it again after the lease
    clock.now = NOW + timedelta(seconds=30)
    [again] = await worker.claim()
    delivered = await worker.deliver([again])

    # then it asks the OMS, which has it, and records its number without sending it again
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert (claimed.unrecorded, again.unrecorded, delivered) == (False, True, 1)
    assert received["submissions"] == 1
    order = await order_row(engine, order_id)
    assert (order["status"], order["oms_order_number"]) == ("SUBMITTED", received["omsOrderNo"])


async def test_a_hand_off_that_never_reached_the_oms_is_sent_after_the_lease(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate, clock: Clock
) -> None:
    # given a hand-off claimed by a worker that died before sending it
    order_id = await place_order(engine, truth)
    await worker.claim()

    # when a worker runs after the lease
    clock.now = NOW + timedelta(seconds=30)
    delivered = await worker.run_once()

    # then the OMS gets it once
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert (delivered, received["submissions"]) == (1, 1)


async def test_a_failed_delivery_is_not_taken_for_an_unrecorded_one(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate, clock: Clock
) -> None:
    # given a hand-off whose delivery failed while the OMS was down (the failure recorded)
    await place_order(engine, truth)
    await knobs(oms_url, outage=True)
    try:
        assert await worker.run_once() == 0
    finally:
        await knobs(oms_url, outage=False)

    # when it is claimed again once due
    clock.now = NOW + timedelta(seconds=30)
    [again] = await worker.claim()

    # then it is an ordinary retry
    assert (again.attempts, again.unrecorded) == (1, False)


# --------------------------------------------------------------------------- purge


async def test_delivered_messages_are_purged_once_past_retention_and_pending_ones_never(
    worker: OutboxWorker, engine: AsyncEngine, oms_url: str, truth: DemoEstate, clock: Clock
) -> None:
    # given two messages delivered at NOW and one the OMS has not taken yet
    for _ in range(2):
        await place_order(engine, truth)
    assert await worker.run_once() == 2
    await knobs(oms_url, outage=True)
    try:
        pending = await place_order(engine, truth)
        assert await worker.run_once() == 0
    finally:
        await knobs(oms_url, outage=False)

    # when delivered messages older than NOW are purged, and then those older than a second on
    # (one row per statement)
    none = await purge_delivered(engine, NOW)
    both = await purge_delivered(engine, NOW + timedelta(seconds=1), batch=1)

    # then only the delivered ones went, and only once past the limit
    assert (none, both) == (0, 2)
    assert [(row["order_id"], row["delivered_at"]) for row in await outbox_rows(engine)] == [
        (pending, None)
    ]


async def test_stopping_during_a_round_finishes_and_records_its_deliveries_first(
    engine: AsyncEngine,
    intake: RestOmsOrderIntake,
    loyalty: RestLoyalty,
    oms_url: str,
    clock: Clock,
    truth: DemoEstate,
) -> None:
    # given a worker whose hand-off is on its way to the OMS
    order_id = await place_order(engine, truth)
    submit = handlers(intake, loyalty, clock)[MessageKind.OMS_SUBMIT]
    sending, go_on = asyncio.Event(), asyncio.Event()

    async def slow_submit(message: OutboxMessage, engine: AsyncEngine) -> Delivered:
        sending.set()
        await go_on.wait()
        return await submit(message, engine)

    worker = OutboxWorker(engine, {MessageKind.OMS_SUBMIT: slow_submit}, clock=clock)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    # when the process is told to stop while the delivery is under way, which then ends
    async with asyncio.timeout(30):
        await sending.wait()
        stop.set()
        go_on.set()
        await running

    # then the round ended with the delivery recorded: nothing is left to send again
    assert (await order_row(engine, order_id))["status"] == "SUBMITTED"
    assert await worker.pending() == 0
    received = await oms_get(oms_url, f"/api/orders/{order_id}")
    assert received is not None
    assert received["submissions"] == 1
