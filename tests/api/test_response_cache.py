"""The response cache over real HTTP: what is answered again, what never is, and how a change in
a legacy system evicts it."""

from __future__ import annotations

import time

import httpx
import pytest

from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.api.test_customers import _token
from tests.support import LISTING, MARIENPLATZ, ServedGateway, reset_estate

FEEDS = ("getChanges", "GetPriceChanges")
LISTING_VARIABLES = {"first": 6, "near": MARIENPLATZ}
PRICE = "query($sku: String!) { product(sku: $sku) { variants { sku price { current { amount } asOf } } } }"  # noqa: E501


def _calls(estate: RunningEstate) -> dict[str, dict[str, int]]:
    """PIM and pricing calls served, less their change feeds (read all along)."""
    found = {}
    for system in ("pim", "pricing"):
        calls = httpx.get(f"{estate.urls[system]}/_sim/stats").json()["calls"]
        found[system] = {
            k: v for k, v in calls.items() if k not in ("getChanges", "GetPriceChanges")
        }
    return found


def test_the_same_shared_read_is_answered_again_without_any_backend_call(
    gateway: ServedGateway, estate: RunningEstate
) -> None:
    first = gateway.graphql(LISTING, LISTING_VARIABLES)
    reset_estate(estate)

    again = gateway.graphql(LISTING, LISTING_VARIABLES)

    assert "x-cache" not in first.headers
    assert again.headers["x-cache"] == "hit"
    assert int(again.headers["age"]) >= 0
    assert again.content == first.content
    assert _calls(estate) == {"pim": {}, "pricing": {}}


def test_channels_with_the_same_scopes_share_answers_and_others_do_not(
    gateway: ServedGateway,
) -> None:
    gateway.graphql(LISTING, LISTING_VARIABLES, key="demo-web")

    mobile = gateway.graphql(LISTING, LISTING_VARIABLES, key="demo-mobile")  # the same scopes
    partner = gateway.graphql(LISTING, LISTING_VARIABLES, key="demo-partner")  # fewer scopes

    assert mobile.headers.get("x-cache") == "hit"
    assert partner.headers.get("x-cache") is None
    assert partner.json() == mobile.json()


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ me { loyalty { points } } }", {}),
        ('{ cart(input: {lines: [{sku: "100000010", quantity: 1}]}) { total { amount } } }', {}),
        (
            "query($id: ID!) { node(id: $id) { ... on Store { attributedSales(from: "
            '"2026-01-01T00:00:00Z", to: "2027-01-01T00:00:00Z") { orders } } } }',
            {"id": "U3RvcmU6MDAwMQ=="},
        ),
        ("mutation { __typename }", {}),
    ],
)
def test_answers_that_are_not_shared_reads_are_never_answered_again(
    gateway: ServedGateway, truth: DemoEstate, query: str, variables: dict[str, object]
) -> None:
    token = _token(truth.customers[0].id)

    answers = [gateway.graphql(query, variables, key="demo-pos") for _ in range(2)]
    private = [gateway.graphql(LISTING, LISTING_VARIABLES, token=token) for _ in range(2)]

    assert [answer.headers.get("x-cache") for answer in answers] == [None, None]
    assert [answer.headers.get("x-cache") for answer in private] == [None, None]


def test_a_price_change_in_the_pricing_engine_evicts_the_answers_that_show_it(
    cold_gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given an answer showing a price is held
    variant = truth.products[9].variants[0]
    before = cold_gateway.graphql(PRICE, {"sku": variant.sku})
    assert cold_gateway.graphql(PRICE, {"sku": variant.sku}).headers.get("x-cache") == "hit"
    url = f"{estate.urls['pricing']}/_sim/prices"

    # when the pricing engine changes it
    httpx.post(url, json={"sku": variant.sku, "price": "3.21"}).raise_for_status()
    try:
        deadline = time.monotonic() + 5
        after = cold_gateway.graphql(PRICE, {"sku": variant.sku})
        while _amount(after) != "3.21" and time.monotonic() < deadline:
            time.sleep(0.05)
            after = cold_gateway.graphql(PRICE, {"sku": variant.sku})
    finally:
        httpx.post(url, json={"sku": variant.sku, "price": str(variant.base_price)})

    # then the next answer shows the new price, read after the change
    assert _amount(before) == str(variant.base_price)
    assert _amount(after) == "3.21"
    assert after.headers.get("x-cache") is None


def _amount(response: httpx.Response) -> str:
    variants = response.json()["data"]["product"]["variants"]
    amount: str = variants[0]["price"]["current"]["amount"]
    return amount


def test_metrics_count_hits_and_say_which_feeds_this_instance_follows(
    cold_gateway: ServedGateway,
) -> None:
    hits_before = cold_gateway.metric("gateway_response_cache_hits_total")

    for _ in range(3):
        cold_gateway.graphql(LISTING, LISTING_VARIABLES)

    assert cold_gateway.metric("gateway_response_cache_hits_total") == hits_before + 2
    assert cold_gateway.metric("gateway_read_model_lookups_total") > 0
    # without Redis the one process follows every feed itself
    feeds = ("pim", "pricing", "promotions", "erp")
    assert [cold_gateway.metric("gateway_feed_holding", feed=feed) for feed in feeds] == [1] * 4
    assert cold_gateway.metric("gateway_change_bus_connected") == 1
