"""Subscriptions over a real WebSocket (graphql-transport-ws): live stock after a sale, live
prices after a change in the pricing engine, bounds and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from socket import AF_INET, SO_RCVBUF, SOCK_STREAM, SOL_SOCKET
from socket import socket as tcp_socket
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.config import SubscriptionsConfig
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.api.test_orders import PLACE, STOCK
from tests.support import ServedGateway, serve_gateway

STOCK_CHANGED = """subscription($skus: [String!]!, $stores: [ID!]!) {
  stockChanged(skus: $skus, storeIds: $stores, initial: true) {
    sku store { code } available onHand reserved at } }"""
PRICE_CHANGED = """subscription($skus: [String!]!) {
  priceChanged(skus: $skus, initial: true) { sku price { current { amount } } previous {
    current { amount } } } }"""
WAIT = 10.0
BROWSER = {"Accept": "text/html"}


@pytest.fixture
async def socket(cold_gateway: ServedGateway) -> AsyncIterator[ClientConnection]:
    url = cold_gateway.url.replace("http://", "ws://") + "/graphql"
    async with connect(
        url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Api-Key": "demo-pos"}
    ) as websocket:
        await websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(websocket.recv(), WAIT))
        assert ack["type"] == "connection_ack"
        yield websocket


async def subscribe_to(websocket: ClientConnection, query: str, variables: dict[str, Any]) -> str:
    operation = uuid.uuid4().hex
    message = {
        "id": operation,
        "type": "subscribe",
        "payload": {"query": query, "variables": variables},
    }
    await websocket.send(json.dumps(message))
    return operation


async def next_message(websocket: ClientConnection, operation: str | None = None) -> dict[str, Any]:
    """The next message (of ``operation``, when given, skipping others')."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(websocket.recv(), WAIT))
        if operation is None or message.get("id") == operation:
            return message


def _store_and_sku(truth: DemoEstate, gateway: ServedGateway) -> tuple[str, str]:
    store = next(loc.code for loc in truth.locations if "CARRY_OUT" in loc.capabilities)
    for product in truth.products[20:]:
        for variant in product.variants:
            body = gateway.graphql(STOCK, {"sku": variant.sku, "store": store}).json()
            stock = [v for v in body["data"]["product"]["variants"] if v["sku"] == variant.sku]
            if sum(s["available"] for s in stock[0]["availability"]) >= 2:
                return store, variant.sku
    raise AssertionError("no SKU in stock")


async def test_a_till_sale_reaches_a_subscriber_with_the_numbers_a_query_shows(
    socket: ClientConnection, cold_gateway: ServedGateway, truth: DemoEstate
) -> None:
    # given a kiosk subscribed to two SKUs at a store, and their initial numbers
    store, sku = _store_and_sku(truth, cold_gateway)
    other = next(v.sku for v in truth.products[2].variants if v.sku != sku)
    await subscribe_to(socket, STOCK_CHANGED, {"skus": [sku, other], "stores": [store]})
    first = [(await next_message(socket))["payload"]["data"]["stockChanged"] for _ in range(2)]
    initial = next(change for change in first if change["sku"] == sku)

    # when a till at that store sells one
    order = {
        "idempotencyKey": uuid.uuid4().hex,
        "lines": [{"sku": sku, "quantity": 1}],
        "fulfillment": "CARRY_OUT",
        "storeId": store,
    }
    placed = cold_gateway.graphql(PLACE, {"input": order}, key="demo-pos").json()
    assert placed["data"]["placeOrder"]["userErrors"] == []
    update = (await next_message(socket))["payload"]["data"]["stockChanged"]

    # then the subscriber sees one fewer available and one more reserved, as a query does,
    # and nothing about the other SKU, which did not move
    shown = cold_gateway.graphql(STOCK, {"sku": sku, "store": store}).json()
    (variant,) = [v for v in shown["data"]["product"]["variants"] if v["sku"] == sku]
    assert (update["sku"], update["store"]["code"]) == (sku, store)
    assert update["available"] == initial["available"] - 1
    assert update["reserved"] == initial["reserved"] + 1
    assert update["available"] == variant["availability"][0]["available"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(socket.recv(), 1.0)


async def test_subscriptions_started_while_stock_moves_all_end_on_what_a_query_shows(
    socket: ClientConnection, cold_gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given a position the ERP books a unit to every 50 ms, for 2 s
    store, sku = _store_and_sku(truth, cold_gateway)
    async with httpx.AsyncClient() as client:
        booked = 0

        async def move() -> None:
            nonlocal booked
            for _ in range(40):
                await _book(client, estate, [(store, sku)], +1)
                booked += 1
                await asyncio.sleep(0.05)

        mover = asyncio.create_task(move())
        try:
            # when 20 subscriptions start meanwhile, each with initial values (their first
            # reads overlap the re-reads changes bring; tests/unit/test_live.py makes the
            # overtaking certain, which a socket cannot)
            for _ in range(20):
                await subscribe_to(socket, STOCK_CHANGED, {"skus": [sku], "stores": [store]})
                await asyncio.sleep(0.1)
            await mover
            last = await _last_per_subscription(socket)
            shown = cold_gateway.graphql(STOCK, {"sku": sku, "store": store}).json()
        finally:
            mover.cancel()
            await _book(client, estate, [(store, sku)], -booked)

    # then every one of them ends on the numbers a query shows
    (variant,) = [v for v in shown["data"]["product"]["variants"] if v["sku"] == sku]
    assert len(last) == 20
    assert set(last.values()) == {variant["availability"][0]["available"]}


async def _last_per_subscription(websocket: ClientConnection) -> dict[str, int]:
    """The last ``available`` each subscription was given, once nothing has come for 2 s."""
    last: dict[str, int] = {}
    with contextlib.suppress(TimeoutError):
        while True:
            message = json.loads(await asyncio.wait_for(websocket.recv(), 2.0))
            last[message["id"]] = message["payload"]["data"]["stockChanged"]["available"]
    return last


async def test_a_price_change_in_the_pricing_engine_reaches_a_subscriber(
    socket: ClientConnection, estate: RunningEstate, truth: DemoEstate
) -> None:
    variant = truth.products[11].variants[0]
    await subscribe_to(socket, PRICE_CHANGED, {"skus": [variant.sku]})
    initial = (await next_message(socket))["payload"]["data"]["priceChanged"]
    url = f"{estate.urls['pricing']}/_sim/prices"

    async with httpx.AsyncClient() as client:
        (await client.post(url, json={"sku": variant.sku, "price": "2.34"})).raise_for_status()
        try:
            update = (await next_message(socket))["payload"]["data"]["priceChanged"]
        finally:
            await client.post(url, json={"sku": variant.sku, "price": str(variant.base_price)})

    assert initial["price"]["current"]["amount"] == str(variant.base_price)
    assert initial["previous"] is None
    assert update["price"]["current"]["amount"] == "2.34"
    assert update["previous"]["current"]["amount"] == str(variant.base_price)


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"skus": [], "stores": ["0001"]}, "TOO_MANY_SKUS"),
        ({"skus": [f"{n}" for n in range(101)], "stores": ["0001"]}, "TOO_MANY_SKUS"),
        ({"skus": ["100000010"], "stores": ["nowhere"]}, "UNKNOWN_STORE"),
    ],
)
async def test_a_subscription_out_of_bounds_gets_a_typed_error_and_the_socket_stays(
    socket: ClientConnection, variables: dict[str, Any], code: str
) -> None:
    refused_id = await subscribe_to(socket, STOCK_CHANGED, variables)
    refused = await next_message(socket, refused_id)
    other = await next_message(
        socket, await subscribe_to(socket, PRICE_CHANGED, {"skus": ["100000010"]})
    )

    assert refused["type"] == "error" or refused["payload"].get("errors")
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert [error["extensions"]["code"] for error in errors] == [code]
    assert other["type"] == "next"
    assert other["payload"]["data"]["priceChanged"]["sku"] == "100000010"


async def test_subscriptions_past_the_bound_of_one_connection_are_refused_the_others_go_on(
    socket: ClientConnection,
) -> None:
    limit = 20  # [subscriptions] max_per_connection, by default
    accepted = []
    for _ in range(limit):
        operation = await subscribe_to(socket, PRICE_CHANGED, {"skus": ["100000010"]})
        accepted.append((await next_message(socket, operation))["type"])

    refused_id = await subscribe_to(socket, PRICE_CHANGED, {"skus": ["100000010"]})
    refused = await next_message(socket, refused_id)

    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert accepted == ["next"] * limit
    assert [error["extensions"]["code"] for error in errors] == ["TOO_MANY_SUBSCRIPTIONS"]


async def test_a_backend_failing_inside_a_subscription_is_reported_without_internals(
    socket: ClientConnection, estate: RunningEstate, truth: DemoEstate
) -> None:
    sku = truth.products[13].variants[0].sku  # not yet read by this gateway
    async with httpx.AsyncClient() as client:
        knobs = f"{estate.urls['pricing']}/_sim/knobs"
        (await client.post(knobs, json={"outage": True})).raise_for_status()
        try:
            refused = await next_message(
                socket, await subscribe_to(socket, PRICE_CHANGED, {"skus": [sku]})
            )
        finally:
            await client.post(knobs, json={"outage": False})

    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
        ("pricing is unavailable", "BACKEND_UNAVAILABLE")
    ]
    assert "PricingService" not in json.dumps(refused)


async def _opened_without_a_key(gateway: ServedGateway, payload: dict[str, str]) -> Any:
    """A socket opened as a browser opens it (no headers), initialised with ``payload``: the
    first message, or the close code."""
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"]) as websocket:  # type: ignore[list-item]
        await websocket.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            ack = json.loads(await asyncio.wait_for(websocket.recv(), WAIT))
        except ConnectionClosed:
            return websocket.close_code
        operation = await subscribe_to(websocket, PRICE_CHANGED, {"skus": ["100000010"]})
        return ack["type"], (await next_message(websocket, operation))["type"]


async def test_a_browser_names_its_channel_key_in_connection_init(
    cold_gateway: ServedGateway,
) -> None:
    answer = await _opened_without_a_key(cold_gateway, {"X-Api-Key": "demo-kiosk"})

    assert answer == ("connection_ack", "next")


async def test_graphiql_subscribes_at_its_own_url_with_the_key_from_its_headers_pane(
    cold_gateway: ServedGateway,
) -> None:
    # given the GraphiQL page a browser loads from /graphql
    async with httpx.AsyncClient() as client:
        page = (await client.get(f"{cold_gateway.url}/graphql", headers=BROWSER)).text

    # when a partner runs a subscription in it: GraphiQL 3's fetcher opens a graphql-ws
    # (graphql-transport-ws) socket at the page's URL turned ws:// or wss://, without headers,
    # and sends the headers pane's JSON as connection_init's payload
    answer = await _opened_without_a_key(cold_gateway, {"X-Api-Key": "demo-partner"})

    # then the page is set up that way, and the subscription runs
    assert "unpkg.com/graphiql@3." in page
    assert 'const fetchURL = window.location.href.split("?")[0];' in page
    assert 'parsedURL.protocol === "http:" ? "ws:" : "wss:"' in page
    assert "subscriptionUrl," in page
    assert "isHeadersEditorEnabled: true" in page
    assert answer == ("connection_ack", "next")


@pytest.mark.parametrize(
    "payload",
    [{}, {"X-Api-Key": "not-a-key"}, {"X-Api-Key": "demo-kiosk", "Authorization": "Bearer x"}],
)
async def test_a_missing_or_unknown_key_in_connection_init_closes_with_4403(
    cold_gateway: ServedGateway, payload: dict[str, str]
) -> None:
    assert await _opened_without_a_key(cold_gateway, payload) == 4403


LAG = 1.0  # [subscriptions] max_lag of the impatient gateway


@pytest.fixture
def impatient_gateway(
    estate: RunningEstate, pg_databases: Callable[[], str]
) -> Iterator[ServedGateway]:
    """A gateway of its own that lets a subscriber fall only ``LAG`` seconds behind, with
    small send buffers (a busy server's are full)."""
    lagging = {"subscriptions": SubscriptionsConfig(max_lag=LAG)}
    served = serve_gateway(estate, pg_databases(), config=lagging, send_buffer=16384)
    yield served
    served.stop()


@asynccontextmanager
async def _slow_reader(gateway: ServedGateway) -> AsyncIterator[ClientConnection]:
    """A kiosk's socket with a receive buffer of a few KiB, whose client takes in a few
    frames and then waits until it is read: the server's sends block soon after it stops."""
    host, port = gateway.url.removeprefix("http://").split(":")
    raw = tcp_socket(AF_INET, SOCK_STREAM)
    raw.setsockopt(SOL_SOCKET, SO_RCVBUF, 4096)  # before connecting: it sets the window
    raw.connect((host, int(port)))
    raw.setblocking(False)
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with connect(
        url,
        sock=raw,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"X-Api-Key": "demo-kiosk"},
        max_queue=4,
    ) as websocket:
        await websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert (
            json.loads(await asyncio.wait_for(websocket.recv(), WAIT))["type"] == "connection_ack"
        )
        yield websocket


def _shelves(truth: DemoEstate) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """100 SKUs at the 10 stores, and the positions among them the ERP has rows for."""
    stores = [loc.code for loc in truth.locations if loc.kind == "STORE"][:10]
    rows = [row for row in truth.stock_rows() if row.location_code in stores]
    skus = sorted({row.sku for row in rows})[:100]
    positions = sorted((row.location_code, row.sku) for row in rows if row.sku in skus)
    return skus, stores, positions


async def _book(
    client: httpx.AsyncClient, estate: RunningEstate, positions: list[tuple[str, str]], delta: int
) -> None:
    movements = [{"store": store, "sku": sku, "delta": str(delta)} for store, sku in positions]
    (await client.post(f"{estate.urls['erp']}/movements", json=movements)).raise_for_status()


async def _close_code(websocket: ClientConnection) -> tuple[int | None, str | None]:
    """Read what is left until the server's close: its code and reason."""
    while True:
        try:
            await asyncio.wait_for(websocket.recv(), WAIT)
        except ConnectionClosed as closed:
            received = closed.rcvd
            return (None, None) if received is None else (received.code, received.reason)


async def test_a_kiosk_that_stops_reading_is_coalesced_then_closed_with_4008_and_freed(
    impatient_gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given a kiosk subscribed twice to every position of 100 SKUs at 10 stores, which
    # then stops reading
    gateway, (skus, stores, positions) = impatient_gateway, _shelves(truth)
    backlog: list[float] = []  # pending events after each round of movements
    async with _slow_reader(gateway) as websocket, httpx.AsyncClient() as client:
        for _ in range(2):
            await subscribe_to(websocket, STOCK_CHANGED, {"skus": skus, "stores": stores})

        # when the ERP keeps moving all those positions
        rounds = 0
        try:
            while rounds < 60 and (rounds == 0 or gateway.metric("gateway_subscriptions") > 0):
                await _book(client, estate, positions, +1)
                rounds += 1
                await asyncio.sleep(0.25)
                backlog.append(gateway.metric("gateway_subscription_pending_events"))
        finally:
            await _book(client, estate, positions, -rounds)
        print("rounds", rounds, "backlog", backlog)
        close = await _close_code(websocket)

    # then the server kept only the latest value per position moved (however many rounds
    # came), let the kiosk go soon after it fell more than max_lag behind, closed its socket
    # with 4008 once it read again, and holds nothing for it any more
    behind_from = next(number for number, pending in enumerate(backlog) if pending > 0)
    assert max(backlog) <= 2 * len(positions)
    assert len(backlog) - behind_from <= LAG / 0.25 + 4
    assert close == (4008, "subscriber too slow")
    assert [
        gateway.metric(name)
        for name in (
            "gateway_subscriptions",
            "gateway_subscription_pending_events",
            "gateway_subscription_watched_skus",
            "gateway_subscribed_connections",
        )
    ] == [0, 0, 0, 0]
