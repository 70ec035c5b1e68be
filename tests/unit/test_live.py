"""The live hub and its mailboxes: what a subscriber is given, and when it is let go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

import pytest

from adapters.ports import Money, Price
from gateway.ledger import Position
from gateway.live import LiveHub, Mailbox, PriceEvent, StockEvent, TooSlow
from gateway.readmodel.bus import ChangeBus
from tests.fakes import Landings

E = TypeVar("E")


async def test_a_lagging_consumer_gets_the_latest_value_per_key_oldest_first() -> None:
    mailbox: Mailbox[str, int] = Mailbox(max_lag=60)

    for key, value in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5)]:
        mailbox.put(key, value)

    assert await mailbox.take() == [5, 2, 4]
    assert len(mailbox) == 0


async def test_a_consumer_past_the_lag_limit_is_let_go_once_and_told_so() -> None:
    calls: list[str] = []
    mailbox: Mailbox[str, int] = Mailbox(max_lag=0.01, too_slow=lambda: calls.append("slow"))
    mailbox.put("a", 1)
    await asyncio.sleep(0.02)

    mailbox.put("b", 2)
    mailbox.put("c", 3)

    assert calls == ["slow"]
    assert len(mailbox) == 0
    with pytest.raises(TooSlow):
        await mailbox.take()


class Positions:
    """The ledger's positions, as a test sets them."""

    def __init__(self) -> None:
        self.held: dict[str, list[Position]] = {}

    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]:
        return {sku: self.held[sku] for sku in skus if sku in self.held}


async def _no_prices(skus: list[str], store: str | None) -> dict[str, object]:
    return {}


async def test_a_notice_gives_subscribers_only_the_positions_it_names_that_changed() -> None:
    # given a subscriber on SKUs A and B at location L, with their initial numbers
    ledger, bus, stop = Positions(), ChangeBus(None), asyncio.Event()
    ledger.held = {"A": [Position("A", "L", 5, 0, 1)], "B": [Position("B", "L", 7, 0, 1)]}
    hub = LiveHub(bus, ledger, _no_prices)  # type: ignore[arg-type]
    worker = asyncio.create_task(hub.run(stop))
    updates = hub.stock(["A", "B"], ["L"], initial=True)
    first = await anext(updates)

    # when both move in the ledger but a notice names only A
    ledger.held = {"A": [Position("A", "L", 5, 2, 1)], "B": [Position("B", "L", 9, 0, 1)]}
    bus.deliver_here("ledger", ["A"])
    second = await asyncio.wait_for(anext(updates), 5)
    stop.set()
    await updates.aclose()
    await worker

    # then only A's new numbers come, as available to promise shows them
    assert sorted((e.sku, e.available) for e in first) == [("A", 4), ("B", 6)]
    assert [(e.sku, e.available, e.reserved) for e in second] == [("A", 2, 2)]
    assert hub.subscriptions == 0


class HeldPositions(Landings):
    """The ledger, each read returning what it held when the read began (a snapshot, as a
    database read does)."""

    def __init__(self, held: dict[str, list[Position]]) -> None:
        super().__init__()
        self.held = held

    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]:
        seen = {sku: self.held[sku] for sku in skus if sku in self.held}
        await self.wait()
        return seen


def _available(batches: list[list[StockEvent]]) -> list[int]:
    return [event.available for batch in batches for event in batch]


async def _collect(updates: AsyncIterator[list[E]], into: list[list[E]]) -> None:
    async for batch in updates:
        into.append(batch)


@asynccontextmanager
async def _running(hub: LiveHub) -> AsyncIterator[list[asyncio.Task[None]]]:
    """The hub's worker, and the subscribers a test adds to the list, stopped on the way out."""
    stop = asyncio.Event()
    worker = asyncio.create_task(hub.run(stop))
    subscribers: list[asyncio.Task[None]] = []
    try:
        yield subscribers
    finally:
        for task in subscribers:
            task.cancel()
        await asyncio.gather(*subscribers, return_exceptions=True)
        stop.set()
        await worker


def _shelf(hub: LiveHub, into: list[list[StockEvent]]) -> asyncio.Task[None]:
    """A subscriber to A at L, with initial values, collecting what it is given."""
    return asyncio.create_task(_collect(hub.stock(["A"], ["L"], initial=True), into))


async def test_a_first_read_overtaken_by_a_change_is_not_the_last_value_given() -> None:
    # given a subscriber whose initial read has begun (on hand 5) but not yet landed
    ledger, bus = HeldPositions({"A": [Position("A", "L", 5, 0, 0)]}), ChangeBus(None)
    hub = LiveHub(bus, ledger, _no_prices)  # type: ignore[arg-type]
    given: list[list[StockEvent]] = []
    async with _running(hub) as subscribers:
        subscribers.append(_shelf(hub, given))
        await ledger.begun(1)

        # when a sale moves A to 3, its notice is read again and given first, and only then
        # the older initial read lands
        ledger.held = {"A": [Position("A", "L", 3, 0, 0)]}
        bus.deliver_here("ledger", ["A"])
        await ledger.begun(2)
        await ledger.land_in_turn(1, 0)

    # then the subscriber's last value is the ledger's, as a query shows it
    assert _available(given)[-1] == 3
    assert hub.subscriptions == 0


async def test_a_read_that_began_before_the_one_given_is_not_given_after_it() -> None:
    # given a notice whose re-read has begun (on hand 5), and then a subscriber whose
    # initial read begins after a sale that is not yet on the bus (on hand 4)
    ledger, bus = HeldPositions({"A": [Position("A", "L", 9, 0, 0)]}), ChangeBus(None)
    hub = LiveHub(bus, ledger, _no_prices)  # type: ignore[arg-type]
    early: list[list[StockEvent]] = []
    given: list[list[StockEvent]] = []
    async with _running(hub) as subscribers:
        subscribers.append(_shelf(hub, early))
        await ledger.begun(1)
        ledger.land(0)
        ledger.held = {"A": [Position("A", "L", 5, 0, 0)]}
        bus.deliver_here("ledger", ["A"])
        await ledger.begun(2)
        ledger.held = {"A": [Position("A", "L", 4, 0, 0)]}
        subscribers.append(_shelf(hub, given))
        await ledger.begun(3)

        # when the later read lands first, then the earlier one
        await ledger.land_in_turn(2, 1)

    # then the subscriber keeps the newer numbers
    assert _available(given) == [4]
    assert _available(early)[-1] == 5
    assert hub.subscriptions == 0


class HeldPrices(Landings):
    """The read model's prices, each lookup returning the price held when it began."""

    def __init__(self, amount: str) -> None:
        super().__init__()
        self.amount = amount

    async def __call__(self, skus: list[str], store: str | None) -> dict[str, Price]:
        money = Money(Decimal(self.amount), "EUR")
        since = datetime(2026, 1, 1, tzinfo=UTC)
        seen = {sku: Price(sku, money, None, "BASE", since) for sku in skus}
        await self.wait()
        return seen


async def test_a_first_price_lookup_overtaken_by_a_change_is_not_the_last_price_given() -> None:
    # given a subscriber whose initial lookup has begun (2.00) but not yet landed
    prices, bus = HeldPrices("2.00"), ChangeBus(None)
    hub = LiveHub(bus, Positions(), prices)
    given: list[list[PriceEvent]] = []
    async with _running(hub) as subscribers:
        subscribers.append(
            asyncio.create_task(_collect(hub.prices(["A"], None, initial=True), given))
        )
        await prices.begun(1)

        # when the price changes to 1.50, its re-read is given, and then the first lookup lands
        prices.amount = "1.50"
        bus.deliver_here("pricing", ["A"])
        await prices.begun(2)
        await prices.land_in_turn(1, 0)

    # then the last price given is the one the read model has now
    assert [str(event.price.current.amount) for batch in given for event in batch][-1] == "1.50"
    assert hub.subscriptions == 0


async def test_a_consumer_let_go_for_lagging_is_forgotten_before_it_asks_again() -> None:
    # given a subscriber that took its initial values and then stopped asking for more
    ledger, bus = Positions(), ChangeBus(None)
    ledger.held = {"A": [Position("A", "L", 5, 0, 0)]}
    hub = LiveHub(bus, ledger, _no_prices, max_lag=0.01)  # type: ignore[arg-type]
    calls: list[str] = []
    updates = hub.stock(["A"], ["L"], initial=True, too_slow=lambda: calls.append("slow"))
    await anext(updates)

    # when changes keep coming for longer than max_lag
    async with _running(hub):
        for on_hand in (6, 7):
            ledger.held = {"A": [Position("A", "L", on_hand, 0, 0)]}
            bus.deliver_here("ledger", ["A"])
            await asyncio.sleep(0.05)

    # then it is let go at once: told once, and the hub holds nothing more for it, even
    # before it asks again (a consumer blocked on its socket may not for long)
    assert calls == ["slow"]
    assert (hub.subscriptions, hub.pending, hub.watched) == (0, 0, 0)
    with pytest.raises(TooSlow):
        await anext(updates)
