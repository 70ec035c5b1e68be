"""The read graph over real HTTP, in front of the running simulated estate."""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
import pytest

from gateway.ledger import DISTRIBUTION_CENTRE_SAFETY_STOCK, STORE_SAFETY_STOCK
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.support import GRAPHQL_KEYS, LISTING, MARIENPLATZ, ServedGateway, reset_estate

FEED_OPERATIONS = frozenset({"getChanges", "GetPriceChanges"})


def _stats(estate: RunningEstate, system: str) -> dict[str, int]:
    """The calls ``system`` served, less its change feed (the followers read it all along)."""
    calls: dict[str, int] = httpx.get(f"{estate.urls[system]}/_sim/stats").json()["calls"]
    return {name: count for name, count in calls.items() if name not in FEED_OPERATIONS}


def _erp_queries(gateway: ServedGateway) -> float:
    name = "gateway_backend_requests_total"
    return sum(
        gateway.metric(name, backend="erp", operation=operation)
        for operation in ("stock_levels", "locations", "stock_changes")
    )


def _listing(gateway: ServedGateway, first: int, key: str = "demo-web") -> httpx.Response:
    response = gateway.graphql(LISTING, {"first": first, "near": MARIENPLATZ}, key=key)
    assert response.status_code == 200
    assert "errors" not in response.json()
    return response


@pytest.mark.parametrize("first", [24, 48])
def test_a_cold_listing_costs_one_pim_call_a_pricing_call_per_50_skus_and_no_erp_query(
    cold_gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate, first: int
) -> None:
    # given a gateway that has just started (directory, assortments and stock ledger loaded)
    gateway = cold_gateway
    reset_estate(estate)
    stock_reads = "gateway_backend_requests_total"
    erp_before = gateway.metric(stock_reads, backend="erp", operation="stock_levels")

    # when
    data = _listing(gateway, first).json()["data"]

    # then
    skus = sum(len(edge["node"]["variants"]) for edge in data["products"]["edges"])
    assert skus == sum(len(p.variants) for p in truth.products[:first])
    assert _stats(estate, "pim") == {"listProducts": 1}
    assert _stats(estate, "pricing") == {"GetPrices": math.ceil(skus / 50)}
    # availability comes from the gateway's own ledger, which the ERP's change feed keeps
    assert gateway.metric(stock_reads, backend="erp", operation="stock_levels") == erp_before


def test_a_listing_shows_the_ground_truth(gateway: ServedGateway, truth: DemoEstate) -> None:
    data = _listing(gateway, 24).json()["data"]["products"]

    assert data["totalCount"] == len(truth.products)
    first = data["edges"][0]["node"]
    product = truth.products[0]
    assert first["code"] == product.code
    assert first["name"] == product.name_en
    assert [v["sku"] for v in first["variants"]] == [v.sku for v in product.variants]
    for shown, variant in zip(first["variants"], product.variants, strict=True):
        assert Decimal(shown["price"]["current"]["amount"]) == variant.base_price
        distances = [stock["distanceKm"] for stock in shown["availability"]]
        assert distances == sorted(distances)
        assert len(distances) <= 5


def test_every_channel_gets_byte_identical_data(gateway: ServedGateway) -> None:
    bodies = {key: _listing(gateway, 24, key=key).content for key in GRAPHQL_KEYS}

    assert len(set(bodies.values())) == 1


def test_availability_never_shows_a_store_that_does_not_range_the_variant(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    # given a unit the ERP holds in a store whose assortment does not include it
    products = {v.sku: p for p in truth.products for v in p.variants}
    locations = {location.code: location for location in truth.locations}
    stray = next(
        row
        for row in truth.stock_rows()
        if row.on_hand > 0 and not truth.ranged(products[row.sku], locations[row.location_code])
    )
    query = """query($sku: String!, $store: ID!) { product(sku: $sku) { variants {
        sku availability(storeIds: [$store]) { store { code } available } totalAvailable } } }"""

    # when
    data = gateway.graphql(query, {"sku": stray.sku, "store": stray.location_code}).json()["data"]

    # then
    variant = next(v for v in data["product"]["variants"] if v["sku"] == stray.sku)
    assert variant["availability"] == []

    def safety(code: str) -> int:  # the ledger keeps a store's last unit back
        store = locations[code].kind == "STORE"
        return STORE_SAFETY_STOCK if store else DISTRIBUTION_CENTRE_SAFETY_STOCK

    ranged_units = sum(
        max(0, row.on_hand - safety(row.location_code))
        for row in truth.stock_rows()
        if row.sku == stray.sku and truth.ranged(products[row.sku], locations[row.location_code])
    )
    assert variant["totalAvailable"] == ranged_units


def test_a_price_follows_the_zone_of_the_store_asked_about(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    city = next(location for location in truth.locations if location.price_zone == "CITY")
    sku, override = next(iter(truth.zone_overrides["CITY"].items()))
    query = """query($id: ID!, $store: ID!) { node(id: $id) { ... on Variant {
        base: price { current { amount } zone }
        local: price(storeId: $store) { current { amount } zone } } } }"""
    variant_id = _global_id("Variant", sku)

    data = gateway.graphql(query, {"id": variant_id, "store": city.code}).json()["data"]["node"]

    assert Decimal(data["local"]["current"]["amount"]) == override
    assert data["local"]["zone"] == "CITY"
    assert data["base"]["zone"] == "BASE"


def test_node_resolves_products_variants_and_stores_by_global_id(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    product, store = truth.products[3], truth.locations[2]
    query = """query($p: ID!, $v: ID!, $s: ID!) {
        p: node(id: $p) { id ... on Product { code } }
        v: node(id: $v) { id ... on Variant { sku product { code } } }
        s: node(id: $s) { id ... on Store { code name kind } } }"""
    ids = {
        "p": _global_id("Product", product.code),
        "v": _global_id("Variant", product.variants[1].sku),
        "s": _global_id("Store", store.code),
    }

    data = gateway.graphql(query, ids).json()["data"]

    assert data["p"] == {"id": ids["p"], "code": product.code}
    assert data["v"] == {
        "id": ids["v"], "sku": product.variants[1].sku, "product": {"code": product.code}
    }  # fmt: skip
    assert data["s"] == {"id": ids["s"], "code": store.code, "name": store.name, "kind": "STORE"}


def test_stores_are_sorted_by_distance_and_filtered_by_capability(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    query = """{ stores(near: {lat: 48.1374, lon: 11.5755}, radiusKm: 50, capability: DELIVERY) {
        code distanceKm capabilities openingHours { weekday opens closes } } }"""

    stores = gateway.graphql(query).json()["data"]["stores"]

    delivering = {loc.code for loc in truth.locations if "DELIVERY" in loc.capabilities}
    assert {store["code"] for store in stores} <= delivering
    assert stores
    assert [s["distanceKm"] for s in stores] == sorted(s["distanceKm"] for s in stores)
    assert all("DELIVERY" in store["capabilities"] for store in stores)
    assert stores[0]["openingHours"][0]["weekday"] == 1


def test_an_unknown_sku_is_null_without_an_error(gateway: ServedGateway) -> None:
    body = gateway.graphql('{ product(sku: "999999999") { code } }').json()

    assert body == {"data": {"product": None}}


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ products(first: 0) { totalCount } }", "BAD_USER_INPUT"),
        ('{ products(after: "nonsense") { totalCount } }', "BAD_USER_INPUT"),
        ('{ products(first: "x") { totalCount } }', "GRAPHQL_VALIDATION_FAILED"),
        ('{ stores(near: {lat: 99, lon: 0}) { code } }', "BAD_USER_INPUT"),
        ('{ product(sku: "100000010") { variants { price(storeId: "7777") { zone } } } }',
         "UNKNOWN_STORE"),
    ],
)  # fmt: skip
def test_a_bad_argument_is_a_validation_error_with_a_code(
    gateway: ServedGateway, query: str, code: str
) -> None:
    errors = gateway.graphql(query).json()["errors"]

    # One error per field at fault (each variant's price names the unknown store).
    assert errors
    assert {error["extensions"]["code"] for error in errors} == {code}


def test_a_backend_outage_is_reported_without_internals(
    cold_gateway: ServedGateway, estate: RunningEstate
) -> None:
    gateway = cold_gateway
    httpx.post(f"{estate.urls['pricing']}/_sim/knobs", json={"outage": True}).raise_for_status()

    body = gateway.graphql('{ product(sku: "100000010") { code variants { price { zone } } } }')

    # The product is still there; nothing was read before, so no price can be shown, and one
    # error names the engine and every field it left empty.
    answer = body.json()
    variants = answer["data"]["product"]["variants"]
    assert answer["data"]["product"]["code"]
    assert variants
    assert all(variant["price"] is None for variant in variants)
    (error,) = answer["errors"]
    assert error["message"] == "pricing is unavailable"
    assert error["extensions"]["code"] in {"BACKEND_UNAVAILABLE", "CIRCUIT_OPEN"}
    assert error["extensions"]["backend"] == "pricing"
    assert error["extensions"]["paths"] == [
        ["product", "variants", index, "price"] for index in range(len(variants))
    ]
    assert error["extensions"]["stale"] == 0
    assert "Traceback" not in body.text
    assert "PricingService" not in body.text


def _global_id(type_name: str, node_id: str) -> str:
    from strawberry.relay import GlobalID

    return str(GlobalID(type_name, node_id))


def test_graphiql_is_served_to_a_browser_and_queries_also_work_over_get(
    gateway: ServedGateway,
) -> None:
    page = httpx.get(f"{gateway.url}/graphql", headers={"Accept": "text/html"})
    answer = httpx.get(
        f"{gateway.url}/graphql",
        params={"query": "{ products(first: 1) { totalCount } }"},
        headers={"X-Api-Key": "demo-partner"},
    )

    assert page.status_code == 200
    assert "GraphiQL" in page.text
    assert answer.json() == {"data": {"products": {"totalCount": 60}}}


def test_filters_search_and_cursors_page_through_the_assortment(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    query = """query($after: String, $category: String, $search: String) {
        products(first: 5, after: $after, filter: {category: $category}, search: $search) {
            totalCount pageInfo { hasNextPage endCursor } edges { node { code categories } } } }"""
    footwear = [p.code for p in truth.products if p.category.startswith("footwear")]
    seen: list[str] = []
    after = None
    while True:
        page = gateway.graphql(query, {"after": after, "category": "footwear"}).json()["data"]
        seen += [edge["node"]["code"] for edge in page["products"]["edges"]]
        if not page["products"]["pageInfo"]["hasNextPage"]:
            break
        after = page["products"]["pageInfo"]["endCursor"]
    brand = truth.products[0].brand
    searched = gateway.graphql(query, {"search": brand}).json()["data"]["products"]

    assert seen == footwear
    assert searched["totalCount"] == sum(1 for p in truth.products if brand in p.name_en)


def test_operations_are_counted_by_name_and_channel(gateway: ServedGateway) -> None:
    name = "gateway_graphql_requests_total"
    labels = {"operation": "Listing", "channel": "kiosk", "outcome": "ok"}
    before = gateway.metric(name, **labels)

    _listing(gateway, 1, key="demo-kiosk")

    assert gateway.metric(name, **labels) == before + 1


def test_a_listing_written_with_fragments_answers_the_same_at_the_same_cost(
    cold_gateway: ServedGateway, estate: RunningEstate
) -> None:
    gateway = cold_gateway
    with_fragments = """
    query Listing($first: Int!, $near: GeoPointInput!) {
      products(first: $first) { totalCount edges { node { ...Card } } }
    }
    fragment Card on Product { code name brand variants { ...Offer ... on Variant {
        availability(near: $near, first: 5) { store { code } available onHand distanceKm }
        totalAvailable } } }
    fragment Offer on Variant { sku price { current { amount currency } } }
    """
    reset_estate(estate)
    body = gateway.graphql(with_fragments, {"first": 24, "near": MARIENPLATZ}).json()
    cold = {system: _stats(estate, system) for system in ("pim", "pricing")}

    plain = _listing(gateway, 24).json()  # another document: answered from the read model

    assert body == plain
    assert cold == {"pim": {"listProducts": 1}, "pricing": {"GetPrices": 2}}
    assert {system: _stats(estate, system) for system in ("pim", "pricing")} == cold
