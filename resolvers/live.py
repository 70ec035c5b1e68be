"""Subscriptions: live stock and prices for kiosks and tills, over graphql-transport-ws."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from datetime import datetime

import strawberry
from starlette.websockets import WebSocket

from gateway.context import Info
from gateway.live import PriceEvent, StockEvent, TooSlow
from resolvers.catalog import PriceType
from resolvers.common import check_known_stores, store_code, user_error
from resolvers.stores import StoreType


@strawberry.type(name="StockChange", description="A position's new numbers, as a query shows them.")
class StockChangeType:
    sku: str
    store: StoreType
    available: int = strawberry.field(description="Available to promise: on hand - reserved.")
    on_hand: int
    reserved: int
    at: datetime = strawberry.field(description="When the gateway read these numbers.")


@strawberry.type(name="PriceChange", description="A price that changed, with the one before.")
class PriceChangeType:
    sku: str
    price: PriceType
    previous: PriceType | None = strawberry.field(
        description="The price this subscription showed before; null in an initial message."
    )
    at: datetime


def _check_size(what: str, values: list[str], limit: int) -> None:
    if not values or len(values) > limit:
        raise user_error(f"give 1 to {limit} {what}", code=f"TOO_MANY_{what.upper()}")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Stock of `skus` at `storeIds` whenever it changes (a sale or a pickup on "
        "any channel, a cancel, a return, an ERP movement); with `initial`, the current numbers "
        "first."
    )
    async def stock_changed(
        self, info: Info, skus: list[str], store_ids: list[strawberry.ID], initial: bool = False
    ) -> AsyncGenerator[StockChangeType, None]:
        limits = info.context.runtime.live_limits
        _check_size("skus", skus, limits.max_skus)
        _check_size("stores", [str(s) for s in store_ids], limits.max_stores)
        locations = await info.context.runtime.locations.by_id()
        codes = [store_code(store_id) for store_id in store_ids]
        check_known_stores(codes, locations)
        updates = info.context.runtime.live.stock(skus, codes, initial, _admit(info))
        _carry(info, +1)
        try:
            async for batch in updates:
                for event in batch:
                    yield _stock(event, StoreType.from_domain(locations[event.location_id]))
        except TooSlow as exc:
            raise user_error(f"this subscriber is {exc}", code="SUBSCRIBER_TOO_SLOW") from exc
        finally:
            _carry(info, -1)
            await updates.aclose()

    @strawberry.subscription(
        description="Prices of `skus` (in the zone of `storeId` if given) whenever the price "
        "that channel would see changes; with `initial`, the current prices first."
    )
    async def price_changed(
        self,
        info: Info,
        skus: list[str],
        store_id: strawberry.ID | None = None,
        initial: bool = False,
    ) -> AsyncGenerator[PriceChangeType, None]:
        _check_size("skus", skus, info.context.runtime.live_limits.max_skus)
        store = None if store_id is None else store_code(store_id)
        if store is not None:
            check_known_stores([store], await info.context.runtime.locations.by_id())
        updates = info.context.runtime.live.prices(skus, store, initial, _admit(info))
        _carry(info, +1)
        try:
            async for batch in updates:
                for event in batch:
                    yield _price(event)
        except TooSlow as exc:
            raise user_error(f"this subscriber is {exc}", code="SUBSCRIBER_TOO_SLOW") from exc
        finally:
            _carry(info, -1)
            await updates.aclose()


TOO_SLOW_CLOSE = 4008  # graphql-transport-ws leaves 4xxx to the application
_closing: set[asyncio.Task[None]] = set()  # closes under way (the loop keeps weak references)


def _carry(info: Info, subscriptions: int) -> None:
    """Count a subscription more (+1) or less (-1) on the WebSocket that carries it."""
    socket = info.context.request
    if isinstance(socket, WebSocket):
        if subscriptions > 0:
            info.context.runtime.sockets.add(socket, info.context.channel.name)
        else:
            info.context.runtime.sockets.discard(socket)


def _admit(info: Info) -> Callable[[], None]:
    """Check this connection's and this channel's bounds; return what closes the socket when
    the subscription's consumer falls too far behind."""
    socket, runtime = info.context.request, info.context.runtime
    limits, sockets = runtime.live_limits, runtime.sockets
    if not isinstance(socket, WebSocket):
        raise user_error("subscriptions are served over WebSocket only", code="BAD_REQUEST")
    if sockets.subscriptions(socket) >= limits.max_per_connection:
        message = f"at most {limits.max_per_connection} subscriptions per connection"
        raise user_error(message, code="TOO_MANY_SUBSCRIPTIONS")
    channel = info.context.channel.name
    if not sockets.subscriptions(socket) and sockets.connections(channel) >= (
        limits.max_connections_per_key
    ):
        message = f"at most {limits.max_connections_per_key} subscribed connections per key"
        raise user_error(message, code="TOO_MANY_CONNECTIONS")

    def too_slow() -> None:
        closing = asyncio.get_running_loop().create_task(
            socket.close(TOO_SLOW_CLOSE, "subscriber too slow")
        )
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)

    return too_slow


def _stock(event: StockEvent, store: StoreType) -> StockChangeType:
    return StockChangeType(
        sku=event.sku,
        store=store,
        available=event.available,
        on_hand=event.on_hand,
        reserved=event.reserved,
        at=event.at,
    )


def _price(event: PriceEvent) -> PriceChangeType:
    previous = None if event.previous is None else PriceType.from_domain(event.previous)
    return PriceChangeType(
        sku=event.sku, price=PriceType.from_domain(event.price), previous=previous, at=event.at
    )
