"""The contract of ``OrderIntakePort``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.ports import (
    Money,
    OmsReceipt,
    OrderIntakePort,
    OrderLineSubmission,
    OrderSubmission,
)
from adapters.testing.checks import assert_aware, assert_exact_type, assert_text
from adapters.testing.sample import ConformanceSample, require

UNIT_PRICE = Decimal("9.99")


class OrderIntakeContract:
    """What every ``OrderIntakePort`` must do. Subclass it as ``Test...`` and provide two
    fixtures: ``order_intake`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``skus``, ``location_ids`` and ``currency``; its first
    ``customer_ids`` entry, if any, places the orders). Every test submits new orders with
    fresh ids: run it against a test instance of the order system."""

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

    async def test_aclose_can_be_called(self, order_intake: OrderIntakePort) -> None:
        await order_intake.aclose()


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
