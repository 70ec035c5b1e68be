"""Limits before work, GraphQL over HTTP status codes and strings checked at the edge, against
the gateway served over real HTTP in front of the running estate."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from legacy.demo import DemoEstate
from tests.support import LISTING, MARIENPLATZ, ServedGateway

GRAPHQL_RESPONSE = "application/graphql-response+json"
WEB = {"X-Api-Key": "demo-web"}


def post(
    gateway: ServedGateway,
    body: object,
    accept: str | None = None,
    key: str = "demo-web",
) -> httpx.Response:
    headers = {"X-Api-Key": key, **({"Accept": accept} if accept else {})}
    return httpx.post(f"{gateway.url}/graphql", json=body, headers=headers, timeout=30)


def refusal_code(response: httpx.Response) -> str:
    errors = response.json()["errors"]
    assert len(errors) == 1
    code: str = errors[0]["extensions"]["code"]
    return code


# --------------------------------------------------------------------------- limits


def test_a_body_over_the_cap_is_refused_with_413_unread(gateway: ServedGateway) -> None:
    # given a 1 MB document, sent with its length and then chunked (no length)
    document = "{ " + " ".join(f"a{i}: __typename" for i in range(60_000)) + " }"
    body = httpx.Request("POST", "/", json={"query": document}).content
    assert len(body) > 1_000_000

    def chunks() -> object:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    # when
    declared = httpx.post(
        f"{gateway.url}/graphql",
        content=body,
        headers={**WEB, "Content-Type": "application/json"},
    )
    streamed = httpx.post(
        f"{gateway.url}/graphql",
        content=chunks(),  # type: ignore[arg-type]
        headers={**WEB, "Content-Type": "application/json"},
    )
    # then
    for response in (declared, streamed):
        assert response.status_code == 413
        assert refusal_code(response) == "BODY_TOO_LARGE"


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ " + "__typename " * 20_000 + "}", "DOCUMENT_TOO_LARGE"),
        ("{ " + "__typename " * 600 + "}", "TOO_MANY_TOKENS"),
        ("{ " + "products { " * 13 + "}" * 14, "QUERY_TOO_DEEP"),
        ("{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }", "TOO_MANY_ALIASES"),
        ("{ " + "__typename " * 6 + "}", "FIELD_REPEATED"),
        ("{ __typename " + "@include(if: true) " * 21 + "}", "TOO_MANY_DIRECTIVES"),
        (
            "{ products(first: 100) { edges { node { variants { "
            "availability(first: 100) { available } } } } } }",
            "QUERY_TOO_COSTLY",
        ),
    ],
)
def test_a_document_over_a_limit_is_refused_with_400_and_its_code(
    gateway: ServedGateway, document: str, code: str
) -> None:
    response = post(gateway, {"query": document})

    assert response.status_code == 400
    assert refusal_code(response) == code


def test_the_cost_budget_is_the_channels(gateway: ServedGateway) -> None:
    # given a listing of 40 products with 10 stores for each variant
    variables = {"first": 40, "near": MARIENPLATZ}
    # when
    web = post(gateway, {"query": LISTING, "variables": variables})
    partner = post(gateway, {"query": LISTING, "variables": variables}, key="demo-partner")
    # then
    assert web.status_code == 200
    assert web.json()["data"]["products"]["totalCount"] > 0
    assert partner.status_code == 400
    assert refusal_code(partner) == "QUERY_TOO_COSTLY"


def test_introspection_answers_only_where_the_channel_allows_it(gateway: ServedGateway) -> None:
    query = {"query": "{ __schema { queryType { name } } }"}

    partner = post(gateway, query, key="demo-partner")
    pos = post(gateway, query, key="demo-pos")

    assert partner.json()["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    assert pos.status_code == 400
    assert refusal_code(pos) == "INTROSPECTION_DISABLED"


# --------------------------------------------------------------------------- GraphQL over HTTP


def test_the_graphql_response_type_is_answered_when_accepted(gateway: ServedGateway) -> None:
    response = post(gateway, {"query": "{ __typename }"}, accept=GRAPHQL_RESPONSE)

    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{ products { "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
        (
            {"query": "query($n: Int!) { products(first: $n) { totalCount } }"},
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ],
)
def test_a_request_error_is_400_without_data_in_the_graphql_type_and_200_in_plain_json(
    gateway: ServedGateway, body: dict[str, object], code: str
) -> None:
    strict = post(gateway, body, accept=GRAPHQL_RESPONSE)
    legacy = post(gateway, body, accept="application/json")

    assert strict.status_code == 400
    assert strict.headers["content-type"] == GRAPHQL_RESPONSE
    assert "data" not in strict.json()
    assert refusal_code(strict) == code
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json()["data"] is None
    assert refusal_code(legacy) == code


def test_an_error_in_a_field_keeps_200_and_the_data(gateway: ServedGateway) -> None:
    response = post(
        gateway,
        {"query": '{ __typename customer(cardNumber: "LC0001") { id } }'},
        accept=GRAPHQL_RESPONSE,
    )

    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query", "customer": None}
    assert refusal_code(response) == "FORBIDDEN"


def test_a_mutation_over_get_is_405(gateway: ServedGateway) -> None:
    response = httpx.get(
        f"{gateway.url}/graphql",
        params={"query": 'mutation { cancelOrder(orderId: "x") { userErrors { code } } }'},
        headers=WEB,
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert refusal_code(response) == "METHOD_NOT_ALLOWED"


def test_a_query_over_get_runs(gateway: ServedGateway) -> None:
    response = httpx.get(f"{gateway.url}/graphql", params={"query": "{ __typename }"}, headers=WEB)

    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_type_a_page_can_send_cross_site_unasked_is_415(
    gateway: ServedGateway, content_type: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/graphql",
        content=b'{"query": "{ __typename }"}',
        headers={**WEB, "Content-Type": content_type},
    )

    assert response.status_code == 415
    assert refusal_code(response) == "UNSUPPORTED_MEDIA_TYPE"


# --------------------------------------------------------------------------- strings


ORDER = "query($id: ID!) { order(id: $id) { id } }"
CANCEL = "mutation($id: ID!) { cancelOrder(orderId: $id) { userErrors { code } } }"
PLACE = """mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) { order { id } userErrors { code } } }"""


def place_input(sku: str, key: str = "key-1") -> dict[str, object]:
    return {
        "idempotencyKey": key,
        "fulfillment": "CARRY_OUT",
        "storeId": "0001",
        "lines": [{"sku": sku, "quantity": 1}],
    }


@pytest.mark.parametrize(
    ("query", "variables", "where"),
    [
        (ORDER, {"id": "ord\u0000er"}, "$id"),
        (CANCEL, {"id": "x\u0007"}, "$id"),
        (PLACE, {"input": place_input("1000\u0000")}, "$input.lines[0].sku"),
        (PLACE, {"input": place_input("100000010", key="k\u001b[2J")}, "$input.idempotencyKey"),
        (PLACE, {"input": place_input("100000010", key="k" * 2001)}, "$input.idempotencyKey"),
    ],
)
def test_a_control_character_or_an_overlong_string_is_a_user_error_logged_in_one_line(
    gateway: ServedGateway,
    caplog: pytest.LogCaptureFixture,
    query: str,
    variables: dict[str, object],
    where: str,
) -> None:
    # given
    caplog.set_level(logging.INFO)
    body = json.dumps({"query": query, "variables": variables}).encode()  # escapes all but ASCII
    # when
    response = httpx.post(
        f"{gateway.url}/graphql",
        content=body,
        headers={**WEB, "Content-Type": "application/json", "Accept": GRAPHQL_RESPONSE},
    )
    # then
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "variable": where}
    gateway_records = [record for record in caplog.records if record.name.startswith("gateway")]
    assert len(gateway_records) == 1
    assert gateway_records[0].exc_info is None
    assert "\n" not in gateway_records[0].getMessage()


def test_a_lone_surrogate_no_database_could_store_is_a_bad_request(
    gateway: ServedGateway,
) -> None:
    body = json.dumps({"query": PLACE, "variables": {"input": place_input("\ud800")}})

    response = httpx.post(
        f"{gateway.url}/graphql",
        content=body.encode(),
        headers={**WEB, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert refusal_code(response) == "BAD_REQUEST"


def test_a_control_character_in_a_literal_is_refused_where_it_is(gateway: ServedGateway) -> None:
    response = post(gateway, {"query": '{ order(id: "a\\u0000b") { id } }'})

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["locations"] == [{"line": 1, "column": 13}]


def test_ordinary_text_with_tabs_and_accents_passes(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    response = post(gateway, {"query": ORDER, "variables": {"id": "Bestellung\tMünchen ✓"}})

    assert response.status_code == 200
    assert response.json() == {"data": {"order": None}}
