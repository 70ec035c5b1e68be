"""The scopes matrix of docs/security.md, every cell: each channel, each operation, with and
without a customer token, allowed or FORBIDDEN; and no customer ever reads another's data."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.config import Settings
from gateway.security import CustomerTokens
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.support import DEMO_CONFIG, ServedGateway, serve_gateway

CHANNELS = ("web", "mobile", "kiosk", "pos", "csr", "partner")
EVERY = frozenset(CHANNELS)
STAFF = frozenset({"pos", "csr"})
NO_SKU = "000000000"

# operation -> the channels it is allowed on, with or without a customer token.
MATRIX: dict[str, frozenset[str]] = {
    "products": EVERY,
    "stores": EVERY,
    "cart": EVERY,
    "me": EVERY,
    "customer": STAFF,
    "cartForAnotherCustomer": STAFF,
    "sourcingPlan": EVERY - {"partner"},
    "placeOrder": EVERY - {"partner"},
    "placeOrderForAnotherCustomer": STAFF,
    "cancelOrder": EVERY - {"partner"},
    "returnOrderLines": EVERY - {"partner"},
    "issuePersonalOffer": frozenset({"csr"}),
    "attributedSales": STAFF,
}


def token(customer_id: str) -> str:
    return CustomerTokens(Settings(gateway_config=DEMO_CONFIG).config().auth).issue(customer_id)


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway of its own: the cells place (empty) orders and issue offers."""
    served = serve_gateway(estate, pg_databases())
    yield served
    served.stop()


def operations(truth: DemoEstate, store_id: str) -> dict[str, tuple[str, dict[str, object]]]:
    sku = truth.products[0].variants[0].sku
    store = next(loc.code for loc in truth.locations if "CARRY_OUT" in loc.capabilities)
    lines = [{"sku": sku, "quantity": 1}]

    def order(**more: object) -> dict[str, object]:
        return {
            "idempotencyKey": uuid.uuid4().hex,
            "fulfillment": "CARRY_OUT",
            "storeId": store,
            "lines": [{"sku": NO_SKU, "quantity": 1}],
            **more,
        }

    place = "mutation($o: PlaceOrderInput!) { placeOrder(input: $o) { userErrors { code } } }"
    cart = "query($c: CartInput!) { cart(input: $c) { __typename } }"
    offer = {
        "customerId": "C0099",
        "title": "scopes",
        "percentOff": "5",
        "validUntil": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    return {
        "products": ("{ products(first: 1) { totalCount } }", {}),
        "stores": ("{ stores(first: 1) { id } }", {}),
        "cart": (cart, {"c": {"lines": lines}}),
        "me": ("{ me { id } }", {}),
        "customer": ('{ customer(cardNumber: "LC0001") { id } }', {}),
        "cartForAnotherCustomer": (cart, {"c": {"lines": lines, "customerId": "C0001"}}),
        "sourcingPlan": (
            "query($o: PlaceOrderInput!) { sourcingPlan(input: $o) { __typename } }",
            {"o": {**order(), "lines": lines}},
        ),
        "placeOrder": (place, {"o": order()}),
        "placeOrderForAnotherCustomer": (place, {"o": order(customerId="C0001")}),
        "cancelOrder": ('mutation { cancelOrder(orderId: "none") { userErrors { code } } }', {}),
        "returnOrderLines": (
            'mutation($l: [OrderLineInput!]!, $s: ID!) { returnOrderLines(orderId: "none", '
            "lines: $l, storeId: $s) { userErrors { code } } }",
            {"l": lines, "s": store},
        ),
        "issuePersonalOffer": (
            "mutation($i: IssuePersonalOfferInput!) { issuePersonalOffer(input: $i) "
            "{ userErrors { code } } }",
            {"i": offer},
        ),
        "attributedSales": (
            "query($id: ID!, $from: DateTime!, $to: DateTime!) { node(id: $id) { ... on Store "
            "{ attributedSales(from: $from, to: $to) { orders } } } }",
            {"id": store_id, "from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        ),
    }


@pytest.fixture(scope="module")
def store_id(gateway: ServedGateway) -> str:
    found: str = gateway.graphql("{ stores(first: 1) { id } }").json()["data"]["stores"][0]["id"]
    return found


@pytest.mark.parametrize("customer", [False, True], ids=["anonymous", "customer"])
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("operation", list(MATRIX))
def test_every_cell_of_the_scopes_matrix(
    gateway: ServedGateway,
    truth: DemoEstate,
    store_id: str,
    operation: str,
    channel: str,
    customer: bool,
) -> None:
    # given a customer of this channel's own (so no rate limit is shared between cells)
    query, variables = operations(truth, store_id)[operation]
    customer_token = token(f"C0{100 + CHANNELS.index(channel)}") if customer else None
    # when
    body = gateway.graphql(query, variables, key=f"demo-{channel}", token=customer_token).json()
    # then
    codes = [error["extensions"]["code"] for error in body.get("errors", [])]
    if channel in MATRIX[operation]:
        assert codes == [], body
    else:
        assert codes == ["FORBIDDEN"], body


# --------------------------------------------------------------------------- whose data


@pytest.fixture(scope="module")
def placed_order(gateway: ServedGateway, truth: DemoEstate) -> str:
    """An order of C0201, placed on the web, of a unit some store has."""
    for product in truth.products:
        for variant in product.variants:
            order = {
                "idempotencyKey": uuid.uuid4().hex,
                "fulfillment": "SHIP_TO_HOME",
                "destination": {"lat": 48.137, "lon": 11.575, "postalCode": "80331"},
                "lines": [{"sku": variant.sku, "quantity": 1}],
            }
            body = gateway.graphql(
                "mutation($o: PlaceOrderInput!) { placeOrder(input: $o) { order { id } } }",
                {"o": order},
                token=token("C0201"),
            ).json()
            placed = body["data"]["placeOrder"]["order"]
            if placed is not None:
                found: str = placed["id"]
                return found
    raise AssertionError("no SKU could be ordered")


ORDER = "query($id: ID!) { order(id: $id) { id customerId } }"


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_customer_reads_their_own_order_on_any_channel(
    gateway: ServedGateway, placed_order: str, channel: str
) -> None:
    body = gateway.graphql(
        ORDER, {"id": placed_order}, key=f"demo-{channel}", token=token("C0201")
    ).json()

    assert body == {"data": {"order": {"id": placed_order, "customerId": "C0201"}}}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("customer", [None, "C0202"], ids=["anonymous", "another_customer"])
def test_nobody_else_reads_a_customers_order_but_the_staff(
    gateway: ServedGateway, placed_order: str, channel: str, customer: str | None
) -> None:
    reader = None if customer is None else token(customer)

    body = gateway.graphql(ORDER, {"id": placed_order}, key=f"demo-{channel}", token=reader).json()

    seen = body["data"]["order"]
    assert (seen is not None) == (channel in STAFF), body


def test_another_customer_cannot_cancel_an_order(gateway: ServedGateway, placed_order: str) -> None:
    cancel = "mutation($id: ID!) { cancelOrder(orderId: $id) { userErrors { code } } }"

    body = gateway.graphql(cancel, {"id": placed_order}, token=token("C0202")).json()
    still = gateway.graphql(ORDER, {"id": placed_order}, token=token("C0201")).json()

    assert body["data"]["cancelOrder"]["userErrors"] == [{"code": "NOT_FOUND"}]
    assert still["data"]["order"]["id"] == placed_order


@pytest.mark.parametrize("channel", CHANNELS)
def test_me_is_the_tokens_customer_and_nobody_without_one(
    gateway: ServedGateway, channel: str
) -> None:
    mine = gateway.graphql("{ me { id } }", key=f"demo-{channel}", token=token("C0203")).json()
    nobody = gateway.graphql("{ me { id } }", key=f"demo-{channel}").json()

    assert mine == {"data": {"me": {"id": "C0203"}}}
    assert nobody == {"data": {"me": None}}
