"""The inventory ledger: the gateway's own stock positions per (location, SKU).

On hand comes from the ERP (an initial load, then its change feed); ``reserved`` is the
gateway's own (units held by open orders); safety stock is per location. Every channel reads and
reserves through this one table, so a sale on one shows at once on every other, and a
conditional update per position makes sure no two orders take the same last unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import bindparam, case, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import BackendError, InventoryPort, Location, LocationKind, StockLevel
from gateway.availability import available_to_promise
from gateway.db import (
    UtcDateTime,
    autocommit,
    inventory_positions,
    move_state,
    read_state,
    retried_on_disconnect,
    upsert_into,
)

log = logging.getLogger(__name__)

CURSOR = "erp_cursor"
"""The ``ledger_state`` entry holding the ERP change feed's cursor."""

LOCATIONS_REFRESH = 60.0  # seconds between reads of the ERP's locations while syncing
SKUS_PER_QUERY = 500  # keeps the IN list well inside every driver's parameter limit
STORE_SAFETY_STOCK = 1
DISTRIBUTION_CENTRE_SAFETY_STOCK = 0

SafetyStockPolicy = Callable[[Location], int] | Mapping[str, int]
"""Units kept back per location: a function of the location, or fixed numbers by location id
(locations not listed keep none)."""

_positions = inventory_positions
_position_columns = (
    _positions.c.sku,
    _positions.c.location_id,
    _positions.c.on_hand,
    _positions.c.reserved,
    _positions.c.safety_stock,
)

# Built once: a statement object reused keeps its compiled form in SQLAlchemy's cache without
# being rebuilt and re-keyed for every order.
_HOLD = (
    update(_positions)
    .where(
        _positions.c.location_id == bindparam("hold_location_id"),
        _positions.c.sku == bindparam("hold_sku"),
        _positions.c.on_hand - _positions.c.reserved - _positions.c.safety_stock
        >= bindparam("hold_quantity"),
    )
    .values(
        reserved=_positions.c.reserved + bindparam("hold_quantity"),
        updated_at=bindparam("hold_at", type_=UtcDateTime()),
    )
)
# On PostgreSQL every hold of an order is one statement. The CTE locks the positions in
# (location, SKU) order, the one lock order (locking follows the sort), and the UPDATE only
# touches rows it has locked, so concurrent orders still never deadlock. Each hold's condition
# is checked against the newest committed row, as a single-row UPDATE's is.
_HOLD_ALL_ON_POSTGRESQL = text(
    """
WITH wanted AS (
    SELECT * FROM unnest(
        CAST(:locations AS VARCHAR[]), CAST(:skus AS VARCHAR[]), CAST(:quantities AS INTEGER[])
    ) AS wanted (location_id, sku, quantity)
), locked AS MATERIALIZED (
    SELECT position.location_id, position.sku, wanted.quantity
    FROM inventory_positions AS position
    JOIN wanted ON wanted.location_id = position.location_id AND wanted.sku = position.sku
    ORDER BY position.location_id, position.sku
    FOR UPDATE OF position
)
UPDATE inventory_positions AS position
SET reserved = position.reserved + locked.quantity, updated_at = :at
FROM locked
WHERE position.location_id = locked.location_id AND position.sku = locked.sku
    AND position.on_hand - position.reserved - position.safety_stock >= locked.quantity
RETURNING position.location_id, position.sku
"""
).bindparams(bindparam("at", type_=UtcDateTime()))
_POSITIONS = (
    select(*_position_columns)
    .where(_positions.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(_positions.c.sku, _positions.c.location_id)
)


class Position(NamedTuple):
    """What one location holds of one SKU, as the ledger sees it. A named tuple: a listing
    reads thousands at a time, and a tuple is made several times faster than a frozen class."""

    sku: str
    location_id: str
    on_hand: int
    reserved: int
    safety_stock: int

    @property
    def available(self) -> int:
        """Units that may still be promised: never below zero, even when the ERP reports less
        on hand than the orders already hold."""
        return available_to_promise(self.on_hand, self.reserved, self.safety_stock)


@dataclass(frozen=True, slots=True)
class Reservation:
    """``quantity`` units of ``sku`` to hold (or release) at ``location_id``."""

    location_id: str
    sku: str
    quantity: int

    def __post_init__(self) -> None:
        if self.quantity < 1:
            raise ValueError(f"quantity must be at least 1, not {self.quantity}")


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A reservation the position could not cover: ``available`` is what it could have had."""

    location_id: str
    sku: str
    requested: int
    available: int


def default_safety_stock(location: Location) -> int:
    """One unit at a store, none at a distribution centre: a store's last unit is often the one
    on display, soiled or damaged, or already in a customer's basket on the shop floor, so
    promising it online disappoints; a distribution centre's stock is counted and boxed."""
    if location.kind is LocationKind.STORE:
        return STORE_SAFETY_STOCK
    return DISTRIBUTION_CENTRE_SAFETY_STOCK


class InventoryLedger:
    """Reads, reserves and synchronises inventory positions in the gateway's database.

    ``safety_stock`` says how many units each location keeps back; ``clock`` stamps
    ``updated_at`` (UTC-aware). The ERP's locations, which the safety stock depends on, are
    read again at most every ``locations_refresh`` seconds while syncing, and at once when the
    stock feed names a location not seen yet."""

    def __init__(
        self,
        engine: AsyncEngine,
        safety_stock: SafetyStockPolicy = default_safety_stock,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        locations_refresh: float = LOCATIONS_REFRESH,
    ) -> None:
        self._engine = engine
        self._statements = autocommit(engine)
        self._policy = safety_stock
        self._clock = clock
        self._safety_applied: dict[str, int] | None = None
        self._locations_refresh = locations_refresh
        self._safety: dict[str, int] | None = None
        self._safety_read_at = -math.inf

    @retried_on_disconnect
    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]:
        """Every location's position for each SKU, locations in id order. SKUs without any
        position are absent. One query per ``SKUS_PER_QUERY`` distinct SKUs."""
        if not skus:
            return {}
        async with self._statements.connect() as connection:
            return await self.positions_in(connection, skus)

    async def positions_in(
        self, connection: AsyncConnection, skus: Sequence[str]
    ) -> dict[str, list[Position]]:
        """``positions``, read in the caller's transaction (an order's, before it reserves)."""
        keys = sorted(set(skus))
        found: dict[str, list[Position]] = {}
        for start in range(0, len(keys), SKUS_PER_QUERY):
            chunk = {"skus": keys[start : start + SKUS_PER_QUERY]}
            rows = await connection.execute(_POSITIONS, chunk)
            for position in map(Position._make, rows):
                found.setdefault(position.sku, []).append(position)
        return found

    async def reserve(
        self, connection: AsyncConnection, items: Sequence[Reservation]
    ) -> list[Shortfall]:
        """Hold every item's units, in the caller's (the order's) transaction, as far as each
        position's available-to-promise allows. Returns the items that could not be held (no
        position means nothing available); the caller rolls back when there are any, since the
        items that could be held stay held in its transaction.

        Items for the same position are added up, and positions are taken in (location, SKU)
        order: every writer locks rows in that one order, so concurrent orders never deadlock.
        Holds are conditional UPDATEs, all of an order's in one statement on PostgreSQL, where
        a concurrent order waits for the row and then re-checks the condition against the
        committed value; on SQLite writers queue for the database, and each hold is a
        statement. Either way no unit is promised twice."""
        merged = in_lock_order(items)
        if connection.dialect.name == "postgresql":
            held = await self._hold_all(connection, merged)
        else:
            held = await self._hold_each(connection, merged)
        return [
            Shortfall(location_id, sku, quantity, await _available(connection, location_id, sku))
            for (location_id, sku), quantity in merged
            if (location_id, sku) not in held
        ]

    async def _hold_all(
        self, connection: AsyncConnection, merged: Sequence[tuple[tuple[str, str], int]]
    ) -> set[tuple[str, str]]:
        holds = {
            "locations": [location_id for (location_id, _), _ in merged],
            "skus": [sku for (_, sku), _ in merged],
            "quantities": [quantity for _, quantity in merged],
            "at": self._clock(),
        }
        rows = await connection.execute(_HOLD_ALL_ON_POSTGRESQL, holds)
        return {(location_id, sku) for location_id, sku in rows}

    async def _hold_each(
        self, connection: AsyncConnection, merged: Sequence[tuple[tuple[str, str], int]]
    ) -> set[tuple[str, str]]:
        now = self._clock()
        held: set[tuple[str, str]] = set()
        for (location_id, sku), quantity in merged:
            hold = {
                "hold_location_id": location_id,
                "hold_sku": sku,
                "hold_quantity": quantity,
                "hold_at": now,
            }
            if (await connection.execute(_HOLD, hold)).rowcount == 1:
                held.add((location_id, sku))
        return held

    async def release(self, connection: AsyncConnection, items: Sequence[Reservation]) -> None:
        """Give back held units (an order cancelled, or lines returned), in the caller's
        transaction and the same (location, SKU) order as ``reserve``. ``reserved`` never drops
        below zero; positions that do not exist are left alone."""
        await self._give_back(connection, items, None)

    async def consume(
        self, connection: AsyncConnection, items: Sequence[Reservation], booked_at: datetime
    ) -> list[Reservation]:
        """Give back the held units of a shipment whose goods issue the ERP booked at
        ``booked_at``, but only at positions whose on hand already shows it: those the ERP's
        feed has updated at or after that time (``erp_updated_at``). Until then the units
        count as on hand *and* reserved, so available-to-promise stays down; releasing them
        earlier would promise units that have left. The check and the release are one
        conditional UPDATE per position, in the caller's transaction and the lock order of
        ``reserve``, so a feed page applied concurrently is either seen or waited for.

        Returns the items (merged per position) still waiting for the ERP; a position that does
        not exist holds nothing and is not waited for."""
        waiting = await self._give_back(connection, items, booked_at)
        return [
            Reservation(location_id, sku, quantity)
            for (location_id, sku), quantity in waiting
            if await _exists(connection, location_id, sku)
        ]

    async def _give_back(
        self,
        connection: AsyncConnection,
        items: Sequence[Reservation],
        booked_at: datetime | None,
    ) -> list[tuple[tuple[str, str], int]]:
        """Lower ``reserved`` by each item (``booked_at``: only where the ERP's level is as of
        then or later); the merged items whose position was not updated."""
        now = self._clock()
        missed = []
        for (location_id, sku), quantity in in_lock_order(items):
            remaining = case(
                (_positions.c.reserved > quantity, _positions.c.reserved - quantity), else_=0
            )
            statement = (
                update(_positions)
                .where(_positions.c.location_id == location_id, _positions.c.sku == sku)
                .values(reserved=remaining, updated_at=now)
            )
            if booked_at is not None:
                statement = statement.where(_positions.c.erp_updated_at >= booked_at)
            if (await connection.execute(statement)).rowcount != 1:
                missed.append(((location_id, sku), quantity))
        return missed

    async def restock(
        self, connection: AsyncConnection, location_id: str, sku: str, quantity: int
    ) -> None:
        """Add ``quantity`` units on hand at once, e.g. a return received at a store, in the
        caller's transaction; the position is created when missing, with the safety stock its
        location's other positions carry.

        This only bridges the time until the ERP books the same return: the next change the
        ERP reports for this position replaces ``on_hand`` with the ERP's own count."""
        if quantity < 1:
            raise ValueError(f"quantity must be at least 1, not {quantity}")
        same_location = _positions.c.location_id == location_id
        location_safety = select(func.max(_positions.c.safety_stock)).where(same_location)
        statement = _insert(connection).values(
            location_id=location_id,
            sku=sku,
            on_hand=quantity,
            safety_stock=func.coalesce(location_safety.scalar_subquery(), 0),
            updated_at=self._clock(),
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_positions.c.location_id, _positions.c.sku],
            set_={
                "on_hand": _positions.c.on_hand + statement.excluded.on_hand,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await connection.execute(statement)

    async def load_from(
        self, erp: InventoryPort, page: int = 10_000, applied_levels: list[StockLevel] | None = None
    ) -> int:
        """Apply the ERP's stock changes since the stored cursor (all of its stock the first
        time), ``page`` rows per transaction, until a page comes back short. Returns the number
        of rows applied by this call, and adds them to ``applied_levels`` when given.

        On hand, the ERP's timestamp and the location's safety stock are written; ``reserved``
        is never touched. Each page moves the stored cursor in the same transaction as its rows,
        so a crash never loses or half-applies a page.

        Several gateway processes may run this at once. Each page's transaction first moves the
        cursor from the value this call read to the page's end (compare and set): if another
        process moved it first, the page is skipped and reading resumes from the cursor stored
        now. On PostgreSQL the first writer holds the cursor's row until it commits, so the
        others wait and then see the new value; on SQLite writers queue for the database. The
        cursor therefore only ever moves forward along the feed, and each page is applied once,
        in feed order. Rows are written in (location, SKU) order, the lock order of
        ``reserve``."""
        if page < 1:
            raise ValueError("page must be at least 1")
        safety = await self._known_safety(erp)
        await self._apply_safety_stock(safety)
        read_again = False
        applied = 0
        cursor = await self._stored_cursor()
        while True:
            changes = await erp.stock_changes(cursor, page)
            if not read_again and any(c.location_id not in safety for c in changes.levels):
                read_again = True  # a new location, perhaps: its safety stock, before its rows
                safety = await self._known_safety(erp, again=True)
                await self._apply_safety_stock(safety)
            if changes.levels:
                if await self._apply_page(cursor, changes.cursor, changes.levels, safety):
                    applied += len(changes.levels)
                    if applied_levels is not None:
                        applied_levels.extend(changes.levels)
                    cursor = changes.cursor
                else:
                    cursor = await self._stored_cursor()
            if len(changes.levels) < page:
                return applied

    async def sync_forever(
        self, erp: InventoryPort, interval: float, stop: asyncio.Event | None = None
    ) -> None:
        """``load_from`` now and then every ``interval`` seconds until ``stop`` is set (or the
        task is cancelled): for the app's lifespan to run as a task. A failing ERP or an
        unreachable gateway database is logged and tried again at the next interval; the
        positions keep their last known values meanwhile. Safe to run in every gateway process
        at once (see ``load_from``)."""
        if stop is None:
            stop = asyncio.Event()  # never set: runs until cancelled
        while not stop.is_set():
            try:
                applied = await self.load_from(erp)
            except BackendError as exc:
                log.warning("inventory sync: the ERP failed, trying again later: %s", exc)
            except (OperationalError, InterfaceError, OSError) as exc:
                log.warning("inventory sync: the database failed, trying again later: %s", exc)
            else:
                log.debug("inventory sync: %d stock rows applied", applied)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _known_safety(self, erp: InventoryPort, *, again: bool = False) -> dict[str, int]:
        """The safety stock per location, read from the ERP's locations when ``again`` or when
        the last read is older than the refresh interval (the store master changes seldom; the
        stock feed every few seconds)."""
        now = time.monotonic()
        if again or self._safety is None or now - self._safety_read_at >= self._locations_refresh:
            self._safety = await self._safety_by_location(erp)
            self._safety_read_at = now
        return self._safety

    async def _safety_by_location(self, erp: InventoryPort) -> dict[str, int]:
        policy = self._policy
        locations = await erp.locations()
        if isinstance(policy, Mapping):
            safety = {location.id: policy.get(location.id, 0) for location in locations}
        else:
            safety = {location.id: policy(location) for location in locations}
        negative = sorted(location_id for location_id, units in safety.items() if units < 0)
        if negative:
            raise ValueError(f"negative safety stock for locations {negative}")
        return safety

    async def _apply_safety_stock(self, safety: Mapping[str, int]) -> None:
        """Bring positions the feed has not touched lately in line with the policy (it may have
        changed since they were written): once per process, and again whenever it changes.
        Rows are locked in SKU order within each location, the lock order of ``reserve``."""
        if safety == self._safety_applied:
            return
        now = self._clock()
        async with self._engine.begin() as connection:
            for location_id, units in sorted(safety.items()):
                stale = (
                    select(_positions.c.location_id, _positions.c.sku)
                    .where(_positions.c.location_id == location_id)
                    .where(_positions.c.safety_stock != units)
                    .order_by(_positions.c.sku)
                    .with_for_update()
                )
                keys = tuple_(_positions.c.location_id, _positions.c.sku)
                statement = (
                    update(_positions)
                    .where(keys.in_(stale))
                    .values(safety_stock=units, updated_at=now)
                )
                await connection.execute(statement)
        self._safety_applied = dict(safety)

    async def _stored_cursor(self) -> str | None:
        return await read_state(self._statements, CURSOR)

    async def _apply_page(
        self,
        since: str | None,
        cursor: str,
        levels: Iterable[StockLevel],
        safety: Mapping[str, int],
    ) -> bool:
        """Write one page of the feed if the stored cursor is still ``since``; False if another
        process has moved it meanwhile (nothing is written then)."""
        async with self._engine.begin() as connection:
            if not await move_state(connection, CURSOR, since, cursor):
                return False
            records = _records(levels, safety, self._clock())
            statement = _insert(connection)
            statement = statement.on_conflict_do_update(
                index_elements=[_positions.c.location_id, _positions.c.sku],
                set_={
                    name: statement.excluded[name]
                    for name in ("on_hand", "safety_stock", "erp_updated_at", "updated_at")
                },
            )
            await connection.execute(statement, records)
        return True


def in_lock_order(items: Iterable[Reservation]) -> list[tuple[tuple[str, str], int]]:
    """Quantities added up per (location, SKU), in that order: the one lock order."""
    merged: dict[tuple[str, str], int] = {}
    for item in items:
        key = (item.location_id, item.sku)
        merged[key] = merged.get(key, 0) + item.quantity
    return sorted(merged.items())


async def _exists(connection: AsyncConnection, location_id: str, sku: str) -> bool:
    query = select(_positions.c.sku).where(
        _positions.c.location_id == location_id, _positions.c.sku == sku
    )
    return (await connection.execute(query)).first() is not None


async def _available(connection: AsyncConnection, location_id: str, sku: str) -> int:
    query = select(_positions.c.on_hand, _positions.c.reserved, _positions.c.safety_stock).where(
        _positions.c.location_id == location_id, _positions.c.sku == sku
    )
    row = (await connection.execute(query)).one_or_none()
    return 0 if row is None else available_to_promise(*row)


def _records(
    levels: Iterable[StockLevel], safety: Mapping[str, int], now: datetime
) -> list[dict[str, object]]:
    """One row per position (the latest level wins), sorted into the lock order. A location
    the ERP no longer lists as active keeps no safety stock: it is not sold from anyway."""
    latest = {(level.location_id, level.sku): level for level in levels}
    return [
        {
            "location_id": location_id,
            "sku": sku,
            "on_hand": level.on_hand,
            "safety_stock": safety.get(location_id, 0),
            "erp_updated_at": level.updated_at,
            "updated_at": now,
        }
        for (location_id, sku), level in sorted(latest.items())
    ]


def _insert(connection: AsyncConnection) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into the positions that can take ON CONFLICT, in the connection's dialect."""
    return upsert_into(connection.dialect, inventory_positions)
