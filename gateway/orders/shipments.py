"""What the OMS reports once it has an order: a shipment consumes its reservations, a
cancellation there cancels it here.

The OMS's status feed (``OrderIntakePort.status_changes``) is followed as the feed ``oms`` by
the read model's ``Follower`` (one instance at a time holds its lease; the cursor is stored in
the gateway's database and moved only once the changes read are applied). Every change is
applied in one transaction over the order (locked), its allocations and the ledger, and is
idempotent: a change read twice, after a crash or by two instances while Redis is down, does
nothing the second time.

A shipment does not give the units back at once. The ledger counts them on hand until the
ERP's stock feed brings the goods issue, so they stay reserved until then: released earlier,
the same unit would be on hand *and* free for a moment, and could be sold again. The order is
marked SHIPPED with the time the ERP booked the goods issue, and each position's reservation is
consumed once its ERP level is as of that time or later (``InventoryLedger.consume``): at
once, when the ERP's feed was there first, or on a later read of the ERP's feed
(``consume_booked``). Until then available-to-promise is lower than the truth, never higher.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import (
    BackendError,
    OmsStatus,
    OrderIntakePort,
    OrderStatusChange,
)
from gateway.ledger import InventoryLedger, Reservation
from gateway.orders.changes import ChangeError, OrderChanges, Refusal
from gateway.orders.store import Order, OrderStatus, load_orders
from gateway.orders.tables import order_allocations, orders
from gateway.readmodel import feeds
from gateway.readmodel.feeds import FeedRead

log = logging.getLogger(__name__)

FEED = "oms"
PAGE = 100
"""Status changes read at a time."""
BOOKED_BATCH = 200
"""Shipped orders looked at per read of the ERP's feed (the oldest bookings first)."""


class Step(enum.Enum):
    """What a status change from the OMS does to the gateway's order."""

    SHIP = "SHIP"
    CANCEL = "CANCEL"
    NOTHING = "NOTHING"  # nothing to act on, or done already
    CONFLICT = "CONFLICT"  # the OMS and the gateway disagree (e.g. shipped after a cancel here)


_OPEN = frozenset({OrderStatus.ACCEPTED, OrderStatus.SUBMITTED})


def step_for(reported: OmsStatus, current: OrderStatus) -> Step:
    """What the OMS reporting ``reported`` does to an order now ``current``. Applying a step
    leaves the order where the same report is ``NOTHING``: reports are idempotent."""
    if reported is OmsStatus.SHIPPED:
        if current in _OPEN:
            return Step.SHIP
        return Step.NOTHING if current is OrderStatus.SHIPPED else Step.CONFLICT
    if reported is OmsStatus.CANCELLED:
        if current in _OPEN:
            return Step.CANCEL
        return Step.NOTHING if current is OrderStatus.CANCELLED else Step.CONFLICT
    return Step.NOTHING


def status_after(step: Step, current: OrderStatus) -> OrderStatus:
    """The order's status once ``step`` is applied."""
    if step is Step.SHIP:
        return OrderStatus.SHIPPED
    if step is Step.CANCEL:
        return OrderStatus.CANCELLED
    return current


def in_sequence(
    since: str | None, changes: Sequence[OrderStatusChange]
) -> tuple[tuple[OrderStatusChange, ...], tuple[str, str] | None]:
    """The changes that follow ``since`` without a gap, and the first gap (the last number
    before it, the number after it) if the numbers skip (see ``feeds.in_sequence``)."""
    count, gap = feeds.in_sequence(since, [change.cursor for change in changes])
    return tuple(changes[:count]), gap


def held(order: Order) -> list[Reservation]:
    """What the order still holds reserved, per allocation."""
    return [
        Reservation(
            allocation.location_id, allocation.sku, allocation.quantity - allocation.released
        )
        for allocation in order.allocations
        if allocation.quantity > allocation.released
    ]


class OrderStatusUpdates:
    """Applies the OMS's status changes to the gateway's orders and the ledger."""

    def __init__(
        self,
        engine: AsyncEngine,
        ledger: InventoryLedger,
        changes: OrderChanges,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._ledger = ledger
        self._changes = changes
        self._clock = clock

    async def apply(self, change: OrderStatusChange) -> list[str]:
        """Apply one change; the SKUs whose stock positions it moved. Changes of orders this
        gateway does not hold are ignored; so are ones that conflict with the order (logged)."""
        if change.status is OmsStatus.SHIPPED:
            return await self._shipped(change)
        if change.status is OmsStatus.CANCELLED:
            return await self._cancelled(change)
        return []

    async def _shipped(self, change: OrderStatusChange) -> list[str]:
        booked_at = change.stock_booked_at or change.at
        async with self._engine.begin() as connection:
            order = await _locked(connection, change.order_id)
            if order is None or not _acts(change, order):
                return []
            await connection.execute(
                update(orders)
                .where(orders.c.id == order.id)
                .values(
                    status=OrderStatus.SHIPPED.value,
                    shipped_at=change.at,
                    pending_goods_issue_at=booked_at,
                    updated_at=self._clock(),
                )
            )
            return await self._consume(connection, order, booked_at)

    async def _cancelled(self, change: OrderStatusChange) -> list[str]:
        async with self._engine.connect() as connection:
            order = (await load_orders(connection, [change.order_id])).get(change.order_id)
        if order is None or not _acts(change, order):
            return []
        outcome = await self._changes.cancel(order.id)
        if isinstance(outcome, Refusal):
            # Cancelled here meanwhile is the same end; returned lines are a real conflict.
            if outcome.code is not ChangeError.ALREADY_CANCELLED:
                log.warning(
                    "feed oms: order %s cancelled at the OMS: %s", order.id, outcome.message
                )
            return []
        return sorted({reservation.sku for reservation in held(order)})

    async def consume_booked(self) -> list[str]:
        """Consume the reservations of shipped orders whose goods issue the ledger now shows
        (run after each read of the ERP's stock feed); the SKUs whose positions moved."""
        pending = (
            select(orders.c.id)
            .where(orders.c.pending_goods_issue_at.is_not(None))
            .order_by(orders.c.pending_goods_issue_at)
            .limit(BOOKED_BATCH)
        )
        async with self._engine.connect() as connection:
            order_ids = list((await connection.execute(pending)).scalars())
        moved: list[str] = []
        for order_id in order_ids:
            async with self._engine.begin() as connection:
                booked_at = await _pending_booking(connection, order_id)
                order = None if booked_at is None else await _locked(connection, order_id)
                if booked_at is not None and order is not None:
                    moved += await self._consume(connection, order, booked_at)
        return moved

    async def _consume(
        self, connection: AsyncConnection, order: Order, booked_at: datetime
    ) -> list[str]:
        """Consume what ``order`` holds where the ledger shows the goods issue booked at
        ``booked_at``; clear the order's mark once nothing is left waiting."""
        holding = held(order)
        waiting = await self._ledger.consume(connection, holding, booked_at)
        still = {(reservation.location_id, reservation.sku) for reservation in waiting}
        consumed = [r for r in holding if (r.location_id, r.sku) not in still]
        for reservation in consumed:
            await connection.execute(
                update(order_allocations)
                .where(
                    order_allocations.c.order_id == order.id,
                    order_allocations.c.location_id == reservation.location_id,
                    order_allocations.c.sku == reservation.sku,
                )
                .values(released=order_allocations.c.quantity)
            )
        if not waiting:
            await connection.execute(
                update(orders).where(orders.c.id == order.id).values(pending_goods_issue_at=None)
            )
        return sorted({reservation.sku for reservation in consumed})


def _acts(change: OrderStatusChange, order: Order) -> bool:
    step = step_for(change.status, order.status)
    if step is Step.CONFLICT:
        log.warning(
            "feed oms: the OMS reports order %s %s, but it is %s here; left as it is",
            order.id,
            change.status.value,
            order.status.value,
        )
    return step in (Step.SHIP, Step.CANCEL)


async def _locked(connection: AsyncConnection, order_id: str) -> Order | None:
    return (await load_orders(connection, [order_id], for_update=True)).get(order_id)


async def _pending_booking(connection: AsyncConnection, order_id: str) -> datetime | None:
    """The order's goods issue time while it waits for it, its row locked (on PostgreSQL; a
    SQLite transaction holds the write lock from its start)."""
    query = select(orders.c.pending_goods_issue_at).where(orders.c.id == order_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    booked_at: datetime | None = (await connection.execute(query)).scalar_one_or_none()
    return booked_at


class OrderStatusFeed:
    """The OMS's status feed as a ``FeedSource``: each read applies the changes after the
    cursor, in order, and answers the SKUs whose stock moved.

    Nothing is ever skipped. A read whose numbers skip one (an entry lost on the way, or not yet
    committed at the OMS) applies the changes before the gap and stops there; the next read,
    starting at the gap, fails (logged and counted by the follower) until the missing entry
    shows. An entry that cannot be read fails the whole read the same way (the adapter's
    ``MALFORMED_CHANGE``)."""

    name = FEED

    def __init__(self, intake: OrderIntakePort, updates: OrderStatusUpdates) -> None:
        self._intake = intake
        self._updates = updates

    async def read(self, cursor: str | None) -> FeedRead:
        batch = await self._intake.status_changes(cursor, PAGE)
        if cursor is not None and _number(batch.cursor) < _number(cursor):
            raise BackendError(FEED, f"status feed went back from {cursor} to {batch.cursor}")
        changes, gap = in_sequence(cursor, batch.changes)
        if gap is not None and not changes:
            raise BackendError(FEED, f"status feed skips from {gap[0]} to {gap[1]}; waiting")
        moved: list[str] = []
        for change in changes:
            moved += await self._updates.apply(change)
        end = changes[-1].cursor if changes else batch.cursor
        return FeedRead(tuple(dict.fromkeys(moved)), end, more=bool(changes))


def _number(cursor: str) -> int:
    return int(cursor) if cursor.isdigit() else 0
