"""What every GraphQL resolver gets: one typed context per request."""

from __future__ import annotations

from dataclasses import dataclass, field

import strawberry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from adapters.ports import Money
from gateway.backends import Backends
from gateway.cart import CartPricing, PromotionRules
from gateway.config import SubscriptionsConfig
from gateway.degraded import Degradations
from gateway.ledger import InventoryLedger
from gateway.live import LiveHub, LiveSockets
from gateway.loaders import Loaders, PriceLookup
from gateway.locations import LocationDirectory
from gateway.metrics import Metrics
from gateway.offers import PersonalOffers
from gateway.orders.runtime import Orders
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.freshness import FeedFreshness
from gateway.readmodel.model import ReadModel
from gateway.readmodel.responses import Provenance, ResponseCache
from gateway.readmodel.stock import StockPositions
from gateway.security import Channel


@dataclass(frozen=True, slots=True)
class Runtime:
    """What lives as long as the app: built once in the lifespan, shared by all requests."""

    backends: Backends
    locations: LocationDirectory
    metrics: Metrics
    point_value: Money
    cart: CartPricing
    rules: PromotionRules
    database: AsyncEngine
    offers: PersonalOffers
    orders: Orders
    ledger: InventoryLedger
    reads: ReadModel
    bus: ChangeBus
    responses: ResponseCache | None
    live: LiveHub
    live_limits: SubscriptionsConfig
    sockets: LiveSockets
    freshness: FeedFreshness
    feed_stale_after: float  # seconds: what a feed not read for this long feeds is stale
    fresh_prices: PriceLookup  # orders' prices, read from the engine (shared calls)
    stock: StockPositions | None = None  # positions held for reads; None: read each time


@dataclass(slots=True)
class Identity:
    """Who is asking. On a WebSocket opened without a key it is ``pending`` until the
    ``connection_init`` message names the channel (and customer) in its payload."""

    channel: Channel
    customer_id: str | None
    pending: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    request: Request | WebSocket
    response: Response | None
    identity: Identity
    runtime: Runtime
    loaders: Loaders
    provenance: Provenance
    degraded: Degradations = field(default_factory=Degradations)

    @property
    def channel(self) -> Channel:
        return self.identity.channel

    @property
    def customer_id(self) -> str | None:
        return self.identity.customer_id


Info = strawberry.Info[Context, None]
