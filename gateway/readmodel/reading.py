"""Assembling the read side for the composition root: Redis (when configured), the bus, the
read model, the response cache and the feeds' followers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.backends import Backends
from gateway.config import GatewayConfig, ReadModelConfig
from gateway.ledger import InventoryLedger
from gateway.live import LiveHub, LiveSockets
from gateway.orders.runtime import Orders
from gateway.orders.shipments import OrderStatusFeed
from gateway.readmodel.bus import ChangeBus
from gateway.readmodel.feeds import (
    FeedSource,
    Follower,
    FollowSettings,
    RulebookFeed,
    StockFeed,
    catalogue_feed,
    followers,
    price_feed,
)
from gateway.readmodel.levels import LocalLevel, RedisLink, SharedLevel
from gateway.readmodel.model import Lifetimes, ReadModel
from gateway.readmodel.responses import ResponseCache
from gateway.readmodel.stock import StockPositions


@dataclass(frozen=True, slots=True)
class SharedReads:
    link: RedisLink | None
    bus: ChangeBus
    reads: ReadModel
    responses: ResponseCache | None
    namespace: str


async def build(
    redis_url: str | None, config: ReadModelConfig, ports: Backends, stack: AsyncExitStack
) -> SharedReads:
    """The read side over ``ports``. Redis is not contacted here: a Redis that is down at
    start is the same as one that goes down later (served without, reconnected by itself)."""
    link = None
    if redis_url and config.enabled:
        link = RedisLink.from_url(redis_url, config.redis_timeout)
        stack.push_async_callback(link.aclose)
    bus = ChangeBus(link, config.namespace)
    lifetimes = Lifetimes(config.local_ttl, config.shared_ttl, config.degraded_ttl)
    reads = ReadModel(
        ports.catalogue,
        ports.prices,
        ports.promotions,
        bus,
        LocalLevel(config.local_entries),
        None if link is None else SharedLevel(link, config.namespace),
        lifetimes,
        holding=config.enabled,
    )
    responses = None
    if config.enabled and config.response_cache_megabytes:
        responses = ResponseCache(
            bus,
            max_bytes=config.response_cache_megabytes * 1024 * 1024,
            ttl=config.response_ttl,
            degraded_ttl=config.degraded_ttl,
        )
    return SharedReads(link, bus, reads, responses, config.namespace)


def followers_for(
    config: GatewayConfig,
    shared: SharedReads,
    database: AsyncEngine,
    ledger: InventoryLedger,
    ports: Backends,
    orders: Orders,
) -> list[Follower]:
    """A follower for each feed: the ERP's and the OMS's always (they keep the ledger's stock:
    on hand, and the reservations that shipments consume), the others when the read model is
    on."""
    settings = config.read_model
    lease = settings.lease_ttl
    sources: list[FeedSource] = [
        StockFeed(ledger, ports.inventory, then=orders.statuses.consume_booked),
        OrderStatusFeed(ports.orders, orders.statuses),
    ]
    intervals = {
        "erp": FollowSettings(config.orders.stock_sync_interval, lease),
        "oms": FollowSettings(config.orders.status_sync_interval, lease),
    }
    if settings.enabled:
        sources += [
            catalogue_feed(ports.catalogue),
            price_feed(ports.prices),
            RulebookFeed(ports.promotions, shared.reads),
        ]
        intervals |= {
            "pim": FollowSettings(settings.pim_interval, lease),
            "pricing": FollowSettings(settings.pricing_interval, lease),
            "promotions": FollowSettings(settings.promotions_interval, lease),
        }
    return followers(sources, shared.reads, database, shared.link, shared.namespace, intervals)


async def catch_up(followers: list[Follower], steps: int = 100) -> None:
    """Read each feed up to now before serving: a follower's first read, without a stored
    cursor, drops everything of its kind, and must not drop what requests have just read. A
    feed that fails is left to the follower's own retries."""
    for follower in followers:
        for _ in range(steps):
            if not await follower.step():
                break


class ReadSideMetrics(Collector):
    """The read side's counters, read when Prometheus scrapes (nothing on the request path)."""

    def __init__(
        self,
        shared: SharedReads,
        followers: list[Follower],
        live: LiveHub,
        sockets: LiveSockets,
        stock: StockPositions | None = None,
    ) -> None:
        self._shared = shared
        self._followers = followers
        self._live = live
        self._sockets = sockets
        self._stock = stock

    def collect(self) -> Iterator[Metric]:
        reads, bus, responses = self._shared.reads, self._shared.bus, self._shared.responses
        yield _counter("gateway_read_model_lookups", "Keys asked of the read model.", reads.lookups)
        yield _counter(
            "gateway_read_model_misses", "Keys this process's level lacked.", reads.misses
        )
        yield _counter("gateway_read_model_fetches", "Batches asked of a port.", reads.fetches)
        yield GaugeMetricFamily(
            "gateway_read_model_entries", "Entries in this process's level.", len(reads.local)
        )
        if responses is not None:
            yield _counter("gateway_response_cache_hits", "Answers served again.", responses.hits)
            yield _counter("gateway_response_cache_stores", "Answers kept.", responses.stores)
        if self._stock is not None:
            yield _counter(
                "gateway_stock_positions_hits",
                "SKUs whose held positions served.",
                self._stock.hits,
            )
            yield _counter(
                "gateway_stock_positions_misses",
                "SKUs read from the ledger for a read.",
                self._stock.misses,
            )
        yield _counter("gateway_change_bus_gaps", "Feeds seen to skip or reset.", bus.gaps)
        yield GaugeMetricFamily(
            "gateway_change_bus_connected",
            "1 while notices of every instance arrive.",
            1 if bus.connected else 0,
        )
        holding = GaugeMetricFamily(
            "gateway_feed_holding",
            "1 while this instance follows the feed for all.",
            labels=["feed"],
        )
        failures = CounterMetricFamily(
            "gateway_feed_failures", "Reads of a feed that failed.", labels=["feed"]
        )
        for follower in self._followers:
            holding.add_metric([follower.source.name], 1 if follower.holding else 0)
            failures.add_metric([follower.source.name], follower.failures)
        yield holding
        yield failures
        live = self._live
        yield GaugeMetricFamily(
            "gateway_subscriptions", "Live subscriptions served.", live.subscriptions
        )
        yield GaugeMetricFamily(
            "gateway_subscription_pending_events",
            "Events waiting for subscribers that lag (the latest per key).",
            live.pending,
        )
        yield GaugeMetricFamily(
            "gateway_subscription_watched_skus",
            "Per-SKU entries the live hub keeps for its subscriptions.",
            live.watched,
        )
        yield GaugeMetricFamily(
            "gateway_subscribed_connections",
            "WebSockets carrying at least one subscription.",
            len(self._sockets),
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
