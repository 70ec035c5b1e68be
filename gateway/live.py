"""Live stock and prices for subscribers (kiosks, tills): the change bus turned into events.

The hub listens to the change bus. A stock notice (a sale, cancel or return on any instance, an
ERP movement) marks its SKUs; a price notice marks its SKUs' prices. One worker task reads what
is marked in one batch — positions from the inventory ledger, prices through the read model,
which the same notice has just evicted — and gives each subscription the values that changed
since it last saw them. So a subscriber sees the numbers a query would show at that moment.

Reads overlap: a subscription's first read runs beside the worker's. So that an older read
never lands last, one counter orders every read's start and every notice's marks. A read of a
SKU that a notice marked after the read began is dropped (the notice has marked it for the
worker to read again), and a subscriber is only given a read that began after the one it was
given last. The last value a subscriber gets is therefore always the one a query shows.

Each subscription has a mailbox that keeps only the latest value per (SKU, store): a consumer
that lags gets the newest value, never a backlog, and memory stays bounded by what it
subscribed to. A mailbox whose oldest value has waited longer than ``max_lag`` seconds is
closed: the consumer is told why and must reconnect (and ask for ``initial`` values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from adapters.ports import Price
from gateway.ledger import Position
from gateway.readmodel.bus import ChangeBus, ChangeNotice

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class StockEvent:
    sku: str
    location_id: str
    available: int
    on_hand: int
    reserved: int
    at: datetime


@dataclass(frozen=True, slots=True)
class PriceEvent:
    sku: str
    price: Price
    previous: Price | None
    at: datetime


class Closable(Protocol):
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class TooSlow(Exception):
    """The consumer fell more than ``max_lag`` seconds behind: its subscription is closed."""


class Mailbox(Generic[K, E]):
    """The latest undelivered event per key, oldest first. Once the oldest has waited more
    than ``max_lag`` seconds the mailbox closes, and ``too_slow`` is called (once)."""

    def __init__(self, max_lag: float, too_slow: Callable[[], None] | None = None) -> None:
        self._pending: OrderedDict[K, tuple[float, E]] = OrderedDict()
        self._wake = asyncio.Event()
        self._max_lag = max_lag
        self._too_slow = too_slow
        self.closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, key: K, event: E) -> None:
        if self.closed:
            return
        queued = self._pending.get(key)
        # A newer value replaces the queued one in its place: the oldest stays first.
        self._pending[key] = (time.monotonic() if queued is None else queued[0], event)
        if time.monotonic() - next(iter(self._pending.values()))[0] > self._max_lag:
            self.closed = True
            self._pending.clear()
            if self._too_slow is not None:
                self._too_slow()
        self._wake.set()

    async def take(self) -> list[E]:
        """Every pending event, once there is one. Raises TooSlow once closed."""
        while not self._pending and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self.closed:
            raise TooSlow(f"more than {self._max_lag:g} s behind")
        events = [event for _, event in self._pending.values()]
        self._pending.clear()
        return events


@dataclass(eq=False)
class _Watch(Generic[K, E]):
    skus: frozenset[str]
    mailbox: Mailbox[K, E]
    last: dict[K, object] = field(default_factory=dict)
    read: dict[K, int] = field(default_factory=dict)  # when the read of ``last`` began

    def newer(self, key: K, began: int) -> bool:
        """Whether a read that began at ``began`` is newer than the one ``key`` was given
        (and if so, it is the one given now)."""
        if began <= self.read.get(key, 0):
            return False
        self.read[key] = began
        return True


class PositionReader(Protocol):
    """What the hub reads stock from: the inventory ledger."""

    async def positions(self, skus: Sequence[str]) -> dict[str, list[Position]]: ...


StockKey = tuple[str, str]
PriceLookup = Callable[[list[str], str | None], Awaitable[Mapping[str, Price]]]
"""Prices of SKUs in a store's zone (None: the base zone), as a query would show them."""


class LiveHub:
    """Turns bus notices into events for this instance's subscriptions."""

    def __init__(
        self, bus: ChangeBus, ledger: PositionReader, prices: PriceLookup, max_lag: float = 10.0
    ) -> None:
        self._ledger = ledger
        self._prices = prices
        self._max_lag = max_lag
        self._stock: dict[str, set[_Watch[StockKey, StockEvent]]] = {}
        self._stock_places: dict[int, frozenset[str]] = {}
        self._price: dict[str, set[_Watch[str, PriceEvent]]] = {}
        self._price_store: dict[int, str | None] = {}
        self._dirty_stock: set[str] = set()
        self._dirty_prices: set[str] = set()
        self._tick = 0  # orders the reads' starts and the notices' marks (module docstring)
        self._stock_marked: dict[str, int] = {}  # SKU -> the tick of the last notice naming it
        self._price_marked: dict[str, int] = {}
        self._wake = asyncio.Event()
        bus.listen(self.apply)

    @property
    def subscriptions(self) -> int:
        return len(self._stock_places) + len(self._price_store)

    @property
    def pending(self) -> int:
        """Events waiting for consumers that lag: at most one per key each subscribed."""
        stock = {watch for watches in self._stock.values() for watch in watches}
        prices = {watch for watches in self._price.values() for watch in watches}
        return sum(len(w.mailbox) for w in stock) + sum(len(w.mailbox) for w in prices)

    @property
    def watched(self) -> int:
        """What the hub keeps per SKU for its subscriptions (stock and prices apart): 0 once
        every subscription has ended."""
        marks = len(self._stock_marked) + len(self._price_marked)
        return len(self._stock) + len(self._price) + marks

    def apply(self, notice: ChangeNotice) -> None:
        """A bus listener: mark what the notice may have changed."""
        if notice.kind == "stock":
            self._mark(notice, self._stock, self._stock_marked, self._dirty_stock)
        elif notice.kind == "price":
            self._mark(notice, self._price, self._price_marked, self._dirty_prices)
        if self._dirty_stock or self._dirty_prices:
            self._wake.set()

    def _mark(
        self,
        notice: ChangeNotice,
        watched: Mapping[str, object],
        marked: dict[str, int],
        dirty: set[str],
    ) -> None:
        self._tick += 1
        for sku in list(watched) if notice.everything else notice.keys:
            if sku in watched:
                marked[sku] = self._tick
                dirty.add(sku)

    def _begin(self) -> int:
        """The tick a read begins at."""
        self._tick += 1
        return self._tick

    @staticmethod
    def _unchanged(read: Iterable[str], began: int, marked: Mapping[str, int]) -> list[str]:
        """The SKUs of a read that began at ``began`` that no notice has marked since, sorted."""
        return sorted(sku for sku in read if marked.get(sku, 0) < began)

    async def stock(
        self,
        skus: Iterable[str],
        locations: Iterable[str],
        initial: bool,
        too_slow: Callable[[], None] | None = None,
    ) -> AsyncGenerator[list[StockEvent], None]:
        """Batches of changed positions of ``skus`` at ``locations``, until the caller stops
        (``too_slow``: see ``_watch``)."""
        watch: _Watch[StockKey, StockEvent] = self._watch(
            skus, self._stock, self._forget_stock, too_slow
        )
        self._stock_places[id(watch)] = frozenset(locations)
        try:
            began = self._begin()
            positions = await self._ledger.positions(list(watch.skus))
            self._offer_stock(watch, positions, watch.skus, began, initial)
            while True:
                yield await watch.mailbox.take()
        finally:
            self._forget_stock(watch)

    async def prices(
        self,
        skus: Iterable[str],
        store: str | None,
        initial: bool,
        too_slow: Callable[[], None] | None = None,
    ) -> AsyncGenerator[list[PriceEvent], None]:
        """Batches of changed prices of ``skus`` (in ``store``'s zone), until the caller stops."""
        watch: _Watch[str, PriceEvent] = self._watch(
            skus, self._price, self._forget_prices, too_slow
        )
        self._price_store[id(watch)] = store
        try:
            began = self._begin()
            found = await self._prices(sorted(watch.skus), store)
            self._offer_prices(watch, found, began, initial)
            while True:
                yield await watch.mailbox.take()
        finally:
            self._forget_prices(watch)

    def _watch(
        self,
        skus: Iterable[str],
        index: dict[str, set[_Watch[K, E]]],
        forget: Callable[[_Watch[K, E]], None],
        too_slow: Callable[[], None] | None,
    ) -> _Watch[K, E]:
        """A new subscription's watch, in ``index`` before its first read (so that a change
        meanwhile is not lost). When its consumer falls more than ``max_lag`` behind, the
        watch is forgotten at once, since that consumer may stay blocked on its socket for
        long, and ``too_slow`` is called."""

        def let_go() -> None:
            forget(watch)
            if too_slow is not None:
                too_slow()

        watch: _Watch[K, E] = _Watch(frozenset(skus), Mailbox(self._max_lag, let_go))
        for sku in watch.skus:
            index.setdefault(sku, set()).add(watch)
        return watch

    def _forget_stock(self, watch: _Watch[StockKey, StockEvent]) -> None:
        self._forget(self._stock, self._stock_marked, watch)
        self._stock_places.pop(id(watch), None)

    def _forget_prices(self, watch: _Watch[str, PriceEvent]) -> None:
        self._forget(self._price, self._price_marked, watch)
        self._price_store.pop(id(watch), None)

    async def run(self, stop: asyncio.Event) -> None:
        """Read what is marked and hand it out, until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            stock, prices = self._dirty_stock, self._dirty_prices
            self._dirty_stock, self._dirty_prices = set(), set()
            try:
                await self._refresh(stock, prices)
            except Exception as exc:  # the next notice tries again; subscribers keep their last
                log.warning("live updates: could not read changes: %r", exc)
                self._dirty_stock |= stock
                self._dirty_prices |= prices
                await asyncio.sleep(0.5)

    async def _refresh(self, stock: set[str], prices: set[str]) -> None:
        if stock:
            began = self._begin()
            positions = await self._ledger.positions(sorted(stock))
            for stock_watch in {w for sku in stock for w in self._stock.get(sku, ())}:
                self._offer_stock(stock_watch, positions, stock, began, True)
        by_store: dict[str | None, set[_Watch[str, PriceEvent]]] = {}
        for price_watch in {w for sku in prices for w in self._price.get(sku, ())}:
            by_store.setdefault(self._price_store[id(price_watch)], set()).add(price_watch)
        for store, watches in by_store.items():
            wanted = sorted({sku for w in watches for sku in w.skus if sku in prices})
            began = self._begin()
            found = await self._prices(wanted, store)
            for watch in watches:
                self._offer_prices(watch, found, began, True)

    def _offer_stock(
        self,
        watch: _Watch[StockKey, StockEvent],
        positions: Mapping[str, list[Position]],
        read: Iterable[str],
        began: int,
        emit: bool,
    ) -> None:
        """Offer the positions of the SKUs ``read`` from ``began`` (a SKU without a position
        there holds 0)."""
        places = self._stock_places.get(id(watch))
        if places is None:  # let go while its first read was under way
            return
        now = datetime.now(UTC)
        for sku in self._unchanged(watch.skus.intersection(read), began, self._stock_marked):
            held = {p.location_id: p for p in positions.get(sku, ()) if p.location_id in places}
            for location in sorted(places):
                found = held.get(location)
                numbers = (0, 0, 0) if found is None else _numbers(found)
                key = (sku, location)
                if not watch.newer(key, began) or watch.last.get(key) == numbers:
                    continue
                watch.last[key] = numbers
                if emit:
                    watch.mailbox.put(key, StockEvent(sku, location, *numbers, now))

    def _offer_prices(
        self, watch: _Watch[str, PriceEvent], found: Mapping[str, Price], began: int, emit: bool
    ) -> None:
        now = datetime.now(UTC)
        for sku in self._unchanged(watch.skus & found.keys(), began, self._price_marked):
            price = found[sku]
            before = watch.last.get(sku)
            previous = before if isinstance(before, Price) else None
            if not watch.newer(sku, began) or (
                previous is not None and _shown(previous) == _shown(price)
            ):
                continue
            watch.last[sku] = price
            if emit:
                watch.mailbox.put(sku, PriceEvent(sku, price, previous, now))

    @staticmethod
    def _forget(
        index: dict[str, set[_Watch[K, E]]], marked: dict[str, int], watch: _Watch[K, E]
    ) -> None:
        for sku in watch.skus:
            watches = index.get(sku)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del index[sku]
                    marked.pop(sku, None)


def _shown(price: Price) -> tuple[object, ...]:
    return (price.current, price.compare_at)


def _numbers(position: Position) -> tuple[int, int, int]:
    return (position.available, position.on_hand, position.reserved)


class LiveSockets:
    """The WebSockets that carry subscriptions in this process, so that a shutdown can close
    each with 1001 (going away): devices then reconnect to another instance at once."""

    GOING_AWAY = 1001

    def __init__(self) -> None:
        self._open: Counter[Closable] = Counter()  # socket -> its running subscriptions
        self._channel: dict[Closable, str] = {}

    def __len__(self) -> int:
        return len(self._open)

    def subscriptions(self, socket: Closable) -> int:
        return self._open[socket]

    def connections(self, channel: str) -> int:
        """Sockets of ``channel`` that carry at least one subscription."""
        return sum(1 for name in self._channel.values() if name == channel)

    def add(self, socket: Closable, channel: str) -> None:
        self._open[socket] += 1
        self._channel[socket] = channel

    def discard(self, socket: Closable) -> None:
        self._open[socket] -= 1
        if self._open[socket] <= 0:
            del self._open[socket]
            self._channel.pop(socket, None)

    async def close_all(self) -> None:
        for socket in list(self._open):
            with contextlib.suppress(Exception):  # already closing or closed: nothing to tell
                await socket.close(self.GOING_AWAY, "server shutting down")
        self._open.clear()
        self._channel.clear()
