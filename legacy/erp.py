"""The ERP: legacy SQL tables read directly over SQL, plus a small control server.

The tables look the way ERPs of a certain age look, and the adapter has to cope:

- ``STORES``: ``STORE_NO`` is ``CHAR(8)``, so codes come back padded with spaces ("0001    ");
  ``STORE_TYPE`` is ``CHAR(5)`` ('STORE' or 'DC   '); ``CAPAB`` is a semicolon list of legacy
  capability codes (``CO;BOPIS;SFS;DLV``, ``SHP`` for distribution centres); ``OPEN_HRS`` is a
  text like ``MO-FR 0900-2000;SA 0900-1800``; closed stores stay in the table with ``ACTIVE='N'``.
- ``STOCK_LEVELS``: ``ITEM_NO`` is ``CHAR(18)``; ``QTY_ON_HAND`` is ``NUMERIC(12,3)`` and may be
  negative (sold before the receipt was booked); ``LAST_UPD`` is a ``TIMESTAMP`` without time zone
  holding Europe/Berlin wall-clock time.

``load`` bulk-loads the demo estate (COPY on PostgreSQL, batched executemany on SQLite).
``create_app`` serves the control plane: the simulator routes and ``POST /movements``, through
which tests and benchmarks book stock movements the way tills book sales.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CHAR,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.dml import Insert
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from legacy.demo import DemoEstate, DemoLocation, StockRow
from legacy.launcher import default_erp_url
from legacy.sim import HeldAnswers, SimSettings, SimulatedFailure, Simulator

BERLIN = ZoneInfo("Europe/Berlin")
STORE_WIDTH = 8
ITEM_WIDTH = 18
BATCH_SIZE = 50_000
MAX_MOVEMENTS = 1_000
"""The till interface books at most this many movements per call."""

CAPABILITY_CODES = {
    "CARRY_OUT": "CO",
    "PICKUP": "BOPIS",
    "SHIP_FROM_STORE": "SFS",
    "DELIVERY": "DLV",
    "SHIP": "SHP",
}
_CAPABILITY_ORDER = ("CO", "BOPIS", "SFS", "DLV", "SHP")
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_CLOSED_STORE = DemoLocation(
    "8001", "Munich Stachus (closed)", "STORE", 48.13906, 11.56605, "80335",
    frozenset({"CARRY_OUT"}), 0, (), "C", "BASE",
)  # fmt: skip
"""Closed years ago, still in the master data (ACTIVE='N'), as in every real ERP."""

metadata = MetaData()

STORES = Table(
    "STORES",
    metadata,
    Column("STORE_NO", CHAR(STORE_WIDTH), nullable=False),
    Column("STORE_NAME", String(40), nullable=False),
    Column("STORE_TYPE", CHAR(5), nullable=False),
    Column("LAT", Numeric(9, 6)),
    Column("LON", Numeric(9, 6)),
    Column("ZIP", CHAR(5)),
    Column("CAPAB", String(40)),
    Column("DAILY_CAP", Integer),
    Column("OPEN_HRS", String(80)),
    Column("ACTIVE", CHAR(1), nullable=False),
    PrimaryKeyConstraint("STORE_NO", name="PK_STORES"),
)

STOCK_LEVELS = Table(
    "STOCK_LEVELS",
    metadata,
    Column("STORE_NO", CHAR(STORE_WIDTH), nullable=False),
    Column("ITEM_NO", CHAR(ITEM_WIDTH), nullable=False),
    Column("QTY_ON_HAND", Numeric(12, 3), nullable=False),
    Column("LAST_UPD", DateTime(timezone=False), nullable=False),
    PrimaryKeyConstraint("STORE_NO", "ITEM_NO", name="PK_STOCK_LEVELS"),
    Index("IX_STOCK_LEVELS_ITEM", "ITEM_NO"),
    Index("IX_STOCK_LEVELS_LAST_UPD", "LAST_UPD", "STORE_NO", "ITEM_NO"),
)

_STOCK_COLUMNS = ["STORE_NO", "ITEM_NO", "QTY_ON_HAND", "LAST_UPD"]


# --------------------------------------------------------------------------- formats


def store_no(code: str) -> str:
    """A location code as the ERP stores it: padded to CHAR(8)."""
    return code.ljust(STORE_WIDTH)


def item_no(sku: str) -> str:
    """A SKU as the ERP stores it: padded to CHAR(18)."""
    return sku.ljust(ITEM_WIDTH)


def berlin_wall_clock(moment: datetime) -> datetime:
    """An aware instant as the ERP writes it: naive Europe/Berlin local time."""
    return moment.astimezone(BERLIN).replace(tzinfo=None)


def capability_list(capabilities: Iterable[str]) -> str:
    """Capabilities as the ERP's legacy code list, e.g. ``CO;BOPIS;SFS``."""
    codes = {CAPABILITY_CODES[name] for name in capabilities}
    return ";".join(code for code in _CAPABILITY_ORDER if code in codes)


def opening_hours_text(hours: Iterable[tuple[int, str, str]]) -> str:
    """Opening hours as the ERP writes them, equal consecutive days folded:
    ``MO-FR 0900-2000;SA 0900-1800``."""
    groups: list[tuple[int, int, str, str]] = []
    for weekday, opens, closes in sorted(hours):
        if groups:
            first, last, group_opens, group_closes = groups[-1]
            if last == weekday - 1 and (group_opens, group_closes) == (opens, closes):
                groups[-1] = (first, weekday, opens, closes)
                continue
        groups.append((weekday, weekday, opens, closes))
    return ";".join(_hours_group(*group) for group in groups)


def _hours_group(first: int, last: int, opens: str, closes: str) -> str:
    days = _DAYS[first - 1] if first == last else f"{_DAYS[first - 1]}-{_DAYS[last - 1]}"
    return f"{days} {opens.replace(':', '')}-{closes.replace(':', '')}"


def _store_record(location: DemoLocation, active: bool = True) -> dict[str, object]:
    return {
        "STORE_NO": store_no(location.code),
        "STORE_NAME": location.name,
        "STORE_TYPE": "STORE" if location.kind == "STORE" else "DC",
        "LAT": Decimal(repr(location.lat)),
        "LON": Decimal(repr(location.lon)),
        "ZIP": location.postal_code,
        "CAPAB": capability_list(location.capabilities),
        "DAILY_CAP": location.daily_capacity,
        "OPEN_HRS": opening_hours_text(location.opening_hours),
        "ACTIVE": "Y" if active else "N",
    }


# --------------------------------------------------------------------------- bulk load


async def load(estate: DemoEstate, url: str, progress: Callable[[int], None] | None = None) -> None:
    """Replace the ERP tables at ``url`` with ``estate``'s stores and stock.

    Stock rows are streamed from ``estate.stock_rows()`` in batches (never all in memory);
    ``progress(n)`` is called after each batch is written with the number of rows it held.
    Everything happens in one transaction on PostgreSQL (COPY); on SQLite the rows go in one
    transaction of batched INSERTs.
    """
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if not postgres:
                await _prepare_sqlite(connection)
            async with connection.begin():
                await _recreate_tables(connection)
                await connection.execute(STORES.insert(), _store_records(estate))
                if postgres:
                    await _load_postgres(connection, estate.stock_rows(), progress)
                else:
                    write = _executemany_writer(connection)
                    await _pipeline(estate.stock_rows(), _sqlite_record, write, progress)
                await _create_indexes(connection)
    finally:
        await engine.dispose()


def _store_records(estate: DemoEstate) -> list[dict[str, object]]:
    active = [_store_record(location) for location in estate.locations]
    return [*active, _store_record(_CLOSED_STORE, active=False)]


async def _prepare_sqlite(connection: AsyncConnection) -> None:
    # WAL lets the gateway read while the control server books movements; synchronous=OFF
    # and the larger cache only speed up this connection's bulk load.
    await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    await connection.exec_driver_sql("PRAGMA synchronous=OFF")
    await connection.exec_driver_sql("PRAGMA cache_size=-131072")
    await connection.commit()


async def _recreate_tables(connection: AsyncConnection) -> None:
    await connection.run_sync(metadata.drop_all)
    for table in (STORES, STOCK_LEVELS):
        await connection.execute(CreateTable(table))


async def _create_indexes(connection: AsyncConnection) -> None:
    # Built once the rows are in: much faster than maintaining them row by row.
    for index in sorted(STOCK_LEVELS.indexes, key=lambda index: str(index.name)):
        await connection.execute(CreateIndex(index))


async def _load_postgres(
    connection: AsyncConnection, rows: Iterator[StockRow], progress: Callable[[int], None] | None
) -> None:
    # The primary key, too, is cheaper to build over the loaded table than to maintain. Plain
    # SQL: SQLAlchemy's Add/DropConstraint would drop the key from later CREATE TABLEs.
    await connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
    await connection.exec_driver_sql('ALTER TABLE "STOCK_LEVELS" DROP CONSTRAINT "PK_STOCK_LEVELS"')
    await _pipeline(rows, _copy_record, await _copy_writer(connection), progress)
    await connection.exec_driver_sql(
        'ALTER TABLE "STOCK_LEVELS" ADD CONSTRAINT "PK_STOCK_LEVELS" '
        'PRIMARY KEY ("STORE_NO", "ITEM_NO")'
    )


_Record = tuple[str, str, object, object]
_Writer = Callable[[list[_Record]], Coroutine[object, object, None]]


async def _pipeline(
    rows: Iterator[StockRow],
    convert: Callable[[StockRow], _Record],
    write: _Writer,
    progress: Callable[[int], None] | None,
) -> None:
    """Write batch after batch, generating the next batch in a thread meanwhile so that the
    database's work overlaps the generator's."""
    writing: asyncio.Task[None] | None = None
    size = 0
    try:
        while batch := await asyncio.to_thread(_next_batch, rows, convert):
            await _finish(writing, size, progress)
            writing, size = asyncio.create_task(write(batch)), len(batch)
        await _finish(writing, size, progress)
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.wait([writing])


def _next_batch(rows: Iterator[StockRow], convert: Callable[[StockRow], _Record]) -> list[_Record]:
    return [convert(row) for row in islice(rows, BATCH_SIZE)]


async def _finish(
    writing: asyncio.Task[None] | None, size: int, progress: Callable[[int], None] | None
) -> None:
    if writing is not None:
        await writing
        if progress is not None:
            progress(size)


def _copy_record(row: StockRow) -> _Record:
    return (
        store_no(row.location_code),
        item_no(row.sku),
        Decimal(row.on_hand),
        berlin_wall_clock(row.updated_at),
    )


def _sqlite_record(row: StockRow) -> _Record:
    # The timestamp text is the one SQLAlchemy's SQLite DateTime writes and parses.
    return (
        store_no(row.location_code),
        item_no(row.sku),
        row.on_hand,
        berlin_wall_clock(row.updated_at).isoformat(" ", "microseconds"),
    )


async def _copy_writer(connection: AsyncConnection) -> _Writer:
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # the asyncpg connection, inside our transaction
    if driver is None:
        raise RuntimeError("the ERP connection was closed before the load")

    async def write(records: list[_Record]) -> None:
        await driver.copy_records_to_table("STOCK_LEVELS", records=records, columns=_STOCK_COLUMNS)

    return write


def _executemany_writer(connection: AsyncConnection) -> _Writer:
    statement = 'INSERT INTO "STOCK_LEVELS" ("STORE_NO", "ITEM_NO", "QTY_ON_HAND", "LAST_UPD") '
    statement += "VALUES (?, ?, ?, ?)"

    async def write(records: list[_Record]) -> None:
        await connection.exec_driver_sql(statement, records)

    return write


# --------------------------------------------------------------------------- control server


def create_app(settings: SimSettings) -> Starlette:
    """The ERP's control server: ``/_sim/*`` and ``POST /movements`` (stock bookings).

    ``POST /movements`` takes ``[{"store": "0001", "sku": "100000010", "delta": -1}, ...]``,
    adds each delta to ``QTY_ON_HAND`` (creating the row when missing) and stamps ``LAST_UPD``
    with the current Berlin wall-clock time. It answers ``{"applied": n, "at": "..."}``; 400 for
    a malformed body, 422 naming unknown stores, 503 when the knobs say the ERP is down.
    """
    simulator = Simulator("erp", settings.knobs, settings.seed)
    url = settings.erp_url or default_erp_url(settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AsyncEngine]]:
        engine = control_engine(url)
        try:
            yield {"engine": engine}
        finally:
            await engine.dispose()

    async def movements(request: Request) -> JSONResponse:
        try:
            await simulator.call("movements")
        except SimulatedFailure as exc:
            return JSONResponse({"error": f"ERP unavailable ({exc})"}, status_code=503)
        try:
            deltas = _parse_movements(await request.json())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        engine: AsyncEngine = request.state.engine
        unknown = await unknown_stores(engine, {store for store, _ in deltas})
        if unknown:
            return JSONResponse({"error": "unknown stores", "stores": unknown}, status_code=422)
        at = await book_movements(engine, deltas)
        return JSONResponse({"applied": len(deltas), "at": at.isoformat()})

    routes = [*simulator.routes(), Route("/movements", movements, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(HeldAnswers)])


def control_engine(url: str) -> AsyncEngine:
    """An engine over the ERP's tables for booking movements (the control server's, the OMS's)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # The seeder drops and recreates the tables while this server may be running; cached
        # prepared statements would still point at the dropped ones.
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": "0"})
    return create_async_engine(parsed, pool_size=5, pool_pre_ping=True)


def _parse_movements(body: object) -> dict[tuple[str, str], Decimal]:
    """Movements summed per (store, sku), so one booking touches each row once."""
    if not isinstance(body, list) or not body:
        raise ValueError("expected a non-empty JSON array of movements")
    if len(body) > MAX_MOVEMENTS:
        raise ValueError(f"at most {MAX_MOVEMENTS} movements per call")
    deltas: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for number, movement in enumerate(body):
        store, sku, delta = _parse_movement(movement, number)
        deltas[store, sku] += delta
    return dict(deltas)


def _parse_movement(movement: object, number: int) -> tuple[str, str, Decimal]:
    if not isinstance(movement, dict):
        raise ValueError(f"movement {number}: expected an object")
    store, sku, delta = movement.get("store"), movement.get("sku"), movement.get("delta")
    if not isinstance(store, str) or not 0 < len(store.strip()) <= STORE_WIDTH:
        raise ValueError(f"movement {number}: store must be a code of 1 to {STORE_WIDTH} chars")
    if not isinstance(sku, str) or not 0 < len(sku.strip()) <= ITEM_WIDTH:
        raise ValueError(f"movement {number}: sku must be a code of 1 to {ITEM_WIDTH} chars")
    if isinstance(delta, bool) or not isinstance(delta, int | float | str):
        raise ValueError(f"movement {number}: delta must be a number")
    try:
        quantity = Decimal(str(delta))
    except InvalidOperation as exc:
        raise ValueError(f"movement {number}: delta must be a number") from exc
    if not quantity.is_finite():
        raise ValueError(f"movement {number}: delta must be a finite number")
    return store.strip(), sku.strip(), quantity


async def unknown_stores(engine: AsyncEngine, stores: set[str]) -> list[str]:
    """The codes of ``stores`` the ERP has no master record for, sorted."""
    query = select(STORES.c.STORE_NO).where(STORES.c.STORE_NO.in_([store_no(s) for s in stores]))
    async with engine.connect() as connection:
        known = {code.strip() for code in (await connection.scalars(query))}
    return sorted(stores - known)


async def book_movements(engine: AsyncEngine, deltas: dict[tuple[str, str], Decimal]) -> datetime:
    """Add each (store, sku) delta to ``QTY_ON_HAND`` in one transaction, stamping ``LAST_UPD``;
    returns the stamp (naive Berlin wall-clock time, as the column holds it)."""
    at = berlin_wall_clock(datetime.now(BERLIN))
    records = [
        {"STORE_NO": store_no(store), "ITEM_NO": item_no(sku), "QTY_ON_HAND": delta, "LAST_UPD": at}
        for (store, sku), delta in sorted(deltas.items())
    ]
    async with engine.begin() as connection:
        await connection.execute(_upsert(connection.dialect.name), records)
    return at


def _upsert(dialect: str) -> Insert:
    """INSERT ... ON CONFLICT DO UPDATE adding the delta to the row already there."""
    if dialect == "postgresql":
        on_postgres = postgresql.insert(STOCK_LEVELS)
        return on_postgres.on_conflict_do_update(
            index_elements=["STORE_NO", "ITEM_NO"],
            set_={
                "QTY_ON_HAND": STOCK_LEVELS.c.QTY_ON_HAND + on_postgres.excluded.QTY_ON_HAND,
                "LAST_UPD": on_postgres.excluded.LAST_UPD,
            },
        )
    if dialect == "sqlite":
        on_sqlite = sqlite.insert(STOCK_LEVELS)
        return on_sqlite.on_conflict_do_update(
            index_elements=["STORE_NO", "ITEM_NO"],
            set_={
                "QTY_ON_HAND": STOCK_LEVELS.c.QTY_ON_HAND + on_sqlite.excluded.QTY_ON_HAND,
                "LAST_UPD": on_sqlite.excluded.LAST_UPD,
            },
        )
    raise ValueError(f"the ERP runs on PostgreSQL or SQLite, not {dialect}")
