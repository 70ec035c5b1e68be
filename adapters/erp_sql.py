"""Inventory and store master data read straight from the ERP's legacy SQL tables.

The ERP's tables (``STORES``, ``STOCK_LEVELS``) pad codes to ``CHAR`` widths, keep quantities as
``NUMERIC`` (negative ones included), stamp rows with Berlin wall-clock time and encode store
capabilities and opening hours as legacy text. ``SqlErpInventory`` turns them into the
``InventoryPort`` types and works the same on PostgreSQL (asyncpg) and SQLite (aiosqlite).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CHAR,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    select,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool, StaticPool
from sqlalchemy.sql import Executable

from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    GeoPoint,
    Location,
    LocationKind,
    OpeningHours,
    StockChanges,
    StockLevel,
)

BACKEND: Final = "erp"
ERP_TIME_ZONE: Final = ZoneInfo("Europe/Berlin")
STORE_WIDTH: Final = 8
ITEM_WIDTH: Final = 18

CAPABILITIES: Final[Mapping[str, str]] = {
    "CO": "CARRY_OUT",
    "BOPIS": "PICKUP",
    "SFS": "SHIP_FROM_STORE",
    "DLV": "DELIVERY",
    "SHP": "SHIP",
}
"""The ERP's capability codes and the gateway's names for them. Unknown codes are ignored."""

KINDS: Final[Mapping[str, LocationKind]] = {
    "STORE": LocationKind.STORE,
    "DC": LocationKind.DISTRIBUTION_CENTER,
}
WEEKDAYS: Final[Mapping[str, int]] = {
    day: number for number, day in enumerate(("MO", "TU", "WE", "TH", "FR", "SA", "SU"), 1)
}
_POSTGRES_QUERY_CANCELED: Final = "57014"  # statement_timeout fired

# Only the columns read here; the ERP owns the schema. asdecimal=False because SQLite has no
# decimal type and every quantity is floored to whole units anyway.
_metadata = MetaData()
_stores = Table(
    "STORES",
    _metadata,
    Column("STORE_NO", CHAR(STORE_WIDTH)),
    Column("STORE_NAME", String),
    Column("STORE_TYPE", CHAR(5)),
    Column("LAT", Numeric(asdecimal=False)),
    Column("LON", Numeric(asdecimal=False)),
    Column("ZIP", CHAR(5)),
    Column("CAPAB", String),
    Column("DAILY_CAP", Integer),
    Column("OPEN_HRS", String),
    Column("ACTIVE", CHAR(1)),
)
_stock = Table(
    "STOCK_LEVELS",
    _metadata,
    Column("STORE_NO", CHAR(STORE_WIDTH)),
    Column("ITEM_NO", CHAR(ITEM_WIDTH)),
    Column("QTY_ON_HAND", Numeric(asdecimal=False)),
    Column("LAST_UPD", DateTime(timezone=False)),
)
_stock_columns = (_stock.c.ITEM_NO, _stock.c.STORE_NO, _stock.c.QTY_ON_HAND, _stock.c.LAST_UPD)
_location_columns = tuple(_stores.c[name] for name in (
    "STORE_NO", "STORE_NAME", "STORE_TYPE", "LAT", "LON", "ZIP", "CAPAB", "DAILY_CAP", "OPEN_HRS",
))  # fmt: skip
_change_order = (_stock.c.LAST_UPD, _stock.c.STORE_NO, _stock.c.ITEM_NO)


class SqlErpInventory:
    """``InventoryPort`` over the ERP's SQL tables, on PostgreSQL or SQLite.

    Every call finishes within ``timeout`` seconds or raises ``BackendTimedOut``; a database
    that cannot be reached raises ``BackendUnavailable``; SQL the database refuses raises
    ``BackendRejected`` (code ``SQL_ERROR``). SKU lookups are split into chunks of
    ``chunk_size`` keys, run concurrently on at most as many connections as the pool holds.
    The adapter owns ``engine``: ``aclose()`` disposes of it.
    """

    def __init__(
        self, engine: AsyncEngine, *, chunk_size: int = 1000, timeout: float = 5.0
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self._engine = engine
        self._chunk_size = chunk_size
        self._timeout = timeout
        self._connections = asyncio.Semaphore(_pool_capacity(engine))

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> SqlErpInventory:
        """An adapter with its own engine for ``url`` (``postgresql+asyncpg://...`` or
        ``sqlite+aiosqlite:///path``), connections checked before use and bounded in time."""
        return cls(_create_engine(url, pool_size, timeout), timeout=timeout)

    async def stock_levels(self, skus: Sequence[str]) -> Mapping[str, Sequence[StockLevel]]:
        """On-hand per location for each SKU, locations in id order; negative quantities read
        as 0 and fractions are floored. SKUs without any row are absent."""
        keys = sorted({_pad(sku, ITEM_WIDTH) for sku in skus if 0 < len(sku) <= ITEM_WIDTH})
        chunks = [
            keys[start : start + self._chunk_size]
            for start in range(0, len(keys), self._chunk_size)
        ]
        with _mapped_errors():
            async with asyncio.timeout(self._timeout):
                results = await asyncio.gather(
                    *(self._rows(_levels_query(chunk)) for chunk in chunks)
                )
        found: dict[str, list[StockLevel]] = {}
        for rows in results:
            for row in rows:
                level = _stock_level(row)
                found.setdefault(level.sku, []).append(level)
        return found

    async def locations(self) -> Sequence[Location]:
        """Every active store and distribution centre, ordered by id."""
        query = select(*_location_columns).where(_stores.c.ACTIVE == "Y")
        with _mapped_errors():
            async with asyncio.timeout(self._timeout):
                rows = await self._rows(query)
        return sorted((_location(row) for row in rows), key=lambda location: location.id)

    async def stock_changes(self, since: str | None, limit: int = 10_000) -> StockChanges:
        """Stock rows stamped after the position ``since`` (None or "": from the start), in
        (LAST_UPD, store, item) order, at most ``limit``. The cursor returned is the position of
        the last row, or ``since`` itself when nothing changed.

        The feed is only as good as LAST_UPD: a row whose transaction commits after a row
        stamped later has been read is skipped, and in the hour repeated when clocks go back the
        ERP's wall-clock stamps run backwards (read as the first of the two hours)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        position = _decode_cursor(since) if since else None
        query = select(*_stock_columns).order_by(*_change_order).limit(limit)
        if position is not None:
            query = query.where(tuple_(*_change_order) > position)
        with _mapped_errors():
            async with asyncio.timeout(self._timeout):
                rows = await self._rows(query)
        if not rows:
            return StockChanges((), since or "")
        item, store, _, last_update = rows[-1]
        cursor = _encode_cursor(last_update, store, item)
        return StockChanges(tuple(_stock_level(row) for row in rows), cursor)

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def _rows(self, query: Executable) -> Sequence[Sequence[Any]]:
        async with self._connections:
            connection = await _connect(self._engine)
            try:
                result = await connection.execute(query)
                return result.all()
            finally:
                await connection.close()


# --------------------------------------------------------------------------- engine, errors


def _create_engine(url: str, pool_size: int, timeout: float) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # aiosqlite's timeout is SQLite's busy timeout: how long to wait for a writer's lock.
        if parsed.database in (None, "", ":memory:"):
            return create_async_engine(
                parsed, poolclass=StaticPool, connect_args={"timeout": timeout}
            )
        return create_async_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout,
            # A local file cannot drop a connection the way a network peer can: no ping.
            connect_args={"timeout": timeout},
        )
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        pool_pre_ping=True,
        connect_args={
            "timeout": timeout,
            "server_settings": {"statement_timeout": str(int(timeout * 1000))},
        },
    )


def _pool_capacity(engine: AsyncEngine) -> int:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        return max(1, pool.size())
    if isinstance(pool, StaticPool):
        return 1
    return 4


async def _connect(engine: AsyncEngine) -> AsyncConnection:
    """A connection, every failure to get one being the database's unavailability."""
    try:
        return await engine.connect()
    except PoolTimeoutError as exc:
        raise BackendTimedOut(BACKEND, f"no free connection: {exc}") from exc
    except (SQLAlchemyError, OSError) as exc:
        raise BackendUnavailable(BACKEND, f"cannot connect: {_reason(exc)}") from exc


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise BackendTimedOut(BACKEND, "no answer within the timeout") from exc
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _POSTGRES_QUERY_CANCELED:
            raise BackendTimedOut(BACKEND, _reason(exc)) from exc
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            raise BackendUnavailable(BACKEND, _reason(exc)) from exc
        raise BackendRejected(BACKEND, _reason(exc), code="SQL_ERROR") from exc
    except OSError as exc:
        raise BackendUnavailable(BACKEND, str(exc)) from exc
    except SQLAlchemyError as exc:
        raise BackendRejected(BACKEND, _reason(exc), code="SQL_ERROR") from exc


def _reason(exc: BaseException) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) else None
    return f"{type(original or exc).__name__}: {original or exc}".strip()


# --------------------------------------------------------------------------- rows


def _pad(code: str, width: int) -> str:
    # CHAR columns hold codes padded with spaces. PostgreSQL ignores trailing blanks when
    # comparing bpchar, SQLite compares the bytes: the padded key matches on both.
    return code.ljust(width)


def _levels_query(keys: Sequence[str]) -> Executable:
    query = select(*_stock_columns).where(_stock.c.ITEM_NO.in_(keys))
    return query.order_by(_stock.c.ITEM_NO, _stock.c.STORE_NO)


def _stock_level(row: Sequence[Any]) -> StockLevel:
    # Positional unpacking: attribute access on rows costs more than the rest at 100k rows.
    item, store, quantity, last_update = row
    return StockLevel(
        str(item).strip(), str(store).strip(), _whole_units(quantity), _from_erp_clock(last_update)
    )


def _whole_units(quantity: object) -> int:
    """QTY_ON_HAND floored to whole units; a negative balance (sold before the receipt was
    booked) means nothing is on hand."""
    if isinstance(quantity, int | float | Decimal):
        return max(0, math.floor(quantity))
    raise BackendRejected(BACKEND, f"QTY_ON_HAND is not a number: {quantity!r}", "MALFORMED_ROW")


def _from_erp_clock(value: object) -> datetime:
    """The ERP's naive Berlin wall-clock time as an aware UTC instant."""
    if not isinstance(value, datetime):
        raise BackendRejected(BACKEND, f"LAST_UPD is not a timestamp: {value!r}", "MALFORMED_ROW")
    return value.replace(tzinfo=ERP_TIME_ZONE).astimezone(UTC)


def _location(row: Sequence[Any]) -> Location:
    code, name, store_type, lat, lon, postal_code, capabilities, capacity, hours = row
    location_id = str(code).strip()
    kind = KINDS.get(str(store_type).strip())
    if kind is None:
        raise BackendRejected(BACKEND, f"store {location_id}: type {store_type!r}", "MALFORMED_ROW")
    try:
        opening_hours = parse_opening_hours(hours or "")
    except ValueError as exc:
        raise BackendRejected(BACKEND, f"store {location_id}: {exc}", "MALFORMED_ROW") from exc
    return Location(
        id=location_id,
        name=str(name).strip(),
        kind=kind,
        point=GeoPoint(float(lat or 0.0), float(lon or 0.0)),
        postal_code=str(postal_code or "").strip(),
        capabilities=parse_capabilities(capabilities or ""),
        daily_capacity=int(capacity or 0),
        opening_hours=opening_hours,
    )


def parse_capabilities(text: str) -> frozenset[str]:
    """``CO;BOPIS;SFS`` -> {"CARRY_OUT", "PICKUP", "SHIP_FROM_STORE"}; unknown codes ignored."""
    codes = (code.strip().upper() for code in text.split(";"))
    return frozenset(CAPABILITIES[code] for code in codes if code in CAPABILITIES)


def parse_opening_hours(text: str) -> tuple[OpeningHours, ...]:
    """``MO-FR 0900-2000;SA 0900-1800`` (also ``MO,WE`` lists) as one entry per open weekday,
    Monday first. Raises ValueError for text it cannot read."""
    hours: dict[int, OpeningHours] = {}
    for part in filter(None, (part.strip() for part in text.split(";"))):
        days, _, span = part.partition(" ")
        opens, _, closes = span.strip().partition("-")
        for weekday in _weekdays(days):
            hours[weekday] = OpeningHours(weekday, _clock(opens), _clock(closes))
    return tuple(hours[weekday] for weekday in sorted(hours))


def _weekdays(text: str) -> list[int]:
    weekdays: list[int] = []
    for item in text.upper().split(","):
        first, _, last = item.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"unknown weekday in {text!r}")
        weekdays.extend(range(WEEKDAYS[first], WEEKDAYS[last or first] + 1))
    return weekdays


def _clock(text: str) -> time:
    if len(text) != 4 or not text.isdigit():
        raise ValueError(f"bad time {text!r}, expected HHMM")
    hour, minute = int(text[:2]), int(text[2:])
    return time(23, 59, 59) if (hour, minute) == (24, 0) else time(hour, minute)


# --------------------------------------------------------------------------- cursor


def _encode_cursor(last_update: object, store: object, item: object) -> str:
    if not isinstance(last_update, datetime):
        raise BackendRejected(BACKEND, f"LAST_UPD is not a timestamp: {last_update!r}")
    position = [last_update.isoformat(), str(store), str(item)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """The (LAST_UPD, STORE_NO, ITEM_NO) position a cursor stands for, keys padded."""
    try:
        last_update, store, item = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return (
            datetime.fromisoformat(last_update),
            _pad(str(store), STORE_WIDTH),
            _pad(str(item), ITEM_WIDTH),
        )
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BackendRejected(BACKEND, f"not a stock cursor: {cursor!r}", "INVALID_CURSOR") from exc
