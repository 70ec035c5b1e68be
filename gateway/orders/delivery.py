"""What each outbox message does when delivered: hand an order to the OMS, move points.

The handlers call the remote systems through their ports, outside any transaction, and return
the local writes that go with a delivery (an order becoming SUBMITTED) for the outbox worker to
make just before it marks the message delivered: each is idempotent, since a message may be
delivered more than once.

A new order's ``OMS_SUBMIT`` message carries the submission itself (``submission_payload``),
written in the order's transaction: what the OMS receives never changes once the order is
placed, so its delivery reads nothing. Messages without it (queued before it was carried)
read the order from its tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import (
    InsufficientPoints,
    LoyaltyPort,
    Money,
    OmsReceipt,
    OrderIntakePort,
    OrderLineSubmission,
    OrderSubmission,
)
from gateway.db import UtcDateTime
from gateway.orders.outbox import (
    Delivered,
    Handler,
    MessageKind,
    OutboxMessage,
    PointsMovement,
    Write,
)
from gateway.orders.store import NewOrder, OrderStatus
from gateway.orders.tables import order_allocations, order_lines, orders
from gateway.promotions.allocation import allocate, minor_unit

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def handlers(
    orders: OrderIntakePort,
    loyalty: LoyaltyPort,
    clock: Clock = lambda: datetime.now(UTC),
) -> Mapping[MessageKind, Handler]:
    """A handler for every ``MessageKind``, over the OMS and the loyalty platform. ``clock``
    stamps ``orders.updated_at`` when the OMS takes an order."""

    async def submit(message: OutboxMessage, engine: AsyncEngine) -> Delivered:
        return await submit_order(orders, clock, message, engine)

    async def credit(message: OutboxMessage, engine: AsyncEngine) -> Delivered:
        return await credit_points(loyalty, message)

    async def debit(message: OutboxMessage, engine: AsyncEngine) -> Delivered:
        return await reverse_points(loyalty, message)

    return {
        MessageKind.OMS_SUBMIT: submit,
        MessageKind.LOYALTY_EARN: credit,
        MessageKind.LOYALTY_REFUND: credit,
        MessageKind.LOYALTY_REVERSE: debit,
    }


# --------------------------------------------------------------------------- the OMS


async def submit_order(
    intake: OrderIntakePort, clock: Clock, message: OutboxMessage, engine: AsyncEngine
) -> Delivered:
    """Hand the message's order to the OMS. Its effect records the OMS number and moves an
    ACCEPTED order to SUBMITTED; an order cancelled meanwhile stays CANCELLED but still gets the
    number, so that the cancellation can name it to the OMS."""
    if message.unrecorded:
        # Sent before by a worker that died before recording the answer: send again only
        # what the OMS does not have.
        known = await intake.receipts([message.order_id])
        if message.order_id in known:
            log.info("order %s: the OMS had it already", message.order_id)
            return Delivered(
                effect=_receipt_recorder(message.order_id, known[message.order_id], clock)
            )
    submission = carried_submission(message.order_id, message.payload)
    if submission is None:
        async with engine.connect() as connection:
            submission = await load_submission(connection, message.order_id)
    receipt = await intake.submit(submission)
    return Delivered(effect=_receipt_recorder(message.order_id, receipt, clock))


_SUBMITTED = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"))
    .values(
        status=case(
            (orders.c.status == OrderStatus.ACCEPTED.value, OrderStatus.SUBMITTED.value),
            else_=orders.c.status,
        ),
        oms_order_number=bindparam("oms_order_number"),
        updated_at=bindparam("submitted_at", type_=UtcDateTime()),
    )
)


def _receipt_recorder(order_id: str, receipt: OmsReceipt, clock: Clock) -> Write:
    values = {
        "order_id": order_id,
        "oms_order_number": receipt.oms_order_number,
        "submitted_at": clock(),
    }
    return Write(_SUBMITTED, values)


_SUBMISSION = (
    select(
        orders.c.channel,
        orders.c.customer_id,
        orders.c.fulfillment,
        orders.c.currency,
        orders.c.total,
        orders.c.placed_at,
        orders.c.destination,
        order_lines.c.order_id,
        order_lines.c.sku,
        order_lines.c.quantity,
        order_lines.c.unit_price,
        order_lines.c.line_total,
        order_allocations.c.location_id,
        order_allocations.c.quantity.label("allocated"),
    )
    .select_from(
        orders.outerjoin(order_lines, order_lines.c.order_id == orders.c.id).outerjoin(
            order_allocations,
            (order_allocations.c.order_id == order_lines.c.order_id)
            & (order_allocations.c.sku == order_lines.c.sku),
        )
    )
    .where(orders.c.id == bindparam("order_id"))
    .order_by(order_lines.c.line_no, order_allocations.c.location_id)
)


async def load_submission(connection: AsyncConnection, order_id: str) -> OrderSubmission:
    """The stored order as the OMS is to receive it: one submission line per allocation (line
    order, then location), each with its share of the line's total. Raises LookupError for an
    unknown order and ValueError for one whose allocations do not cover its lines. One query:
    the order joined with its lines and their allocations."""
    rows = (await connection.execute(_SUBMISSION, {"order_id": order_id})).all()
    if not rows:
        raise LookupError(f"no order {order_id}")
    order = rows[0]
    currency: str = order.currency
    by_line: dict[str, list[Row[*tuple[Any, ...]]]] = {}
    for row in rows:
        if row.sku is not None:
            by_line.setdefault(row.sku, []).append(row)
    submitted = [
        part
        for parts in by_line.values()
        for part in _split_line(
            order_id,
            _Line(parts[0].sku, parts[0].quantity, parts[0].unit_price, parts[0].line_total),
            [(p.location_id, int(p.allocated)) for p in parts if p.location_id is not None],
            currency,
        )
    ]
    return OrderSubmission(
        order_id=order_id,
        channel=order.channel,
        customer_id=order.customer_id,
        fulfillment=order.fulfillment,
        lines=tuple(submitted),
        total=Money(order.total, currency),
        placed_at=order.placed_at,
        destination_postal_code=(order.destination or {}).get("postal_code"),
    )


@dataclass(frozen=True, slots=True)
class _Line:
    sku: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal


def _split_line(
    order_id: str, line: _Line, allocations: Sequence[tuple[str, int]], currency: str
) -> list[OrderLineSubmission]:
    """One order line as one submission line per (location, quantity) allocation. The line's
    total is split over them by quantity, exactly to the minor unit (largest remainder), so the
    parts add up."""
    quantities = [quantity for _, quantity in allocations]
    if sum(quantities) != line.quantity:
        raise ValueError(
            f"order {order_id}: {line.sku} has {sum(quantities)} units allocated"
            f" of {line.quantity} ordered"
        )
    shares = allocate(line.line_total, [Decimal(q) for q in quantities], minor_unit(currency))
    unit_price = Money(line.unit_price, currency)
    return [
        OrderLineSubmission(
            sku=line.sku,
            quantity=quantity,
            location_id=location_id,
            unit_price=unit_price,
            line_total=Money(share, currency),
        )
        for (location_id, quantity), share in zip(allocations, shares, strict=True)
    ]


def submission_payload(order: NewOrder) -> dict[str, object]:
    """The ``OMS_SUBMIT`` payload of a new order: the submission ``load_submission`` would read
    once ``insert_order`` has written it (lines in order, each line's allocations by location),
    in JSON values."""
    priced, currency = order.priced, order.priced.currency
    held: dict[str, list[tuple[str, int]]] = {}
    for allocation in sorted(order.allocations, key=lambda a: a.location_id):
        held.setdefault(allocation.sku, []).append((allocation.location_id, allocation.quantity))
    lines = [
        [
            part.sku,
            part.quantity,
            part.location_id,
            str(part.unit_price.amount),
            str(part.line_total.amount),
        ]
        for line in priced.lines
        for part in _split_line(
            order.id,
            _Line(line.sku, line.quantity, line.unit_price.amount, line.line_total.amount),
            held.get(line.sku, []),
            currency,
        )
    ]
    destination = order.destination
    return {
        "submission": {
            "channel": order.channel,
            "customer_id": order.customer_id,
            "fulfillment": order.fulfillment,
            "currency": currency,
            "total": str(priced.total.amount),
            "placed_at": order.placed_at.astimezone(UTC).isoformat(),
            "postal_code": None if destination is None else destination.postal_code,
            "lines": lines,
        }
    }


def carried_submission(order_id: str, payload: Mapping[str, object]) -> OrderSubmission | None:
    """The submission an ``OMS_SUBMIT`` payload carries (see ``submission_payload``), or None
    when it carries none. Raises ValueError when it is malformed."""
    carried = payload.get("submission")
    if carried is None:
        return None
    if not isinstance(carried, dict):
        raise ValueError(f"order {order_id}: not a submission: {carried!r}")
    try:
        currency = str(carried["currency"])
        lines = tuple(
            OrderLineSubmission(
                sku=str(sku),
                quantity=int(quantity),
                location_id=str(location_id),
                unit_price=Money(Decimal(unit_price), currency),
                line_total=Money(Decimal(line_total), currency),
            )
            for sku, quantity, location_id, unit_price, line_total in carried["lines"]
        )
        postal_code = carried["postal_code"]
        return OrderSubmission(
            order_id=order_id,
            channel=str(carried["channel"]),
            customer_id=None if carried["customer_id"] is None else str(carried["customer_id"]),
            fulfillment=str(carried["fulfillment"]),
            lines=lines,
            total=Money(Decimal(carried["total"]), currency),
            placed_at=datetime.fromisoformat(carried["placed_at"]),
            destination_postal_code=None if postal_code is None else str(postal_code),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"order {order_id}: not a submission: {carried!r}") from exc


# --------------------------------------------------------------------------- loyalty


async def credit_points(loyalty: LoyaltyPort, message: OutboxMessage) -> Delivered:
    """Earn the movement's points (for points earned, or redeemed points given back)."""
    movement = PointsMovement.from_payload(message.payload)
    await loyalty.earn(movement.customer_id, movement.points, movement.request_id, movement.reason)
    return Delivered()


async def reverse_points(loyalty: LoyaltyPort, message: OutboxMessage) -> Delivered:
    """Take back the movement's points. When the customer has spent them already there is
    nothing more to do: the message counts as delivered, with a note and a warning."""
    movement = PointsMovement.from_payload(message.payload)
    try:
        await loyalty.redeem(
            movement.customer_id, movement.points, movement.request_id, movement.reason
        )
    except InsufficientPoints as exc:
        note = (
            f"not reversed: {movement.points} points asked back from {movement.customer_id},"
            f" who holds {exc.balance}"
        )
        log.warning("order %s: %s (%s)", message.order_id, note, movement.request_id)
        return Delivered(note=note)
    return Delivered()
