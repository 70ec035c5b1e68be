"""Customers: their own data through `me`, looked up by card only where the channel may."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from gateway.config import Settings
from gateway.security import CustomerTokens
from legacy.demo import DemoEstate
from tests.support import DEMO_CONFIG, GRAPHQL_KEYS, ServedGateway

ME = """{ me { id loyalty {
    points tier cardNumber pointsValue { amount currency } history { id points at } } } }"""


def _token(customer_id: str, issued_seconds_ago: float = 0) -> str:
    auth = Settings(gateway_config=DEMO_CONFIG).config().auth
    tokens = CustomerTokens(auth, clock=lambda: time.time() - issued_seconds_ago)
    return tokens.issue(customer_id)


def test_me_is_the_loyalty_account_of_the_token_customer(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    # (one that the adapter conformance tests, which earn and redeem, leave alone)
    customer = next(c for c in truth.customers[10:] if len(c.history) >= 2)

    body = gateway.graphql(ME, token=_token(customer.id)).json()

    me = body["data"]["me"]
    assert me["id"] == customer.id
    assert me["loyalty"]["points"] == customer.points
    assert me["loyalty"]["tier"] == customer.tier
    assert me["loyalty"]["cardNumber"] == customer.card_number
    assert Decimal(me["loyalty"]["pointsValue"]["amount"]) == Decimal(customer.points) / 100
    newest_first = sorted(customer.history, key=lambda entry: entry.at, reverse=True)
    assert [entry["id"] for entry in me["loyalty"]["history"]] == [e.entry_id for e in newest_first]


def test_me_without_a_token_is_null(gateway: ServedGateway) -> None:
    assert gateway.graphql(ME).json() == {"data": {"me": None}}


@pytest.mark.parametrize("token", ["not.a.jwt", "expired"])
def test_a_bad_or_expired_token_is_unauthenticated_not_a_server_error(
    gateway: ServedGateway, token: str
) -> None:
    bearer = _token("C0001", issued_seconds_ago=2 * 3600) if token == "expired" else token

    response = gateway.graphql(ME, token=bearer)

    assert response.status_code == 401
    assert response.json()["data"] is None
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("key", [None, "no-such-key"])
def test_no_key_or_an_unknown_key_is_401_with_a_graphql_error(
    gateway: ServedGateway, key: str | None
) -> None:
    import httpx

    headers = {} if key is None else {"X-Api-Key": key}
    response = httpx.post(
        f"{gateway.url}/graphql", json={"query": "{ me { id } }"}, headers=headers
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_API_KEY"


@pytest.mark.parametrize("key", GRAPHQL_KEYS)
def test_only_tills_and_the_call_centre_look_customers_up_by_card(
    gateway: ServedGateway, key: str
) -> None:
    body = gateway.graphql('{ customer(cardNumber: "LC0001") { id } }', key=key).json()

    if key in ("demo-pos", "demo-csr"):
        assert body == {"data": {"customer": {"id": "C0001"}}}
    else:
        assert body["data"] == {"customer": None}
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_no_node_id_reaches_another_customers_data(gateway: ServedGateway) -> None:
    from strawberry.relay import GlobalID

    for type_name in ("Customer", "Loyalty", "LoyaltyEntry"):
        node_id = str(GlobalID(type_name, "C0002"))
        body = gateway.graphql(
            "query($id: ID!) { node(id: $id) { id } }", {"id": node_id}, token=_token("C0001")
        ).json()

        assert body["data"] in (None, {"node": None})
        assert "C0002" not in str(body.get("data"))
