"""Order placement end to end: three gateway processes over one PostgreSQL database and the tiny
estate's simulators, each a process of its own. Concurrency (no unit sold twice, one order per
idempotency key), outages (the OMS, the loyalty platform) and a crash right after commit.

Every test is bounded: a fixed number of requests, and waits that give up after a deadline
(the assertion after the wait then reports what was seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from gateway.ledger import STORE_SAFETY_STOCK
from legacy.demo import DemoEstate, DemoLocation, DemoProduct
from legacy.launcher import RunningEstate
from tests.api.test_orders import PLACE
from tests.e2e.gateways import (
    Database,
    GatewayFleet,
    book_stock,
    database_and_estate,
    gateway_config,
    only_at,
    running_fleet,
    write_toml,
)
from tests.support import (
    reset_estate,
)

pytestmark = pytest.mark.postgres

GATEWAYS = 3
WAIT_SECONDS = 60.0  # the longest any wait for an eventual outcome may take
ANONYMOUS_KEYS = ("demo-web", "demo-mobile", "demo-kiosk", "demo-pos")
TILL_KEY = "demo-pos"  # a till may order for a loyalty customer (customerId)
LOYALTY_KEY_HEADER = "X-Loyalty-Api-Key"
T = TypeVar("T")

TOTAL_AVAILABLE = "query($sku: String!) { product(sku: $sku) { variants { sku totalAvailable } } }"


@dataclass(frozen=True, slots=True)
class Shop:
    truth: DemoEstate
    estate: RunningEstate
    database: Database
    fleet: GatewayFleet


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, or the transport error that stood in for it."""

    status: int | None
    body: dict[str, Any] | None
    failure: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        assert self.body is not None, self
        assert "errors" not in self.body, self
        result: dict[str, Any] = self.body["data"]["placeOrder"]
        return result

    @property
    def codes(self) -> list[str]:
        return [error["code"] for error in self.payload["userErrors"]]

    @property
    def outcome(self) -> str:
        """In a word: placed, the codes of the user errors, or what came instead of an answer."""
        if self.failure is not None or self.status != 200 or self.body is None:
            return f"HTTP {self.status}: {self.failure}"
        if self.body.get("errors"):
            return f"GraphQL error: {self.body['errors'][0].get('message')}"
        return "placed" if self.payload["order"] else ", ".join(self.codes)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shop(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The tiny estate, a database of its own and three gateway processes, for this module."""
    root = tmp_path_factory.mktemp("orders-e2e")
    with contextlib.ExitStack() as stack:
        database, estate = database_and_estate(stack, truth, root, "cg_e2e")
        # 300 requests at once queue for a while on a small machine: let them wait their turn.
        config = write_toml(gateway_config(estate, max_wait=WAIT_SECONDS), root / "gateway.toml")
        fleet = stack.enter_context(running_fleet(GATEWAYS, config, database.url, root / "logs"))
        yield Shop(truth, estate, database, fleet)


@pytest.fixture(autouse=True)
def _fresh(shop: Shop) -> Iterator[None]:
    """Every process up and every knob at its start, before and after each test."""
    shop.fleet.ensure_running()
    reset_estate(shop.estate)
    yield
    reset_estate(shop.estate)


@pytest.fixture(scope="module")
def sku_pool(shop: Shop) -> Iterator[str]:
    """SKUs no other test of this module touches, of products ranged in store clusters A and
    B (so at several stores that ship)."""
    return iter(
        [
            variant.sku
            for product in shop.truth.products
            if {"A", "B"} <= product.clusters
            for variant in product.variants
        ]
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No keep-alive: a connection reused just as the server times it out is reset, which is
    # a race of the test client, not an answer of the gateway.
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=WAIT_SECONDS + 30, limits=limits, trust_env=False) as http:
        yield http


# --------------------------------------------------------------------------- helpers


def _product(truth: DemoEstate, sku: str) -> DemoProduct:
    return next(p for p in truth.products if any(v.sku == sku for v in p.variants))


def _shipping_stores(truth: DemoEstate, sku: str, count: int) -> list[DemoLocation]:
    """The first ``count`` stores (by code) that range ``sku``, take pickups and ship."""
    product = _product(truth, sku)
    able = [
        location
        for location in truth.locations
        if location.kind == "STORE"
        and {"PICKUP", "SHIP_FROM_STORE"} <= location.capabilities
        and truth.ranged(product, location)
    ]
    assert len(able) >= count, f"{sku} is ranged at only {len(able)} shipping stores"
    return sorted(able, key=lambda location: location.code)[:count]


async def _send(
    client: httpx.AsyncClient,
    url: str,
    query: str,
    variables: dict[str, object],
    key: str = "demo-web",
) -> Answer:
    body = {"query": query, "variables": variables}
    try:
        response = await client.post(f"{url}/graphql", json=body, headers={"X-Api-Key": key})
    except httpx.TransportError as exc:
        return Answer(None, None, type(exc).__name__)
    try:
        return Answer(response.status_code, response.json())
    except ValueError:
        return Answer(response.status_code, None, response.text[:200])


async def _place(
    client: httpx.AsyncClient, url: str, order: dict[str, object], key: str = TILL_KEY
) -> Answer:
    return await _send(client, url, PLACE, {"input": order}, key)


def _carry_out(sku: str, store: str, quantity: int = 1, **more: object) -> dict[str, object]:
    return {
        "idempotencyKey": uuid.uuid4().hex,
        "lines": [{"sku": sku, "quantity": quantity}],
        "fulfillment": "CARRY_OUT",
        "storeId": store,
        **more,
    }


async def _eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = WAIT_SECONDS
) -> T:
    """Probe until ``done`` holds or ``seconds`` pass; the last value either way, for the
    caller to assert on."""
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _db(shop: Shop) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(shop.database.dsn, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


async def _order_ids(shop: Shop, sku: str) -> set[str]:
    """The orders in the gateway's database with a line of ``sku``."""
    async with _db(shop) as db:
        rows = await db.fetch("SELECT DISTINCT order_id FROM order_lines WHERE sku = $1", sku)
    return {row["order_id"] for row in rows}


async def _reserved(shop: Shop, sku: str) -> dict[str, int]:
    """Per location: the units of ``sku`` the ledger holds for orders."""
    async with _db(shop) as db:
        rows = await db.fetch(
            "SELECT location_id, reserved FROM inventory_positions WHERE sku = $1", sku
        )
    return {row["location_id"]: row["reserved"] for row in rows if row["reserved"]}


async def _allocated(shop: Shop, sku: str) -> dict[str, int]:
    """Per location: the units of ``sku`` the orders' allocations still hold."""
    async with _db(shop) as db:
        rows = await db.fetch(
            "SELECT location_id, SUM(quantity - released) AS units FROM order_allocations"
            " WHERE sku = $1 GROUP BY location_id",
            sku,
        )
    return {row["location_id"]: int(row["units"]) for row in rows if row["units"]}


async def _on_hand(shop: Shop, sku: str) -> dict[str, int]:
    """Per location holding any: the units of ``sku`` on hand, as the ledger has them."""
    async with _db(shop) as db:
        rows = await db.fetch(
            "SELECT location_id, on_hand FROM inventory_positions WHERE sku = $1", sku
        )
    return {row["location_id"]: row["on_hand"] for row in rows if row["on_hand"]}


async def _stocked(
    shop: Shop, client: httpx.AsyncClient, sku: str, store: str, units: int
) -> dict[str, int]:
    """Book ``units`` of ``sku`` at ``store`` (and none elsewhere) in the ERP; returns the
    ledger's on hand once it has caught up (or when the wait runs out)."""
    await book_stock(client, shop.estate, await only_at(shop.estate.erp_url, sku, {store: units}))
    return await _eventually(lambda: _on_hand(shop, sku), lambda seen: seen == {store: units})


async def _statuses(shop: Shop, order_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Per order: its status and the OMS number the gateway recorded."""
    async with _db(shop) as db:
        rows = await db.fetch(
            "SELECT id, status, oms_order_number FROM orders WHERE id = ANY($1::text[])",
            list(order_ids),
        )
    return {row["id"]: (row["status"], row["oms_order_number"]) for row in rows}


async def _failed_attempts(shop: Shop, kind: str, order_ids: Sequence[str]) -> dict[str, int]:
    """Per order: how often delivering its ``kind`` outbox message has failed so far."""
    async with _db(shop) as db:
        rows = await db.fetch(
            "SELECT order_id, attempts FROM outbox WHERE kind = $1 AND order_id = ANY($2::text[])",
            kind,
            list(order_ids),
        )
    return {row["order_id"]: row["attempts"] for row in rows}


async def _oms_orders(client: httpx.AsyncClient, shop: Shop) -> list[dict[str, Any]]:
    response = await client.get(f"{shop.estate.urls['oms']}/api/orders")
    response.raise_for_status()
    orders: list[dict[str, Any]] = response.json()["orders"]
    return orders


async def _knob(client: httpx.AsyncClient, shop: Shop, system: str, **knobs: object) -> None:
    response = await client.post(f"{shop.estate.urls[system]}/_sim/knobs", json=knobs)
    response.raise_for_status()


async def _total_available(client: httpx.AsyncClient, url: str, sku: str) -> int:
    """What the graph served at ``url`` says is available of ``sku`` over every location."""
    answer = await _send(client, url, TOTAL_AVAILABLE, {"sku": sku})
    assert answer.body is not None, answer
    variants = answer.body["data"]["product"]["variants"]
    total: int = next(v["totalAvailable"] for v in variants if v["sku"] == sku)
    return total


def _submitted(statuses: dict[str, tuple[str, str | None]]) -> bool:
    return bool(statuses) and all(status == "SUBMITTED" for status, _ in statuses.values())


# --------------------------------------------------------------------------- concurrency


async def test_300_concurrent_orders_over_three_processes_sell_exactly_the_units_available(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: one SKU on hand at three shipping stores only (9, 9 and 10; each keeps one back),
    # and every gateway's graph showing its total available
    sku = next(sku_pool)
    stores = _shipping_stores(shop.truth, sku, 3)
    on_hand = dict(zip((store.code for store in stores), (9, 9, 10), strict=True))
    available = sum(units - STORE_SAFETY_STOCK for units in on_hand.values())
    await book_stock(client, shop.estate, await only_at(shop.estate.erp_url, sku, on_hand))

    urls = shop.fleet.urls

    async def totals() -> list[int]:
        return [await _total_available(client, url, sku) for url in urls]

    everywhere = [available] * GATEWAYS
    assert await _eventually(totals, lambda seen: seen == everywhere) == everywhere
    near = {
        "lat": sum(store.lat for store in stores) / len(stores),
        "lon": sum(store.lon for store in stores) / len(stores),
    }

    def order(number: int) -> dict[str, object]:
        """Half pickups spread over the three stores, half shipped from whichever has it."""
        line = {"idempotencyKey": uuid.uuid4().hex, "lines": [{"sku": sku, "quantity": 1}]}
        if number % 2:
            return {**line, "fulfillment": "SHIP_TO_HOME", "destination": near}
        store = stores[(number // 2) % len(stores)].code
        return {**line, "fulfillment": "PICKUP_IN_STORE", "storeId": store}

    # When: 300 orders of one unit each arrive at once, spread over the processes and channels
    answers = await asyncio.gather(
        *(
            _place(client, urls[n % GATEWAYS], order(n), ANONYMOUS_KEYS[n % len(ANONYMOUS_KEYS)])
            for n in range(300)
        )
    )

    # Then: exactly as many orders as units, every other answer a clean OUT_OF_STOCK, and the
    # ledger holds exactly what the orders were allocated, nowhere beyond what is there
    outcomes = Counter(answer.outcome for answer in answers)
    assert outcomes == {"placed": available, "OUT_OF_STOCK": 300 - available}
    placed = [answer.payload["order"] for answer in answers if answer.outcome == "placed"]
    assert await _order_ids(shop, sku) == {order["id"] for order in placed}
    async with _db(shop) as db:
        overheld = await db.fetch(
            "SELECT location_id, sku, on_hand, reserved, safety_stock FROM inventory_positions"
            " WHERE reserved > 0 AND reserved > on_hand - safety_stock"
        )
    assert [dict(row) for row in overheld] == []
    reserved = await _reserved(shop, sku)
    assert reserved == await _allocated(shop, sku)
    assert sum(reserved.values()) == available


async def test_one_key_sent_20_times_at_once_makes_one_order_and_refuses_another_basket(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: a SKU with stock at a store, and one order under one key
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 20)) == {store: 20}
    order = _carry_out(sku, store)
    urls = shop.fleet.urls

    # When: it is sent 20 times at once over the three processes, then once more, then under
    # the same key with another basket
    answers = await asyncio.gather(*(_place(client, urls[n % GATEWAYS], order) for n in range(20)))
    replay = await _place(client, urls[0], order)
    other = await _place(client, urls[1], {**order, "lines": [{"sku": sku, "quantity": 2}]})

    # Then: one order; each answer is that order or "in progress, retry"; the replay says so
    (order_id,) = await _order_ids(shop, sku)
    outcomes = Counter(
        ("order", answer.payload["order"]["id"], answer.payload["replayed"])
        if answer.payload["order"]
        else ("error", tuple(answer.codes), None)
        for answer in answers
    )
    assert set(outcomes) <= {
        ("order", order_id, False),
        ("order", order_id, True),
        ("error", ("IN_PROGRESS",), None),
    }
    assert outcomes[("order", order_id, False)] == 1
    assert (replay.payload["order"]["id"], replay.payload["replayed"]) == (order_id, True)
    assert other.payload["order"] is None
    assert other.codes == ["IDEMPOTENCY_KEY_REUSED"]
    assert await _order_ids(shop, sku) == {order_id}
    assert await _reserved(shop, sku) == {store: 1}


# --------------------------------------------------------------------------- outages


async def test_orders_taken_while_the_oms_is_down_reach_it_once_when_it_is_back(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: the OMS down
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 20)) == {store: 20}
    await _knob(client, shop, "oms", outage=True)

    # When: five orders are placed over the processes
    urls = shop.fleet.urls
    answers = [await _place(client, urls[n % GATEWAYS], _carry_out(sku, store)) for n in range(5)]

    # Then: all are accepted, and the OMS refuses each at least once
    orders = [answer.payload["order"] for answer in answers]
    assert [(o["status"], o["omsOrderNumber"]) for o in orders] == [("ACCEPTED", None)] * 5
    ids = [order["id"] for order in orders]
    refused = await _eventually(
        lambda: _failed_attempts(shop, "OMS_SUBMIT", ids),
        lambda seen: len(seen) == 5 and min(seen.values()) >= 1,
    )
    assert sorted(refused) == sorted(ids)
    assert min(refused.values()) >= 1

    # When: the OMS is back
    await _knob(client, shop, "oms", outage=False)

    # Then: every order becomes SUBMITTED, and the OMS holds each once, under the number the
    # gateway recorded
    statuses = await _eventually(lambda: _statuses(shop, ids), _submitted)
    assert {status for status, _ in statuses.values()} == {"SUBMITTED"}
    received = [o for o in await _oms_orders(client, shop) if o["externalOrderId"] in ids]
    assert sorted(o["externalOrderId"] for o in received) == sorted(ids)
    assert {o["externalOrderId"]: o["omsOrderNo"] for o in received} == {
        order_id: number for order_id, (_, number) in statuses.items()
    }


async def test_a_process_killed_right_after_commit_loses_no_order_and_the_oms_gets_each_once(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: the OMS down, so that committed orders wait in the outbox
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 30)) == {store: 30}
    await _knob(client, shop, "oms", outage=True)
    victim = shop.fleet.members[0]

    # When: orders go to one process, which is SIGKILLed as soon as three have been answered
    # (the others are committing or still on their way)
    pending = {
        asyncio.ensure_future(_place(client, victim.url, _carry_out(sku, store))) for _ in range(12)
    }
    answered: list[Answer] = []
    while pending and len(answered) < 3:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        answered += [task.result() for task in done]
    shop.fleet.kill(victim.index)
    answered += await asyncio.gather(*pending)
    # ...the OMS comes back and the process is started again
    await _knob(client, shop, "oms", outage=False)
    shop.fleet.restart(victim.index)

    # Then: every answer is an order or a cut connection; every order committed (answered or
    # not) reaches the OMS once and is SUBMITTED; the ledger holds exactly what they hold
    cut = [answer for answer in answered if answer.status is None]
    confirmed = {answer.payload["order"]["id"] for answer in answered if answer.status is not None}
    assert len(cut) + len(confirmed) == 12
    committed = await _order_ids(shop, sku)
    assert confirmed <= committed
    statuses = await _eventually(lambda: _statuses(shop, sorted(committed)), _submitted)
    assert {status for status, _ in statuses.values()} == {"SUBMITTED"}
    received = [o for o in await _oms_orders(client, shop) if o["externalOrderId"] in committed]
    assert Counter(o["externalOrderId"] for o in received) == dict.fromkeys(committed, 1)
    assert {o["externalOrderId"]: o["omsOrderNo"] for o in received} == {
        order_id: number for order_id, (_, number) in statuses.items()
    }
    assert await _reserved(shop, sku) == await _allocated(shop, sku)
    assert sum((await _reserved(shop, sku)).values()) == len(committed)


async def test_while_loyalty_is_down_spending_points_is_refused_and_earning_waits_for_it(
    shop: Shop, client: httpx.AsyncClient, sku_pool: Iterator[str]
) -> None:
    # Given: a member with points, a SKU in stock at a store, and the loyalty platform down
    customer = next(c for c in shop.truth.customers if c.points >= 1000 and c.id > "C0100")
    sku = next(sku_pool)
    store = _shipping_stores(shop.truth, sku, 1)[0].code
    assert (await _stocked(shop, client, sku, store, 10)) == {store: 10}
    loyalty = httpx.Headers({LOYALTY_KEY_HEADER: shop.estate.api_key})
    member_url = f"{shop.estate.urls['loyalty']}/v2/members"

    async def balance() -> int:
        response = await client.get(member_url, params={"ids": customer.id}, headers=loyalty)
        response.raise_for_status()
        points: int = response.json()["members"][0]["pointsBalance"]
        return points

    before = await balance()
    await _knob(client, shop, "loyalty", outage=True)
    urls = shop.fleet.urls
    available = await _total_available(client, urls[2], sku)

    # When: a till orders for the member, once spending points and once only earning them
    spend = await _place(
        client, urls[0], _carry_out(sku, store, customerId=customer.id, redeemPoints=100)
    )
    reserved_after_refusal = await _reserved(shop, sku)
    available_after_refusal = await _total_available(client, urls[2], sku)
    earn = await _place(client, urls[1], _carry_out(sku, store, customerId=customer.id))

    # Then: spending fails with a typed error and holds no stock; earning is accepted and its
    # points wait in the outbox until the platform is back, then are credited once
    assert spend.payload["order"] is None
    assert spend.codes == ["LOYALTY_UNAVAILABLE"]
    assert (reserved_after_refusal, available_after_refusal) == ({}, available)
    order = earn.payload["order"]
    assert (order["status"], order["customerId"]) == ("ACCEPTED", customer.id)
    assert order["pointsEarned"] > 0
    refused = await _eventually(
        lambda: _failed_attempts(shop, "LOYALTY_EARN", [order["id"]]),
        lambda seen: seen.get(order["id"], 0) >= 1,
    )
    assert refused[order["id"]] >= 1

    await _knob(client, shop, "loyalty", outage=False)

    after = await _eventually(balance, lambda points: points != before)
    assert after == before + order["pointsEarned"]
    history = await client.get(
        f"{member_url}/{customer.id}/transactions", params={"limit": 100}, headers=loyalty
    )
    references = [t["reference"] for t in history.json()["transactions"]]
    assert [r for r in references if r.startswith(order["id"])] == [f"{order['id']}:earn"]
    assert await _reserved(shop, sku) == {store: 1}
