"""The gateway's own database: its tables, engines over PostgreSQL or SQLite, and migrations.

``DATABASE_URL`` is ``postgresql+asyncpg://...`` in production or ``sqlite+aiosqlite:///...`` as the
embedded default. The schema is owned by the Alembic revisions in ``gateway/migrations``;
``metadata`` below describes the same tables for queries and must be kept in step with them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TextClause,
    UniqueConstraint,
    event,
    func,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.types import TypeDecorator, TypeEngine

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

MIGRATIONS = Path(__file__).parent / "migrations"

# Any fixed number will do; it only has to be the same in every gateway process.
UPGRADE_LOCK_KEY = 0x67617465776179  # "gateway"

# Seconds.
CONNECT_TIMEOUT = 10.0
STATEMENT_TIMEOUT = 30.0
SQLITE_BUSY_TIMEOUT = 10.0  # how long a writer waits for another's lock
# Execution option of ``autocommit``'s view of a SQLite engine: begin no transaction.
SQLITE_STATEMENTS_ONLY = "gateway_sqlite_statements_only"
POOL_RECYCLE = 1800.0  # a pooled PostgreSQL connection is replaced once it is this old
# PostgreSQL connections a process keeps at most (``limits.database_connections``): the pool
# opens them as they are needed and keeps them; a caller beyond that waits for one to come back.
# There is no overflow on top: SQLAlchemy closes an overflow connection as soon as it comes back
# to a full pool, so a process busy just above its pool size opened and closed a connection
# every few dozen orders, each costing a backend start and re-preparing every statement.
DEFAULT_CONNECTIONS = 25


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time: tz-aware in, tz-aware UTC out. SQLite has no time zones, so UTC is stored
    there without one; naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the database stores points in time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: object | None, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` that comes back exactly as it went in: NUMERIC on PostgreSQL, text on SQLite
    (whose NUMERIC affinity would turn 10.10 into a binary float)."""

    impl = Numeric(12, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[str] | TypeEngine[Decimal]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(12, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> object:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: object | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


# SQLite makes only INTEGER PRIMARY KEY an alias of the row id.
Identifier = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

personal_offers = Table(
    "personal_offers",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("percent_off", ExactDecimal()),
    Column("amount_off", ExactDecimal()),
    Column("currency", String(3)),
    Column("skus", JSON, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("valid_from", UtcDateTime(), nullable=False),
    Column("valid_until", UtcDateTime(), nullable=False),
    Column("issued_by_channel", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime()),
    CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="one_discount"),
    CheckConstraint("(amount_off IS NULL) = (currency IS NULL)", name="currency_with_amount"),
    CheckConstraint("valid_from < valid_until", name="validity"),
    Index(None, "customer_id", "valid_until"),
    sqlite_autoincrement=True,  # never hand a revoked offer's id ("PO-7") to another one
)

coupon_uses = Table(
    "coupon_uses",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False),
    Column("customer_id", String(64)),
    Column("order_id", String(64), nullable=False),
    Column("used_at", UtcDateTime(), nullable=False),
    UniqueConstraint("code", "order_id"),
    Index(None, "code", "customer_id"),
)

# The gateway's inventory position per (location, SKU): on hand as the ERP last reported it (or
# as a store return raised it since), units held by open orders, and the location's safety stock.
# ``on_hand`` may drop below ``reserved`` when the ERP says so: that shows as nothing available.
inventory_positions = Table(
    "inventory_positions",
    metadata,
    Column("location_id", String(16), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, server_default=text("0")),
    Column("safety_stock", Integer, nullable=False, server_default=text("0")),
    Column("erp_updated_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    # Covers the listing's read (every location of a SKU, in location order, with the counts).
    Index(
        "ix_inventory_positions_by_sku", "sku", "location_id", "on_hand", "reserved", "safety_stock"
    ),
)

# Small named values the ledger keeps between runs, e.g. the ERP change feed's cursor.
ledger_state = Table(
    "ledger_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(200), nullable=False),
)


def create_engine(url: str, *, connections: int = DEFAULT_CONNECTIONS) -> AsyncEngine:
    """A pooled async engine for ``url`` (PostgreSQL via asyncpg, or SQLite via aiosqlite), with
    connect and statement timeouts, holding at most ``connections`` PostgreSQL connections.
    Call ``await engine.dispose()`` when done.

    PostgreSQL connections are not pinged when taken from the pool (a ping costs three round
    trips): a connection that broke meanwhile (the server restarted, an idle connection was
    cut) fails the one statement that finds out, SQLAlchemy recognises the disconnect and
    discards that connection and every pooled one opened before it, and the next statement runs
    on a new connection. The statement that met the broken connection fails; the callers run
    their reads and the idempotent steps of an order through ``retry_on_disconnect``, so that
    one failure is retried on a new connection instead of reaching a client, and nobody pays
    for a ping on every checkout. Connections are also replaced after ``POOL_RECYCLE`` seconds.

    On SQLite every transaction takes the write lock when it begins (``BEGIN IMMEDIATE``), so
    concurrent read-then-write transactions queue for up to ``SQLITE_BUSY_TIMEOUT`` instead of
    failing with "database is locked" halfway; keep transactions short."""
    if connections < 1:
        raise ValueError("an engine needs at least one connection")
    return _engine(url, connections=connections)


def is_disconnect(error: BaseException) -> bool:
    """True when ``error`` is SQLAlchemy's report of a connection that broke (the server
    restarted, its backend was terminated, the network cut it): the dialect recognised the
    disconnect and invalidated the connection and the pool's older ones, so the same work on a
    connection taken now runs on a new one."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


async def retry_on_disconnect(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int = 2,
    before_retry: Callable[[], Awaitable[T | None]] | None = None,
) -> T:
    """Run ``operation`` (which takes its own connection), again when it fails on a broken
    connection, ``attempts`` times at most (the default: one retry); any other error, or the
    last disconnect, is raised. Only for work that may run twice: a read, a single idempotent
    statement, or a transaction that either committed or rolled back as a whole and whose
    commit ``before_retry`` looks for (a COMMIT cut off may have committed): its answer, when
    not None, stands for the operation's and nothing is run again."""
    if attempts < 1:
        raise ValueError("at least one attempt is needed")
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except DBAPIError as exc:
            if attempt == attempts or not is_disconnect(exc):
                raise
            log.warning("database connection lost (%s); trying once more", exc.orig)
        if before_retry is not None:
            done = await before_retry()
            if done is not None:
                return done
    raise AssertionError("unreachable")  # pragma: no cover


def retried_on_disconnect(
    function: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[object, None, T]]:
    """``function`` run through ``retry_on_disconnect``: for reads and idempotent statements
    that take their own connection."""

    @functools.wraps(function)
    async def retried(*args: P.args, **kwargs: P.kwargs) -> T:
        return await retry_on_disconnect(lambda: function(*args, **kwargs))

    return retried


_CLIENT_ERROR = asyncpg.exceptions.InternalClientError


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A PostgreSQL statement compiled once for asyncpg: its SQL with ``$n`` parameters, and
    the names of the bound parameters in that order (``fetch_on_driver``)."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: TextClause) -> DriverStatement:
        compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        return cls(compiled.string, tuple(compiled.positiontup or ()))


async def fetch_on_driver(
    connection: AsyncConnection, statement: DriverStatement, values: Mapping[str, object]
) -> list[Any]:
    """The rows (asyncpg records) of ``statement`` with ``values`` by name, run by the asyncpg
    connection under ``connection``: for the few statements every order runs, where
    SQLAlchemy's parameter processing and result rows cost as much CPU as asyncpg's own work
    (about 150 µs a statement of 40 parameters on the benchmark machine). The values go to
    asyncpg as they are: no SQLAlchemy type processes them.

    Otherwise it behaves as a statement run through SQLAlchemy: the engine's
    ``before_cursor_execute`` listeners (the metrics) hear of it, errors come as ``DBAPIError``,
    and a connection found broken is invalidated with the pool's older ones and reported as a
    disconnect (``is_disconnect``), so that ``retry_on_disconnect`` runs the work again on a
    new connection."""
    sync = connection.sync_connection
    assert sync is not None, "the connection is not open"
    pooled = await connection.get_raw_connection()
    driver = pooled.driver_connection
    assert driver is not None, "the pooled connection has no driver connection"
    arguments = [values[name] for name in statement.names]
    sync.dispatch.before_cursor_execute(sync, None, statement.sql, arguments, None, False)
    try:
        rows: list[Any] = await driver.fetch(statement.sql, *arguments)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, _CLIENT_ERROR, OSError) as exc:
        # A connection whose server went away may also be caught mid-way by the news, its
        # protocol in a state asyncpg calls an internal error: it cannot be used again.
        broken = driver.is_closed() or isinstance(exc, (OSError, _CLIENT_ERROR))
        if broken:
            # What SQLAlchemy does on a disconnect it sees: the pool replaces every
            # connection opened before this one, and this one is discarded.
            sync.engine.pool._invalidate(pooled, exc)
            await connection.invalidate(exc)
        raise DBAPIError(statement.sql, arguments, exc, connection_invalidated=broken) from exc
    return rows


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for work that is one statement at a time, each atomic on its own (a single
    read, insert or conditional update): on PostgreSQL its connections run in autocommit mode,
    which saves the round trips of BEGIN and COMMIT or ROLLBACK around every statement; on
    SQLite no transaction is begun, so each statement is its own (SQLite's autocommit): a read
    does not take the write lock that ``BEGIN IMMEDIATE`` takes, and concurrent readers (a
    listing's stock) neither queue behind each other nor starve in the busy handler's backoff.
    Share one per service (each call makes a new view over the same pool)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(**{SQLITE_STATEMENTS_ONLY: True})


def upsert_into(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that can take ON CONFLICT (``on_conflict_do_update`` and
    ``_nothing``), in ``dialect`` (a connection's or engine's ``.dialect``)."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    if dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"the gateway's database is PostgreSQL or SQLite, not {dialect.name}")


@retried_on_disconnect
async def read_state(engine: AsyncEngine, name: str) -> str | None:
    """The ``ledger_state`` value stored under ``name`` (a feed's cursor), or None."""
    query = select(ledger_state.c.value).where(ledger_state.c.name == name)
    async with engine.connect() as connection:
        return (await connection.execute(query)).scalar_one_or_none()


async def move_state(connection: AsyncConnection, name: str, since: str | None, value: str) -> bool:
    """Compare and set: store ``value`` under ``name`` only if the stored value is still
    ``since`` (None: nothing stored yet). True when it was stored."""
    if since is None:
        first = upsert_into(connection.dialect, ledger_state).values(name=name, value=value)
        result = await connection.execute(first.on_conflict_do_nothing(index_elements=["name"]))
    else:
        statement = (
            update(ledger_state)
            .where(ledger_state.c.name == name, ledger_state.c.value == since)
            .values(value=value)
        )
        result = await connection.execute(statement)
    return result.rowcount == 1


def _engine(url: str, *, connections: int | None = DEFAULT_CONNECTIONS) -> AsyncEngine:
    """Pooled with up to ``connections`` on PostgreSQL (SQLAlchemy's defaults on SQLite), or
    unpooled when ``connections`` is None."""
    parsed = make_url(url)
    pool: dict[str, object] = {} if connections else {"poolclass": NullPool}
    if parsed.get_backend_name() != "sqlite":
        if connections:
            pool = {"pool_size": connections, "max_overflow": 0}
        timeouts = {"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT}
        return create_async_engine(parsed, connect_args=timeouts, pool_recycle=POOL_RECYCLE, **pool)
    engine = create_async_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **pool)
    _use_real_sqlite_transactions(engine)
    return engine


def _use_real_sqlite_transactions(engine: AsyncEngine) -> None:
    """The sqlite3 module starts transactions late and never for DDL; let SQLAlchemy say when
    (the recipe in SQLAlchemy's SQLite notes), so that savepoints and transactional DDL work."""

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers do not wait for the writer
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(SQLITE_STATEMENTS_ONLY):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


async def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision; a no-op when it is there already.

    Safe when several gateway processes start at once: on PostgreSQL they queue on an advisory
    lock, on SQLite on the database's write lock (the file's folder is created if missing), and
    each one finds the revision the previous one left."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_folder(parsed.database)
    engine = _engine(url, connections=None)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(select(func.pg_advisory_xact_lock(UPGRADE_LOCK_KEY)))
            await connection.run_sync(_upgrade_to_head)
    finally:
        await engine.dispose()


def _create_folder(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _upgrade_to_head(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def head_revision() -> str:
    """The newest revision in ``gateway/migrations``."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError(f"no revisions in {MIGRATIONS}")
    return head
