"""Answers while a backend fails, over real HTTP against the simulated estate: the page stays,
each missing or stale value says so, and one error per backend names the fields affected."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ResilienceConfig
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.api.test_customers import _token
from tests.api.test_orders import _carry_out, _stocked, _store
from tests.support import ServedGateway, serve_gateway

LISTING = """{ products(first: 12) { totalCount edges { node { code variants { sku
    price { current { amount } stale asOf }
    pricing { __typename ... on PriceUnavailable { reason backend lastKnown { current { amount } } }
              ... on Price { stale } } } } } } }"""

PRICE = """query($sku: String!) { product(sku: $sku) { code variants { sku
    price { current { amount } stale }
    pricing { __typename ... on PriceUnavailable { reason lastKnown { current { amount } stale } } }
} } }"""

STOCK = """query($sku: String!, $store: ID!) { product(sku: $sku) { variants { sku
    availability(storeIds: [$store]) { available stale } } } }"""

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id } userErrors { code sku } } }"""


def _knobs(estate: RunningEstate, system: str, **knobs: object) -> None:
    httpx.post(f"{estate.urls[system]}/_sim/knobs", json=knobs, timeout=5).raise_for_status()


def _served(
    estate: RunningEstate, pg_databases: Callable[[], str], **resilience: object
) -> Iterator[ServedGateway]:
    served = serve_gateway(
        estate, pg_databases(), config={"resilience": ResilienceConfig(**resilience)}
    )
    yield served
    served.stop()


@pytest.fixture
def fresh(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway of its own that flags a feed stale after 1 s."""
    yield from _served(estate, pg_databases, feed_stale_after=1.0)


def _variants(answer: dict) -> list[dict]:  # type: ignore[type-arg]
    return [v for edge in answer["data"]["products"]["edges"] for v in edge["node"]["variants"]]


def _paths_without_price(answer: dict) -> list[list[object]]:  # type: ignore[type-arg]
    paths = []
    for index, edge in enumerate(answer["data"]["products"]["edges"]):
        for number, variant in enumerate(edge["node"]["variants"]):
            if variant["price"] is None or variant["price"]["stale"]:
                paths.append(["products", "edges", index, "node", "variants", number, "price"])
    return paths


def test_half_the_pricing_calls_failing_leaves_every_product_on_the_page(
    gateway: ServedGateway, fresh: ServedGateway, estate: RunningEstate
) -> None:
    # The page as a gateway shows it with the engine well; ``fresh`` has read nothing yet.
    edges = gateway.graphql(LISTING).json()["data"]["products"]["edges"]
    codes = [edge["node"]["code"] for edge in edges]
    _knobs(estate, "pricing", error_rate=0.5)

    for page in range(1, 6):
        answer = fresh.graphql(LISTING).json()
        listed = [edge["node"]["code"] for edge in answer["data"]["products"]["edges"]]
        assert listed == codes, page
        for variant in _variants(answer):
            price, pricing = variant["price"], variant["pricing"]
            # A price shown is a current one or a flagged last known one; none shown says why.
            if pricing["__typename"] == "PriceUnavailable":
                assert pricing["reason"] in {"BACKEND_UNAVAILABLE", "CIRCUIT_OPEN"}
                assert pricing["backend"] == "pricing"
                assert price is None or price["stale"]
            else:
                assert price is not None
        errors = answer.get("errors", [])
        assert len(errors) <= 1  # one entry per backend at most, never one per field
        for error in errors:
            assert error["extensions"]["backend"] == "pricing"
            assert set(map(tuple, _paths_without_price(answer))) <= set(
                map(tuple, error["extensions"]["paths"])
            )


@contextmanager
def _price_changed(estate: RunningEstate, sku: str, price: str, back: str) -> Iterator[None]:
    url = f"{estate.urls['pricing']}/_sim/prices"
    httpx.post(url, json={"sku": sku, "price": price}, timeout=5).raise_for_status()
    try:
        yield
    finally:
        _knobs(estate, "pricing", outage=False)
        httpx.post(url, json={"sku": sku, "price": back}, timeout=5).raise_for_status()


def _price_feed_reads(estate: RunningEstate) -> int:
    stats = httpx.get(f"{estate.urls['pricing']}/_sim/stats", timeout=5).json()
    return int(stats["calls"].get("GetPriceChanges", 0))


def test_in_an_outage_a_changed_price_shows_the_last_known_one_flagged_stale(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    sku = truth.products[7].variants[0].sku
    before = fresh.graphql(PRICE, {"sku": sku}).json()
    (shown,) = [v for v in before["data"]["product"]["variants"] if v["sku"] == sku]
    old = shown["price"]["current"]["amount"]
    assert shown["price"]["stale"] is False

    with _price_changed(estate, sku, "1.23", back=old):
        # The change is read from the engine's journal (and the entry evicted) by the next read
        # of the feed; then the engine goes down before anyone asks again.
        reads = _price_feed_reads(estate)
        for _ in range(100):
            if _price_feed_reads(estate) >= reads + 2:
                break
            time.sleep(0.05)
        _knobs(estate, "pricing", outage=True)
        # Evicted: the last known price; not yet evicted: the held one, flagged once the
        # feed has gone unread for feed_stale_after. Either way, the old price, stale.
        for _ in range(100):
            answer = fresh.graphql(PRICE, {"sku": sku}).json()
            (variant,) = [v for v in answer["data"]["product"]["variants"] if v["sku"] == sku]
            if variant["price"]["stale"]:
                break
            time.sleep(0.05)

    assert variant["price"] == {"current": {"amount": old}, "stale": True}
    if variant["pricing"]["__typename"] == "PriceUnavailable":
        assert variant["pricing"]["lastKnown"] == {"current": {"amount": old}, "stale": True}
    (error,) = [e for e in answer["errors"] if e["extensions"]["backend"] == "pricing"]
    assert error["extensions"]["stale"] >= 1


@pytest.fixture
def hurried(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway whose requests' backend calls must end within half a second."""
    yield from _served(estate, pg_databases, request_deadline=0.5)


def test_a_slow_engine_is_cut_off_at_the_request_deadline(
    hurried: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    _knobs(estate, "pricing", latency_ms=3000)

    answer = hurried.graphql(PRICE, {"sku": truth.products[2].variants[0].sku}).json()

    variants = answer["data"]["product"]["variants"]
    assert variants
    assert all(v["pricing"]["reason"] == "BACKEND_TIMED_OUT" for v in variants)
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == "BACKEND_TIMED_OUT"
    assert error["message"] == "pricing did not answer in time"


def test_an_order_is_never_priced_on_a_last_known_price(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(fresh, truth, store, 1)
    fresh.graphql(PRICE, {"sku": sku})  # the read model now holds its price
    _knobs(estate, "pricing", outage=True)

    body = fresh.graphql(PLACE, {"input": _carry_out(sku, store)}, key="demo-pos").json()

    assert body["data"]["placeOrder"] == {
        "order": None,
        "userErrors": [{"code": "PRICE_UNAVAILABLE", "sku": sku}],
    }


@contextmanager
def _erp_unreadable(estate: RunningEstate) -> Iterator[None]:
    """The ERP's stock table out of reach (as when its database is down for maintenance)."""
    assert estate.erp_url.startswith("sqlite")
    path = Path(estate.erp_url.split("///", 1)[1])
    with sqlite3.connect(path) as connection:
        connection.execute('ALTER TABLE "STOCK_LEVELS" RENAME TO "STOCK_LEVELS_AWAY"')
    try:
        yield
    finally:
        with sqlite3.connect(path) as connection:
            connection.execute('ALTER TABLE "STOCK_LEVELS_AWAY" RENAME TO "STOCK_LEVELS"')


def test_stock_is_flagged_stale_while_the_erp_feed_cannot_be_read(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(fresh, truth, store, 1)
    query = {"sku": sku, "store": store}
    assert not any(
        stock["stale"]
        for v in fresh.graphql(STOCK, query).json()["data"]["product"]["variants"]
        for stock in v["availability"]
    )

    with _erp_unreadable(estate):
        for _ in range(100):
            answer = fresh.graphql(STOCK, query).json()
            if answer.get("errors"):
                break
            time.sleep(0.05)

    stocks = [s for v in answer["data"]["product"]["variants"] for s in v["availability"]]
    assert stocks, answer
    assert all(stock["stale"] for stock in stocks), answer
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == "BACKEND_STALE"
    assert error["extensions"]["backend"] == "erp"


ME = "{ me { id loyalty { points } orders { id } personalOffers { id } } }"


def test_a_loyalty_outage_keeps_the_customer_and_their_orders(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    customer = truth.customers[40].id
    _knobs(estate, "loyalty", outage=True)

    answer = fresh.graphql(ME, token=_token(customer)).json()

    _without_loyalty(answer, customer)


def _without_loyalty(answer: dict[str, Any], customer: str) -> None:
    """``me`` of a customer with no orders or offers: all there but loyalty, null and named."""
    assert answer["data"]["me"] == {
        "id": customer,
        "loyalty": None,
        "orders": [],
        "personalOffers": [],
    }
    (error,) = answer["errors"]
    assert error["extensions"]["backend"] == "loyalty"
    assert error["extensions"]["paths"] == [["me", "loyalty"]]


def test_the_breaker_opens_in_an_outage_and_the_engine_is_no_longer_asked(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    _knobs(estate, "pricing", outage=True)
    reasons: list[str] = []
    for product in truth.products[20:45]:
        answer = fresh.graphql(PRICE, {"sku": product.variants[0].sku}).json()
        reasons += [v["pricing"]["reason"] for v in answer["data"]["product"]["variants"]]

    assert reasons[-1] == "CIRCUIT_OPEN"
    assert fresh.metric("gateway_backend_circuit_open", backend="pricing") == 1
    assert fresh.metric("gateway_backend_short_circuited_total", backend="pricing") > 0


def test_a_degraded_answer_is_never_served_from_the_response_cache(
    fresh: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    _knobs(estate, "pricing", outage=True)
    sku = truth.products[50].variants[0].sku

    answers = [fresh.graphql(PRICE, {"sku": sku}) for _ in range(3)]

    assert all(answer.headers.get("X-Cache") != "hit" for answer in answers)
    assert all(answer.json()["errors"] for answer in answers)


def test_a_rate_limited_loyalty_platform_keeps_the_customer_and_their_orders(
    estate: RunningEstate, pg_databases: Callable[[], str], truth: DemoEstate
) -> None:
    # given a loyalty platform that lets one call through, then answers 429 for 100 seconds,
    # and a gateway whose requests may take 2 s
    resilience = ResilienceConfig(request_deadline=2.0)
    served = serve_gateway(estate, pg_databases(), config={"resilience": resilience})
    customer = truth.customers[41].id
    limit = {"per_second": 0.01, "burst": 1}
    httpx.post(f"{estate.urls['loyalty']}/_sim/ratelimit", json=limit, timeout=5)
    try:
        served.graphql(ME, token=_token(customer))  # takes the one call there is

        # when the customer asks again
        answer = served.graphql(ME, token=_token(customer)).json()
    finally:
        served.stop()

    # then the customer, orders and offers are there, and loyalty is null and says why
    _without_loyalty(answer, customer)
