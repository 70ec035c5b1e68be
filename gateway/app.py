"""The composition root: settings -> adapters -> schema -> ASGI app. Nothing runs at import.

Run it with ``commerce-gateway serve`` or ``uvicorn --factory gateway.app:main``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from adapters.erp_sql import SqlErpInventory
from adapters.loyalty_rest import RestLoyalty
from adapters.oms_rest import RestOmsOrderIntake
from adapters.pim_rest import RestPimCatalogue
from adapters.ports import BackendError, Money
from adapters.pricing_soap import SoapPricing
from adapters.promotions_csv import CsvPromotions
from gateway.admission import AdmissionLimit
from gateway.backends import Backends
from gateway.cart import CartPricing, PromotionRules
from gateway.config import (
    BackendsConfig,
    GatewayConfig,
    OrdersConfig,
    ReadModelConfig,
    Settings,
)
from gateway.context import Context, Identity, Runtime
from gateway.db import create_engine, upgrade
from gateway.health import Draining, Readiness, backend_urls, health_routes
from gateway.ledger import InventoryLedger
from gateway.limits import BodyLimit
from gateway.live import LiveHub, LiveSockets
from gateway.loaders import build_loaders
from gateway.locations import LocationDirectory
from gateway.metrics import Metrics, count_round_trips, instrument, metrics_route
from gateway.offers import CouponUsage, PersonalOffers
from gateway.orders.changes import OrderChanges
from gateway.orders.delivery import handlers
from gateway.orders.outbox import OutboxWorker, purge_forever
from gateway.orders.placement import OrderService
from gateway.orders.prices import SharedPriceReads
from gateway.orders.runtime import Orders
from gateway.orders.shipments import OrderStatusUpdates
from gateway.orders.store import IdempotencyKeys, OrderReader
from gateway.persisted import PersistedOperations
from gateway.promotions import LoyaltyProgram
from gateway.ratelimit import Rate, RateLimit, SharedBuckets
from gateway.readmodel import reading
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.feeds import Follower
from gateway.readmodel.freshness import FeedFreshness
from gateway.readmodel.responses import Provenance, ResponseCacheMiddleware
from gateway.readmodel.stock import StockPositions
from gateway.resilience import CallPolicy, Guard, GuardMetrics, RequestDeadline, guard
from gateway.security import Channel, ChannelAuthMiddleware, ChannelKeys, CustomerTokens
from gateway.sourcing import Policy
from gateway.tiers import KnownTiers
from resolvers.http import GraphQLOverHTTP
from resolvers.schema import build_schema
from resolvers.websocket import GatedTransportWS

log = logging.getLogger("gateway")
Port = TypeVar("Port")
DEFAULT_CALL_TIMEOUT = 5.0  # seconds, for a backend given without its config (tests' fakes)
NO_CHANNEL = Channel(name="none", scopes=frozenset())


def main() -> Starlette:
    """The factory for ``uvicorn --factory gateway.app:main``: configured from the environment."""
    return create_app(Settings.from_env())


def create_app(
    settings: Settings,
    config: GatewayConfig | None = None,
    backends: Backends | None = None,
) -> Starlette:
    """The gateway. ``backends`` replaces the configured adapters (tests pass fakes here)."""
    config = config or settings.config()
    metrics = Metrics()
    sockets = LiveSockets()
    if backends is None and config.backends is None:
        raise ValueError("the gateway config names no [backends]")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            # Every process brings the schema up to date before it serves; they queue safely.
            await upgrade(settings.database_url)
            database = create_engine(
                settings.database_url, connections=config.limits.database_connections
            )
            stack.push_async_callback(database.dispose)
            count_round_trips(database, metrics)
            raw = backends or await _build(config.backends, stack)
            ports = _guarded(_instrumented(raw, metrics), config, metrics)
            directory = LocationDirectory(ports.inventory)
            await _warm_up(directory)
            point = Money(config.loyalty.point_value, config.loyalty.currency)
            urls = backend_urls(config.backends) if config.backends else {}
            shared = await reading.build(settings.redis_url, config.read_model, ports, stack)
            offers = PersonalOffers(database, config.loyalty.currency)
            rules = PromotionRules(shared.reads, offers)
            program = LoyaltyProgram(
                config.loyalty.points_per_unit, point, config.loyalty.tier_multipliers
            )
            cart = CartPricing(rules, program, clock=_now, tiers=KnownTiers(database, clock=_now))
            ledger = InventoryLedger(database, clock=_now)
            await _load_stock(ledger, ports)
            orders = _orders(config.orders, database, ledger, cart, directory, ports, shared)
            fresh_prices = SharedPriceReads(
                ports.prices.prices, calls_per_zone=config.orders.price_calls_per_zone
            )
            stack.push_async_callback(fresh_prices.aclose)
            stock = _stock_positions(config.read_model, ledger, shared.bus)
            live = LiveHub(shared.bus, ledger, shared.reads.prices, config.subscriptions.max_lag)
            followers = reading.followers_for(config, shared, database, ledger, ports, orders)
            await reading.catch_up(followers)
            freshness = FeedFreshness(followers, shared.link, shared.namespace)
            if shared.responses is not None:
                stale_after = config.resilience.feed_stale_after
                shared.responses.feed_is_late = lambda feed: freshness.is_late(feed, stale_after)
            metrics.registry.register(
                reading.ReadSideMetrics(shared, followers, live, sockets, stock)
            )
            await _background(
                stack, config, database, ports, shared, live, followers, freshness.run
            )
            runtime = Runtime(
                ports,
                directory,
                metrics,
                point,
                cart,
                rules,
                database,
                offers,
                orders,
                ledger,
                shared.reads,
                shared.bus,
                shared.responses,
                live,
                config.subscriptions,
                sockets,
                freshness,
                config.resilience.feed_stale_after,
                fresh_prices,
                stock,
            )
            yield {
                "runtime": runtime,
                # One Redis client per process: the rate limits share the read model's.
                "rate_limits": SharedBuckets(None if shared.link is None else shared.link.client),
                # Probes are not traffic: they stay out of the backend request metrics.
                "readiness": Readiness(raw, urls, redis=shared.link),
            }

    security = config.security
    graphql = GatewayGraphQL(
        build_schema(),
        persisted=PersistedOperations.from_folder(security.persisted_operations),
        graphql_ide="graphiql",
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        connection_init_wait_timeout=timedelta(seconds=security.connection_init_timeout),
        allowed_origins=security.websocket_origins,
    )
    draining = Draining()  # begun by gateway.serve on SIGTERM
    key = security.operator_key
    operator_key = None if key is None else key.get_secret_value()
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *health_routes(operator_key=operator_key, draining=draining),
        metrics_route(metrics, operator_key=operator_key),
    ]
    keys, tokens = ChannelKeys(config.channels, security), CustomerTokens(config.auth)
    middleware = [
        Middleware(RequestDeadline, seconds=config.resilience.request_deadline),
        Middleware(BodyLimit, max_bytes=security.max_body_bytes),
        Middleware(ChannelAuthMiddleware, keys=keys, tokens=tokens),
        Middleware(
            RateLimit,
            customer_rate=Rate(security.customer_requests_per_second, security.customer_burst),
            prefix=security.rate_limit_prefix,
        ),
        # Hits are answered before admission, after the rate limits: they cost microseconds
        # and must not queue behind slow misses, but count against the channel like any answer.
        Middleware(ResponseCacheMiddleware),
        Middleware(
            AdmissionLimit,
            max_in_flight=config.limits.max_in_flight,
            max_wait=config.limits.max_wait,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.live_sockets = sockets  # closed with 1001 first on shutdown (gateway.serve)
    app.state.draining = draining
    return app


def _now() -> datetime:
    return datetime.now(UTC)


def _stock_positions(
    config: ReadModelConfig, ledger: InventoryLedger, bus: ChangeBus
) -> StockPositions | None:
    """Positions held for the reads that show stock, unless the read model is off (every read
    then goes to the ledger, as it did before the read model)."""
    if not config.enabled or not config.stock_entries:
        return None
    return StockPositions(ledger, bus, size=config.stock_entries, ttl=config.stock_ttl)


def _orders(
    config: OrdersConfig,
    database: AsyncEngine,
    ledger: InventoryLedger,
    cart: CartPricing,
    directory: LocationDirectory,
    ports: Backends,
    shared: reading.SharedReads,
) -> Orders:
    policy = Policy(
        max_shipments=config.max_shipments,
        radius_km=config.delivery_radius_km,
        max_delivery_stores=config.max_delivery_stores,
        alternatives=config.pickup_alternatives,
    )
    reader = OrderReader(database)
    service = OrderService(
        engine=database,
        ledger=ledger,
        cart=cart,
        locations=directory,
        loyalty=ports.loyalty,
        promotions=shared.reads,
        coupons=CouponUsage(database, clock=_now),
        keys=IdempotencyKeys(database, timedelta(seconds=config.placement_lease)),
        reader=reader,
        policy=policy,
        clock=_now,
    )
    changes = OrderChanges(database, ledger, clock=_now)
    statuses = OrderStatusUpdates(database, ledger, changes, clock=_now)
    return Orders(service, changes, reader, statuses)


async def _load_stock(ledger: InventoryLedger, ports: Backends) -> None:
    """Catch the ledger up with the ERP before serving (everything, the first time)."""
    try:
        applied = await ledger.load_from(ports.inventory)
    except BackendError as exc:
        log.warning("the ERP's stock could not be loaded at start: %s", exc)
    else:
        log.info("inventory ledger: %d stock rows from the ERP", applied)


async def _background(
    stack: AsyncExitStack,
    config: GatewayConfig,
    database: AsyncEngine,
    ports: Backends,
    shared: reading.SharedReads,
    live: LiveHub,
    followers: list[Follower],
    *others: Callable[[asyncio.Event], Coroutine[object, object, None]],
) -> None:
    """The change bus, the feeds' followers (the ERP's stock sync among them), the live
    updates, the outbox worker and ``others``, stopped (and awaited) when the app stops."""
    stop = asyncio.Event()
    jobs = [shared.bus.run(stop), live.run(stop), *(job(stop) for job in others)]
    jobs += [follower.run(stop) for follower in followers]
    if config.orders.outbox:
        worker = OutboxWorker(
            database,
            handlers(ports.orders, ports.loyalty, _now),
            batch=config.orders.outbox_batch,
        )
        jobs.append(worker.run(stop))
    retention, every = config.orders.outbox_retention, config.orders.outbox_purge_interval
    purge = purge_forever(database, timedelta(seconds=retention), timedelta(seconds=every), stop)
    jobs.append(purge)
    tasks = [asyncio.create_task(job) for job in jobs]

    async def finish() -> None:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    stack.push_async_callback(finish)


class GatewayGraphQL(GraphQLOverHTTP):
    graphql_transport_ws_handler_class = GatedTransportWS

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        runtime: Runtime = request.state.runtime
        provenance = getattr(request.state, "provenance", None) or Provenance()
        return Context(
            request=request,
            response=response if isinstance(response, Response) else None,
            # Only GraphiQL's page is served without a key, and it runs no operation; a
            # WebSocket without one names its channel in connection_init.
            identity=Identity(
                channel=getattr(request.state, "channel", None) or NO_CHANNEL,
                customer_id=getattr(request.state, "customer_id", None),
                pending=getattr(request.state, "channel", None) is None
                and isinstance(request, WebSocket),
            ),
            runtime=runtime,
            loaders=build_loaders(
                runtime.backends,
                runtime.ledger,
                runtime.reads,
                provenance,
                runtime.fresh_prices,
                runtime.stock,
            ),
            provenance=provenance,
        )


async def _build(config: BackendsConfig | None, stack: AsyncExitStack) -> Backends:
    assert config is not None
    catalogue = RestPimCatalogue(
        config.pim.url,
        locale=config.pim.locale,
        fallback_locale=config.pim.fallback_locale,
        timeout=config.pim.timeout,
        max_connections=config.pim.max_connections,
    )
    backends = Backends(
        catalogue=catalogue,
        prices=SoapPricing(
            config.pricing.url,
            timeout=config.pricing.timeout,
            max_connections=config.pricing.max_connections,
            max_concurrency=config.pricing.max_concurrency,
        ),
        promotions=CsvPromotions(
            config.promotions.folder, check_interval=config.promotions.check_interval
        ),
        inventory=SqlErpInventory.from_url(
            config.erp.url, pool_size=config.erp.pool_size, timeout=config.erp.timeout
        ),
        loyalty=RestLoyalty(
            config.loyalty.url,
            config.loyalty.api_key.get_secret_value(),
            timeout=config.loyalty.timeout,
            max_retries=config.loyalty.max_retries,
            max_connections=config.loyalty.max_connections,
        ),
        orders=RestOmsOrderIntake(
            config.oms.url, timeout=config.oms.timeout, max_connections=config.oms.max_connections
        ),
    )
    stack.push_async_callback(backends.aclose)
    try:
        await catalogue.warm_up()
    except BackendError as exc:
        log.warning("the PIM's assortments could not be loaded at start: %s", exc)
    return backends


def _guarded(backends: Backends, config: GatewayConfig, metrics: Metrics) -> Backends:
    """``backends`` with each call under its backend's deadline, retries and breaker (the
    promotions folder is read from disk: nothing to guard)."""
    settings = config.resilience
    timeouts: Mapping[str, float] = {}
    if config.backends is not None:
        timeouts = {
            "pim": config.backends.pim.timeout,
            "pricing": config.backends.pricing.timeout,
            "erp": config.backends.erp.timeout,
            "loyalty": config.backends.loyalty.timeout,
            "oms": config.backends.oms.timeout,
        }
    counters = GuardMetrics(metrics.registry)

    # Every [resilience] setting but these two is a field of the policy of each backend.
    shared = settings.model_dump(exclude={"request_deadline", "feed_stale_after"})

    def policy(backend: str) -> CallPolicy:
        return CallPolicy(timeout=timeouts.get(backend, DEFAULT_CALL_TIMEOUT), **shared)

    def guarded(port: Port, backend: str) -> Port:
        return guard(port, Guard(backend, policy(backend), counters))

    return replace(
        backends,
        catalogue=guarded(backends.catalogue, "pim"),
        prices=guarded(backends.prices, "pricing"),
        inventory=guarded(backends.inventory, "erp"),
        loyalty=guarded(backends.loyalty, "loyalty"),
        orders=guarded(backends.orders, "oms"),
    )


def _instrumented(backends: Backends, metrics: Metrics) -> Backends:
    names: Mapping[str, str] = {
        "catalogue": "pim",
        "prices": "pricing",
        "promotions": "promotions",
        "inventory": "erp",
        "loyalty": "loyalty",
        "orders": "oms",
    }
    ports: dict[str, Any] = {
        field: instrument(getattr(backends, field), backend, metrics)
        for field, backend in names.items()
    }
    return Backends(**ports)


async def _warm_up(directory: LocationDirectory) -> None:
    try:
        await directory.all()
    except BackendError as exc:
        log.warning("the ERP's locations could not be loaded at start: %s", exc)
