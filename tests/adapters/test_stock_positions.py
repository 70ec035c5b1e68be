"""Positions held for reads (``gateway.readmodel.stock``), over the real ledger in SQLite and
PostgreSQL: held until the bus names the SKU, never kept when a change overtook the read, never
held while the bus is cut off, and never longer than their lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import inventory_positions
from gateway.ledger import InventoryLedger, Position
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.levels import RedisLink
from gateway.readmodel.stock import StockPositions
from tests.adapters.conftest import migrated
from tests.support import ManualClock

STORE = "0001"


class PausingLedger(InventoryLedger):
    """The ledger, with a read that can be held up half way (after it read its rows)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.reads = 0
        self.pause: asyncio.Event | None = None
        self.paused = asyncio.Event()

    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]:
        self.reads += 1
        found = await super().positions(skus)
        if self.pause is not None:
            self.paused.set()
            await self.pause.wait()
        return found


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated(database_url, inventory_positions) as engine:
        yield engine


@pytest.fixture
def ledger(engine: AsyncEngine) -> PausingLedger:
    return PausingLedger(engine)


async def restock(engine: AsyncEngine, ledger: InventoryLedger, sku: str, quantity: int) -> None:
    """A write the bus is not told of (as a test's way to see what a read is served from)."""
    async with engine.begin() as connection:
        await ledger.restock(connection, STORE, sku, quantity)


async def on_hand(stock: StockPositions, sku: str) -> int:
    found, _ = await stock.positions([sku])
    return sum(position.on_hand for position in found.get(sku, ()))


async def test_positions_are_held_until_the_bus_names_the_sku(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    # given a position read once through the level
    bus = ChangeBus(None)
    stock = StockPositions(ledger, bus)
    await restock(engine, ledger, "SKU-1", 3)
    assert await on_hand(stock, "SKU-1") == 3

    # when the ledger changes without a word on the bus
    await restock(engine, ledger, "SKU-1", 2)

    # then reads are served what was held, without asking the ledger again
    assert await on_hand(stock, "SKU-1") == 3
    assert ledger.reads == 1
    assert (stock.hits, stock.misses) == (1, 1)

    # and once the bus says the SKU moved, the next read has the ledger's count
    await bus.publish("ledger", ["SKU-1"])
    assert await on_hand(stock, "SKU-1") == 5
    assert ledger.reads == 2


async def test_a_sku_without_positions_is_held_as_none_and_named_by_the_erp_feed(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    bus = ChangeBus(None)
    stock = StockPositions(ledger, bus)
    assert await on_hand(stock, "SKU-NEW") == 0
    await restock(engine, ledger, "SKU-NEW", 4)
    assert await on_hand(stock, "SKU-NEW") == 0  # held: none there

    await bus.publish("erp", ["SKU-NEW"])

    assert await on_hand(stock, "SKU-NEW") == 4


async def test_a_read_overtaken_by_a_change_keeps_nothing_of_that_sku(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    # given a read of two SKUs that has its rows but has not returned yet
    bus = ChangeBus(None)
    stock = StockPositions(ledger, bus)
    await restock(engine, ledger, "SKU-1", 3)
    await restock(engine, ledger, "SKU-2", 7)
    ledger.pause = asyncio.Event()
    reading = asyncio.create_task(stock.positions(["SKU-1", "SKU-2"]))
    await ledger.paused.wait()

    # when SKU-1 moves (committed, told on the bus) before the read returns
    await restock(engine, ledger, "SKU-1", 1)
    await bus.publish("ledger", ["SKU-1"])
    ledger.pause.set()
    found, _ = await reading

    # then that read answers what it read, but only SKU-2 is held
    assert sum(p.on_hand for p in found["SKU-1"]) == 3
    ledger.pause = None
    assert await on_hand(stock, "SKU-1") == 4
    assert await on_hand(stock, "SKU-2") == 7
    assert ledger.reads == 2  # SKU-1 read again, SKU-2 held


async def test_a_gap_on_the_bus_drops_everything_and_overtakes_reads_in_flight(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    bus = ChangeBus(None)
    stock = StockPositions(ledger, bus)
    await restock(engine, ledger, "SKU-1", 3)
    await on_hand(stock, "SKU-1")
    ledger.pause = asyncio.Event()
    reading = asyncio.create_task(stock.positions(["SKU-2"]))
    await ledger.paused.wait()

    await bus.publish("ledger", [], everything=True)
    ledger.pause.set()
    await reading

    assert len(stock) == 0


async def test_positions_live_no_longer_than_their_lifetime(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    clock = ManualClock()
    stock = StockPositions(ledger, ChangeBus(None), ttl=1.0, clock=clock)
    await restock(engine, ledger, "SKU-1", 3)
    assert await on_hand(stock, "SKU-1") == 3
    await restock(engine, ledger, "SKU-1", 2)

    clock.now += 0.9
    assert await on_hand(stock, "SKU-1") == 3
    clock.now += 0.2
    assert await on_hand(stock, "SKU-1") == 5


async def test_nothing_is_held_while_the_bus_is_cut_off_from_the_other_instances(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    # given a bus over a Redis that never answers (it has not subscribed)
    link = RedisLink.from_url("redis://127.0.0.1:1/0", 0.1)
    try:
        bus = ChangeBus(link)
        assert not bus.connected
        stock = StockPositions(ledger, bus)
        await restock(engine, ledger, "SKU-1", 3)
        assert await on_hand(stock, "SKU-1") == 3

        # when the ledger changes: a sale on another instance would go unheard
        await restock(engine, ledger, "SKU-1", 2)

        # then every read goes to the ledger
        assert await on_hand(stock, "SKU-1") == 5
        assert len(stock) == 0
    finally:
        await link.aclose()


async def test_the_least_recently_read_sku_goes_first_when_full(
    engine: AsyncEngine, ledger: PausingLedger
) -> None:
    stock = StockPositions(ledger, ChangeBus(None), size=2)
    for sku in ("SKU-1", "SKU-2", "SKU-1", "SKU-3"):
        await on_hand(stock, sku)
    assert len(stock) == 2
    reads = ledger.reads
    await on_hand(stock, "SKU-1")  # still held
    await on_hand(stock, "SKU-2")  # dropped: read again
    assert ledger.reads == reads + 1


def test_the_level_needs_room(ledger: PausingLedger) -> None:
    with pytest.raises(ValueError, match="at least one"):
        StockPositions(ledger, ChangeBus(None), size=0)
