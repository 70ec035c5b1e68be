"""Products and variants: the assortment, with price and stock per variant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry import relay
from strawberry.relay.utils import from_base64, to_base64

from adapters.ports import (
    Attribute,
    GeoPoint,
    LocationKind,
    Price,
    Product,
    ProductFilter,
    Variant,
)
from gateway.availability import (
    Candidate,
    Holding,
    LocationStock,
    stock_at_locations,
    total_available,
)
from gateway.context import Info
from gateway.degraded import PriceGap, Reason
from gateway.promotions import BasketLine
from resolvers.cart import VariantPromotion
from resolvers.common import (
    GeoPointInput,
    MoneyType,
    check_first,
    check_known_stores,
    check_radius,
    store_code,
    user_error,
)
from resolvers.prefetch import now_or_later, prefetch_page
from resolvers.stores import StoreType

CURSOR_PREFIX = "offset"
ERP_FEED = "erp"
PRICE_FEED = "pricing"


@strawberry.type(name="Attribute")
class AttributeType:
    code: str
    value: str

    @classmethod
    def from_domain(cls, attribute: Attribute) -> AttributeType:
        return cls(code=attribute.code, value=attribute.value)


@strawberry.type(name="Price")
class PriceType:
    current: MoneyType
    compare_at: MoneyType | None = strawberry.field(description="The price before a reduction.")
    as_of: datetime = strawberry.field(
        description="When the gateway last had this price from the pricing engine: how old it "
        "may be (changes reach the gateway within about a second)."
    )
    valid_from: datetime = strawberry.field(
        description="When the pricing engine says this price took effect."
    )
    zone: str = strawberry.field(description="The price zone the price was taken from.")
    stale: bool = strawberry.field(
        description="True when the pricing engine cannot answer now and this is the last price "
        "the gateway had (`asOf` says how old): for display only, never charged; a cart or "
        "an order asks the engine itself. The answer's `errors` then name the pricing engine."
    )

    @classmethod
    def from_domain(cls, price: Price, *, stale: bool = False) -> PriceType:
        compare_at = None if price.compare_at is None else MoneyType.from_domain(price.compare_at)
        return cls(
            current=MoneyType.from_domain(price.current),
            compare_at=compare_at,
            as_of=price.read_at or price.as_of,
            valid_from=price.as_of,
            zone=price.zone,
            stale=stale,
        )


UnavailableReason = strawberry.enum(
    Reason,
    name="UnavailableReason",
    description="Why a backend's value is missing from an answer.",
)


@strawberry.type(
    name="PriceUnavailable",
    description="No current price: the pricing engine cannot answer now.",
)
class PriceUnavailableType:
    reason: UnavailableReason  # type: ignore[valid-type]
    backend: str
    last_known: PriceType | None = strawberry.field(
        description="The last price the gateway had, flagged `stale`: for display only."
    )
    retry_after_seconds: float | None = strawberry.field(
        description="When the gateway will ask the engine again, if it knows."
    )

    @classmethod
    def from_domain(cls, gap: PriceGap) -> PriceUnavailableType:
        last = gap.last_known
        return cls(
            reason=gap.reason,
            backend=gap.backend,
            last_known=None if last is None else PriceType.from_domain(last, stale=True),
            retry_after_seconds=None if gap.retry_after is None else round(gap.retry_after, 3),
        )


PriceResult = Annotated[
    PriceType | PriceUnavailableType,
    strawberry.union("PriceResult", description="A current price, or why there is none."),
]


@strawberry.type
class PriceRange:
    min: MoneyType
    max: MoneyType
    stale: bool = strawberry.field(
        description="True when some variant's price is a last known one or is missing (see "
        "`Price.stale`): the range is for display only."
    )


@strawberry.type(name="StoreStock")
class StoreStockType:
    store: StoreType
    available: int = strawberry.field(description="Available to promise: on hand - reserved.")
    on_hand: int
    reserved: int
    distance_km: float | None
    as_of: datetime | None = strawberry.field(
        description="When these numbers were read from the gateway's inventory ledger."
    )
    stale: bool = strawberry.field(
        description="True when the ERP's stock changes have not reached the gateway lately "
        "(its feed is late or down): these are the last numbers it had. The answer's `errors` "
        "then say how old."
    )

    @classmethod
    def from_domain(
        cls, stock: LocationStock, as_of: datetime | None, *, stale: bool = False
    ) -> StoreStockType:
        store = StoreType.shown(stock.location, stock.distance_km)
        return cls(
            store=store,
            available=stock.available,
            on_hand=stock.on_hand,
            reserved=stock.reserved,
            distance_km=store.distance_km,
            as_of=as_of,
            stale=stale,
        )


async def _store_codes(info: Info, ids: Iterable[strawberry.ID]) -> list[str]:
    codes = [store_code(store_id) for store_id in ids]
    check_known_stores(codes, await info.context.runtime.locations.by_id())
    return codes


async def _store(info: Info, store_id: strawberry.ID | None) -> str | None:
    return None if store_id is None else (await _store_codes(info, [store_id]))[0]


async def _prices(
    info: Info, skus: Sequence[str], store_id: strawberry.ID | None
) -> list[Price | PriceGap]:
    """A price, or why there is none now, for each SKU in ``store_id``'s zone."""
    store = await _store(info, store_id)
    prices = await info.context.loaders.price_by_sku.load_many([(sku, store) for sku in skus])
    missing = [sku for sku, price in zip(skus, prices, strict=True) if price is None]
    if missing:
        raise user_error(f"no price for {', '.join(missing)}", code="PRICE_NOT_FOUND")
    return [price for price in prices if price is not None]


def _shown(info: Info, price: Price | PriceGap) -> tuple[Price | None, bool]:
    """The price to show and whether it is stale: the current one (stale when the read model
    holds it and the price feed is late), else the last known (stale), else None; what is
    missing or stale is noted."""
    if not isinstance(price, PriceGap):
        held = info.context.runtime.reads.holding
        return price, held and _feed_is_late(info, PRICE_FEED, "prices")
    stale = price.last_known is not None
    info.context.degraded.note(price.backend, price.reason, info.path.as_list(), stale=stale)
    return price.last_known, stale


def _feed_is_late(info: Info, feed: str, what: str) -> bool:
    """True (and noted) when ``feed`` has not been read lately: ``what`` it feeds may be out
    of date."""
    runtime = info.context.runtime
    if not runtime.freshness.is_late(feed, runtime.feed_stale_after):
        return False
    age = runtime.freshness.age(feed)
    when = "never" if age is None else f"{age:.0f} s ago"
    message = f"{feed}'s changes were last read {when}: {what} are flagged stale"
    info.context.degraded.note(
        feed, Reason.BACKEND_STALE, info.path.as_list(), stale=True, message=message
    )
    return True


@strawberry.type(name="Variant", description="A sellable item (SKU) of a product.")
class VariantType(relay.Node):
    sku: str
    ean: str | None
    attributes: list[AttributeType]
    domain: strawberry.Private[Variant]

    @classmethod
    def from_domain(cls, variant: Variant) -> VariantType:
        attributes = [AttributeType.from_domain(a) for a in variant.attributes]
        return cls(sku=variant.sku, ean=variant.ean, attributes=attributes, domain=variant)

    @classmethod
    def resolve_id(cls, root: VariantType, *, info: Info) -> str:
        return root.sku

    @strawberry.field
    async def product(self, info: Info) -> ProductType:
        product = await info.context.loaders.product_by_code.load(self.domain.product_code)
        if product is None:
            raise user_error(f"product of {self.sku} not found", code="NOT_FOUND")
        return ProductType.from_domain(product)

    @strawberry.field(
        description="The selling price, in the price zone of `storeId` if given. While the "
        "pricing engine cannot answer: the last known price, flagged `stale`, or null when "
        "there is none; `pricing` says why, and the answer's `errors` name the engine."
    )
    def price(self, info: Info, store_id: strawberry.ID | None = None) -> PriceType | None:
        if store_id is not None:
            return cast(PriceType | None, self._price_in_store(info, store_id))
        found = info.context.loaders.price_by_sku.load((self.sku, None))
        return now_or_later(found, lambda price: _price_type(info, self.sku, price))

    async def _price_in_store(self, info: Info, store_id: strawberry.ID) -> PriceType | None:
        (price,) = await _prices(info, [self.sku], store_id)
        return _price_type(info, self.sku, price)

    @strawberry.field(
        description="The current price in `storeId`'s zone, or why there is none now "
        "(with the last known price, for display)."
    )
    async def pricing(self, info: Info, store_id: strawberry.ID | None = None) -> PriceResult:
        (price,) = await _prices(info, [self.sku], store_id)
        _, stale = _shown(info, price)
        if isinstance(price, PriceGap):
            return PriceUnavailableType.from_domain(price)
        return PriceType.from_domain(price, stale=stale)

    @strawberry.field(
        description="Promotions on this variant on its own (no coupon, no other items) for the "
        "token's customer, or for anyone; priced in the zone of `storeId` if given."
    )
    async def promotions(
        self, info: Info, store_id: strawberry.ID | None = None
    ) -> list[VariantPromotion]:
        loaders = info.context.loaders
        product = await loaders.product_by_code.load(self.domain.product_code)
        if product is None:
            return []
        (found,) = await _prices(info, [self.sku], store_id)
        if isinstance(found, PriceGap):
            # Promotions are worked out on the current price only.
            info.context.degraded.note(found.backend, found.reason, info.path.as_list())
            return []
        line = BasketLine(self.sku, 1, found.current, product.categories, product.brand)
        cart = info.context.runtime.cart
        info.context.provenance.tags.add("promotions")
        offers = await cart.offers_for(line, info.context.customer_id, loaders)
        return [VariantPromotion.from_domain(offer) for offer in offers]

    @strawberry.field(
        description="Stock at the stores that range this variant: nearest first with `near`, "
        "or at `storeIds` (which may name distribution centres)."
    )
    def availability(
        self,
        info: Info,
        near: GeoPointInput | None = None,
        radius_km: float | None = None,
        store_ids: list[strawberry.ID] | None = None,
        first: int = 10,
    ) -> list[StoreStockType]:
        levels = info.context.loaders.position_by_sku.load(self.sku)
        point = None if near is None else near.to_domain()
        radius, count = check_radius(radius_km), check_first(first)
        known = None if store_ids else _known_candidates(info, point, radius)
        if known is None or not levels.done():
            return cast(
                list[StoreStockType], self._availability(info, near, radius, store_ids, count)
            )
        return self._stock(info, levels.result(), known, count)

    async def _availability(
        self,
        info: Info,
        near: GeoPointInput | None,
        radius_km: float | None,
        store_ids: list[strawberry.ID] | None,
        first: int,
    ) -> list[StoreStockType]:
        levels = await info.context.loaders.position_by_sku.load(self.sku)
        candidates = await _candidates(info, near, radius_km, store_ids)
        return self._stock(info, levels, candidates, first)

    def _stock(
        self, info: Info, levels: Sequence[Holding], candidates: Sequence[Candidate], first: int
    ) -> list[StoreStockType]:
        found = stock_at_locations(levels, candidates, self.domain.ranged_at, first)
        as_of = info.context.provenance.stock_read_at
        # The ledger is the gateway's own, but its on-hand comes from the ERP's feed.
        stale = _feed_is_late(info, ERP_FEED, "stock numbers")
        return [StoreStockType.from_domain(stock, as_of, stale=stale) for stock in found]

    @strawberry.field(description="Units available to promise over every ranged location.")
    def total_available(self, info: Info) -> int:
        levels = info.context.loaders.position_by_sku.load(self.sku)
        return now_or_later(levels, lambda found: total_available(found, self.domain.ranged_at))

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[VariantType | None]:
        skus = list(node_ids)
        products = await info.context.loaders.product_by_sku.load_many(skus)
        return [_variant(product, sku) for product, sku in zip(products, skus, strict=True)]


async def _candidates(
    info: Info,
    near: GeoPointInput | None,
    radius_km: float | None,
    store_ids: list[strawberry.ID] | None,
) -> Sequence[Candidate]:
    """Where to look, in the order to show: the stores asked for (distribution centres too),
    else the stores near the point asked about, else every store by id."""
    directory = info.context.runtime.locations
    radius = check_radius(radius_km)
    point = None if near is None else near.to_domain()
    if store_ids is not None:
        by_id = await directory.by_id()
        codes = await _store_codes(info, store_ids)
        chosen = [by_id[code] for code in dict.fromkeys(codes)]
        if point is None:
            return [(location, None) for location in chosen]
        wanted = {location.id for location in chosen}
        return [pair for pair in await directory.near(point, radius) if pair[0].id in wanted]
    if point is None:
        return [(location, None) for location in await directory.stores()]
    return await directory.near(point, radius, kind=LocationKind.STORE)


def _known_candidates(
    info: Info, point: GeoPoint | None, radius_km: float | None
) -> Sequence[Candidate] | None:
    """The stores to look at, if the directory can tell without a refresh."""
    directory = info.context.runtime.locations
    if point is None:
        stores = directory.fresh_stores()
        return None if stores is None else [(location, None) for location in stores]
    return directory.fresh_near(point, radius_km, kind=LocationKind.STORE)


def _price_type(info: Info, sku: str, price: Price | PriceGap | None) -> PriceType | None:
    if price is None:
        raise user_error(f"no price for {sku}", code="PRICE_NOT_FOUND")
    shown, stale = _shown(info, price)
    return None if shown is None else PriceType.from_domain(shown, stale=stale)


def _variant(product: Product | None, sku: str) -> VariantType | None:
    for variant in () if product is None else product.variants:
        if variant.sku == sku:
            return VariantType.from_domain(variant)
    return None


@strawberry.type(name="Product")
class ProductType(relay.Node):
    code: str
    name: str
    brand: str
    description: str
    categories: list[str] = strawberry.field(description="Most specific first, then parents.")
    domain: strawberry.Private[Product]

    @classmethod
    def from_domain(cls, product: Product) -> ProductType:
        return cls(
            code=product.code,
            name=product.name,
            brand=product.brand,
            description=product.description,
            categories=list(product.categories),
            domain=product,
        )

    @classmethod
    def resolve_id(cls, root: ProductType, *, info: Info) -> str:
        return root.code

    @strawberry.field
    def variants(self) -> list[VariantType]:
        return [VariantType.from_domain(variant) for variant in self.domain.variants]

    @strawberry.field(description="Lowest and highest variant price, in `storeId`'s zone.")
    async def price_range(
        self, info: Info, store_id: strawberry.ID | None = None
    ) -> PriceRange | None:
        skus = [variant.sku for variant in self.domain.variants]
        found = await _prices(info, skus, store_id)
        shown = [_shown(info, price) for price in found]
        prices = [price for price, _ in shown if price is not None]
        if not prices:
            return None
        amounts = sorted((price.current for price in prices), key=lambda money: money.amount)
        return PriceRange(
            min=MoneyType.from_domain(amounts[0]),
            max=MoneyType.from_domain(amounts[-1]),
            stale=any(stale or price is None for price, stale in shown),
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[ProductType | None]:
        products = await info.context.loaders.product_by_code.load_many(list(node_ids))
        return [None if p is None else cls.from_domain(p) for p in products]


@strawberry.type
class ProductConnection(relay.Connection[ProductType]):
    total_count: int = strawberry.field(description="Products matching, over every page.")


@strawberry.input
class ProductFilterInput:
    category: str | None = strawberry.field(
        default=None, description="A category code; its subcategories match too."
    )
    brand: str | None = None


def _offset(after: str | None) -> int:
    if after is None:
        return 0
    try:
        prefix, value = from_base64(after)
        offset = int(value)
    except ValueError as exc:
        raise user_error("after is not a cursor of this connection") from exc
    if prefix != CURSOR_PREFIX or offset < 0:
        raise user_error("after is not a cursor of this connection")
    return offset + 1


def _connection(products: Sequence[Product], offset: int, total: int) -> ProductConnection:
    edges = [
        relay.Edge(cursor=to_base64(CURSOR_PREFIX, offset + index), node=ProductType.from_domain(p))
        for index, p in enumerate(products)
    ]
    page_info = relay.PageInfo(
        has_next_page=offset + len(products) < total,
        has_previous_page=offset > 0,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )
    return ProductConnection(page_info=page_info, edges=edges, total_count=total)


@strawberry.type
class CatalogQuery:
    @strawberry.field(description="The assortment, in pages (a Relay connection).")
    async def products(
        self,
        info: Info,
        first: int = 24,
        after: str | None = None,
        filter: ProductFilterInput | None = None,
        search: str | None = None,
    ) -> ProductConnection:
        offset = _offset(after)
        query = ProductFilter(
            category=None if filter is None else filter.category,
            brand=None if filter is None else filter.brand,
            search=search or None,
        )
        page = await info.context.runtime.reads.list_products(offset, check_first(first), query)
        info.context.provenance.tags.add("listing")
        info.context.provenance.tag("product:", (product.code for product in page.items))
        for product in page.items:
            info.context.loaders.product_by_code.prime(product.code, product)
        await prefetch_page(info, page.items)
        return _connection(page.items, page.offset, page.total)

    @strawberry.field(description="One product by its id or code, or by one of its SKUs.")
    async def product(
        self, info: Info, id: strawberry.ID | None = None, sku: str | None = None
    ) -> ProductType | None:
        if (id is None) == (sku is None):
            raise user_error("give exactly one of id and sku")
        loaders = info.context.loaders
        if sku is not None:
            found = await loaders.product_by_sku.load(sku)
        else:
            found = await loaders.product_by_code.load(_product_code(str(id)))
        return None if found is None else ProductType.from_domain(found)


def _product_code(product_id: str) -> str:
    try:
        global_id = relay.GlobalID.from_id(product_id)
    except ValueError:
        return product_id
    if global_id.type_name != "Product":
        raise user_error(f"{product_id} is not a product id")
    return global_id.node_id
