"""The gateway's own database on SQLite and PostgreSQL: migrations, personal offers, coupon uses."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Connection,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.ports import Coupon, Money, PromotionKind, PromotionRule, PromotionTarget, ValueType
from gateway.db import (
    DriverStatement,
    autocommit,
    coupon_uses,
    create_engine,
    fetch_on_driver,
    head_revision,
    metadata,
    personal_offers,
    upgrade,
)
from gateway.offers import (
    CouponUsage,
    CouponUses,
    DuplicateCouponUse,
    InvalidOffer,
    NewPersonalOffer,
    PersonalOffer,
    PersonalOffers,
    may_use,
    to_rule,
)
from tests.support import POSTGRES_ADMIN_URL

NOW = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def boots_offer(**changes: object) -> NewPersonalOffer:
    fields: dict[str, object] = {
        "customer_id": "C0001",
        "title": "Sorry about the late parcel: 25% off boots",
        "valid_until": NOW + timedelta(days=30),
        "issued_by_channel": "csr",
        "percent_off": Decimal("25"),
        "skus": ("SKU-9", "SKU-1", "SKU-9"),
        "categories": ("footwear/boots",),
    }
    fields.update(changes)
    return NewPersonalOffer(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/not/yet/there/gateway.sqlite"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated database, emptied (the PostgreSQL one is shared by the session)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(delete(personal_offers))
        await connection.execute(delete(coupon_uses))
    yield engine
    await engine.dispose()


@pytest.fixture(params=DATABASES)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/fresh/gateway.sqlite"
        return
    shared: str = request.getfixturevalue("pg_database")  # skips when PostgreSQL is down
    name = f"cg_upgrade_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield f"{shared.rsplit('/', 1)[0]}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def revisions_and_tables(url: str) -> tuple[list[str], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            return list(versions.scalars()), set(tables)
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- migrations


async def test_upgrading_twice_leaves_one_head_revision_and_creates_the_folder(
    database_url: str,
) -> None:
    # given a database never migrated (on SQLite: not even its folder exists)
    # when the migrations run twice
    await upgrade(database_url)
    await upgrade(database_url)

    # then the database is at head once, with the gateway's tables
    versions, tables = await revisions_and_tables(database_url)
    assert versions == [head_revision()]
    assert {"personal_offers", "coupon_uses"} <= tables


async def test_the_migrations_build_exactly_the_tables_the_code_queries(
    engine: AsyncEngine,
) -> None:
    # given a migrated database
    # when alembic compares it with gateway.db.metadata
    # (the session's PostgreSQL database also holds other tests' tables: compare ours only)
    def ours(name: str | None, kind: str, parent: object) -> bool:
        return kind != "table" or name in metadata.tables or name == "alembic_version"

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"include_name": ours})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        found = await connection.run_sync(differences)

    # then there is nothing to migrate
    assert found == []


async def test_concurrent_upgrades_from_tasks_and_processes_all_succeed(
    fresh_database_url: str,
) -> None:
    # given a fresh database and three gateway processes plus three tasks starting at once
    environment = {**os.environ, "DATABASE_URL": fresh_database_url}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "db",
            "upgrade",
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]

    # when they all upgrade
    await asyncio.gather(*(upgrade(fresh_database_url) for _ in range(3)))
    outputs = [await process.communicate() for process in processes]

    # then none failed, and the database is at head once
    failures = [err.decode() for process, (_, err) in zip(processes, outputs, strict=True)]
    assert [process.returncode for process in processes] == [0, 0, 0], failures
    versions, _ = await revisions_and_tables(fresh_database_url)
    assert versions == [head_revision()]


# --------------------------------------------------------------------------- connections


_BACKEND_PID = DriverStatement.of(text("SELECT pg_backend_pid() AS pid"))
THROUGH = ["sqlalchemy", "driver"]  # how a statement is run: SQLAlchemy's way, or asyncpg's own


async def _backend_pid(engine: AsyncEngine, through: str = "sqlalchemy") -> int:
    async with engine.connect() as connection:
        if through == "driver":
            pid: int = (await fetch_on_driver(connection, _BACKEND_PID, {}))[0]["pid"]
        else:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await asyncio.sleep(0.05)  # keep it checked out while the others are taken too
    return pid


async def _pid_or_error(engine: AsyncEngine, through: str) -> int | DBAPIError:
    try:
        return await _backend_pid(engine, through)
    except DBAPIError as exc:
        return exc


async def _terminate_connections_to(url: str) -> None:
    database = make_url(url).database
    await _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("through", THROUGH)
async def test_connections_the_server_cut_fail_one_statement_at_most_then_the_pool_reconnects(
    pg_database: str, through: str
) -> None:
    # given a pool holding three open connections to PostgreSQL
    await upgrade(pg_database)
    engine = create_engine(pg_database)
    try:
        before = set(await asyncio.gather(*(_backend_pid(engine) for _ in range(3))))

        # when the server ends them all (a restart, an idle timeout, an operator)
        await _terminate_connections_to(pg_database)

        # then the next statement (run either way) either runs or fails as a disconnect, and
        # the pool then serves statements on new connections only
        first = await _pid_or_error(engine, through)
        after = set(await asyncio.gather(*(_backend_pid(engine) for _ in range(5))))
    finally:
        await engine.dispose()
    assert len(before) == 3
    if isinstance(first, DBAPIError):
        assert first.connection_invalidated, first
    else:
        assert first not in before
    assert not after & before


@pytest.mark.postgres
async def test_a_statement_asyncpg_runs_is_heard_by_listeners_and_fails_as_sqlalchemy_reports(
    pg_database: str,
) -> None:
    # given an engine whose statements are listened to, as the metrics listen
    engine = create_engine(pg_database)
    heard: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *sent: heard.append(sent[2]))
    failing = DriverStatement.of(text("SELECT 1 / CAST(:zero AS INTEGER)"))
    try:
        async with autocommit(engine).connect() as connection:
            # when a statement fails on the driver, and the connection runs another after it
            with pytest.raises(DBAPIError) as failed:
                await fetch_on_driver(connection, failing, {"zero": 0})
            pid = (await fetch_on_driver(connection, _BACKEND_PID, {}))[0]["pid"]
    finally:
        await engine.dispose()

    # then the failure is SQLAlchemy's kind, not a disconnect; the connection still serves,
    # and the listeners heard both statements in the driver's SQL
    assert isinstance(failed.value.orig, asyncpg.DivisionByZeroError)
    assert not failed.value.connection_invalidated
    assert pid > 0
    assert heard == [failing.sql, _BACKEND_PID.sql]
    assert failing.names == ("zero",)


@pytest.mark.postgres
async def test_a_busy_pool_keeps_its_connections_and_opens_no_more_than_it_may(
    pg_database: str,
) -> None:
    # given an engine that may hold two connections
    await upgrade(pg_database)
    engine = create_engine(pg_database, connections=2)

    async def busy_backend() -> int:
        async with engine.connect() as connection:
            pid: int = (
                await connection.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.02)"))
            ).scalar_one()
        return pid

    try:
        # when eight statements at a time want one, three times over
        rounds = [set(await asyncio.gather(*(busy_backend() for _ in range(8)))) for _ in "abc"]
    finally:
        await engine.dispose()
    # then the statements waited their turn on the same two connections: none was opened
    # for a peak and closed again
    assert rounds[0] == rounds[1] == rounds[2]
    assert len(rounds[0]) == 2


def test_an_engine_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="at least one connection"):
        create_engine("postgresql+asyncpg://nobody@127.0.0.1/none", connections=0)


@pytest.mark.postgres
async def test_autocommit_commits_each_statement_on_its_own_on_postgresql(
    pg_database: str,
) -> None:
    # given the engine's autocommit view, and another process's engine
    await upgrade(pg_database)
    engine, other = create_engine(pg_database), create_engine(pg_database)
    statements = autocommit(engine)
    order_id = f"O-{uuid.uuid4().hex[:12]}"
    use = {"code": "AUTO", "customer_id": None, "order_id": order_id, "used_at": NOW}
    count = select(func.count()).select_from(coupon_uses).where(coupon_uses.c.order_id == order_id)
    try:
        # when one statement runs on a connection that is still open
        async with statements.connect() as connection:
            await connection.execute(insert(coupon_uses), use)
            async with other.connect() as reader:
                seen = (await reader.execute(count)).scalar_one()
    finally:
        await engine.dispose()
        await other.dispose()

    # then the other process sees it already: nothing was left to commit
    assert seen == 1


async def test_on_sqlite_statements_read_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    # given a SQLite database where one transaction has written and holds the write lock
    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.sqlite"
    await upgrade(url)
    engine = create_engine(url)
    order_id = f"O-{uuid.uuid4().hex[:12]}"
    use = {"code": "LOCK", "customer_id": None, "order_id": order_id, "used_at": NOW}
    count = select(func.count()).select_from(coupon_uses).where(coupon_uses.c.order_id == order_id)
    try:
        async with engine.begin() as writer:
            await writer.execute(insert(coupon_uses), use)
            # when another connection reads through the autocommit view meanwhile
            async with autocommit(engine).connect() as reader:
                during = await asyncio.wait_for(reader.execute(count), timeout=2)
                seen_during = during.scalar_one()
        async with autocommit(engine).connect() as reader:
            seen_after = (await reader.execute(count)).scalar_one()
    finally:
        await engine.dispose()

    # then the read neither waits for the lock nor sees the uncommitted row; after, it does
    assert seen_during == 0
    assert seen_after == 1


# --------------------------------------------------------------------------- personal offers


async def test_an_issued_offer_is_stored_and_active_for_its_customer(engine: AsyncEngine) -> None:
    # given the call centre issues an offer
    offers = PersonalOffers(engine, "EUR", clock=lambda: NOW)
    issued = await offers.issue(boots_offer(title="  Sorry: 25% off boots "))

    # when the customer's active offers are read a day later
    active = await offers.active_for("C0001", NOW + timedelta(days=1))

    # then it is there, exactly as stored: title trimmed, codes sorted and unique, UTC times
    expected = PersonalOffer(
        id=issued.id,
        customer_id="C0001",
        title="Sorry: 25% off boots",
        percent_off=Decimal("25"),
        amount_off=None,
        skus=("SKU-1", "SKU-9"),
        categories=("footwear/boots",),
        valid_from=NOW,
        valid_until=NOW + timedelta(days=30),
        issued_by_channel="csr",
        created_at=NOW,
    )
    assert issued == expected
    assert active == [expected]
    assert str(active[0].percent_off) == "25"
    assert active[0].valid_until.tzinfo is UTC


async def test_expired_future_revoked_and_other_customers_offers_are_not_active(
    engine: AsyncEngine,
) -> None:
    # given offers of two customers, with different validity
    offers = PersonalOffers(engine, "EUR", clock=lambda: NOW)
    current = await offers.issue(boots_offer(valid_until=NOW + timedelta(hours=2)))
    await offers.issue(boots_offer(valid_until=NOW + timedelta(hours=1)))  # expires first
    await offers.issue(boots_offer(valid_from=NOW + timedelta(days=2)))  # not yet
    revoked = await offers.issue(boots_offer())
    await offers.issue(boots_offer(customer_id="C0002"))
    assert await offers.revoke(revoked.id, NOW + timedelta(minutes=5))
    assert not await offers.revoke(revoked.id, NOW + timedelta(minutes=6))

    # when C0001's offers are read after the first expired (given in another time zone)
    at = (NOW + timedelta(hours=1)).astimezone(ZoneInfo("Europe/Berlin"))
    active = await offers.active_for("C0001", at)

    # then only the current one is left
    assert [offer.id for offer in active] == [current.id]
    assert await offers.active_for("C0003", at) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": " C0001"}, "customer_id"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"percent_off": None}, "percent_off"),
        ({"amount_off": Money(Decimal("5.00"), "EUR")}, "percent_off"),
        ({"percent_off": Decimal(0)}, "percent_off"),
        ({"percent_off": Decimal("100.01")}, "percent_off"),
        ({"percent_off": Decimal("NaN")}, "percent_off"),
        ({"percent_off": Decimal("12.00005")}, "percent_off"),
        ({"percent_off": None, "amount_off": Money(Decimal(0), "EUR")}, "amount_off"),
        ({"percent_off": None, "amount_off": Money(Decimal("-1"), "EUR")}, "amount_off"),
        ({"percent_off": None, "amount_off": Money(Decimal("1.005"), "EUR")}, "amount_off"),
        ({"percent_off": None, "amount_off": Money(Decimal("5.00"), "USD")}, "amount_off"),
        ({"skus": ("SKU-1", "")}, "skus"),
        ({"categories": (" ",)}, "categories"),
        ({"valid_until": NOW}, "valid_until"),
        ({"valid_until": NOW - timedelta(days=1)}, "valid_until"),
        ({"valid_until": datetime(2031, 4, 1)}, "valid_until"),
        ({"valid_from": NOW + timedelta(days=31)}, "valid_from"),
        ({"issued_by_channel": ""}, "issued_by_channel"),
    ],
)
async def test_an_invalid_offer_is_refused_naming_the_field(
    engine: AsyncEngine, changes: dict[str, object], field: str
) -> None:
    # given an offer with one thing wrong
    offers = PersonalOffers(engine, "EUR", clock=lambda: NOW)

    # when it is issued
    with pytest.raises(InvalidOffer) as refused:
        await offers.issue(boots_offer(**changes))

    # then the error names the field, and nothing was stored
    assert refused.value.field == field
    assert await offers.active_for("C0001", NOW) == []


async def test_a_percent_offer_becomes_a_personal_percent_rule(engine: AsyncEngine) -> None:
    # given an issued percentage offer
    offers = PersonalOffers(engine, "EUR", clock=lambda: NOW)
    issued = await offers.issue(boots_offer(percent_off=Decimal("12.5")))

    # when it is read back as a rule
    rules = await offers.rules_for("C0001", NOW)

    # then every field of the rule is mapped
    assert rules == [
        PromotionRule(
            id=f"PO-{issued.id}",
            title="Sorry about the late parcel: 25% off boots",
            kind=PromotionKind.PERCENT_OFF,
            value=Decimal("12.5"),
            value_type=ValueType.PERCENT,
            currency="EUR",
            target=PromotionTarget(
                skus=frozenset({"SKU-1", "SKU-9"}), categories=frozenset({"footwear/boots"})
            ),
            valid_from=NOW,
            valid_until=NOW + timedelta(days=30),
            priority=9,
            exclusive=False,
            stacking_group="PERSONAL",
            customer_id="C0001",
        )
    ]


async def test_an_amount_offer_on_everything_becomes_an_amount_rule_ending_at_revocation(
    engine: AsyncEngine,
) -> None:
    # given an issued amount offer on every item, revoked later
    offers = PersonalOffers(engine, "EUR", clock=lambda: NOW)
    amount = Money(Decimal("10.1"), "EUR")
    new = boots_offer(percent_off=None, amount_off=amount, skus=(), categories=())
    issued = await offers.issue(new)
    await offers.revoke(issued.id, NOW + timedelta(days=3))
    (stored,) = await offers.active_for("C0001", NOW + timedelta(days=1))

    # when it is mapped to a rule
    rule = to_rule(stored, "EUR")

    # then it takes off 10.10 EUR per unit on everything, until revocation
    assert stored.revoked_at == NOW + timedelta(days=3)
    assert stored.amount_off == Money(Decimal("10.10"), "EUR")
    assert str(stored.amount_off.amount) == "10.10"
    assert (rule.kind, rule.value, rule.value_type, rule.currency) == (
        PromotionKind.AMOUNT_OFF,
        Decimal("10.10"),
        ValueType.AMOUNT,
        "EUR",
    )
    assert rule.target.everything
    assert (rule.valid_from, rule.valid_until) == (NOW, NOW + timedelta(days=3))
    assert (rule.id, rule.customer_id) == (f"PO-{issued.id}", "C0001")


# --------------------------------------------------------------------------- coupon usage


async def test_coupon_uses_are_counted_in_total_and_per_customer(engine: AsyncEngine) -> None:
    # given three orders with WELCOME10, two of them C0001's, and one with another code
    usage = CouponUsage(engine, clock=lambda: NOW)
    for code, customer, order in [
        ("WELCOME10", "C0001", "O-1"),
        ("WELCOME10", "C0001", "O-2"),
        ("WELCOME10", None, "O-3"),
        ("SPRING", "C0001", "O-1"),
    ]:
        async with engine.begin() as connection:
            await usage.record(code, customer, order, connection)

    # when the uses are counted
    # then the totals and the customer's share are exact
    assert await usage.uses("WELCOME10", "C0001") == CouponUses(total=3, by_customer=2)
    assert await usage.uses("WELCOME10", "C0002") == CouponUses(total=3, by_customer=0)
    assert await usage.uses("WELCOME10", None) == CouponUses(total=3, by_customer=0)
    assert await usage.uses("NOPE", "C0001") == CouponUses(total=0, by_customer=0)


async def test_the_same_order_cannot_use_a_coupon_twice(engine: AsyncEngine) -> None:
    # given an order that used a code
    usage = CouponUsage(engine, clock=lambda: NOW)
    async with engine.begin() as connection:
        await usage.record("WELCOME10", "C0001", "O-1", connection)

    # when the same order records it again
    with pytest.raises(DuplicateCouponUse) as refused:
        async with engine.begin() as connection:
            await usage.record("WELCOME10", "C0001", "O-1", connection)

    # then it is refused and still counted once
    assert (refused.value.code, refused.value.order_id) == ("WELCOME10", "O-1")
    assert await usage.uses("WELCOME10", "C0001") == CouponUses(total=1, by_customer=1)


async def test_concurrent_orders_never_use_a_coupon_beyond_its_limit(engine: AsyncEngine) -> None:
    # given a coupon good for three uses, and at most two per customer
    usage = CouponUsage(engine, clock=lambda: NOW)
    coupon = Coupon("FLASH", "PR001", max_uses=3, max_uses_per_customer=2)

    async def place(customer: str, order: str) -> bool:
        async with engine.begin() as connection:
            return await usage.claim(coupon, customer, order, connection)

    # when eight orders of two customers claim it at once
    claims = await asyncio.gather(*(place(f"C000{n % 2}", f"O-{n}") for n in range(8)))

    # then exactly three got it, no customer more than twice
    assert claims.count(True) == 3
    first, second = [await usage.uses("FLASH", c) for c in ("C0000", "C0001")]
    assert (first.total, sorted([first.by_customer, second.by_customer])) == (3, [1, 2])


@pytest.mark.parametrize(
    ("max_uses", "per_customer", "uses", "allowed"),
    [
        (None, None, CouponUses(1000, 1000), True),
        (3, None, CouponUses(2, 2), True),
        (3, None, CouponUses(3, 0), False),
        (None, 1, CouponUses(5, 0), True),
        (None, 1, CouponUses(5, 1), False),
        (10, 2, CouponUses(9, 1), True),
        (10, 2, CouponUses(10, 1), False),
    ],
)
def test_a_coupon_may_be_used_while_both_limits_leave_room(
    max_uses: int | None, per_customer: int | None, uses: CouponUses, allowed: bool
) -> None:
    assert may_use(Coupon("CODE", "PR001", max_uses, per_customer), uses) is allowed


@pytest.mark.postgres
async def test_reads_and_key_claims_are_retried_on_a_new_connection_when_the_server_cut_theirs(
    pg_database: str,
) -> None:
    # given a pool holding four open connections, each read and claim on one of them before
    from gateway.ledger import InventoryLedger
    from gateway.orders.store import ClaimState, IdempotencyKeys, OrderReader

    await upgrade(pg_database)
    engine = create_engine(pg_database)
    ledger, reader, keys = InventoryLedger(engine), OrderReader(engine), IdempotencyKeys(engine)
    try:
        await asyncio.gather(*(_backend_pid(engine) for _ in range(4)))

        # when the server ends every connection, and then reads and claims run at once
        await _terminate_connections_to(pg_database)
        key = uuid.uuid4().hex
        positions, orders, claim, offers = await asyncio.gather(
            ledger.positions(["SKU-NONE"]),
            reader.by_ids(["O-NONE"]),
            keys.claim("web", key, "hash", "O-NEW", NOW),
            PersonalOffers(engine, "EUR").active_for("C0001", NOW),
        )
    finally:
        await engine.dispose()

    # then each answered, as if nothing had happened
    assert (positions, orders, offers) == ({}, {}, [])
    assert claim.state is ClaimState.NEW


async def test_a_retry_stops_at_other_errors_and_after_one_more_disconnect() -> None:
    # given operations failing as a disconnect, and one failing otherwise
    from gateway.db import retry_on_disconnect

    calls: list[str] = []

    def lost() -> DBAPIError:
        error = DBAPIError("SELECT 1", None, ConnectionResetError("cut"))
        error.connection_invalidated = True
        return error

    async def cut_once() -> str:
        calls.append("cut_once")
        if calls.count("cut_once") == 1:
            raise lost()
        return "answer"

    async def always_cut() -> str:
        calls.append("always_cut")
        raise lost()

    async def refused() -> str:
        calls.append("refused")
        raise DBAPIError("SELECT 1", None, ValueError("bad"))

    # when each runs through the retry
    answer = await retry_on_disconnect(cut_once)
    with pytest.raises(DBAPIError):
        await retry_on_disconnect(always_cut)
    with pytest.raises(DBAPIError):
        await retry_on_disconnect(refused)

    # then a disconnect is tried once more, nothing else is
    assert answer == "answer"
    assert calls.count("cut_once") == 2
    assert calls.count("always_cut") == 2
    assert calls.count("refused") == 1
