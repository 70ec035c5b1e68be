"""What happens to an order after it is placed: cancelled, or lines brought back to a store.

Each change is one transaction over the order (locked on PostgreSQL), the ledger and the outbox,
so stock and points move exactly when the order does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import Money
from gateway.ledger import InventoryLedger, Reservation
from gateway.orders.outbox import MessageKind, enqueue
from gateway.orders.store import Order, OrderLine, OrderStatus, load_orders
from gateway.orders.tables import order_allocations, order_lines, order_returns, orders


class ChangeError(enum.Enum):
    NOT_FOUND = "NOT_FOUND"
    ALREADY_CANCELLED = "ALREADY_CANCELLED"
    ALREADY_RETURNED = "ALREADY_RETURNED"  # lines came back: it can no longer be cancelled
    ALREADY_SHIPPED = "ALREADY_SHIPPED"  # it left: return its lines instead
    NOT_IN_ORDER = "NOT_IN_ORDER"
    TOO_MANY_RETURNED = "TOO_MANY_RETURNED"
    INVALID_QUANTITY = "INVALID_QUANTITY"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: ChangeError
    message: str
    sku: str | None = None


@dataclass(frozen=True, slots=True)
class LineRefund:
    sku: str
    quantity: int
    amount: Money
    points_reversed: int


@dataclass(frozen=True, slots=True)
class Changed:
    order: Order
    refunds: tuple[LineRefund, ...] = ()


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def share_after(total: Decimal, done: int, of: int, unit: Decimal) -> Decimal:
    """What ``done`` of ``of`` units are worth of ``total``, rounded half up to ``unit``; all
    of them are worth exactly ``total``. Refunds are differences of these cumulative shares, so
    any sequence of partial returns adds up to the line's total to the cent."""
    if done >= of:
        return total
    return (total * done / of).quantize(unit, rounding=ROUND_HALF_UP)


def points_after(points: int, done: int, of: int) -> int:
    """The same for points, rounded down: a partial return never takes back a point too many."""
    if done >= of:
        return points
    return int((Decimal(points) * done / of).to_integral_value(rounding=ROUND_FLOOR))


class OrderChanges:
    def __init__(
        self, engine: AsyncEngine, ledger: InventoryLedger, clock: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._ledger = ledger
        self._clock = clock

    async def cancel(self, order_id: str) -> Changed | Refusal:
        """Release the order's reservations, give back the points it spent and take back the
        points it earned (both through the outbox). Cancelling twice is refused, and so is
        cancelling an order that has shipped."""
        try:
            async with self._engine.begin() as connection:
                order = await _locked(connection, order_id)
                if order.status is OrderStatus.CANCELLED:
                    raise _Refused(Refusal(ChangeError.ALREADY_CANCELLED, "already cancelled"))
                if order.status is OrderStatus.SHIPPED:
                    message = "the order has shipped; return its lines instead"
                    raise _Refused(Refusal(ChangeError.ALREADY_SHIPPED, message))
                if any(line.returned_quantity for line in order.lines):
                    message = "lines of this order were returned; return the rest instead"
                    raise _Refused(Refusal(ChangeError.ALREADY_RETURNED, message))
                await self._cancel(connection, order)
        except _Refused as refused:
            return refused.refusal
        return Changed(await self._reload(order_id))

    async def _cancel(self, connection: AsyncConnection, order: Order) -> None:
        now = self._clock()
        held = [
            Reservation(a.location_id, a.sku, a.quantity - a.released)
            for a in order.allocations
            if a.quantity > a.released
        ]
        if held:
            await self._ledger.release(connection, held)
        await connection.execute(
            update(order_allocations)
            .where(order_allocations.c.order_id == order.id)
            .values(released=order_allocations.c.quantity)
        )
        await connection.execute(
            update(orders)
            .where(orders.c.id == order.id)
            .values(status=OrderStatus.CANCELLED.value, updated_at=now)
        )
        if order.customer_id is None:
            return
        messages = (
            (MessageKind.LOYALTY_REFUND, order.points_redeemed, "cancel-refund"),
            (MessageKind.LOYALTY_REVERSE, order.points_earned, "cancel-reverse"),
        )
        for kind, points, suffix in messages:
            if points > 0:
                payload = {
                    "customer_id": order.customer_id,
                    "points": points,
                    "request_id": f"{order.id}:{suffix}",
                    "reason": f"order {order.id} cancelled",
                }
                await enqueue(connection, kind, order.id, payload, now)

    async def return_lines(
        self, order_id: str, lines: Sequence[tuple[str, int]], store_id: str
    ) -> Changed | Refusal:
        """Take units back at ``store_id`` (any store): its position is restocked, the line's
        allocated amount refunded exactly, the points earned on it reversed in proportion, and
        the store recorded. What the order still holds reserved for those units is released."""
        try:
            async with self._engine.begin() as connection:
                order = await _locked(connection, order_id)
                if order.status is OrderStatus.CANCELLED:
                    raise _Refused(
                        Refusal(ChangeError.ALREADY_CANCELLED, "the order was cancelled")
                    )
                refunds = [
                    await self._return(connection, order, sku, quantity, store_id)
                    for sku, quantity in _merged(lines)
                ]
        except _Refused as refused:
            return refused.refusal
        return Changed(await self._reload(order_id), tuple(refunds))

    async def _return(
        self, connection: AsyncConnection, order: Order, sku: str, quantity: int, store_id: str
    ) -> LineRefund:
        line = _line(order, sku)
        if quantity < 1:
            raise _Refused(Refusal(ChangeError.INVALID_QUANTITY, "quantity must be 1 or more", sku))
        done = line.returned_quantity + quantity
        if done > line.quantity:
            message = f"{sku}: {line.quantity - line.returned_quantity} may still come back"
            raise _Refused(Refusal(ChangeError.TOO_MANY_RETURNED, message, sku))
        unit = line.line_total.minor_unit
        refunded_after = share_after(line.line_total.amount, done, line.quantity, unit)
        refund = refunded_after - line.refunded.amount
        points_total = points_after(line.points_earned, done, line.quantity)
        points = points_total - line.points_reversed
        now = self._clock()
        await connection.execute(
            update(order_lines)
            .where(order_lines.c.order_id == order.id, order_lines.c.sku == sku)
            .values(returned_quantity=done, refunded=refunded_after, points_reversed=points_total)
        )
        await connection.execute(
            insert(order_returns).values(
                order_id=order.id,
                sku=sku,
                quantity=quantity,
                store_id=store_id,
                refund=refund,
                points_reversed=points,
                returned_at=now,
            )
        )
        await self._ledger.restock(connection, store_id, sku, quantity)
        await self._release_returned(connection, order, sku, quantity)
        if points > 0 and order.customer_id is not None:
            payload = {
                "customer_id": order.customer_id,
                "points": points,
                "request_id": f"{order.id}:return:{sku}:{done}",
                "reason": f"return of {quantity} x {sku} from order {order.id}",
            }
            await enqueue(connection, MessageKind.LOYALTY_REVERSE, order.id, payload, now)
        return LineRefund(sku, quantity, Money(refund, line.line_total.currency), points)

    async def _release_returned(
        self, connection: AsyncConnection, order: Order, sku: str, quantity: int
    ) -> None:
        """Units that came back have left their location: the order no longer holds them."""
        left = quantity
        for allocation in order.allocations:
            held = allocation.quantity - allocation.released
            if allocation.sku != sku or held <= 0 or left <= 0:
                continue
            taken = min(held, left)
            left -= taken
            await self._ledger.release(
                connection, [Reservation(allocation.location_id, sku, taken)]
            )
            await connection.execute(
                update(order_allocations)
                .where(
                    order_allocations.c.order_id == order.id,
                    order_allocations.c.location_id == allocation.location_id,
                    order_allocations.c.sku == sku,
                )
                .values(released=order_allocations.c.released + taken)
            )

    async def _reload(self, order_id: str) -> Order:
        async with self._engine.connect() as connection:
            return (await load_orders(connection, [order_id]))[order_id]


async def _locked(connection: AsyncConnection, order_id: str) -> Order:
    found = await load_orders(connection, [order_id], for_update=True)
    if order_id not in found:
        raise _Refused(Refusal(ChangeError.NOT_FOUND, f"no order {order_id}"))
    return found[order_id]


def _line(order: Order, sku: str) -> OrderLine:
    for line in order.lines:
        if line.sku == sku:
            return line
    raise _Refused(Refusal(ChangeError.NOT_IN_ORDER, f"{sku} is not in order {order.id}", sku))


def _merged(lines: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return sorted(merged.items())
