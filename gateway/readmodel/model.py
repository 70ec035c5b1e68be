"""The catalogue, prices and promotions rule book, read through the two levels.

Keys name entities, never channels or customers: ``product:<code>``, ``sku:<sku>`` (its
product's code), ``price:<sku>|<zone>``, ``listing:<pim sequence>:<digest>`` (one page's codes),
``rulebook``. A lookup takes what the in-process level has, then what Redis has, and asks the
port once, in one batch, for the rest; keys another caller is already fetching are waited for,
not fetched again. Every entry carries the feed sequence it was read at and when.

A notice from the change bus evicts the entities it names from this process (the follower that
published it has already tombstoned them in Redis); a gap drops the whole kind. A fetch that
began before an eviction of one of its keys does not store that key: it might hold the old
value.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import TypeAdapter

from adapters.ports import (
    BackendUnavailable,
    CataloguePort,
    PartialAnswer,
    Price,
    PricesPort,
    Product,
    ProductFilter,
    ProductPage,
    PromotionSet,
    PromotionsPort,
)
from gateway.readmodel.bus import ChangeBus, ChangeNotice
from gateway.readmodel.levels import Entry, LocalLevel, SharedLevel

V = TypeVar("V")

BASE_ZONE = "BASE"
EVERY_PRODUCT = ProductFilter()
RULEBOOK = "rulebook"
LAST_KNOWN_LIFETIME = 7 * 24 * 3600.0  # seconds a last known price may be shown, flagged


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Seconds an entry lives: in this process, in Redis, and in this process while the bus is
    cut off from Redis (no invalidation from other instances can arrive then)."""

    local: float = 300.0
    shared: float = 3600.0
    degraded: float = 5.0
    tombstone: float = 30.0  # longer than any fetch can take


@dataclass(frozen=True, slots=True)
class ListingPage:
    codes: tuple[str, ...]
    offset: int
    total: int


Fetch = Callable[[list[str]], Awaitable[Mapping[str, V]]]


class _Kind(Generic[V]):
    """One kind of entity through both levels, with coalesced, batched misses."""

    def __init__(
        self,
        name: str,
        feed: str,
        model: ReadModel,
        adapter: TypeAdapter[Entry[V]],
        *,
        remember_absent: bool = True,
        shared: bool = True,
        partial: bool = False,
    ) -> None:
        self.name = name
        self._feed = feed
        self._model = model
        self._adapter = adapter
        self._remember_absent = remember_absent
        self._use_shared = shared
        self._partial = partial
        # key -> the fetch under way and the epoch it began at: a lookup joins it only if
        # no notice has evicted the key since (it would bring what the notice replaced)
        self._inflight: dict[str, tuple[asyncio.Future[Entry[V]], int]] = {}

    def local_key(self, key: str) -> str:
        return f"{self.name}:{key}"

    async def get_many(self, keys: Sequence[str], fetch: Fetch[V]) -> dict[str, Entry[V]]:
        model = self._model
        found: dict[str, Entry[V]] = {}
        missing: list[str] = []
        model.lookups += len(keys)
        for key in dict.fromkeys(keys):
            entry = model.local.get(self.local_key(key))
            if entry is None:
                missing.append(key)
            else:
                found[key] = entry  # type: ignore[assignment]
        if not missing:
            return found
        model.misses += len(missing)
        waiting: dict[str, asyncio.Future[Entry[V]]] = {}
        for key in missing:
            flight = self._inflight.get(key)
            if flight is not None and model.unchanged_since(self.local_key(key), flight[1]):
                waiting[key] = flight[0]
        mine = [key for key in missing if key not in waiting]
        unanswered: list[str] = []
        failure: BackendUnavailable | None = None
        if mine:
            try:
                waiting.update(await self._load(mine, fetch))
            except BackendUnavailable as exc:
                unanswered, failure = mine, exc
        for key, future in waiting.items():
            try:
                found[key] = await future
            except BackendUnavailable as exc:
                unanswered.append(key)
                failure = exc
        if failure is not None:
            if not found or not self._partial:
                raise failure
            # ``found`` holds entries: only kinds whose callers unwrap them answer in part.
            raise PartialAnswer(failure.backend, failure.detail, found, unanswered) from failure
        return found

    async def _load(self, keys: list[str], fetch: Fetch[V]) -> dict[str, asyncio.Future[Entry[V]]]:
        """Entries for ``keys`` from Redis, else from the port, as futures that others asking
        for the same keys meanwhile wait on."""
        model = self._model
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in keys}
        started = model.epoch
        self._inflight.update({key: (future, started) for key, future in futures.items()})
        since = model.bus.seen(self._feed)
        try:
            from_redis = await self._shared(keys)
            for key, entry in from_redis.items():
                self._settle(key, entry, started, futures)
            rest = [key for key in keys if key not in from_redis]
            if rest:
                model.fetches += 1
                partial: PartialAnswer | None = None
                try:
                    answers = await fetch(rest)
                except PartialAnswer as exc:
                    partial, answers = exc, cast(Mapping[str, V], exc.found)
                    unanswered = set(exc.unanswered)
                    rest = [key for key in rest if key not in unanswered]
                now = model.clock()
                version = f"{self._feed}:{since}"
                fresh = {key: Entry(answers.get(key), now, version) for key in rest}
                for key, entry in fresh.items():
                    self._settle(key, entry, started, futures)
                if partial is not None:
                    _fail(futures, partial)
                await self._publish(fresh, since)
        except BaseException as exc:
            _fail(futures, exc)
            raise
        finally:
            for key, future in futures.items():
                flight = self._inflight.get(key)
                if flight is not None and flight[0] is future:
                    del self._inflight[key]
        return futures

    async def keep(self, values: Mapping[str, V], started: int, since: int) -> None:
        """Store entities a fetch of another kind brought along (a listing's products), in
        both levels, unless they changed since epoch ``started``."""
        model = self._model
        now, ttl = model.clock(), model.local_ttl()
        entries = {key: Entry(value, now, f"{self._feed}:{since}") for key, value in values.items()}
        for key, entry in entries.items():
            if model.unchanged_since(self.local_key(key), started):
                model.local.put(self.local_key(key), entry, ttl)
        await self._publish(entries, since)

    def _settle(
        self,
        key: str,
        entry: Entry[V],
        started: int,
        futures: Mapping[str, asyncio.Future[Entry[V]]],
    ) -> None:
        model = self._model
        local_key = self.local_key(key)
        if (entry.value is not None or self._remember_absent) and model.unchanged_since(
            local_key, started
        ):
            model.local.put(local_key, entry, model.local_ttl())
        future = futures[key]
        if not future.done():
            future.set_result(entry)

    async def _shared(self, keys: list[str]) -> dict[str, Entry[V]]:
        shared = self._model.shared
        if shared is None or not self._use_shared:
            return {}
        values = await shared.get_many([self.local_key(key) for key in keys])
        return {
            key: self._adapter.validate_json(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def _publish(self, entries: Mapping[str, Entry[V]], since: int) -> None:
        shared = self._model.shared
        if shared is None or not self._use_shared:
            return
        items = [
            (self.local_key(key), self._adapter.dump_json(entry))
            for key, entry in entries.items()
            if entry.value is not None or self._remember_absent
        ]
        await shared.put_many(items, since, self._model.lifetimes.shared)


def _fail(futures: Mapping[str, asyncio.Future[Entry[V]]], exc: BaseException) -> None:
    """Fail every future not settled yet with ``exc`` (observed, so none goes unretrieved)."""
    for future in futures.values():
        if not future.done():
            future.set_exception(exc)
            future.add_done_callback(_observe)


def _observe(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class ReadModel:
    """The read side of the catalogue, prices and promotions: ``CataloguePort``-, ``PricesPort``-
    and ``PromotionsPort``-shaped lookups answered from the levels, and ``apply`` for the bus.

    Orders never read prices here (they ask the pricing engine: see ``Loaders.for_orders``)."""

    def __init__(
        self,
        catalogue: CataloguePort,
        prices: PricesPort,
        promotions: PromotionsPort,
        bus: ChangeBus,
        local: LocalLevel,
        shared: SharedLevel | None = None,
        lifetimes: Lifetimes = Lifetimes(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        holding: bool = True,
        last_known_entries: int = 100_000,
    ) -> None:
        """``holding`` False: hold nothing, every lookup goes to the port (the read model off,
        for comparison and for diagnosing a backend)."""
        self._holding = holding
        self._catalogue = catalogue
        self._prices = prices
        self._promotions = promotions
        self.bus = bus
        self.local = local
        self.shared = shared
        self.lifetimes = lifetimes
        self.clock = clock
        self.epoch = 0  # counts evictions; a fetch remembers it to know what changed since
        self._evicted: dict[str, int] = {}
        self._reset_epoch = 0
        self._zones: dict[str, str] = {}  # store id -> price zone, as the pricing engine said
        # The last price read per SKU and zone, kept through evictions (display only).
        self._last_prices = LocalLevel(last_known_entries)
        self.lookups = 0  # keys asked for
        self.misses = 0  # keys this process's level did not have
        self.fetches = 0  # batches asked of a port
        self._products = _Kind[Product]("product", "pim", self, TypeAdapter(Entry[Product]))
        self._skus = _Kind[str]("sku", "pim", self, TypeAdapter(Entry[str]), remember_absent=False)
        self._listings = _Kind[ListingPage]("listing", "pim", self, TypeAdapter(Entry[ListingPage]))
        price_entries = TypeAdapter(Entry[Price])
        # Base-zone prices are shared; other zones stay in the process that learnt the store's
        # zone (a follower could not know which zones other instances hold, to tombstone them).
        self._base_prices = _Kind[Price]("price", "pricing", self, price_entries, partial=True)
        self._zone_prices = _Kind[Price](
            "price", "pricing", self, price_entries, shared=False, partial=True
        )
        self._rulebook = _Kind[PromotionSet](
            "promotions", "promotions", self, TypeAdapter(Entry[PromotionSet])
        )
        bus.listen(self.apply, self.cut_off)

    @property
    def holding(self) -> bool:
        """False when the read model is off and every lookup goes to the port."""
        return self._holding

    # ----------------------------------------------------------------------- lookups

    async def products(self, codes: Sequence[str]) -> Mapping[str, Product]:
        if not self._holding:
            return await self._catalogue.products(codes)
        entries = await self._products.get_many(codes, self._catalogue.products)
        return {code: entry.value for code, entry in entries.items() if entry.value is not None}

    async def products_by_sku(self, skus: Sequence[str]) -> Mapping[str, Product]:
        if not self._holding:
            return await self._catalogue.products_by_sku(skus)

        async def owners(missing: list[str]) -> dict[str, str]:
            started, since = self.epoch, self.bus.seen("pim")
            found = await self._catalogue.products_by_sku(missing)
            products = {product.code: product for product in found.values()}
            await self._products.keep(products, started, since)
            return {sku: product.code for sku, product in found.items()}

        codes = await self._skus.get_many(skus, owners)
        by_code = await self.products([e.value for e in codes.values() if e.value is not None])
        return {
            sku: by_code[entry.value]
            for sku, entry in codes.items()
            if entry.value is not None and entry.value in by_code
        }

    async def list_products(
        self, offset: int, limit: int, query: ProductFilter = EVERY_PRODUCT
    ) -> ProductPage:
        if not self._holding:
            return await self._catalogue.list_products(offset, limit, query)
        digest = hashlib.sha256(repr((offset, limit, query)).encode()).hexdigest()[:24]
        key = f"{self.bus.seen('pim')}:{digest}"

        async def page(keys: list[str]) -> dict[str, ListingPage]:
            started, since = self.epoch, self.bus.seen("pim")
            read = await self._catalogue.list_products(offset, limit, query)
            await self._products.keep({p.code: p for p in read.items}, started, since)
            codes = tuple(product.code for product in read.items)
            return {key: ListingPage(codes, read.offset, read.total)}

        entry = (await self._listings.get_many([key], page))[key]
        assert entry.value is not None
        listing = entry.value
        products = await self.products(listing.codes)
        items = tuple(products[code] for code in listing.codes if code in products)
        return ProductPage(items=items, offset=listing.offset, total=listing.total)

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> Mapping[str, Price]:
        """Prices in the zone of ``store_id``, each with ``read_at`` set. When the engine
        answers only part, ``PartialAnswer`` carries the prices that were had (by SKU)."""
        zone = BASE_ZONE if store_id is None else self._zones.get(store_id)
        if zone is None or not self._holding:
            return await self._prices_learning_zone(skus, store_id)

        async def fetch(keys: list[str]) -> Mapping[str, Price]:
            try:
                found = await self._prices.prices([key.split("|", 1)[0] for key in keys], store_id)
            except PartialAnswer as partial:
                raise PartialAnswer(
                    partial.backend,
                    partial.detail,
                    {f"{sku}|{zone}": price for sku, price in partial.found.items()},
                    [f"{sku}|{zone}" for sku in partial.unanswered],
                ) from partial
            return {f"{sku}|{zone}": price for sku, price in found.items()}

        kind = self._base_prices if zone == BASE_ZONE else self._zone_prices
        try:
            entries = await kind.get_many([f"{sku}|{zone}" for sku in skus], fetch)
        except PartialAnswer as partial:
            had = self._remembered(cast(Mapping[str, Entry[Price]], partial.found))
            unanswered = [key.split("|", 1)[0] for key in partial.unanswered]
            raise PartialAnswer(partial.backend, partial.detail, had, unanswered) from partial
        return self._remembered(entries)

    def holds_prices(self, skus: Sequence[str]) -> bool:
        """Whether this process holds the base-zone price of every SKU: a lookup of them then
        answers without leaving the process."""
        kind = self._base_prices
        return self._holding and all(
            self.local.holds(kind.local_key(f"{sku}|{BASE_ZONE}")) for sku in skus
        )

    def last_known(self, skus: Sequence[str], store_id: str | None = None) -> dict[str, Price]:
        """The last price this process read for each SKU in ``store_id``'s zone, however old
        and whatever has changed since: for display, flagged, while the engine cannot answer."""
        zone = BASE_ZONE if store_id is None else self._zones.get(store_id)
        if zone is None:
            return {}
        found: dict[str, Price] = {}
        for sku in skus:
            price = self._last_prices.get(f"{sku}|{zone}")
            if isinstance(price, Price):
                found[sku] = price
        return found

    def _remembered(self, entries: Mapping[str, Entry[Price]]) -> dict[str, Price]:
        prices: dict[str, Price] = {}
        for key, entry in entries.items():
            if entry.value is not None:
                price = prices[key.split("|", 1)[0]] = replace(entry.value, read_at=entry.read_at)
                self._last_prices.put(key, price, LAST_KNOWN_LIFETIME)
        return prices

    async def promotions(self) -> PromotionSet:
        """The rule book the promotions follower last shared, else the port's."""
        if not self._holding:
            return await self._promotions.promotions()

        async def read(keys: list[str]) -> dict[str, PromotionSet]:
            return {RULEBOOK: await self._promotions.promotions()}

        entry = (await self._rulebook.get_many([RULEBOOK], read))[RULEBOOK]
        assert entry.value is not None
        return entry.value

    async def share_rulebook(self, rulebook: PromotionSet, seq: int) -> None:
        """Put the follower's newly read rule book where every instance reads it first."""
        if self.shared is None:
            return
        entry = Entry(rulebook, self.clock(), f"promotions:{seq}")
        value = TypeAdapter(Entry[PromotionSet]).dump_json(entry)
        await self.shared.put_many(
            [(self._rulebook.local_key(RULEBOOK), value)], seq, self.lifetimes.shared
        )

    async def _prices_learning_zone(
        self, skus: Sequence[str], store_id: str | None
    ) -> Mapping[str, Price]:
        try:
            found = await self._prices.prices(skus, store_id)
        except PartialAnswer as partial:
            had = self._learnt(cast(Mapping[str, Price], partial.found), store_id)
            unanswered = partial.unanswered
            raise PartialAnswer(partial.backend, partial.detail, had, unanswered) from partial
        return self._learnt(found, store_id)

    def _learnt(self, found: Mapping[str, Price], store_id: str | None) -> dict[str, Price]:
        now = self.clock()
        prices: dict[str, Price] = {}
        for sku, price in found.items():
            if store_id is not None:
                self._zones[store_id] = price.zone
            prices[sku] = replace(price, read_at=now)
            self._last_prices.put(f"{sku}|{price.zone}", prices[sku], LAST_KNOWN_LIFETIME)
        return prices

    # ----------------------------------------------------------------------- changes

    def apply(self, notice: ChangeNotice) -> None:
        """Evict what ``notice`` names (a bus listener)."""
        self.epoch += 1
        prefixes = _PREFIXES.get(notice.kind, ())
        if notice.everything:
            for prefix in prefixes:
                self.local.evict_prefix(prefix)
            self._reset_epoch = self.epoch
            self._evicted.clear()
            return
        keys = list(self._local_keys(notice))
        self.local.evict(keys)
        for key in keys:
            self._evicted[key] = self.epoch
        if notice.kind == "product":
            self.local.evict_prefix("listing:")
        if len(self._evicted) > 100_000:
            self._evicted.clear()
            self._reset_epoch = self.epoch

    def shared_keys(self, notice: ChangeNotice) -> list[str]:
        """The Redis entries a follower tombstones for ``notice``."""
        return list(self._local_keys(notice, (BASE_ZONE,)))

    def _local_keys(
        self, notice: ChangeNotice, zones: Iterable[str] | None = None
    ) -> Iterable[str]:
        if notice.kind == "product":
            for code in notice.keys:
                yield f"product:{code}"
        elif notice.kind == "price":
            known = {BASE_ZONE, *self._zones.values()} if zones is None else set(zones)
            for sku in notice.keys:
                yield from (f"price:{sku}|{zone}" for zone in known)
        elif notice.kind == "promotions":
            yield f"promotions:{RULEBOOK}"

    async def aclose(self) -> None:
        """Nothing to close: the ports and Redis are closed by whoever opened them."""

    def shared_prefixes(self, kind: str) -> tuple[str, ...]:
        """The Redis key prefixes of ``kind`` (listings are per PIM sequence: they lapse)."""
        return tuple(prefix for prefix in _PREFIXES.get(kind, ()) if prefix != "listing:")

    def unchanged_since(self, local_key: str, epoch: int) -> bool:
        return self._reset_epoch <= epoch and self._evicted.get(local_key, -1) <= epoch

    def local_ttl(self) -> float:
        """Entries live shorter while the bus is cut off from the other instances."""
        if self.bus.shared and not self.bus.connected:
            return self.lifetimes.degraded
        return self.lifetimes.local

    def cut_off(self) -> None:
        """The bus has lost Redis: what this process holds lives ``lifetimes.degraded`` more
        seconds at most, since other instances' changes no longer reach it."""
        self.local.cap(self.lifetimes.degraded)


_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "product": ("product:", "sku:", "listing:"),
    "price": ("price:",),
    "promotions": ("promotions:",),
    "stock": (),
}
