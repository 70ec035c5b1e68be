"""Carts and orders over real HTTP while the loyalty system is down: a member keeps the tier the
gateway last confirmed, and the cart says so."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.api.test_orders import _available, _carry_out, _place, _store
from tests.support import ServedGateway, serve_gateway

CART = """query($input: CartInput!) { cart(input: $input) {
    total { amount } pointsToEarn problems { code message sku } } }"""

TILL_KEY = "demo-pos"  # a till may price and order for a loyalty customer (customerId)


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway with a database of its own: no other module has shown it any customer, and its
    orders reserve stock in its own ledger."""
    served = serve_gateway(estate, pg_databases())
    yield served
    served.stop()


@contextmanager
def _loyalty_down(estate: RunningEstate) -> Iterator[None]:
    knobs = f"{estate.urls['loyalty']}/_sim/knobs"
    httpx.post(knobs, json={"outage": True}, timeout=5).raise_for_status()
    try:
        yield
    finally:
        httpx.post(knobs, json={"outage": False}, timeout=5).raise_for_status()


def _cart(gateway: ServedGateway, cart: dict[str, object]) -> dict:  # type: ignore[type-arg]
    body = gateway.graphql(CART, {"input": cart}, key=TILL_KEY).json()
    assert "errors" not in body, body
    return body["data"]["cart"]  # type: ignore[no-any-return]


def _gold_members(truth: DemoEstate) -> list[str]:
    return [customer.id for customer in truth.customers if customer.tier == "GOLD"]


def _home_sku(gateway: ServedGateway, truth: DemoEstate, store: str) -> str:
    """A home SKU ("Silver and up: 2.00 off home") with two units available at ``store``."""
    return next(
        variant.sku
        for product in truth.products
        if product.category.startswith("home")
        for variant in product.variants
        if _available(gateway, variant.sku, store) >= 2
    )


def _basket(sku: str, store: str, **more: object) -> dict[str, object]:
    return {"lines": [{"sku": sku, "quantity": 2}], "storeId": store, **more}


def test_a_member_keeps_the_last_confirmed_tier_in_cart_and_order_while_loyalty_is_down(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given a GOLD member's cart priced while the loyalty system is up, and the same basket
    # priced for nobody in particular
    member = _gold_members(truth)[0]
    store = _store(truth)
    sku = _home_sku(gateway, truth, store)
    anonymous = _cart(gateway, _basket(sku, store))
    up = _cart(gateway, _basket(sku, store, customerId=member))

    # when the loyalty system goes down and the till prices the cart and orders it
    with _loyalty_down(estate):
        down = _cart(gateway, _basket(sku, store, customerId=member))
        order = _carry_out(sku, store, 2, customerId=member)
        placed = _place(gateway, order, key=TILL_KEY)

    # then the tier counted while up (this basket costs a member less and earns more) ...
    assert up["problems"] == []
    assert (up["total"], up["pointsToEarn"]) != (anonymous["total"], anonymous["pointsToEarn"])
    # ... and still counts while down: same total and points, with the problem saying why
    assert (down["total"], down["pointsToEarn"]) == (up["total"], up["pointsToEarn"])
    (problem,) = down["problems"]
    assert (problem["code"], problem["sku"]) == ("LOYALTY_UNAVAILABLE", None)
    assert problem["message"].startswith(
        "the loyalty system could not be reached: priced for tier GOLD, as last confirmed at "
    )
    # ... and the order is accepted on the same terms, its points to be earned later
    assert placed["userErrors"] == []
    accepted = placed["order"]
    assert (accepted["status"], accepted["customerId"]) == ("ACCEPTED", member)
    assert accepted["total"]["amount"] == up["total"]["amount"]
    assert accepted["pointsEarned"] == up["pointsToEarn"]


def test_a_member_never_seen_while_loyalty_is_down_gets_standard_prices_and_is_told(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given a GOLD member this gateway has never priced for, and the standard price of a basket
    member = _gold_members(truth)[-1]
    store = _store(truth)
    sku = _home_sku(gateway, truth, store)
    anonymous = _cart(gateway, _basket(sku, store))

    # when the loyalty system is down and the till prices the basket for the member
    with _loyalty_down(estate):
        down = _cart(gateway, _basket(sku, store, customerId=member))

    # then the basket costs the standard price and earns the base rate, and the cart says so
    assert (down["total"], down["pointsToEarn"]) == (anonymous["total"], anonymous["pointsToEarn"])
    assert down["problems"] == [
        {
            "code": "LOYALTY_UNAVAILABLE",
            "message": "the loyalty system could not be reached and no tier is known for this "
            "customer: standard prices and the base earn rate were used",
            "sku": None,
        }
    ]
