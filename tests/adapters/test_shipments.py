"""Shipments and cancellations reported by the OMS, applied to orders and the inventory ledger
in the gateway's database (SQLite and PostgreSQL), in every order the two feeds can arrive in.

The OMS and the ERP are fakes here, so that each test decides which feed is read first; the
same flow over the real simulators is in tests/api/test_shipments.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.ports import BackendError, GeoPoint, Location, LocationKind, StockLevel
from gateway.db import inventory_positions, ledger_state
from gateway.ledger import InventoryLedger, Position, Reservation
from gateway.orders.changes import ChangeError, OrderChanges, Refusal
from gateway.orders.outbox import MessageKind
from gateway.orders.shipments import OrderStatusFeed, OrderStatusUpdates
from gateway.orders.store import NewOrder, OrderReader, OrderStatus, insert_order
from gateway.orders.tables import order_allocations, order_lines, order_returns, orders, outbox
from gateway.promotions import Shopper
from gateway.readmodel.feeds import StockFeed
from gateway.sourcing import Allocation
from tests.adapters.conftest import migrated
from tests.fakes import FakeInventory, FakeOrderIntake, Ticker
from tests.unit.test_promotions_rules import line, price

BEFORE = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)  # the ERP's levels when the order is placed
BOOKED = BEFORE + timedelta(hours=1)  # when the ERP books the goods issue
STORE = Location(
    "S001", "Store", LocationKind.STORE, GeoPoint(48.1, 11.5), "80331", frozenset(), 100, ()
)
CENTRE = Location(
    "DC1",
    "Centre",
    LocationKind.DISTRIBUTION_CENTER,
    GeoPoint(48.2, 11.6),
    "85748",
    frozenset(),
    900,
    (),
)
ON_HAND = {("S001", "SKU-BOOT"): 5, ("DC1", "SKU-BOOT"): 5, ("DC1", "SKU-SOCK"): 10}
ORDERED = {("S001", "SKU-BOOT"): 1, ("DC1", "SKU-BOOT"): 1, ("DC1", "SKU-SOCK"): 3}


@dataclass
class Estate:
    engine: AsyncEngine
    ledger: InventoryLedger
    erp: FakeInventory
    oms: FakeOrderIntake
    updates: OrderStatusUpdates
    changes: OrderChanges
    reader: OrderReader
    statuses: OrderStatusFeed
    stock: StockFeed

    async def positions(self) -> dict[tuple[str, str], Position]:
        found = await self.ledger.positions(["SKU-BOOT", "SKU-SOCK"])
        return {(p.location_id, p.sku): p for levels in found.values() for p in levels}

    async def available(self) -> int:
        return sum(position.available for position in (await self.positions()).values())

    def book(self, *keys: tuple[str, str]) -> None:
        """The ERP books the goods issue of the order at ``keys``."""
        for location_id, sku in keys:
            left = ON_HAND[location_id, sku] - ORDERED[location_id, sku]
            self.erp.set_stock(StockLevel(sku, location_id, left, BOOKED))


@pytest.fixture
async def estate(database_url: str) -> AsyncIterator[Estate]:
    emptied = (outbox, order_returns, order_lines, order_allocations, orders)
    async with migrated(database_url, *emptied, inventory_positions, ledger_state) as engine:
        levels = [StockLevel(sku, where, units, BEFORE) for (where, sku), units in ON_HAND.items()]
        erp = FakeInventory([STORE, CENTRE], levels)
        ledger = InventoryLedger(engine, clock=lambda: BOOKED)
        await ledger.load_from(erp)
        oms = FakeOrderIntake(clock=Ticker(BOOKED))
        changes = OrderChanges(engine, ledger, clock=lambda: BOOKED)
        updates = OrderStatusUpdates(engine, ledger, changes, clock=lambda: BOOKED)
        yield Estate(
            engine,
            ledger,
            erp,
            oms,
            updates,
            changes,
            OrderReader(engine),
            OrderStatusFeed(oms, updates),
            StockFeed(ledger, erp, then=updates.consume_booked),
        )


async def _place(estate: Estate) -> str:
    """An order of 2 boots (one from the store, one from the centre) and 3 socks."""
    order_id = f"O-{uuid.uuid4().hex[:12].upper()}"
    priced = price(
        [line("SKU-BOOT", 2, "79.99"), line("SKU-SOCK", 3, "4.95")], [], Shopper("C0042")
    )
    order = NewOrder(
        id=order_id,
        channel="web",
        customer_id="C0042",
        fulfillment="SHIP_TO_HOME",
        store_id=None,
        attributed_store_id=None,
        destination=None,
        priced=priced,
        allocations=tuple(
            Allocation(sku, units, location) for (location, sku), units in ORDERED.items()
        ),
        coupon_codes=(),
        placed_at=BEFORE,
    )
    async with estate.engine.begin() as connection:
        await insert_order(connection, order)
        held = [Reservation(location, sku, units) for (location, sku), units in ORDERED.items()]
        assert await estate.ledger.reserve(connection, held) == []
    return order_id


async def _status(estate: Estate, order_id: str) -> OrderStatus:
    return (await estate.reader.by_ids([order_id]))[order_id].status


def _reserved(positions: dict[tuple[str, str], Position]) -> dict[tuple[str, str], int]:
    return {key: position.reserved for key, position in positions.items()}


async def test_a_shipment_reported_before_the_erp_books_it_keeps_its_units_reserved_until_then(
    estate: Estate,
) -> None:
    # given an order holding units at two locations
    order_id = await _place(estate)
    placed = await estate.available()
    # when the OMS reports it shipped before the ERP's feed has the goods issue
    await estate.oms.ship(order_id, booked_at=BOOKED)
    read = await estate.statuses.read(None)
    # then it is SHIPPED, but every unit is still on hand and reserved: ATP has not moved
    assert read.keys == ()
    assert await _status(estate, order_id) is OrderStatus.SHIPPED
    assert _reserved(await estate.positions()) == ORDERED
    assert await estate.available() == placed
    # when the ERP's feed brings the booking at the store only
    estate.book(("S001", "SKU-BOOT"))
    read = await estate.stock.read(None)
    # then the store's reservation is consumed there, the centre's still waits
    positions = await estate.positions()
    assert set(read.keys) == {"SKU-BOOT"}
    assert positions["S001", "SKU-BOOT"][2:4] == (4, 0)
    assert _reserved(positions) == {**ORDERED, ("S001", "SKU-BOOT"): 0}
    assert await estate.available() == placed
    # when the rest is booked
    estate.book(("DC1", "SKU-BOOT"), ("DC1", "SKU-SOCK"))
    await estate.stock.read(None)
    # then nothing is reserved, on hand is what the ERP says, and ATP never went up
    positions = await estate.positions()
    assert _reserved(positions) == dict.fromkeys(ORDERED, 0)
    assert {key: p.on_hand for key, p in positions.items()} == {
        key: ON_HAND[key] - ORDERED[key] for key in ORDERED
    }
    assert await estate.available() == placed
    assert await estate.updates.consume_booked() == []


async def test_a_shipment_the_erp_booked_first_is_consumed_when_the_oms_reports_it(
    estate: Estate,
) -> None:
    # given an order whose goods issue the ledger already shows (ATP is low for a moment)
    order_id = await _place(estate)
    placed = await estate.available()
    estate.book(*ORDERED)
    await estate.stock.read(None)
    assert await estate.available() == placed - sum(ORDERED.values())
    # when the OMS's feed reports the shipment
    await estate.oms.ship(order_id, booked_at=BOOKED)
    read = await estate.statuses.read(None)
    # then the reservations are consumed at once
    assert set(read.keys) == {"SKU-BOOT", "SKU-SOCK"}
    assert _reserved(await estate.positions()) == dict.fromkeys(ORDERED, 0)
    assert await estate.available() == placed


async def test_a_shipment_without_a_booking_time_waits_for_levels_after_it_shipped(
    estate: Estate,
) -> None:
    # given a shipment the OMS reports without the ERP's booking time, and a level of the
    # store written before it shipped
    order_id = await _place(estate)
    await estate.oms.ship(order_id)
    (change,) = estate.oms.feed
    estate.erp.set_stock(StockLevel("SKU-BOOT", "S001", 5, change.at - timedelta(seconds=1)))
    # when both feeds are read
    await estate.statuses.read(None)
    await estate.stock.read(None)
    # then the shipment's own time is the bar, and that older level does not pass it
    assert _reserved(await estate.positions()) == ORDERED


async def test_a_change_read_again_does_nothing_the_second_time(estate: Estate) -> None:
    # given a shipment applied and booked
    order_id = await _place(estate)
    estate.book(*ORDERED)
    await estate.stock.read(None)
    await estate.oms.ship(order_id, booked_at=BOOKED)
    await estate.statuses.read(None)
    after = await estate.positions()
    # when the feed is read again from the start (a crash before its cursor was stored)
    read = await estate.statuses.read(None)
    # then nothing moves a second time
    assert read.keys == ()
    assert await estate.positions() == after
    assert await _status(estate, order_id) is OrderStatus.SHIPPED


async def test_a_cancel_at_the_oms_cancels_the_order_as_a_cancel_here_does(
    estate: Estate,
) -> None:
    # given an order the OMS then cancels
    order_id = await _place(estate)
    await estate.oms.cancel(order_id)
    # when the feed is read, twice
    first = await estate.statuses.read(None)
    again = await estate.statuses.read(None)
    # then its units are free again, it is CANCELLED, its points are taken back once
    assert set(first.keys) == {"SKU-BOOT", "SKU-SOCK"}
    assert again.keys == ()
    assert _reserved(await estate.positions()) == dict.fromkeys(ORDERED, 0)
    assert await _status(estate, order_id) is OrderStatus.CANCELLED
    async with estate.ledger._engine.connect() as connection:
        kinds = (
            await connection.execute(select(outbox.c.kind).where(outbox.c.order_id == order_id))
        ).scalars()
        assert list(kinds) == [MessageKind.LOYALTY_REVERSE.value]
    refusal = await estate.changes.cancel(order_id)
    assert isinstance(refusal, Refusal)
    assert refusal.code is ChangeError.ALREADY_CANCELLED


async def test_a_shipped_order_cannot_be_cancelled_and_a_later_cancel_at_the_oms_is_ignored(
    estate: Estate,
) -> None:
    order_id = await _place(estate)
    await estate.oms.ship(order_id, booked_at=BOOKED)
    await estate.oms.cancel(order_id)
    await estate.statuses.read(None)
    assert await _status(estate, order_id) is OrderStatus.SHIPPED
    assert _reserved(await estate.positions()) == ORDERED  # still waiting for the ERP
    refusal = await estate.changes.cancel(order_id)
    assert isinstance(refusal, Refusal)
    assert refusal.code is ChangeError.ALREADY_SHIPPED


async def test_changes_of_orders_held_elsewhere_only_move_the_cursor(estate: Estate) -> None:
    await estate.oms.ship("O-PLACED-ELSEWHERE", booked_at=BOOKED)
    read = await estate.statuses.read(None)
    assert (read.keys, read.cursor) == ((), "1")


async def test_a_gap_in_the_feed_stops_the_reads_there_until_it_fills(estate: Estate) -> None:
    # given three cancellations, the middle one not visible yet
    placed = [await _place(estate) for _ in range(3)]
    for order_id in placed:
        await estate.oms.cancel(order_id)
    late = estate.oms.feed.pop(1)
    # when the feed is read: the change before the gap is applied, then the gap refuses
    first = await estate.statuses.read("0")
    with pytest.raises(BackendError, match="skips from 1 to 3"):
        await estate.statuses.read(first.cursor)
    # then the third order was left alone, and is cancelled once the missing change shows
    assert first.cursor == "1"
    assert [await _status(estate, order_id) for order_id in placed] == [
        OrderStatus.CANCELLED,
        OrderStatus.ACCEPTED,
        OrderStatus.ACCEPTED,
    ]
    estate.oms.feed.insert(1, late)
    rest = await estate.statuses.read(first.cursor)
    assert rest.cursor == "3"
    assert {await _status(estate, order_id) for order_id in placed} == {OrderStatus.CANCELLED}
