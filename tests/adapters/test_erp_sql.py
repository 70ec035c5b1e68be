"""SqlErpInventory against the ERP's legacy tables, on SQLite and on PostgreSQL.

Each test starts from the ground truth (the tables are reloaded) with the ERP's control server
running over the same database, so movements booked through it are real SQL writes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.erp_sql import SqlErpInventory
from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    GeoPoint,
    InventoryPort,
    Location,
    LocationKind,
    OpeningHours,
    StockLevel,
)
from legacy import erp
from legacy.demo import DemoEstate, DemoLocation, generate
from legacy.launcher import default_erp_url
from tests.support import start_systems, write_systems


@dataclass(frozen=True)
class ErpUnderTest:
    dialect: str
    url: str
    control_url: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def erp_system(
    request: pytest.FixtureRequest, truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ErpUnderTest]:
    """The ERP database of one dialect, seeded, with its control server running over it."""
    data_dir = tmp_path_factory.mktemp(f"erp-{request.param}")
    if request.param == "sqlite":
        write_systems(truth, data_dir, ["erp"])
        url = default_erp_url(data_dir)
    else:
        url = request.getfixturevalue("pg_database")
        asyncio.run(erp.load(truth, url, None))
    estate = start_systems(data_dir, ("erp",), erp_url=url)
    yield ErpUnderTest(request.param, url, estate.urls["erp"])
    estate.stop()


@pytest.fixture
async def erp_db(erp_system: ErpUnderTest, truth: DemoEstate) -> ErpUnderTest:
    """The ERP back at the ground truth, with its call counters and knobs reset."""
    await erp.load(truth, erp_system.url, None)
    async with httpx.AsyncClient(timeout=5.0) as client:
        (await client.post(f"{erp_system.control_url}/_sim/reset")).raise_for_status()
    return erp_system


@pytest.fixture
async def inventory(erp_db: ErpUnderTest) -> AsyncIterator[SqlErpInventory]:
    adapter = SqlErpInventory.from_url(erp_db.url, pool_size=4, timeout=5.0)
    yield adapter
    await adapter.aclose()


def expected_levels(truth: DemoEstate) -> dict[str, list[StockLevel]]:
    """The ground truth as the port promises it: codes stripped, never negative, UTC."""
    levels: dict[str, list[StockLevel]] = {}
    for row in truth.stock_rows():
        level = StockLevel(row.sku, row.location_code, max(0, row.on_hand), row.updated_at)
        levels.setdefault(row.sku, []).append(level)
    return {
        sku: sorted(found, key=lambda level: level.location_id) for sku, found in levels.items()
    }


def expected_location(location: DemoLocation) -> Location:
    return Location(
        id=location.code,
        name=location.name,
        kind=LocationKind.STORE if location.kind == "STORE" else LocationKind.DISTRIBUTION_CENTER,
        point=GeoPoint(location.lat, location.lon),
        postal_code=location.postal_code,
        capabilities=location.capabilities,
        daily_capacity=location.daily_capacity,
        opening_hours=tuple(
            OpeningHours(day, time.fromisoformat(opens), time.fromisoformat(closes))
            for day, opens, closes in location.opening_hours
        ),
    )


async def read_all_changes(
    adapter: SqlErpInventory, since: str | None, limit: int
) -> tuple[list[StockLevel], str]:
    """Every change after ``since``, page by page, and the cursor after the last page."""
    levels: list[StockLevel] = []
    cursor = since
    while True:
        page = await adapter.stock_changes(cursor, limit=limit)
        if not page.levels:
            return levels, page.cursor
        assert len(page.levels) <= limit
        levels.extend(page.levels)
        cursor = page.cursor


async def test_stock_levels_are_the_erp_rows_stripped_clamped_and_in_utc(
    inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given every SKU of the estate, some with negative balances in the ERP
    expected = expected_levels(truth)
    skus = [variant.sku for variant in truth.skus]

    # when
    levels = await inventory.stock_levels(skus)

    # then
    assert {sku: list(found) for sku, found in levels.items()} == expected
    assert any(row.on_hand < 0 for row in truth.stock_rows())
    assert isinstance(inventory, InventoryPort)


async def test_unknown_skus_are_absent(inventory: SqlErpInventory, truth: DemoEstate) -> None:
    # given one known SKU among codes the ERP has no rows for (one wider than ITEM_NO)
    known = next(iter(expected_levels(truth)))
    asked = ["999999999", known, "100000010" + "0" * 20, known]

    # when
    levels = await inventory.stock_levels(asked)

    # then
    assert list(levels) == [known]
    assert await inventory.stock_levels([]) == {}


async def test_many_skus_are_read_in_chunks_and_answered_in_full(
    erp_db: ErpUnderTest, truth: DemoEstate
) -> None:
    # given 2,500 SKUs, the estate's real ones spread among unknown ones, and chunks of 100
    real = [variant.sku for variant in truth.skus]
    unknown = [str(100_000_000 + number) for number in range(2_600)]
    asked = (real + sorted(set(unknown) - set(real)))[:2_500]
    engine = create_async_engine(erp_db.url, pool_size=3, max_overflow=0)
    statements: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    adapter = SqlErpInventory(engine, chunk_size=100, timeout=5.0)

    # when
    try:
        levels = await adapter.stock_levels(asked)
    finally:
        await adapter.aclose()

    # then
    assert {sku: list(found) for sku, found in levels.items()} == expected_levels(truth)
    assert sum('FROM "STOCK_LEVELS"' in statement for statement in statements) == 25


async def test_locations_are_the_active_stores_and_distribution_centres(
    inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given the ERP's store master, which also keeps a closed store (ACTIVE='N')
    expected = [expected_location(location) for location in truth.locations]

    # when
    locations = await inventory.locations()

    # then
    assert list(locations) == sorted(expected, key=lambda location: location.id)


async def test_stock_changes_page_through_every_row_exactly_once_oldest_first(
    inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given the loaded stock and pages of 250 rows
    expected = [level for found in expected_levels(truth).values() for level in found]

    # when
    levels, cursor = await read_all_changes(inventory, None, limit=250)

    # then
    keys = [(level.sku, level.location_id) for level in levels]
    assert len(keys) == len(set(keys)) == len(expected)
    assert sorted(levels, key=lambda level: (level.sku, level.location_id)) == sorted(
        expected, key=lambda level: (level.sku, level.location_id)
    )
    assert [level.updated_at for level in levels] == sorted(level.updated_at for level in levels)
    assert (await inventory.stock_changes(cursor)).levels == ()


async def test_stock_changes_pick_up_a_movement_booked_at_the_till(
    erp_db: ErpUnderTest, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given the end of the change feed, a stocked row and a store without a row for a SKU
    _, cursor = await read_all_changes(inventory, None, limit=1_000)
    stocked = next(row for row in truth.stock_rows() if row.on_hand > 3)
    stores = {row.location_code for row in truth.stock_rows() if row.sku == stocked.sku}
    empty_store = next(loc.code for loc in truth.locations if loc.code not in stores)
    movements = [
        {"store": stocked.location_code, "sku": stocked.sku, "delta": -1},
        {"store": empty_store, "sku": stocked.sku, "delta": 2.5},
    ]
    before = datetime.now().astimezone()

    # when a till books a sale and a (fractional) receipt
    async with httpx.AsyncClient(timeout=5.0) as client:
        booked = await client.post(f"{erp_db.control_url}/movements", json=movements)
        stats = (await client.get(f"{erp_db.control_url}/_sim/stats")).json()
    changes = await inventory.stock_changes(cursor)

    # then the feed holds exactly the two rows, floored, stamped after the booking started
    assert booked.status_code == 200
    assert booked.json()["applied"] == 2
    assert stats["calls"] == {"movements": 1}
    moved = {(level.location_id, level.sku): level.on_hand for level in changes.levels}
    assert moved == {
        (stocked.location_code, stocked.sku): stocked.on_hand - 1,
        (empty_store, stocked.sku): 2,
    }
    assert all(level.updated_at >= before.replace(microsecond=0) for level in changes.levels)
    assert (await inventory.stock_changes(changes.cursor)).levels == ()
    levels = await inventory.stock_levels([stocked.sku])
    assert {level.location_id: level.on_hand for level in levels[stocked.sku]}[empty_store] == 2


async def test_a_movement_for_an_unknown_store_is_refused_and_changes_nothing(
    erp_db: ErpUnderTest, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given the end of the change feed
    _, cursor = await read_all_changes(inventory, None, limit=1_000)
    sku = next(iter(truth.skus)).sku

    # when a till books for a store the ERP does not know, and sends a malformed booking
    async with httpx.AsyncClient(timeout=5.0) as client:
        unknown = await client.post(
            f"{erp_db.control_url}/movements",
            json=[
                {"store": "0001", "sku": sku, "delta": 1},
                {"store": "7777", "sku": sku, "delta": 1},
            ],
        )
        malformed = await client.post(
            f"{erp_db.control_url}/movements", json=[{"store": "0001", "sku": sku, "delta": "x"}]
        )

    # then
    assert (unknown.status_code, unknown.json()["stores"]) == (422, ["7777"])
    assert malformed.status_code == 400
    assert (await inventory.stock_changes(cursor)).levels == ()


async def test_a_reload_keeps_the_legacy_keys_and_indexes(erp_db: ErpUnderTest) -> None:
    # given the ERP reloaded (once by the fixture of every test, so at least twice by now)
    engine = create_async_engine(erp_db.url)

    # when
    try:
        async with engine.connect() as connection:
            keys, indexes = await connection.run_sync(
                lambda sync: (
                    inspect(sync).get_pk_constraint("STOCK_LEVELS"),
                    inspect(sync).get_indexes("STOCK_LEVELS"),
                )
            )
    finally:
        await engine.dispose()

    # then
    assert keys["constrained_columns"] == ["STORE_NO", "ITEM_NO"]
    assert sorted(index["column_names"] for index in indexes) == [
        ["ITEM_NO"],
        ["LAST_UPD", "STORE_NO", "ITEM_NO"],
    ]


async def test_a_cursor_the_erp_did_not_issue_is_rejected(inventory: SqlErpInventory) -> None:
    # when / then
    with pytest.raises(BackendRejected) as raised:
        await inventory.stock_changes("not-a-cursor")
    assert raised.value.code == "INVALID_CURSOR"


async def test_a_query_blocked_by_a_lock_times_out_and_the_adapter_recovers(
    erp_db: ErpUnderTest, truth: DemoEstate
) -> None:
    if erp_db.dialect != "postgresql":
        pytest.skip("SQLite readers never wait for a writer in WAL mode")
    # given an ERP batch job holding an exclusive lock on STOCK_LEVELS
    adapter = SqlErpInventory.from_url(erp_db.url, pool_size=2, timeout=0.5)
    dsn = erp_db.url.replace("postgresql+asyncpg://", "postgresql://")
    blocker = await asyncpg.connect(dsn, timeout=5)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute('LOCK TABLE "STOCK_LEVELS" IN ACCESS EXCLUSIVE MODE')

        # when / then
        with pytest.raises(BackendTimedOut):
            await adapter.stock_levels([next(iter(truth.skus)).sku])
        await transaction.rollback()
        levels = await adapter.stock_levels([next(iter(truth.skus)).sku])
    finally:
        await blocker.close()
        await adapter.aclose()

    # then once the lock is gone the same adapter answers again
    assert list(levels) == [next(iter(truth.skus)).sku]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+asyncpg://postgres@127.0.0.1:1/x", id="postgresql"),
        pytest.param("sqlite+aiosqlite:////nonexistent-directory/erp.sqlite", id="sqlite"),
    ],
)
async def test_an_unreachable_database_is_unavailable(url: str) -> None:
    # given an ERP database nobody can reach
    adapter = SqlErpInventory.from_url(url, timeout=2.0)

    # when / then
    try:
        with pytest.raises(BackendUnavailable):
            await adapter.stock_levels(["100000010"])
        with pytest.raises(BackendUnavailable):
            await adapter.locations()
    finally:
        await adapter.aclose()
        await sqlite_workers_finished()


async def sqlite_workers_finished() -> None:
    """Wait (at most 5 s) for aiosqlite's worker threads to end. After a failed connect,
    aiosqlite stops its thread without waiting, and the thread reports back to this test's
    event loop: it must still be open then."""
    for _ in range(500):
        if not any("_connection_worker_thread" in thread.name for thread in threading.enumerate()):
            return
        await asyncio.sleep(0.01)


async def test_the_default_scale_loads_into_sqlite_with_every_generated_row(tmp_path: Path) -> None:
    # given the default estate and a fresh SQLite file
    estate = generate(42, "default")
    url = default_erp_url(tmp_path)
    reported: list[int] = []

    # when
    await erp.load(estate, url, reported.append)

    # then
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            stored = (
                await connection.execute(text('SELECT COUNT(*) FROM "STOCK_LEVELS"'))
            ).scalar_one()
    finally:
        await engine.dispose()
    generated = sum(1 for _ in estate.stock_rows())
    assert stored == sum(reported) == generated
