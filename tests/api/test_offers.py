"""Personal offers: the call centre issues one, and every channel's cart then applies it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.config import Settings
from gateway.security import CustomerTokens
from legacy.demo import DemoEstate
from tests.api.test_cart import CART, _socks
from tests.support import DEMO_CONFIG, GRAPHQL_KEYS, ServedGateway

ISSUE = """mutation($input: IssuePersonalOfferInput!) { issuePersonalOffer(input: $input) {
    offer { id customerId title percentOff amountOff { amount currency } skus categories
            issuedByChannel validUntil }
    userErrors { code message field } } }"""

OFFERS_BY_CARD = """query($card: String!) { customer(cardNumber: $card) {
    personalOffers { id title } } }"""

VARIANT_PROMOTIONS = """query($sku: String!) { product(sku: $sku) { variants { sku
    promotions { id title kind minQuantity discount { amount currency } explanation } } } }"""


def _token(customer_id: str) -> str:
    auth = Settings(gateway_config=DEMO_CONFIG).config().auth
    return CustomerTokens(auth, clock=time.time).issue(customer_id)


def _offer(customer_id: str, **changes: object) -> dict[str, object]:
    offer: dict[str, object] = {
        "customerId": customer_id,
        "title": "Sorry for the wait",
        "percentOff": "20",
        "validUntil": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    }
    offer.update(changes)
    return offer


def _issue(gateway: ServedGateway, offer: dict[str, object], key: str = "demo-csr") -> dict:  # type: ignore[type-arg]
    return gateway.graphql(ISSUE, {"input": offer}, key=key).json()  # type: ignore[no-any-return]


def _cart(gateway: ServedGateway, sku: str, customer_id: str, key: str) -> dict:  # type: ignore[type-arg]
    basket = {"lines": [{"sku": sku, "quantity": 1}]}
    body = gateway.graphql(CART, {"input": basket}, key=key, token=_token(customer_id)).json()
    assert "errors" not in body, body
    return body["data"]["cart"]  # type: ignore[no-any-return]


def test_an_offer_the_call_centre_issues_applies_on_every_channel(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    sku, price = _socks(truth)
    before = _cart(gateway, sku, "C0011", "demo-web")
    assert before["discountTotal"]["amount"] == "0.00"

    issued = _issue(gateway, _offer("C0011", skus=[sku]))["data"]["issuePersonalOffer"]
    carts = {key: _cart(gateway, sku, "C0011", key) for key in GRAPHQL_KEYS}

    assert issued["userErrors"] == []
    offer = issued["offer"]
    assert offer["id"].startswith("PO-")
    assert (offer["customerId"], offer["issuedByChannel"], offer["skus"]) == (
        "C0011",
        "csr",
        [sku],
    )
    expected = (price * Decimal("0.20")).quantize(Decimal("0.01"))
    for cart in carts.values():
        assert [a["id"] for a in cart["appliedPromotions"]] == [offer["id"]]
        assert Decimal(cart["discountTotal"]["amount"]) == expected
        assert Decimal(cart["total"]["amount"]) == price - expected
    assert len({repr(cart) for cart in carts.values()}) == 1


def test_an_offer_is_the_customers_alone(gateway: ServedGateway, truth: DemoEstate) -> None:
    sku, _ = _socks(truth)
    issued = _issue(gateway, _offer("C0012", skus=[sku]))["data"]["issuePersonalOffer"]

    someone_else = _cart(gateway, sku, "C0013", "demo-web")
    anonymous = gateway.graphql(CART, {"input": {"lines": [{"sku": sku, "quantity": 1}]}}).json()

    assert issued["offer"] is not None
    assert someone_else["appliedPromotions"] == []
    assert anonymous["data"]["cart"]["appliedPromotions"] == []


def test_only_the_call_centre_may_issue_offers(gateway: ServedGateway) -> None:
    refusals = {
        key: _issue(gateway, _offer("C0014", title=f"from {key}"), key=key)
        for key in GRAPHQL_KEYS
        if key != "demo-csr"
    }

    for key, body in refusals.items():
        assert body["data"] is None, key
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", key
    listed = gateway.graphql(OFFERS_BY_CARD, {"card": "LC0014"}, key="demo-csr").json()
    assert listed["data"]["customer"]["personalOffers"] == []


def test_a_bad_offer_is_a_user_error_naming_the_field(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    cases = {
        "percentOff": _offer("C0015", amountOff="5.00"),
        "validUntil": _offer("C0015", validUntil=past),
        "title": _offer("C0015", title="   "),
        "customerId": _offer("C9999"),
        "skus": _offer("C0015", skus=["NO-SUCH-SKU"]),
    }

    answers = {
        field: _issue(gateway, offer)["data"]["issuePersonalOffer"]
        for field, offer in cases.items()
    }

    for field, answer in answers.items():
        assert answer["offer"] is None, field
        (error,) = answer["userErrors"]
        assert error["field"] == field, error
    assert answers["customerId"]["userErrors"][0]["code"] == "UNKNOWN_CUSTOMER"
    assert answers["skus"]["userErrors"][0]["code"] == "UNKNOWN_SKU"
    listed = gateway.graphql(OFFERS_BY_CARD, {"card": "LC0015"}, key="demo-csr").json()
    assert listed["data"]["customer"]["personalOffers"] == []


def test_a_variant_lists_its_own_promotions_with_what_they_save(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    sku, price = _socks(truth)

    body = gateway.graphql(VARIANT_PROMOTIONS, {"sku": sku}).json()

    (variant,) = [v for v in body["data"]["product"]["variants"] if v["sku"] == sku]
    (three_for_two,) = [p for p in variant["promotions"] if p["id"] == "PR008"]
    assert three_for_two["kind"] == "MULTI_BUY"
    assert three_for_two["minQuantity"] == 3
    assert Decimal(three_for_two["discount"]["amount"]) == price
    assert three_for_two["explanation"] == f"3 for 2 on socks: -{price}"


def test_a_variant_shows_the_token_customers_personal_offer(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    sku, _ = _socks(truth)
    offer = _issue(gateway, _offer("C0016", skus=[sku], percentOff=None, amountOff="1.50"))
    offer_id = offer["data"]["issuePersonalOffer"]["offer"]["id"]

    mine = gateway.graphql(VARIANT_PROMOTIONS, {"sku": sku}, token=_token("C0016")).json()
    anyone = gateway.graphql(VARIANT_PROMOTIONS, {"sku": sku}).json()

    def ids(body: dict) -> set[str]:  # type: ignore[type-arg]
        (variant,) = [v for v in body["data"]["product"]["variants"] if v["sku"] == sku]
        return {p["id"] for p in variant["promotions"]}

    # (C0016's tier may unlock tier rules too; the offer is what only C0016 sees.)
    assert offer_id in ids(mine)
    assert offer_id not in ids(anyone)
    (personal,) = [
        p
        for v in mine["data"]["product"]["variants"]
        if v["sku"] == sku
        for p in v["promotions"]
        if p["id"] == offer_id
    ]
    assert (personal["minQuantity"], personal["discount"]["amount"]) == (1, "1.50")
    assert personal["explanation"] == "Sorry for the wait: -1.50"
