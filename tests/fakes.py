"""In-memory fakes of every port, plus builders that load them from the demo ground truth.

Each ``Fake<Port>`` is plain and deterministic: built from domain objects, answering from
dictionaries, with a clock that ticks one second per call instead of reading the time. Every
fake counts its calls in ``calls`` (by operation) and raises ``fail_with`` from every operation
while it is set, as a legacy system's failure knobs would. All of them pass the conformance
suite in ``adapters.testing``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

from adapters.ports import (
    Attribute,
    BackendError,
    BackendRejected,
    Category,
    Change,
    ChangeBatch,
    Coupon,
    GeoPoint,
    InsufficientPoints,
    Location,
    LocationKind,
    LoyaltyAccount,
    LoyaltyEntry,
    LoyaltyReceipt,
    Money,
    OmsReceipt,
    OmsStatus,
    OpeningHours,
    OrderStatusChange,
    OrderStatusChanges,
    OrderSubmission,
    Price,
    Product,
    ProductFilter,
    ProductPage,
    PromotionKind,
    PromotionRule,
    PromotionSet,
    PromotionTarget,
    StockChanges,
    StockLevel,
    ValueType,
    Variant,
)
from adapters.testing import ConformanceSample
from legacy.demo import ANCHOR, CURRENCY, DemoEstate, DemoLocation, DemoProduct
from legacy.demo_promotions import DemoPromotion

Key = TypeVar("Key")

EVERYTHING = ProductFilter()

CLOCK_START = datetime(2026, 6, 1, tzinfo=UTC)
"""Where the fakes' clocks start: after every timestamp of the demo estate."""


class Ticker:
    """A deterministic clock: each reading is one second after the previous one."""

    def __init__(self, start: datetime = CLOCK_START) -> None:
        self._next = start

    def __call__(self) -> datetime:
        now, self._next = self._next, self._next + timedelta(seconds=1)
        return now


class FakeBackend:
    """What every fake shares: call counting, injected failures and closing."""

    backend = "fake"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_with: BackendError | None = None
        self.closed = False

    async def _call(self, operation: str) -> None:
        # Yield once, as real I/O would, so that callers' interleavings are exercised.
        await asyncio.sleep(0)
        self.calls[operation] += 1
        if self.fail_with is not None:
            raise self.fail_with.with_traceback(None)

    def _reject(self, detail: str, code: str) -> BackendRejected:
        return BackendRejected(self.backend, detail, code)

    async def aclose(self) -> None:
        self.closed = True


class Landings:
    """Reads that land when a test lets them, in the order it chooses."""

    def __init__(self) -> None:
        self._reads: list[asyncio.Future[None]] = []
        self._begun = asyncio.Condition()

    async def wait(self) -> None:
        landing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._begun:
            self._reads.append(landing)
            self._begun.notify_all()
        await landing

    async def begun(self, count: int) -> None:
        async with self._begun:
            await self._begun.wait_for(lambda: len(self._reads) >= count)

    def land(self, number: int) -> None:
        self._reads[number].set_result(None)

    async def land_in_turn(self, *numbers: int) -> None:
        """Let the reads ``numbers`` land in that order, each handled before the next."""
        for number in numbers:
            self.land(number)
            for _ in range(20):  # what the landing read sets going runs to its next wait
                await asyncio.sleep(0)


class ChangeLog(Generic[Key]):
    """Keys in the order they last changed, numbered; the numbers are the feed's cursors."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._sequence = 0
        self._positions: dict[Key, int] = {}
        for key in keys:
            self.record(key)

    def record(self, key: Key) -> None:
        self._sequence += 1
        self._positions.pop(key, None)
        self._positions[key] = self._sequence

    def after(self, since: str | None, limit: int | None = None) -> list[tuple[str, Key]]:
        """(cursor, key) of the keys changed after cursor ``since``, oldest first."""
        start = 0 if since is None else int(since) if since.isdigit() else -1
        if start < 0:
            raise ValueError(f"not a cursor of this feed: {since!r}")
        found = [(str(number), key) for key, number in self._positions.items() if number > start]
        return found[:limit] if limit is not None else found


# --------------------------------------------------------------------------- catalogue


class FakeCatalogue(FakeBackend):
    """``CataloguePort`` over products, a category tree and per-SKU store ranging. ``ranging``,
    when given, sets every variant's ``ranged_at`` (a SKU without an entry is sold nowhere);
    otherwise the products' own ``ranged_at`` stands. ``ranging()`` answers from ``ranged_at``.
    ``upsert`` changes a product, ranging included, and feeds it."""

    backend = "pim"

    def __init__(
        self,
        products: Iterable[Product],
        categories: Iterable[Category] = (),
        ranging: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        super().__init__()
        if ranging is not None:
            products = [_ranged(product, ranging) for product in products]
        self._products = {product.code: product for product in products}
        self._categories = tuple(categories)
        self._log = ChangeLog(code for code in _by_update(self._products.values()))

    def upsert(self, product: Product) -> None:
        self._products[product.code] = product
        self._log.record(product.code)

    async def products(self, codes: Sequence[str]) -> Mapping[str, Product]:
        await self._call("products")
        return {code: self._products[code] for code in codes if code in self._products}

    async def products_by_sku(self, skus: Sequence[str]) -> Mapping[str, Product]:
        await self._call("products_by_sku")
        owners = self._owners()
        return {sku: self._products[owners[sku]] for sku in skus if sku in owners}

    async def list_products(
        self, offset: int, limit: int, query: ProductFilter = EVERYTHING
    ) -> ProductPage:
        await self._call("list_products")
        matching = [product for _, product in sorted(self._products.items())]
        matching = [product for product in matching if self._matches(product, query)]
        return ProductPage(tuple(matching[offset : offset + limit]), offset, len(matching))

    async def categories(self) -> Sequence[Category]:
        await self._call("categories")
        return self._categories

    async def ranging(self, skus: Sequence[str]) -> Mapping[str, frozenset[str]]:
        await self._call("ranging")
        variants = {v.sku: v for p in self._products.values() for v in p.variants}
        return {sku: variants[sku].ranged_at for sku in skus if sku in variants}

    async def changes(self, since: str | None) -> ChangeBatch:
        await self._call("changes")
        entries = _entries(self._log, since, self.backend)
        found = [
            Change("product", code, self._products[code].updated_at, cursor)
            for cursor, code in entries
        ]
        return ChangeBatch(tuple(found), found[-1].cursor if found else since or "0")

    def _owners(self) -> dict[str, str]:
        return {v.sku: p.code for p in self._products.values() for v in p.variants}

    def _matches(self, product: Product, query: ProductFilter) -> bool:
        if query.brand is not None and product.brand != query.brand:
            return False
        if query.category is not None and not self._within(product, query.category):
            return False
        text = f"{product.name} {product.brand} {product.description}".casefold()
        return query.search is None or query.search.casefold() in text

    def _within(self, product: Product, category: str) -> bool:
        parents = {item.code: item.parent for item in self._categories}
        for code in product.categories:
            ancestor: str | None = code
            while ancestor is not None and ancestor != category:
                ancestor = parents.get(ancestor)
            if ancestor == category:
                return True
        return False


# --------------------------------------------------------------------------- prices


class FakePrices(FakeBackend):
    """``PricesPort`` over base prices, zone prices that replace them, and each store's zone.
    A price answered for a store carries the store's zone. An unknown store is rejected with
    ``UNKNOWN_STORE``. ``set_price`` changes a price and feeds it."""

    backend = "pricing"

    def __init__(
        self,
        base: Iterable[Price],
        zone_prices: Iterable[Price] = (),
        store_zones: Mapping[str, str] | None = None,
        base_zone: str = "BASE",
    ) -> None:
        super().__init__()
        self.base_zone = base_zone
        self._base = {price.sku: price for price in base}
        self._zoned = {(price.zone, price.sku): price for price in zone_prices}
        self._store_zones = dict(store_zones or {})
        self._log = ChangeLog(sorted(self._base))

    def set_price(self, price: Price) -> None:
        if price.zone == self.base_zone:
            self._base[price.sku] = price
        else:
            self._zoned[(price.zone, price.sku)] = price
        self._log.record(price.sku)

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> Mapping[str, Price]:
        await self._call("prices")
        zone = self.base_zone if store_id is None else self._store_zones.get(store_id)
        if zone is None:
            raise self._reject(f"unknown store {store_id!r}", "UNKNOWN_STORE")
        found = {sku: self._base[sku] for sku in skus if sku in self._base}
        return {
            sku: self._zoned.get((zone, sku)) or replace(price, zone=zone)
            for sku, price in found.items()
        }

    async def changes(self, since: str | None) -> ChangeBatch:
        await self._call("changes")
        entries = _entries(self._log, since, self.backend)
        found = [Change("price", sku, self._latest(sku), cursor) for cursor, sku in entries]
        return ChangeBatch(tuple(found), found[-1].cursor if found else since or "0")

    def _latest(self, sku: str) -> datetime:
        zoned = [price.as_of for (_, key), price in self._zoned.items() if key == sku]
        return max([self._base[sku].as_of, *zoned])


# --------------------------------------------------------------------------- promotions


class FakePromotions(FakeBackend):
    """``PromotionsPort`` over a rule set; ``publish`` replaces it under a new version."""

    backend = "promotions"

    def __init__(self, rules: Iterable[PromotionRule] = (), coupons: Iterable[Coupon] = ()) -> None:
        super().__init__()
        self._set = PromotionSet(tuple(rules), tuple(coupons), "1")

    def publish(self, rules: Iterable[PromotionRule], coupons: Iterable[Coupon] = ()) -> None:
        self._set = PromotionSet(tuple(rules), tuple(coupons), str(int(self._set.version) + 1))

    async def promotions(self) -> PromotionSet:
        await self._call("promotions")
        return self._set


# --------------------------------------------------------------------------- inventory


class FakeInventory(FakeBackend):
    """``InventoryPort`` over locations and stock levels (negative quantities read as 0, as
    the port promises). ``set_stock`` changes a level and feeds it."""

    backend = "erp"

    def __init__(self, locations: Iterable[Location], levels: Iterable[StockLevel]) -> None:
        super().__init__()
        self._locations = tuple(sorted(locations, key=lambda location: location.id))
        self._levels: dict[tuple[str, str], StockLevel] = {}
        self._log: ChangeLog[tuple[str, str]] = ChangeLog()
        for level in sorted(levels, key=_feed_order):
            self.set_stock(level)

    def set_stock(self, level: StockLevel) -> None:
        key = (level.sku, level.location_id)
        self._levels[key] = replace(level, on_hand=max(0, level.on_hand))
        self._log.record(key)

    async def stock_levels(self, skus: Sequence[str]) -> Mapping[str, Sequence[StockLevel]]:
        await self._call("stock_levels")
        asked = set(skus)
        found: dict[str, list[StockLevel]] = {}
        for (sku, _), level in sorted(self._levels.items()):
            if sku in asked:
                found.setdefault(sku, []).append(level)
        return found

    async def locations(self) -> Sequence[Location]:
        await self._call("locations")
        return self._locations

    async def stock_changes(self, since: str | None, limit: int = 10_000) -> StockChanges:
        await self._call("stock_changes")
        entries = _entries(self._log, since, self.backend, limit)
        cursor = entries[-1][0] if entries else since or "0"
        return StockChanges(tuple(self._levels[key] for _, key in entries), cursor)


# --------------------------------------------------------------------------- loyalty


class FakeLoyalty(FakeBackend):
    """``LoyaltyPort`` over accounts and their histories. A receipt's ``points`` is the signed
    movement of its entry (negative for a redemption). Unknown customers and points that are
    not positive are rejected (``UNKNOWN_CUSTOMER``, ``INVALID_POINTS``)."""

    backend = "loyalty"

    def __init__(
        self,
        accounts: Iterable[LoyaltyAccount],
        history: Mapping[str, Iterable[LoyaltyEntry]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self._accounts = {account.customer_id: account for account in accounts}
        self._history = {
            customer: sorted(entries, key=lambda entry: entry.at)
            for customer, entries in (history or {}).items()
        }
        self._receipts: dict[str, LoyaltyReceipt] = {}
        self._clock = clock or Ticker()

    async def accounts(self, customer_ids: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        await self._call("accounts")
        return {key: self._accounts[key] for key in customer_ids if key in self._accounts}

    async def accounts_by_card(self, card_numbers: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        await self._call("accounts_by_card")
        cards = {account.card_number: account for account in self._accounts.values()}
        return {card: cards[card] for card in card_numbers if card in cards}

    async def history(self, customer_id: str, limit: int = 50) -> Sequence[LoyaltyEntry]:
        await self._call("history")
        return list(reversed(self._history.get(customer_id, [])))[:limit]

    async def earn(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        await self._call("earn")
        return self._move(customer_id, self._positive(points), request_id, reason)

    async def redeem(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        await self._call("redeem")
        return self._move(customer_id, -self._positive(points), request_id, reason)

    def _positive(self, points: int) -> int:
        if points <= 0:
            raise self._reject(f"points must be positive, not {points}", "INVALID_POINTS")
        return points

    def _move(self, customer_id: str, points: int, request_id: str, reason: str) -> LoyaltyReceipt:
        if request_id in self._receipts:
            return self._receipts[request_id]
        account = self._accounts.get(customer_id)
        if account is None:
            raise self._reject(f"unknown customer {customer_id!r}", "UNKNOWN_CUSTOMER")
        if account.points + points < 0:
            raise InsufficientPoints(self.backend, f"balance {account.points}", account.points)
        entries = self._history.setdefault(customer_id, [])
        entry = LoyaltyEntry(f"F{len(self._receipts) + 1:06d}", self._clock(), points, reason, None)
        entries.append(entry)
        self._accounts[customer_id] = replace(account, points=account.points + points)
        receipt = LoyaltyReceipt(request_id, customer_id, points, account.points + points, entry.id)
        self._receipts[request_id] = receipt
        return receipt


# --------------------------------------------------------------------------- order intake


class FakeOrderIntake(FakeBackend):
    """``OrderIntakePort`` that keeps what it is handed: ``orders`` by order id, in order, and
    the status feed of each, which ``ship`` and ``cancel`` add to as the OMS would."""

    backend = "oms"

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.orders: dict[str, OrderSubmission] = {}
        self.feed: list[OrderStatusChange] = []
        self._receipts: dict[str, OmsReceipt] = {}
        self._clock = clock or Ticker()

    async def submit(self, order: OrderSubmission) -> OmsReceipt:
        await self._call("submit")
        if order.order_id not in self._receipts:
            number = f"OMS-{len(self._receipts) + 1:07d}"
            self._receipts[order.order_id] = OmsReceipt(order.order_id, number, self._clock())
            self.orders[order.order_id] = order
            self._record(order.order_id, OmsStatus.RECEIVED)
        return self._receipts[order.order_id]

    async def receipts(self, order_ids: Sequence[str]) -> Mapping[str, OmsReceipt]:
        await self._call("receipts")
        return {key: self._receipts[key] for key in order_ids if key in self._receipts}

    async def status_changes(self, since: str | None, limit: int = 100) -> OrderStatusChanges:
        await self._call("status_changes")
        start = int(since or 0)
        changes = tuple(self.feed[start : start + max(limit, 1)])
        return OrderStatusChanges(changes, changes[-1].cursor if changes else str(start))

    async def ship(self, order_id: str, booked_at: datetime | None = None) -> None:
        """The OMS ships the whole order; its goods issue was booked at ``booked_at``."""
        self._record(order_id, OmsStatus.SHIPPED, booked_at)

    async def cancel(self, order_id: str) -> None:
        self._record(order_id, OmsStatus.CANCELLED)

    def _record(self, order_id: str, status: OmsStatus, booked_at: datetime | None = None) -> None:
        cursor = str(len(self.feed) + 1)
        self.feed.append(OrderStatusChange(order_id, status, self._clock(), cursor, booked_at))


# --------------------------------------------------------------------------- the demo estate


@dataclass(frozen=True, slots=True)
class FakeEstate:
    """One fake per port, loaded from the same ground truth."""

    catalogue: FakeCatalogue
    prices: FakePrices
    promotions: FakePromotions
    inventory: FakeInventory
    loyalty: FakeLoyalty
    order_intake: FakeOrderIntake

    @classmethod
    def from_demo(cls, truth: DemoEstate) -> FakeEstate:
        return cls(
            catalogue_from_demo(truth),
            prices_from_demo(truth),
            promotions_from_demo(truth),
            inventory_from_demo(truth),
            loyalty_from_demo(truth),
            FakeOrderIntake(),
        )


def catalogue_from_demo(truth: DemoEstate) -> FakeCatalogue:
    """Products in en_GB; each product's categories are its leaf, then the leaf's ancestors;
    a SKU is ranged in the stores of its product's clusters and in every DC."""
    parents = {category.code: category.parent for category in truth.categories}
    products = [_product(product, parents) for product in truth.products]
    categories = [Category(item.code, item.name_en, item.parent) for item in truth.categories]
    ranging = {
        variant.sku: frozenset(
            location.code for location in truth.locations if truth.ranged(product, location)
        )
        for product in truth.products
        for variant in product.variants
    }
    return FakeCatalogue(products, categories, ranging)


def prices_from_demo(truth: DemoEstate) -> FakePrices:
    """Base prices in zone BASE, the zone overrides, each location's price zone; as of ANCHOR."""
    base, zoned = [], []
    for variant in truth.skus:
        compare_at = _money(variant.compare_at) if variant.compare_at is not None else None
        base.append(Price(variant.sku, _money(variant.base_price), compare_at, "BASE", ANCHOR))
        for zone, overrides in sorted(truth.zone_overrides.items()):
            if variant.sku in overrides:
                zoned.append(
                    Price(variant.sku, _money(overrides[variant.sku]), compare_at, zone, ANCHOR)
                )
    zones = {location.code: location.price_zone for location in truth.locations}
    return FakePrices(base, zoned, zones)


def promotions_from_demo(truth: DemoEstate) -> FakePromotions:
    rules = [rule_from_demo(promotion) for promotion in truth.promotions]
    coupons = [
        Coupon(item.coupon_code, item.id, item.coupon_max_uses, item.coupon_max_uses_per_customer)
        for item in truth.promotions
        if item.coupon_code is not None
    ]
    return FakePromotions(rules, coupons)


def inventory_from_demo(truth: DemoEstate) -> FakeInventory:
    """Every location and stock row; negative stock reads as 0."""
    levels = [
        StockLevel(row.sku, row.location_code, max(0, row.on_hand), row.updated_at)
        for row in truth.stock_rows()
    ]
    return FakeInventory([_location(location) for location in truth.locations], levels)


def loyalty_from_demo(truth: DemoEstate) -> FakeLoyalty:
    accounts = [
        LoyaltyAccount(customer.id, customer.card_number, customer.points, customer.tier)
        for customer in truth.customers
    ]
    history = {
        customer.id: [
            LoyaltyEntry(item.entry_id, item.at, item.points, item.reason, item.reference)
            for item in customer.history
        ]
        for customer in truth.customers
    }
    return FakeLoyalty(accounts, history)


def sample_from_demo(truth: DemoEstate) -> ConformanceSample:
    """Keys of ``truth`` for the conformance suite: SKUs of products spread over the
    catalogue (each with stock), stores of every price zone and a DC, customers and cards."""
    products = truth.products
    chosen = [products[index] for index in sorted({0, len(products) // 3, -1 % len(products)})]
    stocked = {row.sku for row in truth.stock_rows()}
    skus = [v.sku for p in chosen for v in (p.variants[0], p.variants[-1]) if v.sku in stocked]
    stores = {location.price_zone: location.code for location in reversed(truth.locations)}
    dc = next(location.code for location in truth.locations if location.kind == "DC")
    customers = [truth.customers[index] for index in (0, 1, len(truth.customers) // 2, -1)]
    return ConformanceSample(
        skus=tuple(skus),
        product_codes=tuple(product.code for product in chosen),
        location_ids=(*sorted(stores.values()), dc),
        customer_ids=tuple(customer.id for customer in customers),
        card_numbers=tuple(customer.card_number for customer in customers),
        promotion_ids=tuple(item.id for item in truth.promotions[:3]),
        coupon_codes=tuple(item.coupon_code for item in truth.promotions if item.coupon_code)[:2],
        currency=CURRENCY,
        postal_code=truth.locations[0].postal_code,
    )


def _product(product: DemoProduct, parents: Mapping[str, str | None]) -> Product:
    categories: list[str] = []
    code: str | None = product.category
    while code is not None:
        categories.append(code)
        code = parents.get(code)
    variants = tuple(
        Variant(
            variant.sku,
            product.code,
            (Attribute("size", variant.size), Attribute("color", variant.color_en)),
            variant.ean,
        )
        for variant in product.variants
    )
    return Product(
        code=product.code,
        name=product.name_en,
        brand=product.brand,
        description=product.description_en,
        categories=tuple(categories),
        variants=variants,
        updated_at=product.updated_at,
    )


def _ranged(product: Product, ranging: Mapping[str, frozenset[str]]) -> Product:
    variants = tuple(
        replace(variant, ranged_at=ranging.get(variant.sku, frozenset()))
        for variant in product.variants
    )
    return replace(product, variants=variants)


def rule_from_demo(promotion: DemoPromotion, currency: str = CURRENCY) -> PromotionRule:
    """The rule the promotions tool's feed holds for ``promotion``."""
    threshold = promotion.threshold
    return PromotionRule(
        id=promotion.id,
        title=promotion.title,
        kind=PromotionKind(promotion.kind),
        value=promotion.value,
        value_type=ValueType(promotion.value_type),
        currency=currency,
        target=PromotionTarget(
            frozenset(promotion.skus), frozenset(promotion.categories), frozenset(promotion.brands)
        ),
        valid_from=promotion.valid_from,
        valid_until=promotion.valid_until,
        priority=promotion.priority,
        exclusive=promotion.exclusive,
        stacking_group=promotion.stacking_group,
        buy_quantity=promotion.buy_quantity,
        pay_quantity=promotion.pay_quantity,
        get_quantity=promotion.get_quantity,
        bundle_skus=promotion.bundle_skus,
        threshold=None if threshold is None else Money(threshold, currency),
        coupon_code=promotion.coupon_code,
        tiers=frozenset(promotion.tiers),
        customer_id=promotion.customer_id,
        extra_points=promotion.extra_points,
    )


def _location(location: DemoLocation) -> Location:
    kind = LocationKind.STORE if location.kind == "STORE" else LocationKind.DISTRIBUTION_CENTER
    hours = tuple(
        OpeningHours(day, time.fromisoformat(opens), time.fromisoformat(closes))
        for day, opens, closes in location.opening_hours
    )
    return Location(
        id=location.code,
        name=location.name,
        kind=kind,
        point=GeoPoint(location.lat, location.lon),
        postal_code=location.postal_code,
        capabilities=location.capabilities,
        daily_capacity=location.daily_capacity,
        opening_hours=hours,
    )


def _money(amount: Decimal) -> Money:
    return Money(amount, CURRENCY)


def _feed_order(level: StockLevel) -> tuple[datetime, str, str]:
    # The ERP's own order: LAST_UPD, then store, then item.
    return (level.updated_at, level.location_id, level.sku)


def _by_update(products: Iterable[Product]) -> list[str]:
    return [product.code for product in sorted(products, key=lambda p: (p.updated_at, p.code))]


def _entries(
    log: ChangeLog[Key], since: str | None, backend: str, limit: int | None = None
) -> list[tuple[str, Key]]:
    try:
        return log.after(since, limit)
    except ValueError as exc:
        raise BackendRejected(backend, str(exc), "INVALID_CURSOR") from exc
