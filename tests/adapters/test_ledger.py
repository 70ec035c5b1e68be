"""The inventory ledger in the gateway's own database (SQLite and PostgreSQL), fed by the real ERP.

The ERP is its simulator: the tiny demo estate in SQLite, reloaded for every test, with its
control server running over it so that stock movements are booked the way tills book them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.erp_sql import SqlErpInventory
from adapters.ports import GeoPoint, Location, LocationKind, StockChanges, StockLevel
from gateway.db import autocommit, create_engine, inventory_positions, ledger_state, upgrade
from gateway.ledger import (
    CURSOR,
    InventoryLedger,
    Position,
    Reservation,
    Shortfall,
    default_safety_stock,
    in_lock_order,
)
from gateway.orders.store import IdempotencyKeys, NewOrder, OrderReader, reserve_and_insert
from gateway.sourcing import Allocation
from legacy import erp
from legacy.demo import SCALES, DemoEstate, StockRow
from legacy.launcher import default_erp_url
from tests.support import start_systems, write_systems
from tests.unit.test_promotions_rules import line, price

NOW = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
PATIENCE = 30.0  # seconds to wait for a background task to get somewhere before giving up
IN_A_TRANSACTION, ONE_STATEMENT = "in-a-transaction", "one-statement"


@dataclass(frozen=True)
class RunningErp:
    url: str
    control_url: str


@pytest.fixture(scope="module")
def erp_system(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningErp]:
    """The ERP in SQLite with its control server, shared by the module."""
    data_dir = tmp_path_factory.mktemp("ledger-erp")
    write_systems(truth, data_dir, ["erp"])
    estate = start_systems(data_dir, ("erp",))
    yield RunningErp(default_erp_url(data_dir), estate.urls["erp"])
    estate.stop()


@pytest.fixture
async def inventory(erp_system: RunningErp, truth: DemoEstate) -> AsyncIterator[SqlErpInventory]:
    """The ERP adapter over the ERP back at the ground truth."""
    await erp.load(truth, erp_system.url, None)
    adapter = SqlErpInventory.from_url(erp_system.url, pool_size=4, timeout=10.0)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated gateway database with an empty ledger (the PostgreSQL one is shared)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(delete(inventory_positions))
        await connection.execute(delete(ledger_state))
    yield engine
    await engine.dispose()


@pytest.fixture
def ledger(engine: AsyncEngine) -> InventoryLedger:
    return InventoryLedger(engine, clock=lambda: NOW)


class OrderRefused(Exception):
    def __init__(self, shortfalls: list[Shortfall]) -> None:
        super().__init__(f"{len(shortfalls)} shortfalls")
        self.shortfalls = shortfalls


async def place_order(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    items: list[Reservation],
    holding: str = IN_A_TRANSACTION,
) -> list[Shortfall]:
    """Hold every item or none, as an order does: in a transaction that any shortfall rolls
    back, or (``ONE_STATEMENT``, PostgreSQL) as an order without coupons is placed there, its
    key claimed and then the holds and the order written by one statement."""
    if holding == ONE_STATEMENT:
        return await _place_in_one_statement(engine, items)
    try:
        async with engine.begin() as connection:
            shortfalls = await ledger.reserve(connection, items)
            if shortfalls:
                raise OrderRefused(shortfalls)
    except OrderRefused as refused:
        return refused.shortfalls
    return []


async def _place_in_one_statement(engine: AsyncEngine, items: list[Reservation]) -> list[Shortfall]:
    order_id, key = f"O-{uuid.uuid4().hex[:16].upper()}", uuid.uuid4().hex
    claim = await IdempotencyKeys(engine).claim("pos", key, "hash", order_id, NOW)
    assert claim.owner is not None
    order = NewOrder(
        id=order_id,
        channel="pos",
        customer_id=None,
        fulfillment="CARRY_OUT",
        store_id=items[0].location_id,
        attributed_store_id=items[0].location_id,
        destination=None,
        priced=price([line(item.sku, item.quantity, "1.00") for item in items], []),
        allocations=tuple(
            Allocation(sku, quantity, location_id)
            for (location_id, sku), quantity in in_lock_order(items)
        ),
        coupon_codes=(),
        placed_at=NOW,
    )
    async with autocommit(engine).connect() as connection:
        shortfalls = await reserve_and_insert(
            connection, order, items, (), ("pos", key), claim.owner
        )
    placed = await OrderReader(engine).by_ids([order_id])
    assert (order_id in placed) == (not shortfalls)  # all or nothing
    return shortfalls


# How an order holds its units: in a transaction (every engine), or in the one statement
# that places an order without coupons on PostgreSQL.
HOLDINGS = pytest.mark.parametrize(
    ("database_url", "holding"),
    [
        ("sqlite", IN_A_TRANSACTION),
        pytest.param("postgresql", IN_A_TRANSACTION, marks=pytest.mark.postgres),
        pytest.param("postgresql", ONE_STATEMENT, marks=pytest.mark.postgres),
    ],
    indirect=["database_url"],
)


async def position_of(ledger: InventoryLedger, location_id: str, sku: str) -> Position | None:
    found = await ledger.positions([sku])
    return next((p for p in found.get(sku, []) if p.location_id == location_id), None)


async def stored_cursor(engine: AsyncEngine) -> str | None:
    query = select(ledger_state.c.value).where(ledger_state.c.name == CURSOR)
    async with engine.connect() as connection:
        return (await connection.execute(query)).scalar_one_or_none()


async def book(erp_system: RunningErp, movements: list[dict[str, object]]) -> None:
    """Book stock movements in the ERP through its control server, as a till would."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(f"{erp_system.control_url}/movements", json=movements)
    response.raise_for_status()


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition`` holds (a background task got there), failing after PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def kinds(truth: DemoEstate) -> dict[str, str]:
    return {location.code: location.kind for location in truth.locations}


def stocked_store_row(truth: DemoEstate, at_least: int, skip: int = 0) -> StockRow:
    """A store's stock row with at least ``at_least`` units on hand (the ``skip``-th such)."""
    rows = [
        row
        for row in truth.stock_rows()
        if row.on_hand >= at_least and kinds(truth)[row.location_code] == "STORE"
    ]
    return rows[skip]


def store_without(truth: DemoEstate, sku: str) -> str:
    """A store the ERP has never had a stock row of ``sku`` for."""
    stocked = {row.location_code for row in truth.stock_rows() if row.sku == sku}
    return next(c for c, kind in kinds(truth).items() if kind == "STORE" and c not in stocked)


async def set_available(
    ledger: InventoryLedger, engine: AsyncEngine, row: StockRow, available: int
) -> None:
    """Hold units of ``row``'s position until exactly ``available`` are left to promise."""
    position = await position_of(ledger, row.location_code, row.sku)
    assert position is not None
    assert position.available >= available
    if position.available > available:
        hold = Reservation(row.location_code, row.sku, position.available - available)
        assert await place_order(ledger, engine, [hold]) == []


# --------------------------------------------------------------------------- loading


async def test_the_initial_load_copies_the_erps_stock_with_safety_stock_per_kind(
    ledger: InventoryLedger, engine: AsyncEngine, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given a new ledger, and the ERP's stock of 40 SKUs as the ERP itself reports it
    skus = sorted({row.sku for row in truth.stock_rows()})[:40]
    levels = await inventory.stock_levels(skus)
    kind = kinds(truth)

    # when the ledger loads the whole feed, 250 rows per page
    applied = await ledger.load_from(inventory, page=250)

    # then every ERP row is a position: on hand from the ERP, nothing reserved, one unit of
    # safety stock at stores and none at distribution centres
    assert applied == sum(1 for _ in truth.stock_rows())
    expected = {
        sku: [
            Position(
                sku,
                level.location_id,
                level.on_hand,
                0,
                1 if kind[level.location_id] == "STORE" else 0,
            )
            for level in found
        ]
        for sku, found in levels.items()
    }
    assert await ledger.positions(skus) == expected
    # and the stored cursor stands at the end of the feed
    cursor = await stored_cursor(engine)
    assert cursor
    assert (await inventory.stock_changes(cursor)).levels == ()


async def test_a_second_load_without_erp_changes_applies_nothing(
    ledger: InventoryLedger, engine: AsyncEngine, inventory: SqlErpInventory
) -> None:
    # given a loaded ledger
    await ledger.load_from(inventory)
    cursor = await stored_cursor(engine)

    # when it loads again
    applied = await ledger.load_from(inventory)

    # then nothing was applied and the cursor stayed
    assert applied == 0
    assert await stored_cursor(engine) == cursor


async def test_a_stock_movement_in_the_erp_updates_on_hand_and_leaves_reserved_alone(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    erp_system: RunningErp,
    truth: DemoEstate,
) -> None:
    # given a loaded ledger, two units of a store's position held by an order, and another
    # store that has never had that SKU
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=6)
    assert await place_order(ledger, engine, [Reservation(row.location_code, row.sku, 2)]) == []
    empty = store_without(truth, row.sku)

    # when a till sells three units there, a delivery brings four to the other store, and the
    # ledger loads the feed
    await book(
        erp_system,
        [
            {"store": row.location_code, "sku": row.sku, "delta": -3},
            {"store": empty, "sku": row.sku, "delta": 4},
        ],
    )
    applied = await ledger.load_from(inventory)

    # then on hand follows the ERP, the held units stay held, and the new position exists
    assert applied == 2
    assert await position_of(ledger, row.location_code, row.sku) == Position(
        row.sku, row.location_code, row.on_hand - 3, 2, 1
    )
    assert await position_of(ledger, empty, row.sku) == Position(row.sku, empty, 4, 0, 1)


async def test_loading_from_an_empty_feed_stores_no_cursor(
    ledger: InventoryLedger, engine: AsyncEngine, tmp_path: Path
) -> None:
    # given an ERP without any stock
    url = f"sqlite+aiosqlite:///{tmp_path}/empty-erp.sqlite"
    await erp.load(DemoEstate(0, SCALES["tiny"], [], [], [], [], []), url, None)
    empty = SqlErpInventory.from_url(url)

    # when the ledger loads
    try:
        applied = await ledger.load_from(empty)
    finally:
        await empty.aclose()

    # then nothing is applied and the next load starts from the beginning again
    assert applied == 0
    assert await stored_cursor(engine) is None


async def test_concurrent_loads_apply_every_page_exactly_once(
    engine: AsyncEngine, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given three gateway processes' ledgers over one database
    ledgers = [InventoryLedger(engine, clock=lambda: NOW) for _ in range(3)]

    # when they load the whole feed at the same time, 100 rows per page
    applied = await asyncio.gather(*(each.load_from(inventory, page=100) for each in ledgers))

    # then between them every row was applied once, and the ledger equals the ERP
    rows = list(truth.stock_rows())
    assert sum(applied) == len(rows)
    skus = sorted({row.sku for row in rows})
    found = await ledgers[0].positions(skus)
    on_hand = {(p.location_id, p.sku): p.on_hand for each in found.values() for p in each}
    assert on_hand == {(row.location_code, row.sku): max(0, row.on_hand) for row in rows}
    assert (await inventory.stock_changes(await stored_cursor(engine))).levels == ()


async def test_a_changed_safety_stock_policy_reaches_positions_the_feed_did_not_bring(
    engine: AsyncEngine, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given a ledger loaded with the default policy, and a position with units held
    await InventoryLedger(engine, clock=lambda: NOW).load_from(inventory)
    row = stocked_store_row(truth, at_least=6)
    ledger = InventoryLedger(engine, safety_stock={row.location_code: 3}, clock=lambda: NOW)
    assert await place_order(ledger, engine, [Reservation(row.location_code, row.sku, 1)]) == []

    # when a gateway restarts with three units kept back at that store only, and loads
    applied = await ledger.load_from(inventory)

    # then no ERP row changed, yet every position follows the new policy; reservations stay
    assert applied == 0
    skus = sorted({r.sku for r in truth.stock_rows()})
    found = [p for each in (await ledger.positions(skus)).values() for p in each]
    safety = {p.safety_stock for p in found if p.location_id == row.location_code}
    assert safety == {3}
    assert {p.safety_stock for p in found if p.location_id != row.location_code} == {0}
    changed = await position_of(ledger, row.location_code, row.sku)
    assert changed == Position(row.sku, row.location_code, row.on_hand, 1, 3)


class CountedLocations:
    """The ERP adapter, counting how often its locations are read."""

    def __init__(self, inventory: SqlErpInventory) -> None:
        self.inventory = inventory
        self.reads = 0

    async def stock_levels(self, skus: Sequence[str]) -> Mapping[str, Sequence[StockLevel]]:
        return await self.inventory.stock_levels(skus)

    async def locations(self) -> Sequence[Location]:
        self.reads += 1
        return await self.inventory.locations()

    async def stock_changes(self, since: str | None, limit: int = 10_000) -> StockChanges:
        return await self.inventory.stock_changes(since, limit)

    async def aclose(self) -> None:
        await self.inventory.aclose()


async def test_syncing_reads_the_locations_again_only_after_the_refresh_or_for_a_new_one(
    engine: AsyncEngine, inventory: SqlErpInventory, erp_system: RunningErp, truth: DemoEstate
) -> None:
    # given a loaded ledger that reads the ERP's locations at most once an hour
    counted = CountedLocations(inventory)
    ledger = InventoryLedger(engine, clock=lambda: NOW, locations_refresh=3600.0)
    await ledger.load_from(counted)
    row = stocked_store_row(truth, at_least=6)

    # when a till sells there and the ledger syncs, then syncs with nothing new
    await book(erp_system, [{"store": row.location_code, "sku": row.sku, "delta": -1}])
    assert await ledger.load_from(counted) == 1
    assert await ledger.load_from(counted) == 0

    # then the locations were read once, by the first load
    assert counted.reads == 1

    # when the ERP opens a store (a copy of that one under a new number) and a delivery lands
    # there, written as the ERP writes it: a stock row stamped after every other
    opened = "9" * len(row.location_code)
    erp_engine = create_async_engine(erp_system.url)
    try:
        async with erp_engine.begin() as connection:
            stores, stock = await connection.run_sync(
                lambda sync: [
                    Table(name, MetaData(), autoload_with=sync)
                    for name in ("STORES", "STOCK_LEVELS")
                ]
            )
            here = func.trim(stores.c.STORE_NO) == row.location_code
            (store,) = (await connection.execute(select(stores).where(here))).mappings()
            await connection.execute(insert(stores).values({**store, "STORE_NO": opened}))
            (level,) = (
                await connection.execute(
                    select(stock)
                    .where(func.trim(stock.c.STORE_NO) == row.location_code)
                    .where(func.trim(stock.c.ITEM_NO) == row.sku)
                )
            ).mappings()
            latest = (await connection.execute(select(func.max(stock.c.LAST_UPD)))).scalar_one()
            delivered = {
                "STORE_NO": opened,
                "QTY_ON_HAND": 5,
                "LAST_UPD": latest + timedelta(seconds=1),
            }
            await connection.execute(insert(stock).values({**level, **delivered}))
    finally:
        await erp_engine.dispose()
    assert await ledger.load_from(counted) == 1

    # then the ledger read the locations again before writing the new store's position, which
    # keeps back a store's safety stock
    assert counted.reads == 2
    assert await position_of(ledger, opened, row.sku) == Position(row.sku, opened, 5, 0, 1)

    # and a ledger that refreshes on every sync reads them every time
    eager = InventoryLedger(engine, clock=lambda: NOW, locations_refresh=0.0)
    reads = counted.reads
    await eager.load_from(counted)
    await eager.load_from(counted)
    assert counted.reads == reads + 2


# --------------------------------------------------------------------------- reading


async def test_positions_of_many_skus_take_one_query_per_five_hundred(
    ledger: InventoryLedger, engine: AsyncEngine, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given a loaded ledger, and 500 and then 501 SKUs asked for (real ones among unknown ones)
    await ledger.load_from(inventory)
    real = sorted({row.sku for row in truth.stock_rows()})
    unknown = [f"UNKNOWN-{number:04}" for number in range(300)]
    statements: list[str] = []

    def count(*arguments: object) -> None:
        statements.append(str(arguments[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)

    # when
    five_hundred = await ledger.positions([*real, *unknown][:500])
    at_500 = sum("inventory_positions" in statement for statement in statements)
    five_hundred_one = await ledger.positions([*real, *unknown][:501])
    event.remove(engine.sync_engine, "before_cursor_execute", count)

    # then unknown SKUs are absent, and the 501st SKU costs a second query
    assert sorted(five_hundred) == sorted(five_hundred_one) == real
    assert at_500 == 1
    assert sum("inventory_positions" in statement for statement in statements) == 3
    assert await ledger.positions([]) == {}


# --------------------------------------------------------------------------- reserving


@HOLDINGS
async def test_reserve_holds_units_up_to_available_to_promise_then_reports_the_shortfall(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    truth: DemoEstate,
    holding: str,
) -> None:
    # given a store position with five units available to promise
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=7)
    await set_available(ledger, engine, row, 5)
    before = await position_of(ledger, row.location_code, row.sku)
    assert before is not None

    # when one order asks for seven, then one takes all five (as two lines), then another one
    too_many = await place_order(
        ledger, engine, [Reservation(row.location_code, row.sku, 7)], holding
    )
    lines = [Reservation(row.location_code, row.sku, 3), Reservation(row.location_code, row.sku, 2)]
    all_five = await place_order(ledger, engine, lines, holding)
    one_more = await place_order(
        ledger, engine, [Reservation(row.location_code, row.sku, 1)], holding
    )

    # then the first and last fall short saying what was there, and five more units are held
    assert too_many == [Shortfall(row.location_code, row.sku, requested=7, available=5)]
    assert all_five == []
    assert one_more == [Shortfall(row.location_code, row.sku, requested=1, available=0)]
    after = await position_of(ledger, row.location_code, row.sku)
    assert after is not None
    assert (after.reserved, after.available) == (before.reserved + 5, 0)


@HOLDINGS
async def test_an_order_falls_short_on_every_position_that_lacks_units_in_lock_order(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    truth: DemoEstate,
    holding: str,
) -> None:
    # given one position with two units to promise, and a SKU the ledger has never seen
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=6)
    await set_available(ledger, engine, row, 2)

    # when an order asks for three of each, the unknown SKU first
    shortfalls = await place_order(
        ledger,
        engine,
        [Reservation("0001", "NO-SUCH-SKU", 3), Reservation(row.location_code, row.sku, 3)],
        holding,
    )

    # then both fall short, in (location, SKU) order, and the order held nothing
    expected = sorted(
        [
            Shortfall("0001", "NO-SUCH-SKU", requested=3, available=0),
            Shortfall(row.location_code, row.sku, requested=3, available=2),
        ],
        key=lambda shortfall: (shortfall.location_id, shortfall.sku),
    )
    assert shortfalls == expected
    position = await position_of(ledger, row.location_code, row.sku)
    assert position is not None
    assert position.available == 2


async def test_release_gives_units_back_and_never_below_zero(
    ledger: InventoryLedger, engine: AsyncEngine, inventory: SqlErpInventory, truth: DemoEstate
) -> None:
    # given four units held at a position
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=6)
    held = [Reservation(row.location_code, row.sku, 4)]
    assert await place_order(ledger, engine, held) == []
    before = await position_of(ledger, row.location_code, row.sku)

    # when three are released, then five more (more than are left), and an unknown position
    async with engine.begin() as connection:
        await ledger.release(connection, [Reservation(row.location_code, row.sku, 3)])
    middle = await position_of(ledger, row.location_code, row.sku)
    async with engine.begin() as connection:
        await ledger.release(
            connection,
            [Reservation(row.location_code, row.sku, 5), Reservation("0001", "NO-SUCH-SKU", 1)],
        )
    after = await position_of(ledger, row.location_code, row.sku)

    # then held units drop to one, then to zero, and on hand never moved
    assert before is not None
    assert middle is not None
    assert after is not None
    assert (before.reserved, middle.reserved, after.reserved) == (4, 1, 0)
    assert after.on_hand == before.on_hand == row.on_hand
    assert await ledger.positions(["NO-SUCH-SKU"]) == {}


async def test_a_restock_adds_on_hand_until_the_erp_reports_its_own_count(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    erp_system: RunningErp,
    truth: DemoEstate,
) -> None:
    # given a loaded ledger, a position with units, and a SKU a store has never had
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=6)
    store = store_without(truth, row.sku)

    # when customers return two units at the first store and one at the other
    async with engine.begin() as connection:
        await ledger.restock(connection, row.location_code, row.sku, 2)
        await ledger.restock(connection, store, row.sku, 1)
    returned = await position_of(ledger, row.location_code, row.sku)
    created = await position_of(ledger, store, row.sku)
    # and later the ERP books the first return (and a sale) itself, and the ledger loads
    await book(erp_system, [{"store": row.location_code, "sku": row.sku, "delta": 1}])
    await ledger.load_from(inventory)
    booked = await position_of(ledger, row.location_code, row.sku)

    # then on hand rose at once, the new position keeps the store's safety stock, and the
    # ERP's own count replaced the gateway's
    assert returned == Position(row.sku, row.location_code, row.on_hand + 2, 0, 1)
    assert created == Position(row.sku, store, 1, 0, 1)
    assert booked == Position(row.sku, row.location_code, row.on_hand + 1, 0, 1)


async def test_the_database_refuses_negative_reserved_units(
    ledger: InventoryLedger, engine: AsyncEngine
) -> None:
    # given a position
    async with engine.begin() as connection:
        await ledger.restock(connection, "0001", "SKU-1", 3)

    # when something writes a negative reservation past the ledger
    # then the table's check refuses it
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(update(inventory_positions).values(reserved=-1))


@pytest.mark.parametrize("quantity", [0, -2])
def test_a_reservation_is_of_at_least_one_unit(quantity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Reservation("0001", "SKU-1", quantity)


# --------------------------------------------------------------------------- concurrency


@HOLDINGS
async def test_thirty_concurrent_orders_for_seven_units_hold_exactly_seven(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    truth: DemoEstate,
    holding: str,
) -> None:
    # given a position with seven units available to promise
    await ledger.load_from(inventory)
    row = stocked_store_row(truth, at_least=8)
    await set_available(ledger, engine, row, 7)
    before = await position_of(ledger, row.location_code, row.sku)
    assert before is not None

    # when thirty orders each take one unit at the same time
    one = [Reservation(row.location_code, row.sku, 1)]
    results = await asyncio.gather(*(place_order(ledger, engine, one, holding) for _ in range(30)))

    # then exactly seven got one, the others were told nothing is left, and seven are held
    assert sum(result == [] for result in results) == 7
    sold_out = [Shortfall(row.location_code, row.sku, requested=1, available=0)]
    assert all(result in ([], sold_out) for result in results)
    after = await position_of(ledger, row.location_code, row.sku)
    assert after is not None
    assert (after.reserved, after.available) == (before.reserved + 7, 0)


@HOLDINGS
async def test_concurrent_orders_listing_positions_in_opposite_orders_all_complete(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    inventory: SqlErpInventory,
    truth: DemoEstate,
    holding: str,
) -> None:
    # given two positions with plenty to promise
    await ledger.load_from(inventory)
    first, second = (stocked_store_row(truth, at_least=30, skip=skip) for skip in (0, 1))
    a = Reservation(first.location_code, first.sku, 1)
    b = Reservation(second.location_code, second.sku, 1)
    room = min(first.on_hand, second.on_hand) - 1

    # when as many orders as both can serve take one of each, half of them listing B first
    orders = [[a, b] if number % 2 else [b, a] for number in range(room)]
    results = await asyncio.gather(
        *(place_order(ledger, engine, items, holding) for items in orders)
    )

    # then none deadlocked or fell short, and each position holds one unit per order
    assert results == [[]] * room
    for row in (first, second):
        position = await position_of(ledger, row.location_code, row.sku)
        assert position is not None
        assert position.reserved == room


# --------------------------------------------------------------------------- sync loop


async def test_sync_forever_logs_an_unreachable_erp_and_loads_once_it_is_there(
    ledger: InventoryLedger,
    truth: DemoEstate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given an ERP whose database has no tables yet, and the sync loop running over it
    url = f"sqlite+aiosqlite:///{tmp_path}/late-erp.sqlite"
    late = SqlErpInventory.from_url(url)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="gateway.ledger")
    task = asyncio.create_task(ledger.sync_forever(late, interval=0.05, stop=stop))
    some_sku = next(truth.stock_rows()).sku

    async def failure_logged() -> bool:
        return any("the ERP failed" in record.getMessage() for record in caplog.records)

    async def loaded() -> bool:
        return bool(await ledger.positions([some_sku]))

    try:
        # when the ERP fails for a while, and then its tables are loaded
        await eventually(failure_logged)
        await erp.load(truth, url, None)
        await eventually(loaded)
    finally:
        stop.set()
        await task  # then the loop survived the failure, and ends when told to
        await late.aclose()

    # and the ledger holds the ERP's stock of the SKU
    found = await ledger.positions([some_sku])
    assert {(p.location_id, p.on_hand) for p in found[some_sku]} == {
        (row.location_code, max(0, row.on_hand))
        for row in truth.stock_rows()
        if row.sku == some_sku
    }


# --------------------------------------------------------------------------- property


STOCK = [("0001", "A", 5, 1), ("0001", "B", 2, 0), ("9001", "A", 0, 0)]
"""(location, SKU, on hand, safety stock) of the positions the property below plays with."""

OPERATIONS = st.lists(
    st.tuples(st.booleans(), st.integers(0, len(STOCK) - 1), st.integers(1, 6)),
    min_size=1,
    max_size=25,
)


async def seed(engine: AsyncEngine) -> None:
    rows = [
        {
            "location_id": place,
            "sku": sku,
            "on_hand": units,
            "safety_stock": kept,
            "updated_at": NOW,
        }
        for place, sku, units, kept in STOCK
    ]
    async with engine.begin() as connection:
        await connection.execute(delete(inventory_positions))
        await connection.execute(insert(inventory_positions), rows)


async def play(
    ledger: InventoryLedger,
    engine: AsyncEngine,
    operations: list[tuple[bool, int, int]],
    holding: str,
) -> dict[tuple[str, str], int]:
    """Run the holds and releases, checking each hold against the rule; return what the rule
    says is held at the end."""
    held = {(place, sku): 0 for place, sku, _, _ in STOCK}
    for holds, index, quantity in operations:
        place, sku, on_hand, safety = STOCK[index]
        item = Reservation(place, sku, quantity)
        if not holds:
            async with engine.begin() as connection:
                await ledger.release(connection, [item])
            held[place, sku] = max(0, held[place, sku] - quantity)
            continue
        room = max(0, on_hand - safety - held[place, sku])
        shortfalls = await place_order(ledger, engine, [item], holding)
        assert shortfalls == ([] if quantity <= room else [Shortfall(place, sku, quantity, room)])
        held[place, sku] += quantity if quantity <= room else 0
    return held


@HOLDINGS
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_holds_and_releases_in_any_sequence_never_promise_what_is_not_there(
    database_url: str, holding: str, operations: list[tuple[bool, int, int]]
) -> None:
    async def scenario() -> None:
        # given three positions with different stock and safety stock
        await upgrade(database_url)
        engine = create_engine(database_url)
        ledger = InventoryLedger(engine, clock=lambda: NOW)
        try:
            await seed(engine)
            # when orders hold and release units in any sequence (each hold checked as it goes)
            expected = await play(ledger, engine, operations, holding)
            # then the ledger holds what the rule says, never beyond on hand less safety stock
            found = [p for each in (await ledger.positions(["A", "B"])).values() for p in each]
            assert {(p.location_id, p.sku): p.reserved for p in found} == expected
            assert all(p.reserved <= max(0, p.on_hand - p.safety_stock) for p in found)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_default_policy_keeps_back_one_unit_at_stores_and_none_at_distribution_centres() -> None:
    def location(kind: LocationKind) -> Location:
        return Location("0001", "x", kind, GeoPoint(0, 0), "80331", frozenset(), 0, ())

    assert default_safety_stock(location(LocationKind.STORE)) == 1
    assert default_safety_stock(location(LocationKind.DISTRIBUTION_CENTER)) == 0
