"""The contract of ``OrderIntakePort``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import pytest

from adapters.ports import (
    Money,
    OmsReceipt,
    OmsStatus,
    OrderIntakePort,
    OrderLineSubmission,
    OrderStatusChange,
    OrderStatusChanges,
    OrderSubmission,
)
from adapters.testing.checks import (
    MAX_FEED_BATCHES,
    assert_aware,
    assert_exact_type,
    assert_hashable,
    assert_text,
)
from adapters.testing.sample import ConformanceSample, require

UNIT_PRICE = Decimal("9.99")
FEED_PAGE = 100
FEED_WAIT = 10.0
"""Seconds a change made at the OMS may take to show in its status feed."""


class OrderEvents(Protocol):
    """What happens to an order at the OMS, done through a test instance's own controls."""

    async def ship(self, order_id: str) -> None:
        """Ship every unit of a submitted order (its goods issue booked in the ERP)."""
        ...

    async def cancel(self, order_id: str) -> None:
        """Cancel a submitted order at the OMS."""
        ...


class OrderIntakeContract:
    """What every ``OrderIntakePort`` must do. Subclass it as ``Test...`` and provide two
    fixtures: ``order_intake`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``skus``, ``location_ids`` and ``currency``; its first
    ``customer_ids`` entry, if any, places the orders). Every test submits new orders with
    fresh ids: run it against a test instance of the order system. Override ``order_events``
    (an ``OrderEvents``) to check that shipments and cancellations reach the status feed;
    without it those tests are skipped."""

    @pytest.fixture
    def order_events(self) -> OrderEvents:
        pytest.skip("override the order_events fixture to ship and cancel orders at the OMS")

    pytestmark = pytest.mark.asyncio

    async def test_is_an_order_intake_port(self, order_intake: OrderIntakePort) -> None:
        assert isinstance(order_intake, OrderIntakePort)

    async def test_submit_answers_a_receipt_for_the_order(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        order = conformance_order(sample)
        receipt = await order_intake.submit(order)
        assert_receipt(receipt, order.order_id)

    async def test_submit_is_idempotent_by_order_id(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        order = conformance_order(sample)
        first = await order_intake.submit(order)
        assert await order_intake.submit(order) == first, "a repeat gave another receipt"
        found = await order_intake.receipts([order.order_id])
        assert dict(found) == {order.order_id: first}, "the order is not held once"

    async def test_concurrent_repeats_of_a_submit_answer_one_receipt(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        order = conformance_order(sample)
        receipts = await asyncio.gather(*(order_intake.submit(order) for _ in range(4)))
        assert len(set(receipts)) == 1, "concurrent repeats gave different receipts"

    async def test_distinct_orders_get_distinct_numbers(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        orders = [conformance_order(sample) for _ in range(3)]
        receipts = [await order_intake.submit(order) for order in orders]
        numbers = {receipt.oms_order_number for receipt in receipts}
        assert len(numbers) == len(orders), "two orders share an OMS order number"
        found = await order_intake.receipts([order.order_id for order in orders])
        assert dict(found) == {receipt.order_id: receipt for receipt in receipts}

    async def test_receipts_leave_unknown_orders_out(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        order = conformance_order(sample)
        receipt = await order_intake.submit(order)
        asked = [_order_id(), order.order_id, _order_id(), order.order_id]
        found = await order_intake.receipts(asked)
        assert dict(found) == {order.order_id: receipt}, "unknown or repeated ids answered"
        assert dict(await order_intake.receipts([])) == {}, "nothing asked, something answered"

    async def test_status_changes_walk_forward_from_the_start(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        await order_intake.submit(conformance_order(sample))
        cursor = await walk_status_changes(order_intake, None)
        for _ in range(2):
            idle = await order_intake.status_changes(cursor, FEED_PAGE)
            assert_status_changes(idle, "an idle status read")
            assert idle.changes == (), f"a read after the last entry found {idle.changes}"
            assert idle.cursor == cursor, f"an idle read moved the cursor {cursor} -> {idle.cursor}"

    async def test_status_changes_keep_within_the_limit(
        self, order_intake: OrderIntakePort, sample: ConformanceSample
    ) -> None:
        for _ in range(2):
            await order_intake.submit(conformance_order(sample))
        first = await order_intake.status_changes(None, 1)
        assert_status_changes(first, "status_changes(None, 1)")
        assert len(first.changes) <= 1, "more changes than the limit"
        if first.changes:
            assert first.cursor == first.changes[-1].cursor, "the cursor is not the last entry's"
            after = await order_intake.status_changes(first.cursor, 1)
            assert after.changes[:1] != first.changes, "reading from the cursor repeated it"

    async def test_a_shipment_shows_in_the_status_changes(
        self, order_intake: OrderIntakePort, sample: ConformanceSample, order_events: OrderEvents
    ) -> None:
        change = await _reported(order_intake, sample, order_events.ship, OmsStatus.SHIPPED)
        if change.stock_booked_at is not None:
            assert_aware(change.stock_booked_at, "stock_booked_at of a shipment")

    async def test_a_cancellation_shows_in_the_status_changes(
        self, order_intake: OrderIntakePort, sample: ConformanceSample, order_events: OrderEvents
    ) -> None:
        change = await _reported(order_intake, sample, order_events.cancel, OmsStatus.CANCELLED)
        assert change.stock_booked_at is None, "a cancellation booked stock"

    async def test_aclose_can_be_called(self, order_intake: OrderIntakePort) -> None:
        await order_intake.aclose()


async def _reported(
    order_intake: OrderIntakePort,
    sample: ConformanceSample,
    event: Callable[[str], Awaitable[None]],
    status: OmsStatus,
) -> OrderStatusChange:
    """Submit a new order, make ``event`` happen to it, and wait for its change in the feed."""
    order = conformance_order(sample)
    await order_intake.submit(order)
    head = await walk_status_changes(order_intake, None)
    await event(order.order_id)
    return await next_status(order_intake, head, order.order_id, status)


async def walk_status_changes(order_intake: OrderIntakePort, since: str | None) -> str:
    """Read the status feed from ``since`` to its end, checking every batch; the end's cursor."""
    cursor = since
    for _ in range(MAX_FEED_BATCHES):
        batch = await order_intake.status_changes(cursor, FEED_PAGE)
        assert_status_changes(batch, f"status_changes({cursor!r})")
        if not batch.changes:
            if cursor is not None:
                assert batch.cursor == cursor, f"an empty batch moved the cursor from {cursor}"
            return batch.cursor
        assert batch.cursor != cursor, "a non-empty batch did not move the cursor"
        numbers = [change.cursor for change in batch.changes]
        if all(number.isdigit() for number in [*numbers, *([cursor] if cursor else [])]):
            after = [int(number) for number in numbers]
            assert after == sorted(set(after)), f"cursors do not increase: {numbers}"
            assert cursor is None or after[0] > int(cursor), "a batch went back"
        cursor = batch.cursor
    raise AssertionError(f"status changes still coming after {MAX_FEED_BATCHES} reads")


async def next_status(
    order_intake: OrderIntakePort, since: str, order_id: str, status: OmsStatus
) -> OrderStatusChange:
    """The first change of ``order_id`` to ``status`` after ``since``, waiting for it to show."""
    deadline = asyncio.get_running_loop().time() + FEED_WAIT
    cursor = since
    while True:
        batch = await order_intake.status_changes(cursor, FEED_PAGE)
        assert_status_changes(batch, f"status_changes({cursor!r})")
        for change in batch.changes:
            if change.order_id == order_id and change.status is status:
                return change
        cursor = batch.cursor
        if not batch.changes:
            assert asyncio.get_running_loop().time() < deadline, f"no {status.name} of {order_id}"
            await asyncio.sleep(0.1)


def assert_status_changes(batch: object, what: str) -> None:
    assert_exact_type(batch, OrderStatusChanges, what)
    assert isinstance(batch, OrderStatusChanges)
    assert_hashable(batch, what)
    assert type(batch.cursor) is str, f"{what}: cursor {batch.cursor!r} is not a str"
    assert type(batch.changes) is tuple, f"{what}: changes are not a tuple"
    for change in batch.changes:
        assert_exact_type(change, OrderStatusChange, f"{what} entry")
        assert_text(change.order_id, f"{what} order_id")
        assert type(change.status) is OmsStatus, f"{what}: status {change.status!r}"
        assert_aware(change.at, f"{what} at")
        assert_text(change.cursor, f"{what} cursor")


def conformance_order(sample: ConformanceSample) -> OrderSubmission:
    """A new, valid order for two units of each of up to two sample SKUs, shipped to home."""
    skus = require(sample.skus, "skus", "OrderIntakeContract")[:2]
    location = require(sample.location_ids, "location_ids", "OrderIntakeContract")[0]
    unit = Money(UNIT_PRICE, sample.currency)
    lines = tuple(
        OrderLineSubmission(sku, 2, location, unit, Money(UNIT_PRICE * 2, sample.currency))
        for sku in skus
    )
    total = Money(sum((line.line_total.amount for line in lines), Decimal(0)), sample.currency)
    return OrderSubmission(
        order_id=_order_id(),
        channel="WEB",
        customer_id=sample.customer_ids[0] if sample.customer_ids else None,
        fulfillment="SHIP_TO_HOME",
        lines=lines,
        total=total,
        placed_at=datetime.now(UTC).replace(microsecond=0),
        destination_postal_code=sample.postal_code,
    )


def assert_receipt(receipt: object, order_id: str) -> None:
    assert_exact_type(receipt, OmsReceipt, "receipt")
    assert isinstance(receipt, OmsReceipt)
    assert receipt.order_id == order_id, f"receipt of order {receipt.order_id!r}"
    assert_text(receipt.oms_order_number, "receipt oms_order_number")
    assert_aware(receipt.received_at, "receipt received_at")


def _order_id() -> str:
    # Fresh ids keep runs against a long-lived system from replaying earlier runs.
    return f"conformance-{uuid.uuid4()}"
