"""Orders in the gateway's database: writing one, reading them back, idempotency keys.

Everything here runs either in the caller's transaction (``insert``, the idempotency key's
completion) or in its own short one; none of it calls a remote system.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import Money
from gateway.availability import available_to_promise
from gateway.db import (
    DriverStatement,
    UtcDateTime,
    autocommit,
    fetch_on_driver,
    retried_on_disconnect,
    retry_on_disconnect,
)
from gateway.ledger import Position, Reservation, Shortfall, in_lock_order
from gateway.orders.outbox import NewMessage, enqueue_many
from gateway.orders.tables import idempotency_keys, order_allocations, order_lines, orders
from gateway.promotions import PricedBasket
from gateway.promotions.allocation import allocate
from gateway.sourcing import Allocation

ONE = Decimal(1)


class OrderStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"  # committed here, on its way to the OMS
    SUBMITTED = "SUBMITTED"  # the OMS confirmed it (``oms_order_number``)
    SHIPPED = "SHIPPED"  # the OMS shipped every unit (``shipped_at``)
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Destination:
    lat: float
    lon: float
    postal_code: str | None = None


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What placement writes: the priced basket and where each unit comes from."""

    id: str
    channel: str
    customer_id: str | None
    fulfillment: str
    store_id: str | None
    attributed_store_id: str | None
    destination: Destination | None
    priced: PricedBasket
    allocations: tuple[Allocation, ...]
    coupon_codes: tuple[str, ...]
    placed_at: datetime


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Money
    subtotal: Money
    line_total: Money
    points_earned: int
    returned_quantity: int
    refunded: Money
    points_reversed: int


@dataclass(frozen=True, slots=True)
class OrderAllocation:
    sku: str
    location_id: str
    quantity: int
    released: int


@dataclass(frozen=True, slots=True)
class OrderPromotion:
    id: str
    title: str
    explanation: str
    discount: Money


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    channel: str
    customer_id: str | None
    fulfillment: str
    store_id: str | None
    attributed_store_id: str | None
    destination: Destination | None
    status: OrderStatus
    subtotal: Money
    discount_total: Money
    total: Money
    points_redeemed: int
    points_value: Money
    amount_due: Money
    points_earned: int
    coupon_codes: tuple[str, ...]
    promotions: tuple[OrderPromotion, ...]
    oms_order_number: str | None
    placed_at: datetime
    updated_at: datetime
    lines: tuple[OrderLine, ...]
    allocations: tuple[OrderAllocation, ...]
    shipped_at: datetime | None = None


def line_points(priced: PricedBasket) -> list[int]:
    """The basket's points split over its lines by what each line costs, exactly (largest
    remainder): the base for reversing points in proportion when lines come back."""
    weights = [line.line_total.amount for line in priced.lines]
    return [int(share) for share in allocate(Decimal(priced.points_to_earn), weights, ONE)]


# Built once: statement objects reused keep their compiled form in SQLAlchemy's cache without
# being rebuilt and re-keyed for every order.
_INSERT_ORDER = insert(orders)
_INSERT_LINES = insert(order_lines)
_INSERT_ALLOCATIONS = insert(order_allocations)
_JSON_COLUMNS = ("destination", "coupon_codes", "promotions")
_HEAD_COLUMNS = tuple(
    column.name
    for column in orders.columns
    if column.name not in ("oms_order_number", "updated_at", "shipped_at", "pending_goods_issue_at")
)
_HEAD_VALUES = ", ".join(
    f"CAST(:{name} AS JSON)" if name in _JSON_COLUMNS else f":{name}" for name in _HEAD_COLUMNS
)

# On PostgreSQL the whole order is one statement (data-modifying CTEs; the lines, allocations
# and messages as arrays), so an order costs one round trip to write however many lines it has.
# The foreign keys are checked at the end of the statement, when the head is in. ``{source}``
# is the one-row relation each row is written for: always, or only once the holds are in.
_ORDER_ROWS = f"""
head AS (
    INSERT INTO orders ({", ".join(_HEAD_COLUMNS)}, updated_at)
    SELECT {_HEAD_VALUES}, CAST(:placed_at AS TIMESTAMPTZ) FROM {{source}}
), lines AS (
    INSERT INTO order_lines
        (order_id, line_no, sku, quantity, unit_price, subtotal, line_total, points_earned)
    SELECT CAST(:id AS VARCHAR), line.* FROM {{source}}, unnest(
        CAST(:line_nos AS INTEGER[]), CAST(:line_skus AS VARCHAR[]),
        CAST(:line_quantities AS INTEGER[]), CAST(:unit_prices AS NUMERIC[]),
        CAST(:line_subtotals AS NUMERIC[]), CAST(:line_totals AS NUMERIC[]),
        CAST(:line_points AS INTEGER[])) AS line
), allocations AS (
    INSERT INTO order_allocations (order_id, location_id, sku, quantity)
    SELECT CAST(:id AS VARCHAR), allocation.* FROM {{source}}, unnest(
        CAST(:allocation_locations AS VARCHAR[]), CAST(:allocation_skus AS VARCHAR[]),
        CAST(:allocation_quantities AS INTEGER[])) AS allocation
), messages AS (
    INSERT INTO outbox (kind, order_id, payload, attempts, next_attempt_at, created_at)
    SELECT kind, CAST(:id AS VARCHAR), CAST(payload AS JSON), 0,
        CAST(:placed_at AS TIMESTAMPTZ), CAST(:placed_at AS TIMESTAMPTZ)
    FROM {{source}}, unnest(CAST(:message_kinds AS VARCHAR[]), CAST(:message_payloads AS TEXT[]))
        WITH ORDINALITY AS message (kind, payload, number)
    ORDER BY number
)"""
_SAME_KEY = "channel = CAST(:key_channel AS VARCHAR) AND key = CAST(:key_key AS VARCHAR)"
_PLACE_ON_POSTGRESQL = text(
    f"""
WITH {_ORDER_ROWS.format(source="(SELECT) AS once")}
UPDATE idempotency_keys SET state = 'DONE'
WHERE {_SAME_KEY} AND (CAST(:key_owner AS VARCHAR) IS NULL OR owner = CAST(:key_owner AS VARCHAR))
"""
)
# The order's holds and the order itself in one autocommit statement: one round trip, one
# commit, no BEGIN. It is all or nothing without a transaction around it: the key (while
# ``key_owner`` holds it) and then the positions are locked, in the ledger's (location, SKU)
# order, and read as they are once locked (a row another order changed meanwhile is read at
# its newest version); only when the key is held and every position can cover its hold are
# the holds made, and only when every hold was made (each re-checked by its UPDATE, as the
# ledger's own holds are) is anything of the order written. Otherwise nothing is, and the
# answer says why: the key lost, or what each locked position had to offer.
_RESERVE_AND_PLACE_ON_POSTGRESQL = DriverStatement.of(
    text(
        f"""
WITH key_held AS MATERIALIZED (
    SELECT 1 AS held FROM idempotency_keys
    WHERE {_SAME_KEY} AND owner = CAST(:key_owner AS VARCHAR)
    FOR UPDATE
), wanted AS (
    SELECT * FROM unnest(
        CAST(:hold_locations AS VARCHAR[]), CAST(:hold_skus AS VARCHAR[]),
        CAST(:hold_quantities AS INTEGER[])
    ) AS wanted (location_id, sku, quantity)
), locked AS MATERIALIZED (
    SELECT position.location_id, position.sku, wanted.quantity,
        position.on_hand, position.reserved, position.safety_stock
    FROM inventory_positions AS position
    JOIN wanted ON wanted.location_id = position.location_id AND wanted.sku = position.sku
    WHERE EXISTS (SELECT FROM key_held)
    ORDER BY position.location_id, position.sku
    FOR UPDATE OF position
), covered AS MATERIALIZED (
    SELECT FROM key_held
    WHERE (
        SELECT count(*) FROM locked
        WHERE locked.on_hand - locked.reserved - locked.safety_stock >= locked.quantity
    ) = cardinality(CAST(:hold_skus AS VARCHAR[]))
), holds AS (
    UPDATE inventory_positions AS position
    SET reserved = position.reserved + locked.quantity, updated_at = :held_at
    FROM locked, covered
    WHERE position.location_id = locked.location_id AND position.sku = locked.sku
        AND position.on_hand - position.reserved - position.safety_stock >= locked.quantity
    RETURNING position.sku
), placed AS MATERIALIZED (
    SELECT FROM covered
    WHERE (SELECT count(*) FROM holds) = cardinality(CAST(:hold_skus AS VARCHAR[]))
), {_ORDER_ROWS.format(source="placed")}, done AS (
    UPDATE idempotency_keys SET state = 'DONE'
    WHERE {_SAME_KEY} AND EXISTS (SELECT FROM placed)
)
SELECT EXISTS (SELECT FROM key_held) AS key_held, EXISTS (SELECT FROM placed) AS placed,
    locked.location_id, locked.sku, locked.on_hand, locked.reserved, locked.safety_stock
FROM (SELECT) AS once LEFT JOIN locked ON true
"""
    ).bindparams(bindparam("held_at", type_=UtcDateTime()))
)


async def insert_order(
    connection: AsyncConnection,
    order: NewOrder,
    messages: Sequence[NewMessage] = (),
    key: tuple[str, str] | None = None,
    owner: str | None = None,
) -> None:
    """Write the order, its lines and allocations in the caller's transaction, with its outbox
    ``messages`` (due at once) and the completion of its idempotency ``key`` (channel, key),
    held by ``owner`` when given (``KeyTakenOver`` if it is not, for the caller to roll back).
    One statement on PostgreSQL; on SQLite one per table (lines, allocations and messages in
    a batch each), and one for the key."""
    head, lines, allocations = _order_rows(order)
    if connection.dialect.name == "postgresql":
        parameters = _place_parameters(head, lines, allocations, messages, key)
        result = await connection.execute(_PLACE_ON_POSTGRESQL, {**parameters, "key_owner": owner})
        if key is not None and owner is not None and result.rowcount != 1:
            raise KeyTakenOver(f"{key[0]}/{key[1]} was taken over")
        return
    await connection.execute(_INSERT_ORDER, head)
    await connection.execute(_INSERT_LINES, lines)
    await connection.execute(_INSERT_ALLOCATIONS, allocations)
    await enqueue_many(connection, messages, order.placed_at)
    if key is not None:
        await IdempotencyKeys.complete(connection, *key, owner)


async def reserve_and_insert(
    connection: AsyncConnection,
    order: NewOrder,
    holds: Sequence[Reservation],
    messages: Sequence[NewMessage],
    key: tuple[str, str],
    owner: str,
) -> list[Shortfall]:
    """PostgreSQL only: hold ``holds`` and write ``order`` as ``insert_order`` does, all in one
    statement on ``connection`` (in autocommit mode: the statement is its own transaction),
    while ``owner`` holds the idempotency ``key``. Returns the holds that could not be made,
    in which case nothing was written; raises ``KeyTakenOver`` when the key is not held."""
    head, lines, allocations = _order_rows(order)
    merged = in_lock_order(holds)
    parameters = _place_parameters(head, lines, allocations, messages, key) | {
        "key_owner": owner,
        "hold_locations": [location_id for (location_id, _), _ in merged],
        "hold_skus": [sku for (_, sku), _ in merged],
        "hold_quantities": [quantity for _, quantity in merged],
        "held_at": order.placed_at,
    }
    rows = await fetch_on_driver(connection, _RESERVE_AND_PLACE_ON_POSTGRESQL, parameters)
    if not rows[0]["key_held"]:
        raise KeyTakenOver(f"{key[0]}/{key[1]} was taken over")
    if rows[0]["placed"]:
        return []
    offered = {
        (row["location_id"], row["sku"]): available_to_promise(
            row["on_hand"], row["reserved"], row["safety_stock"]
        )
        for row in rows
        if row["location_id"] is not None
    }
    shortfalls = [
        Shortfall(location_id, sku, quantity, offered.get((location_id, sku), 0))
        for (location_id, sku), quantity in merged
        if offered.get((location_id, sku), 0) < quantity
    ]
    if not shortfalls:  # every locked position covered its hold, yet not every hold was made
        raise RuntimeError(f"order {order.id}: the holds disagree with the locked positions")
    return shortfalls


def _place_parameters(
    head: dict[str, object],
    lines: Sequence[dict[str, object]],
    allocations: Sequence[dict[str, object]],
    messages: Sequence[NewMessage],
    key: tuple[str, str] | None,
) -> dict[str, object]:
    def column(rows: Sequence[dict[str, object]], name: str) -> list[object]:
        return [row[name] for row in rows]

    parameters = {name: head[name] for name in _HEAD_COLUMNS}
    parameters.update({name: json.dumps(head[name]) for name in _JSON_COLUMNS})
    return parameters | {
        "line_nos": column(lines, "line_no"),
        "line_skus": column(lines, "sku"),
        "line_quantities": column(lines, "quantity"),
        "unit_prices": column(lines, "unit_price"),
        "line_subtotals": column(lines, "subtotal"),
        "line_totals": column(lines, "line_total"),
        "line_points": column(lines, "points_earned"),
        "allocation_locations": column(allocations, "location_id"),
        "allocation_skus": column(allocations, "sku"),
        "allocation_quantities": column(allocations, "quantity"),
        "message_kinds": [message.kind.value for message in messages],
        "message_payloads": [json.dumps(dict(message.payload)) for message in messages],
        "key_channel": None if key is None else key[0],
        "key_key": None if key is None else key[1],
    }


def _order_rows(
    order: NewOrder,
) -> tuple[dict[str, object], list[dict[str, object]], list[dict[str, object]]]:
    """The rows of ``orders``, ``order_lines`` and ``order_allocations`` that ``order`` is."""
    priced = order.priced
    destination = order.destination
    head: dict[str, object] = {
        "id": order.id,
        "channel": order.channel,
        "customer_id": order.customer_id,
        "fulfillment": order.fulfillment,
        "store_id": order.store_id,
        "attributed_store_id": order.attributed_store_id,
        "destination": None if destination is None else _destination_json(destination),
        "status": OrderStatus.ACCEPTED.value,
        "currency": priced.currency,
        "subtotal": priced.subtotal.amount,
        "discount_total": priced.discount_total.amount,
        "total": priced.total.amount,
        "points_redeemed": priced.points_redeemed,
        "points_value": priced.points_value.amount,
        "amount_due": priced.amount_due.amount,
        "points_earned": priced.points_to_earn,
        "coupon_codes": list(order.coupon_codes),
        "promotions": [
            {
                "id": applied.id,
                "title": applied.title,
                "explanation": applied.explanation,
                "discount": str(applied.discount.amount),
            }
            for applied in priced.applied_promotions
        ],
        "placed_at": order.placed_at,
        "updated_at": order.placed_at,
    }
    points = line_points(priced)
    lines: list[dict[str, object]] = [
        {
            "order_id": order.id,
            "line_no": number,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": line.unit_price.amount,
            "subtotal": line.subtotal.amount,
            "line_total": line.line_total.amount,
            "points_earned": points[number],
        }
        for number, line in enumerate(priced.lines)
    ]
    allocations: list[dict[str, object]] = [
        {
            "order_id": order.id,
            "location_id": allocation.location_id,
            "sku": allocation.sku,
            "quantity": allocation.quantity,
        }
        for allocation in order.allocations
    ]
    return head, lines, allocations


def accepted(order: NewOrder) -> Order:
    """The order exactly as ``load_orders`` reads it back once ``insert_order`` has written it
    (and nothing has changed it since): no need to read what the transaction just wrote."""
    priced = order.priced
    currency = priced.currency

    def money(value: Decimal) -> Money:
        return _money(value, currency)

    zero = money(Decimal(0))
    points = line_points(priced)
    lines = tuple(
        OrderLine(
            sku=line.sku,
            quantity=line.quantity,
            unit_price=money(line.unit_price.amount),
            subtotal=money(line.subtotal.amount),
            line_total=money(line.line_total.amount),
            points_earned=points[number],
            returned_quantity=0,
            refunded=zero,
            points_reversed=0,
        )
        for number, line in enumerate(priced.lines)
    )
    allocations = tuple(
        OrderAllocation(allocation.sku, allocation.location_id, allocation.quantity, 0)
        for allocation in sorted(order.allocations, key=lambda a: (a.location_id, a.sku))
    )
    promotions = tuple(
        OrderPromotion(
            applied.id, applied.title, applied.explanation, money(applied.discount.amount)
        )
        for applied in priced.applied_promotions
    )
    placed_at = order.placed_at.astimezone(UTC)
    return Order(
        id=order.id,
        channel=order.channel,
        customer_id=order.customer_id,
        fulfillment=order.fulfillment,
        store_id=order.store_id,
        attributed_store_id=order.attributed_store_id,
        destination=order.destination,
        status=OrderStatus.ACCEPTED,
        subtotal=money(priced.subtotal.amount),
        discount_total=money(priced.discount_total.amount),
        total=money(priced.total.amount),
        points_redeemed=priced.points_redeemed,
        points_value=money(priced.points_value.amount),
        amount_due=money(priced.amount_due.amount),
        points_earned=priced.points_to_earn,
        coupon_codes=tuple(order.coupon_codes),
        promotions=promotions,
        oms_order_number=None,
        placed_at=placed_at,
        updated_at=placed_at,
        lines=lines,
        allocations=allocations,
    )


def _destination_json(destination: Destination) -> dict[str, object]:
    return {"lat": destination.lat, "lon": destination.lon, "postal_code": destination.postal_code}


async def load_orders(
    connection: AsyncConnection, order_ids: Sequence[str], *, for_update: bool = False
) -> dict[str, Order]:
    """The orders with these ids (absent when unknown), in three queries."""
    if not order_ids:
        return {}
    query = select(orders).where(orders.c.id.in_(order_ids))
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    heads = (await connection.execute(query)).all()
    if not heads:
        return {}
    found = [head.id for head in heads]
    lines: dict[str, list[OrderLine]] = defaultdict(list)
    line_rows = await connection.execute(
        select(order_lines)
        .where(order_lines.c.order_id.in_(found))
        .order_by(order_lines.c.order_id, order_lines.c.line_no)
    )
    currency = {head.id: head.currency for head in heads}
    for row in line_rows:
        lines[row.order_id].append(_line(row, currency[row.order_id]))
    allocations: dict[str, list[OrderAllocation]] = defaultdict(list)
    allocation_rows = await connection.execute(
        select(order_allocations)
        .where(order_allocations.c.order_id.in_(found))
        .order_by(order_allocations.c.location_id, order_allocations.c.sku)
    )
    for row in allocation_rows:
        allocations[row.order_id].append(
            OrderAllocation(row.sku, row.location_id, row.quantity, row.released)
        )
    return {head.id: _order(head, lines[head.id], allocations[head.id]) for head in heads}


class OrderReader:
    """Orders as the graph reads them, each in its own short connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._statements = autocommit(engine)  # for the reads of a single query

    @retried_on_disconnect
    async def by_ids(self, order_ids: Sequence[str]) -> dict[str, Order]:
        async with self._engine.connect() as connection:
            return await load_orders(connection, order_ids)

    @retried_on_disconnect
    async def for_customer(self, customer_id: str, first: int) -> list[Order]:
        """The customer's newest ``first`` orders, newest first."""
        query = (
            select(orders.c.id)
            .where(orders.c.customer_id == customer_id)
            .order_by(orders.c.placed_at.desc(), orders.c.id.desc())
            .limit(first)
        )
        async with self._engine.connect() as connection:
            ids = list((await connection.execute(query)).scalars())
            found = await load_orders(connection, ids)
        return [found[order_id] for order_id in ids]

    @retried_on_disconnect
    async def shipments_since(self, start: datetime) -> dict[str, int]:
        """Per location: the orders it has been allocated since ``start`` (not cancelled)."""
        query = (
            select(
                order_allocations.c.location_id, func.count(order_allocations.c.order_id.distinct())
            )
            .join(orders, orders.c.id == order_allocations.c.order_id)
            .where(orders.c.placed_at >= start, orders.c.status != OrderStatus.CANCELLED.value)
            .group_by(order_allocations.c.location_id)
        )
        async with self._statements.connect() as connection:
            rows = await connection.execute(query)
            return {location: count for location, count in rows}  # noqa: C416

    @retried_on_disconnect
    async def attributed_sales(
        self, store_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[int, Decimal, str | None]]:
        """Per store: the orders credited to it placed in [start, end) and not cancelled —
        how many, and their total after promotions less what was refunded for returns."""
        refunded = (
            select(
                order_lines.c.order_id.label("order_id"),
                func.sum(order_lines.c.refunded).label("refunded"),
            )
            .group_by(order_lines.c.order_id)
            .subquery()
        )
        query = (
            select(
                orders.c.attributed_store_id,
                orders.c.currency,
                orders.c.id,
                orders.c.total,
                refunded.c.refunded,
            )
            .join(refunded, refunded.c.order_id == orders.c.id)
            .where(
                orders.c.attributed_store_id.in_(store_ids),
                orders.c.placed_at >= start,
                orders.c.placed_at < end,
                orders.c.status != OrderStatus.CANCELLED.value,
            )
        )
        totals: dict[str, tuple[int, Decimal, str | None]] = {
            store: (0, Decimal(0), None) for store in store_ids
        }
        async with self._statements.connect() as connection:
            for row in await connection.execute(query):
                count, amount, _ = totals[row.attributed_store_id]
                total = Decimal(str(row.total)) - Decimal(str(row.refunded or 0))
                totals[row.attributed_store_id] = (count + 1, amount + total, row.currency)
        return totals


def _money(value: Decimal, currency: str) -> Money:
    """An amount as stored (PostgreSQL keeps four places) back on the currency's minor unit."""
    unit = Money(value, currency).minor_unit
    return Money(Decimal(value).quantize(unit), currency)


def _line(row: Row[Any], currency: str) -> OrderLine:
    def money(value: Decimal) -> Money:
        return _money(value, currency)

    return OrderLine(
        sku=row.sku,
        quantity=row.quantity,
        unit_price=money(row.unit_price),
        subtotal=money(row.subtotal),
        line_total=money(row.line_total),
        points_earned=row.points_earned,
        returned_quantity=row.returned_quantity,
        refunded=money(row.refunded),
        points_reversed=row.points_reversed,
    )


def _order(
    head: Row[Any], lines: Iterable[OrderLine], allocations: Iterable[OrderAllocation]
) -> Order:
    currency = head.currency

    def money(value: Decimal) -> Money:
        return _money(value, currency)

    destination = head.destination
    return Order(
        id=head.id,
        channel=head.channel,
        customer_id=head.customer_id,
        fulfillment=head.fulfillment,
        store_id=head.store_id,
        attributed_store_id=head.attributed_store_id,
        destination=None
        if destination is None
        else Destination(destination["lat"], destination["lon"], destination.get("postal_code")),
        status=OrderStatus(head.status),
        subtotal=money(head.subtotal),
        discount_total=money(head.discount_total),
        total=money(head.total),
        points_redeemed=head.points_redeemed,
        points_value=money(head.points_value),
        amount_due=money(head.amount_due),
        points_earned=head.points_earned,
        coupon_codes=tuple(head.coupon_codes),
        promotions=tuple(
            OrderPromotion(p["id"], p["title"], p["explanation"], money(Decimal(p["discount"])))
            for p in head.promotions
        ),
        oms_order_number=head.oms_order_number,
        shipped_at=head.shipped_at,
        placed_at=head.placed_at,
        updated_at=head.updated_at,
        lines=tuple(lines),
        allocations=tuple(allocations),
    )


# --------------------------------------------------------------------------- idempotency


class ClaimState(enum.Enum):
    NEW = "NEW"  # ours to carry out, under ``order_id``
    DONE = "DONE"  # carried out before: ``order_id`` is the order
    IN_PROGRESS = "IN_PROGRESS"  # another request is carrying it out right now
    REUSED = "REUSED"  # the key was used for a different request


@dataclass(frozen=True, slots=True)
class Claim:
    """``owner``: the claimant's token on a ``NEW`` claim, for ``renew``, ``complete`` and
    ``forget``: whoever takes the key over later holds another. ``positions``: the ledger's
    positions of the SKUs the claim was asked to read with it, when it could (a new key, on
    PostgreSQL), as ``InventoryLedger.positions`` gives them; None otherwise."""

    state: ClaimState
    order_id: str | None = None
    owner: str | None = field(default=None, compare=False)
    positions: dict[str, list[Position]] | None = field(default=None, compare=False)


class KeyTakenOver(Exception):
    """The key's lease ran out and another request took it over: this one must not complete."""


_same_key = (idempotency_keys.c.channel == bindparam("key_channel")) & (
    idempotency_keys.c.key == bindparam("key_key")
)
_owned = idempotency_keys.c.owner == bindparam("key_owner")
_INSERT_KEY = insert(idempotency_keys)
_COMPLETE_KEY = update(idempotency_keys).where(_same_key).values(state="DONE")
_COMPLETE_OWNED_KEY = _COMPLETE_KEY.where(_owned)
_RENEW_KEY = (
    update(idempotency_keys)
    .where(_same_key, _owned, idempotency_keys.c.state == "IN_PROGRESS")
    .values(locked_until=bindparam("key_until", type_=UtcDateTime()))
)
_FORGET_KEY = delete(idempotency_keys).where(_same_key, _owned, idempotency_keys.c.state != "DONE")
LEASE = timedelta(seconds=3)
# On PostgreSQL a new key and the positions of the order's SKUs in one statement: the claim
# commits at once as before, and the order is sourced on positions read in the same round trip.
_CLAIM_AND_READ_ON_POSTGRESQL = DriverStatement.of(
    text(
        """
WITH claimed AS (
    INSERT INTO idempotency_keys
        (channel, key, request_hash, order_id, state, owner, locked_until, created_at)
    VALUES (:channel, :key, :request_hash, :order_id, :state, :owner, :locked_until, :created_at)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM claimed) AS claimed, position.sku, position.location_id,
    position.on_hand, position.reserved, position.safety_stock
FROM (SELECT) AS once
LEFT JOIN inventory_positions AS position ON position.sku = ANY(CAST(:skus AS VARCHAR[]))
ORDER BY position.sku, position.location_id
"""
    ).bindparams(
        bindparam("locked_until", type_=UtcDateTime()),
        bindparam("created_at", type_=UtcDateTime()),
    )
)


class IdempotencyKeys:
    """Idempotency-Key semantics for order placement, per channel.

    ``claim`` records the key with a hash of the request, the order id it will create and a
    token of its own (the owner), under a short lease that the placement ``renew``s while it
    runs. The same key and request later gets the order (``DONE``), or ``IN_PROGRESS`` while
    the first request is still running; a different request under the key gets ``REUSED``. A
    request that dies stops renewing: within one lease the next request with that key takes
    it over, under the same order id (whatever the first did remotely was keyed by that id, so
    is not done twice) and a new owner. The first, should it be alive after all (stalled longer
    than a lease), can then neither complete nor forget the key: its order's transaction rolls
    back (``KeyTakenOver``), so a placement never runs twice to the end. A request that fails
    without an order ``forget``s the key.

    Every statement here is safe to run again after a lost connection (the owner token tells a
    claim of our own that committed unseen from another's), and is retried once."""

    def __init__(self, engine: AsyncEngine, lease: timedelta = LEASE) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._engine = engine
        self._statements = autocommit(engine)
        self.lease = lease

    async def claim(
        self,
        channel: str,
        key: str,
        request_hash: str,
        order_id: str,
        now: datetime,
        positions_of: Sequence[str] = (),
    ) -> Claim:
        """A new key is recorded by a single INSERT, committed at once so that a concurrent
        request with the same key finds it. On PostgreSQL the positions of ``positions_of``
        (the order's SKUs) are read by that same statement and come with a new claim."""
        owner = secrets.token_hex(8)
        row = {
            "channel": channel,
            "key": key,
            "request_hash": request_hash,
            "order_id": order_id,
            "state": "IN_PROGRESS",
            "owner": owner,
            "locked_until": now + self.lease,
            "created_at": now,
        }

        async def insert_key() -> None:
            async with self._statements.begin() as connection:
                await connection.execute(_INSERT_KEY, row)

        async def insert_key_and_read() -> dict[str, list[Position]] | None:
            async with self._statements.connect() as connection:
                parameters = {**row, "skus": sorted(set(positions_of))}
                rows = await fetch_on_driver(connection, _CLAIM_AND_READ_ON_POSTGRESQL, parameters)
            if not rows[0]["claimed"]:
                return None
            found: dict[str, list[Position]] = {}
            for _, *position in rows:
                if position[0] is not None:
                    found.setdefault(position[0], []).append(Position._make(position))
            return found

        if positions_of and self._engine.dialect.name == "postgresql":
            # A claim of our own that committed unseen is found by its owner token below.
            positions = await retry_on_disconnect(insert_key_and_read)
            if positions is not None:
                return Claim(ClaimState.NEW, order_id, owner, positions)
        else:
            try:
                await retry_on_disconnect(insert_key)
                return Claim(ClaimState.NEW, order_id, owner)
            except IntegrityError:
                pass
        return await retry_on_disconnect(
            lambda: self._claim_existing(channel, key, request_hash, owner, now)
        )

    async def _claim_existing(
        self, channel: str, key: str, request_hash: str, owner: str, now: datetime
    ) -> Claim:
        table = idempotency_keys
        same = (table.c.channel == channel) & (table.c.key == key)
        async with self._engine.begin() as connection:
            found = (await connection.execute(select(table).where(same))).one_or_none()
            if found is None:  # forgotten meanwhile: try again from the start
                return Claim(ClaimState.IN_PROGRESS)
            if found.request_hash != request_hash:
                return Claim(ClaimState.REUSED)
            if found.state == "DONE":
                return Claim(ClaimState.DONE, found.order_id)
            if found.owner == owner:  # ours, committed before the connection was lost
                return Claim(ClaimState.NEW, found.order_id, owner)
            if found.locked_until > now:
                return Claim(ClaimState.IN_PROGRESS, found.order_id)
            taken = await connection.execute(
                update(table)
                .where(same, table.c.locked_until == found.locked_until)
                .values(locked_until=now + self.lease, owner=owner)
            )
        if taken.rowcount == 1:
            return Claim(ClaimState.NEW, found.order_id, owner)
        return Claim(ClaimState.IN_PROGRESS, found.order_id)

    @retried_on_disconnect
    async def renew(self, channel: str, key: str, owner: str, now: datetime) -> bool:
        """Move the lease of a key this ``owner`` still holds a lease ahead of ``now``; False
        when it holds it no more (taken over, or done)."""
        values = {"key_channel": channel, "key_key": key, "key_owner": owner}
        async with self._statements.begin() as connection:
            result = await connection.execute(_RENEW_KEY, {**values, "key_until": now + self.lease})
        return result.rowcount == 1

    @staticmethod
    async def complete(
        connection: AsyncConnection, channel: str, key: str, owner: str | None = None
    ) -> None:
        """Mark the key done, in the order's transaction; with ``owner``, only while that owner
        holds it (raises ``KeyTakenOver`` otherwise, for the transaction to roll back)."""
        values = {"key_channel": channel, "key_key": key}
        if owner is None:
            await connection.execute(_COMPLETE_KEY, values)
            return
        result = await connection.execute(_COMPLETE_OWNED_KEY, {**values, "key_owner": owner})
        if result.rowcount != 1:
            raise KeyTakenOver(f"{channel}/{key} was taken over")

    @retried_on_disconnect
    async def forget(self, channel: str, key: str, owner: str) -> None:
        """Free a key whose request ended without an order, so it may be sent again (only while
        ``owner`` holds it: a key taken over is the new owner's)."""
        values = {"key_channel": channel, "key_key": key, "key_owner": owner}
        async with self._statements.begin() as connection:
            await connection.execute(_FORGET_KEY, values)
