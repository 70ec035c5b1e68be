"""The cart over real HTTP: the promotions engine on live prices, the same for every channel."""

from __future__ import annotations

from decimal import Decimal

from gateway.promotions import ProblemCode
from legacy.demo import DemoEstate
from resolvers.cart import CartProblemCode
from tests.support import GRAPHQL_KEYS, ServedGateway

CART = """query($input: CartInput!) { cart(input: $input) {
    lines { sku quantity unitPrice { amount } lineTotal { amount }
            discounts { amount { amount } promotionId } }
    appliedPromotions { id explanation discount { amount currency } }
    subtotal { amount } discountTotal { amount } total { amount currency }
    pointsToEarn pointsRedeemed amountDue { amount } problems { code sku } } }"""


def _socks(truth: DemoEstate) -> tuple[str, Decimal]:
    """Socks that only the 3-for-2 applies to (not the brands or SKUs of other rules)."""
    first_socks = next(p for p in truth.products if p.category == "apparel/socks")
    other_brands = {truth.products[0].brand, truth.products[1].brand}
    product = next(
        p
        for p in truth.products
        if p.category == "apparel/socks" and p is not first_socks and p.brand not in other_brands
    )
    return product.variants[0].sku, product.variants[0].base_price


def _cart(gateway: ServedGateway, cart: dict[str, object], key: str = "demo-web") -> dict:  # type: ignore[type-arg]
    body = gateway.graphql(CART, {"input": cart}, key=key).json()
    assert "errors" not in body, body
    return body["data"]["cart"]  # type: ignore[no-any-return]


def test_three_socks_cost_two_worked_out_by_hand(gateway: ServedGateway, truth: DemoEstate) -> None:
    sku, price = _socks(truth)

    cart = _cart(gateway, {"lines": [{"sku": sku, "quantity": 3}]})

    assert Decimal(cart["subtotal"]["amount"]) == 3 * price
    assert Decimal(cart["discountTotal"]["amount"]) == price
    assert Decimal(cart["total"]["amount"]) == 2 * price
    assert [a["id"] for a in cart["appliedPromotions"]] == ["PR008"]
    assert cart["appliedPromotions"][0]["explanation"] == f"3 for 2 on socks: -{price}"
    assert cart["pointsToEarn"] == int(2 * price)  # 1 point per whole euro, no tier


def test_every_channel_gets_the_same_cart(gateway: ServedGateway, truth: DemoEstate) -> None:
    sku, _ = _socks(truth)
    basket = {
        "lines": [
            {"sku": sku, "quantity": 4},
            {"sku": truth.products[5].variants[0].sku, "quantity": 2},
        ],
        "couponCodes": ["WELCOME10"],
    }

    answers = {
        key: gateway.graphql(CART, {"input": basket}, key=key).content for key in GRAPHQL_KEYS
    }

    assert len(set(answers.values())) == 1


def test_unknown_skus_and_bad_coupons_are_problems_not_failures(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    sku, price = _socks(truth)
    basket = {
        "lines": [{"sku": sku, "quantity": 1}, {"sku": "999999999", "quantity": 1}],
        "couponCodes": ["NO-SUCH-CODE"],
        "redeemPoints": 100,
    }

    cart = _cart(gateway, basket)

    assert [line["sku"] for line in cart["lines"]] == [sku]
    assert Decimal(cart["total"]["amount"]) == price
    assert {(p["code"], p["sku"]) for p in cart["problems"]} == {
        ("UNKNOWN_SKU", "999999999"),
        ("UNKNOWN_COUPON", None),
        ("POINTS_NOT_ACCEPTED", None),  # no customer, so no points to spend
    }
    assert cart["pointsRedeemed"] == 0


def test_the_graph_names_every_problem_code_of_the_engine() -> None:
    assert {code.value for code in CartProblemCode} == {code.value for code in ProblemCode}


def test_a_bad_cart_is_a_validation_error(gateway: ServedGateway) -> None:
    body = gateway.graphql(CART, {"input": {"lines": [{"sku": "1", "quantity": 0}]}}).json()

    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
