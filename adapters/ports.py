"""Ports: what the gateway needs from each legacy domain, independent of any system.

Every port is a small async Protocol, batch-first: a lookup takes many keys and returns a
mapping in which unknown keys are simply absent. Every value crossing a port is a frozen
dataclass defined here, with money as ``Decimal`` plus a currency. Every adapter maps its
library's failures into the ``BackendError`` hierarchy below, chaining the cause (``from exc``).

A retailer writing an adapter for their own system implements one of these Protocols and runs
the conformance suite in ``adapters.testing`` against it (see docs/adapters.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


class BackendError(Exception):
    """A legacy system failed to answer as asked. ``backend`` names the system."""

    retryable: bool = False

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend}: {detail}")
        self.backend = backend
        self.detail = detail


class BackendUnavailable(BackendError):
    """The system could not be reached or said it is down (connection refused, 5xx, 429 after
    retries). Retryable later."""

    retryable = True


class BackendTimedOut(BackendUnavailable):
    """The system did not answer within the adapter's timeout. Retryable later."""


class PartialAnswer(BackendUnavailable):
    """A batch lookup of which only part was answered (some of the calls it was split into
    failed): ``found`` holds what was answered, ``unanswered`` the keys that were not (as
    opposed to keys the system does not know, which are simply absent from ``found``)."""

    def __init__(
        self, backend: str, detail: str, found: Mapping[str, object], unanswered: Sequence[str]
    ) -> None:
        super().__init__(backend, detail)
        self.found = found
        self.unanswered = tuple(unanswered)


class BackendRejected(BackendError):
    """The system understood the request and refused it (4xx, SOAP fault, business rule).
    Retrying the same request will fail the same way. ``code`` is the system's reason, normalised
    to upper snake case where the system gives one."""

    def __init__(self, backend: str, detail: str, code: str = "REJECTED") -> None:
        super().__init__(backend, detail)
        self.code = code


class InsufficientPoints(BackendRejected):
    """A redemption asked for more points than the account holds."""

    def __init__(self, backend: str, detail: str, balance: int) -> None:
        super().__init__(backend, detail, code="INSUFFICIENT_POINTS")
        self.balance = balance


# --------------------------------------------------------------------------- money


# ISO 4217 minor units for the currencies the estate may quote in; default 2.
MINOR_UNITS: Mapping[str, int] = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0, "SEK": 2}


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    @property
    def minor_unit(self) -> Decimal:
        """The smallest amount of this currency, e.g. Decimal('0.01') for EUR."""
        return Decimal(1).scaleb(-MINOR_UNITS.get(self.currency, 2))


@dataclass(frozen=True, slots=True)
class GeoPoint:
    lat: float
    lon: float


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True, slots=True)
class Attribute:
    """One normalised attribute: already resolved to the adapter's locale."""

    code: str
    value: str


@dataclass(frozen=True, slots=True)
class Variant:
    sku: str
    product_code: str
    attributes: tuple[Attribute, ...]
    ean: str | None = None
    ranged_at: frozenset[str] = frozenset()  # the location ids (DCs included) that sell this SKU


@dataclass(frozen=True, slots=True)
class Product:
    code: str
    name: str
    brand: str
    description: str
    categories: tuple[str, ...]
    variants: tuple[Variant, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    name: str
    parent: str | None


@dataclass(frozen=True, slots=True)
class ProductFilter:
    category: str | None = None
    brand: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class ProductPage:
    """One page of a listing. ``offset`` is the position of the first item in the full result."""

    items: tuple[Product, ...]
    offset: int
    total: int


@dataclass(frozen=True, slots=True)
class Change:
    """An entry of a system's change feed: ``entity`` changed at ``at``. ``cursor`` is the
    opaque position to pass as ``since`` to read the entries after this one."""

    entity: str
    key: str
    at: datetime
    cursor: str


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    changes: tuple[Change, ...]
    cursor: str


@runtime_checkable
class CataloguePort(Protocol):
    """Products, variants, categories and store ranging (the PIM).

    Every product returned by ``products``, ``products_by_sku`` and ``list_products`` carries
    its ranging: each variant's ``ranged_at`` is the set of location ids that sell that SKU,
    the same set ``ranging`` answers for it, so a listing needs no separate ranging lookup."""

    async def products(self, codes: Sequence[str]) -> Mapping[str, Product]:
        """Products by code. Unknown codes are absent. Any number of codes."""
        ...

    async def products_by_sku(self, skus: Sequence[str]) -> Mapping[str, Product]:
        """The product owning each SKU. Unknown SKUs are absent. Any number of SKUs."""
        ...

    async def list_products(
        self, offset: int, limit: int, query: ProductFilter = ProductFilter()
    ) -> ProductPage:
        """A stable, code-ordered page of products matching ``query``."""
        ...

    async def categories(self) -> Sequence[Category]:
        """The whole category tree, parents before children."""
        ...

    async def ranging(self, skus: Sequence[str]) -> Mapping[str, frozenset[str]]:
        """The store ids that sell each SKU (its assortment). Unknown SKUs are absent."""
        ...

    async def changes(self, since: str | None) -> ChangeBatch:
        """Product changes after ``since`` (None: from the start), oldest first."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True, slots=True)
class Price:
    """``as_of``: when the pricing engine says this price took effect. ``read_at``: when the
    gateway read it from the engine (set by the gateway's read model; adapters leave it None)."""

    sku: str
    current: Money
    compare_at: Money | None
    zone: str
    as_of: datetime
    read_at: datetime | None = None


@runtime_checkable
class PricesPort(Protocol):
    """Selling prices (the pricing engine)."""

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> Mapping[str, Price]:
        """Current price of each SKU in the price zone of ``store_id`` (the base zone when None).
        Unknown SKUs are absent. Any number of SKUs."""
        ...

    async def changes(self, since: str | None) -> ChangeBatch:
        """SKUs whose price changed in any zone after ``since``, oldest first."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- promotions


class PromotionKind(enum.Enum):
    PERCENT_OFF = "PERCENT_OFF"  # value: percent off each targeted unit
    AMOUNT_OFF = "AMOUNT_OFF"  # value: amount off each targeted unit
    FIXED_PRICE = "FIXED_PRICE"  # value: unit price of each targeted unit
    MULTI_BUY = "MULTI_BUY"  # buy_quantity for the price of pay_quantity (3 for 2)
    BUY_X_GET_Y = "BUY_X_GET_Y"  # buy buy_quantity, get get_quantity at value percent off
    BUNDLE_PRICE = "BUNDLE_PRICE"  # one of each bundle SKU together for value
    BASKET_THRESHOLD = "BASKET_THRESHOLD"  # spend threshold, save value (amount or percent)


class ValueType(enum.Enum):
    PERCENT = "PERCENT"
    AMOUNT = "AMOUNT"


@dataclass(frozen=True, slots=True)
class PromotionTarget:
    """What a rule applies to. Empty everywhere means every item."""

    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    brands: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return not (self.skus or self.categories or self.brands)


@dataclass(frozen=True, slots=True)
class PromotionRule:
    """One promotion as the promotions tool defines it, normalised."""

    id: str
    title: str
    kind: PromotionKind
    value: Decimal
    value_type: ValueType
    currency: str
    target: PromotionTarget
    valid_from: datetime
    valid_until: datetime
    priority: int = 0
    exclusive: bool = False
    stacking_group: str | None = None
    buy_quantity: int = 0
    pay_quantity: int = 0
    get_quantity: int = 0
    bundle_skus: tuple[str, ...] = ()
    threshold: Money | None = None
    coupon_code: str | None = None
    tiers: frozenset[str] = frozenset()
    customer_id: str | None = None
    extra_points: int = 0

    def is_active(self, at: datetime) -> bool:
        return self.valid_from <= at < self.valid_until


@dataclass(frozen=True, slots=True)
class Coupon:
    code: str
    promotion_id: str
    max_uses: int | None
    max_uses_per_customer: int | None


@dataclass(frozen=True, slots=True)
class PromotionSet:
    """Every rule and coupon known to the promotions tool at one moment. ``version`` changes
    whenever the source changes, so callers can cache by it."""

    rules: tuple[PromotionRule, ...]
    coupons: tuple[Coupon, ...]
    version: str


@runtime_checkable
class PromotionsPort(Protocol):
    """Promotion rules, coupon codes and personal offers (the promotions tool)."""

    async def promotions(self) -> PromotionSet:
        """The current rule set. Cheap to call often: implementations reload only on change."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- inventory, stores


class LocationKind(enum.Enum):
    STORE = "STORE"
    DISTRIBUTION_CENTER = "DISTRIBUTION_CENTER"


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """Opening of one weekday (ISO: Monday is 1). A closed day is absent."""

    weekday: int
    opens: time
    closes: time


@dataclass(frozen=True, slots=True)
class Location:
    """A store or a distribution centre as the ERP knows it."""

    id: str
    name: str
    kind: LocationKind
    point: GeoPoint
    postal_code: str
    capabilities: frozenset[str]
    daily_capacity: int
    opening_hours: tuple[OpeningHours, ...]


@dataclass(frozen=True, slots=True)
class StockLevel:
    sku: str
    location_id: str
    on_hand: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StockChanges:
    levels: tuple[StockLevel, ...]
    cursor: str


@runtime_checkable
class InventoryPort(Protocol):
    """Stock on hand per location and the location master data (the ERP)."""

    async def stock_levels(self, skus: Sequence[str]) -> Mapping[str, Sequence[StockLevel]]:
        """Every location's on-hand quantity for each SKU (never negative). SKUs the ERP has no
        row for are absent. Any number of SKUs."""
        ...

    async def locations(self) -> Sequence[Location]:
        """Every store and distribution centre, ordered by id."""
        ...

    async def stock_changes(self, since: str | None, limit: int = 10_000) -> StockChanges:
        """Stock rows updated after ``since``, oldest first, at most ``limit`` of them."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- loyalty


@dataclass(frozen=True, slots=True)
class LoyaltyEntry:
    """One movement of points: positive earns, negative redeems or reverses."""

    id: str
    at: datetime
    points: int
    reason: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class LoyaltyAccount:
    customer_id: str
    card_number: str
    points: int
    tier: str


@dataclass(frozen=True, slots=True)
class LoyaltyReceipt:
    """The result of an earn or redeem. Repeating the request id returns the first receipt.
    ``points`` is signed like a LoyaltyEntry (negative for a redemption); ``balance`` is the
    balance after it."""

    request_id: str
    customer_id: str
    points: int
    balance: int
    entry_id: str


@runtime_checkable
class LoyaltyPort(Protocol):
    """Points, tiers and history (the loyalty/CRM platform)."""

    async def accounts(self, customer_ids: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        """Accounts by customer id. Unknown ids are absent. Any number of ids."""
        ...

    async def accounts_by_card(self, card_numbers: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        """Accounts by loyalty card number. Unknown cards are absent."""
        ...

    async def history(self, customer_id: str, limit: int = 50) -> Sequence[LoyaltyEntry]:
        """The newest ``limit`` entries of one account, newest first. Unknown: empty."""
        ...

    async def earn(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        """Add points. Idempotent by ``request_id``."""
        ...

    async def redeem(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        """Take points. Idempotent by ``request_id``. Raises InsufficientPoints."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- order intake


@dataclass(frozen=True, slots=True)
class OrderLineSubmission:
    sku: str
    quantity: int
    location_id: str
    unit_price: Money
    line_total: Money


@dataclass(frozen=True, slots=True)
class OrderSubmission:
    """An accepted order handed to the OMS. ``order_id`` is the gateway's id and the
    idempotency key on the OMS side."""

    order_id: str
    channel: str
    customer_id: str | None
    fulfillment: str
    lines: tuple[OrderLineSubmission, ...]
    total: Money
    placed_at: datetime
    destination_postal_code: str | None = None


@dataclass(frozen=True, slots=True)
class OmsReceipt:
    order_id: str
    oms_order_number: str
    received_at: datetime


class OmsStatus(enum.Enum):
    """What the OMS says happened to an order."""

    RECEIVED = "RECEIVED"
    SHIPPED = "SHIPPED"  # every unit left its location
    CANCELLED = "CANCELLED"  # cancelled at the OMS
    OTHER = "OTHER"  # any status of the OMS's own that the gateway does not act on


@dataclass(frozen=True, slots=True)
class OrderStatusChange:
    """An entry of the OMS's status feed: order ``order_id`` (the gateway's id) took ``status``
    at ``at``. ``cursor`` is the position to pass as ``since`` to read the entries after it.

    ``stock_booked_at`` (SHIPPED only): when the ERP booked the goods issue of the shipment, on
    the clock of the ERP's stock levels (``StockLevel.updated_at``): a level of a shipped
    location updated at or after it counts the units as gone. None when the OMS cannot say;
    the gateway then takes ``at``."""

    order_id: str
    status: OmsStatus
    at: datetime
    cursor: str
    stock_booked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderStatusChanges:
    changes: tuple[OrderStatusChange, ...]
    cursor: str


@runtime_checkable
class OrderIntakePort(Protocol):
    """Order hand-off (the order management system)."""

    async def submit(self, order: OrderSubmission) -> OmsReceipt:
        """Hand one order over. Idempotent by ``order.order_id``: a repeat returns the first
        receipt."""
        ...

    async def receipts(self, order_ids: Sequence[str]) -> Mapping[str, OmsReceipt]:
        """Receipts of orders the OMS has. Unknown ids are absent."""
        ...

    async def status_changes(self, since: str | None, limit: int = 100) -> OrderStatusChanges:
        """Up to ``limit`` status changes after ``since`` (None: from the start of the feed),
        oldest first, for every order the OMS holds. The batch's ``cursor`` is the position of
        its last entry, or ``since`` itself when there is nothing new (the start when None).
        Cursors of a feed that numbers its entries are those numbers, in decimal. Raises
        BackendUnavailable; BackendRejected (``MALFORMED_CHANGE``) when an entry cannot be
        read, so that no entry is ever skipped."""
        ...

    async def aclose(self) -> None: ...
