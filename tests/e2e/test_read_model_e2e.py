"""The shared read model end to end: two gateway processes over one PostgreSQL, one Redis of
this module's own and the tiny estate's simulators. A change in any legacy system is seen on
both; a cold instance reads what the warm one fetched; the feeds survive the death of the
instance that follows them and a Redis restart, with no request failing.

Every wait is bounded (``WAIT_SECONDS``); the assertion after it reports what was seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from threading import Event, Thread
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from legacy.promotions import PROMOTIONS_FILE, promotion_row, publish
from tests.api.test_orders import PLACE
from tests.api.test_subscriptions import STOCK_CHANGED, next_message, subscribe_to
from tests.e2e.gateways import (
    GatewayFleet,
    RedisServer,
    book_stock,
    database_and_estate,
    gateway_config,
    private_redis,
    running_fleet,
    write_toml,
)
from tests.support import (
    LISTING,
    MARIENPLATZ,
    OPERATOR,
    missing_service,
    reset_estate,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_SECONDS = 10.0
HEADERS = {"X-Api-Key": "demo-web"}
PRICE = "query($sku: String!) { product(sku: $sku) { name variants { sku price { current { amount } asOf } totalAvailable promotions { id title } } } }"  # noqa: E501


@dataclass(frozen=True, slots=True)
class Deployment:
    truth: DemoEstate
    estate: RunningEstate
    fleet: GatewayFleet
    redis: RedisServer
    root: Path


@pytest.fixture(scope="module")
def deployment(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("read-model-e2e")
    with contextlib.ExitStack() as stack:
        database, estate = database_and_estate(stack, truth, root, "cg_rm")
        try:
            redis = stack.enter_context(private_redis(root / "redis"))
        except FileNotFoundError:
            missing_service("redis-server", "apt-get install redis-server")
        config = gateway_config(estate, stock_sync_interval=0.25, read_model={"lease_ttl": 2.0})
        path = write_toml(config, root / "gateway.toml")
        environment = {"REDIS_URL": redis.url}
        # One process first, so that it takes every feed's lease: the test that kills the
        # holder knows which one it is.
        fleet = stack.enter_context(
            running_fleet(1, path, database.url, root / "logs", environment)
        )
        fleet.start(1)
        yield Deployment(truth, estate, fleet, redis, root)


@pytest.fixture(autouse=True)
def _fresh(deployment: Deployment) -> Iterator[None]:
    reset_estate(deployment.estate)
    yield
    reset_estate(deployment.estate)


def _query(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, headers=HEADERS, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


def _eventually(urls: list[str], read: Callable[[str], object], wanted: object) -> list[object]:
    """What ``read(url)`` gives on each of ``urls`` once it gives ``wanted`` on all (or when
    the wait runs out)."""
    deadline = time.monotonic() + WAIT_SECONDS
    seen = [read(url) for url in urls]
    while any(value != wanted for value in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = [read(url) for url in urls]
    return seen


def _variant(body: dict[str, Any], sku: str) -> dict[str, Any]:
    variants = body["data"]["product"]["variants"]
    found: dict[str, Any] = next(v for v in variants if v["sku"] == sku)
    return found


def _price(sku: str) -> Callable[[str], object]:
    return lambda url: _variant(_query(url, PRICE, {"sku": sku}), sku)["price"]["current"]["amount"]


def _warm(deployment: Deployment, sku: str) -> None:
    for url in deployment.fleet.urls:
        _query(url, PRICE, {"sku": sku})


def _stats(estate: RunningEstate, system: str) -> dict[str, int]:
    calls: dict[str, int] = httpx.get(f"{estate.urls[system]}/_sim/stats").json()["calls"]
    return {name: n for name, n in calls.items() if name not in ("getChanges", "GetPriceChanges")}


def _set_price(deployment: Deployment, sku: str, price: str) -> None:
    """Change ``sku``'s base price in the pricing engine, as a price manager would."""
    url = f"{deployment.estate.urls['pricing']}/_sim/prices"
    httpx.post(url, json={"sku": sku, "price": price}).raise_for_status()


def _sku(deployment: Deployment, index: int) -> str:
    return deployment.truth.products[index].variants[0].sku


def test_a_price_change_is_seen_on_both_instances(deployment: Deployment) -> None:
    sku = _sku(deployment, 3)
    _warm(deployment, sku)

    _set_price(deployment, sku, "7.77")

    assert _eventually(deployment.fleet.urls, _price(sku), "7.77") == ["7.77", "7.77"]


def test_a_stock_movement_is_seen_on_both_instances(deployment: Deployment) -> None:
    sku = _sku(deployment, 4)
    _warm(deployment, sku)
    store = deployment.truth.locations[0].code

    async def book() -> None:
        async with httpx.AsyncClient() as client:
            await book_stock(client, deployment.estate, {(store, sku): 500})

    asyncio.run(book())

    def total(url: str) -> object:
        return _variant(_query(url, PRICE, {"sku": sku}), sku)["totalAvailable"] >= 400

    assert _eventually(deployment.fleet.urls, total, True) == [True, True]


def test_a_product_rename_is_seen_on_both_instances(deployment: Deployment) -> None:
    sku = _sku(deployment, 5)
    _warm(deployment, sku)
    code = deployment.truth.products[5].code

    httpx.post(
        f"{deployment.estate.urls['pim']}/_sim/products/{code}", json={"name": "Renamed"}
    ).raise_for_status()

    def name(url: str) -> object:
        return _query(url, PRICE, {"sku": sku})["data"]["product"]["name"]

    assert _eventually(deployment.fleet.urls, name, "Renamed") == ["Renamed", "Renamed"]


def test_a_promotions_file_swap_is_seen_on_both_instances(deployment: Deployment) -> None:
    truth = deployment.truth
    chosen = next(
        p for p in truth.promotions if p.skus and not p.coupon_code and p.customer_id is None
    )
    sku = sorted(chosen.skus)[0]
    _warm(deployment, sku)
    rows = [
        promotion_row(replace(p, title="Swapped in") if p.id == chosen.id else p)
        for p in truth.promotions
    ]
    folder = deployment.estate.promotions_dir

    publish(folder, PROMOTIONS_FILE, rows)

    def titles(url: str) -> object:
        shown = _variant(_query(url, PRICE, {"sku": sku}), sku)["promotions"]
        return {p["title"] for p in shown if p["id"] == chosen.id}

    try:
        assert _eventually(deployment.fleet.urls, titles, {"Swapped in"}) == [{"Swapped in"}] * 2
    finally:
        publish(folder, PROMOTIONS_FILE, [promotion_row(p) for p in truth.promotions])


def test_a_cold_listing_after_a_warm_one_on_the_other_instance_asks_no_backend(
    deployment: Deployment,
) -> None:
    # given instance A has answered a listing page neither had seen
    first, second = deployment.fleet.urls
    variables = {"first": 8, "after": _cursor(40), "near": MARIENPLATZ}
    warm = _query(first, LISTING_AFTER, variables)
    reset_estate(deployment.estate)

    # when instance B is asked for the same page
    cold = _query(second, LISTING_AFTER, variables)

    # then B answers the same without a PIM or pricing call
    assert _products(cold) == _products(warm)
    assert _stats(deployment.estate, "pim") == {}
    assert _stats(deployment.estate, "pricing") == {}


def test_the_feed_holder_killed_another_takes_over_and_changes_keep_arriving(
    deployment: Deployment,
) -> None:
    fleet = deployment.fleet
    sku = _sku(deployment, 6)
    _warm(deployment, sku)

    fleet.kill(0)  # the first process took every lease
    _set_price(deployment, sku, "6.66")
    survivor = fleet.members[1].url
    seen = _eventually([survivor], _price(sku), "6.66")
    fleet.restart(0)

    assert seen == ["6.66"]


def test_redis_stopped_and_started_fails_no_request_and_converges(
    deployment: Deployment,
) -> None:
    fleet, redis = deployment.fleet, deployment.redis
    fleet.ensure_running()
    sku = _sku(deployment, 7)
    _warm(deployment, sku)
    failures: list[str] = []
    stop = Event()

    def traffic() -> None:
        variables = {"first": 4, "near": MARIENPLATZ}
        while not stop.is_set():
            for url in fleet.urls:
                try:
                    _query(url, LISTING, variables)
                except (AssertionError, httpx.HTTPError) as exc:
                    failures.append(f"{url}: {exc!r}"[:300])

    worker = Thread(target=traffic)
    worker.start()
    try:
        redis.stop()
        time.sleep(1.5)
        ready = httpx.get(f"{fleet.urls[1]}/readyz", headers=OPERATOR, timeout=10)
        _set_price(deployment, sku, "5.55")
        during = _eventually(fleet.urls, _price(sku), "5.55")
        redis.start()
        time.sleep(1.5)
        _set_price(deployment, sku, "4.44")
        after = _eventually(fleet.urls, _price(sku), "4.44")
    finally:
        stop.set()
        worker.join()

    assert failures == []
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["backends"]["redis"]["status"] == "down"
    assert during == ["5.55", "5.55"]
    assert after == ["4.44", "4.44"]


LISTING_AFTER = LISTING.replace("$first: Int!", "$first: Int!, $after: String").replace(
    "products(first: $first)", "products(first: $first, after: $after)"
)


def _cursor(offset: int) -> str:
    from strawberry.relay.utils import to_base64

    return to_base64("offset", offset)


def _products(body: dict[str, Any]) -> list[tuple[str, list[Decimal]]]:
    return [
        (
            edge["node"]["code"],
            [Decimal(v["price"]["current"]["amount"]) for v in edge["node"]["variants"]],
        )
        for edge in body["data"]["products"]["edges"]
    ]


@dataclass(slots=True)
class Shelf:
    """A kiosk's socket subscribed to one SKU at one store, and the numbers it last showed."""

    websocket: ClientConnection
    operation: str
    shown: dict[str, Any]

    async def next(self) -> dict[str, Any]:
        message = await next_message(self.websocket, self.operation)
        self.shown = message["payload"]["data"]["stockChanged"]
        return self.shown


@contextlib.asynccontextmanager
async def _shelf(deployment: Deployment, url: str, sku: str, on_hand: int) -> AsyncIterator[Shelf]:
    """Book ``on_hand`` units of ``sku`` at the till store in the ERP, and watch it from a
    kiosk on the instance at ``url`` until the ERP's count has reached it."""
    store = _till_store(deployment)
    async with httpx.AsyncClient() as client:
        await book_stock(client, deployment.estate, {(store, sku): on_hand})
    socket_url = url.replace("http://", "ws://") + "/graphql"
    async with connect(
        socket_url,
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Api-Key": "demo-kiosk"},
    ) as websocket:
        await websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
        await next_message(websocket)
        operation = await subscribe_to(websocket, STOCK_CHANGED, {"skus": [sku], "stores": [store]})
        shelf = Shelf(websocket, operation, {})
        await shelf.next()
        deadline = time.monotonic() + WAIT_SECONDS
        while shelf.shown["onHand"] != on_hand and time.monotonic() < deadline:  # the ERP sync
            await shelf.next()
        yield shelf


def _till_store(deployment: Deployment) -> str:
    return next(loc.code for loc in deployment.truth.locations if "CARRY_OUT" in loc.capabilities)


async def _sell(deployment: Deployment, url: str, sku: str, quantity: int) -> dict[str, Any]:
    """A till sale of ``quantity`` units at the till store, through the instance at ``url``."""
    order = {
        "idempotencyKey": uuid.uuid4().hex,
        "lines": [{"sku": sku, "quantity": quantity}],
        "fulfillment": "CARRY_OUT",
        "storeId": _till_store(deployment),
    }
    async with httpx.AsyncClient(headers={"X-Api-Key": "demo-pos"}, timeout=30) as client:
        placed = await client.post(
            f"{url}/graphql", json={"query": PLACE, "variables": {"input": order}}
        )
    result: dict[str, Any] = placed.json()["data"]["placeOrder"]
    return result


async def test_a_sale_on_one_instance_reaches_a_subscriber_on_the_other(
    deployment: Deployment,
) -> None:
    deployment.fleet.ensure_running()
    seller, watcher = deployment.fleet.urls
    sku = _sku(deployment, 8)
    async with _shelf(deployment, watcher, sku, 50) as shelf:
        initial = shelf.shown
        placed = await _sell(deployment, seller, sku, 2)
        update = await shelf.next()

    assert placed["userErrors"] == []
    assert initial["onHand"] == 50
    assert (update["available"], update["reserved"]) == (
        initial["available"] - 2,
        initial["reserved"] + 2,
    )


async def test_a_gateway_shutting_down_closes_subscribers_sockets_with_going_away(
    deployment: Deployment,
) -> None:
    fleet = deployment.fleet
    fleet.ensure_running()
    member = fleet.members[1]
    url = member.url.replace("http://", "ws://") + "/graphql"
    try:
        async with connect(
            url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Api-Key": "demo-pos"}
        ) as websocket:
            await websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
            await next_message(websocket)
            variables = {"skus": [_sku(deployment, 9)], "stores": ["0001"]}
            operation = await subscribe_to(websocket, STOCK_CHANGED, variables)
            await next_message(websocket, operation)

            assert member.process is not None
            member.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(websocket.recv(), WAIT_SECONDS)
            code = websocket.close_code
    finally:
        if member.process is not None:
            await asyncio.to_thread(member.process.wait, WAIT_SECONDS)
        fleet.ensure_running()

    assert code == 1001


async def test_a_subscriber_catches_up_on_what_other_instances_sold_while_redis_was_down(
    deployment: Deployment,
) -> None:
    fleet, redis = deployment.fleet, deployment.redis
    fleet.ensure_running()
    seller, watcher = fleet.urls
    sku = _sku(deployment, 10)
    async with _shelf(deployment, watcher, sku, 40) as shelf:
        shown = shelf.shown
        await asyncio.to_thread(redis.stop)
        try:
            placed = await _sell(deployment, seller, sku, 3)
        finally:
            await asyncio.to_thread(redis.start)
        caught_up = await shelf.next()

    assert placed["userErrors"] == []
    assert shown["onHand"] == 40
    assert (caught_up["available"], caught_up["reserved"]) == (
        shown["available"] - 3,
        shown["reserved"] + 3,
    )
