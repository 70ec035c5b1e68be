"""Orders over real HTTP: sourcing, placement, idempotency, the outbox, cancel and return."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from gateway.config import OrdersConfig
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.api.test_offers import _token
from tests.support import GRAPHQL_KEYS, ServedGateway, serve_gateway

ORDER_FIELDS = """id status channel customerId fulfillment omsOrderNumber
    lines { sku quantity lineTotal { amount } returnedQuantity refunded { amount } }
    allocations { sku quantity location { code kind } }
    shipments { location { code } lines { sku quantity } }
    store { code } attributedStore { code }
    subtotal { amount } discountTotal { amount } total { amount currency }
    pointsEarned pointsRedeemed amountDue { amount }"""

PLACE = f"""mutation($input: PlaceOrderInput!) {{ placeOrder(input: $input) {{
    order {{ {ORDER_FIELDS} }} replayed
    userErrors {{ code message field sku requested available alternatives }} }} }}"""

PLAN = """query($input: PlaceOrderInput!) { sourcingPlan(input: $input) {
    feasible exact allocations { sku quantity location { code } }
    lines { sku locationIds explanation } rejected { locationId reason }
    cart { total { amount } } userErrors { code sku } } }"""

CART = """query($input: CartInput!) { cart(input: $input) {
    subtotal { amount } discountTotal { amount } total { amount } pointsToEarn } }"""

STOCK = """query($sku: String!, $store: ID!) { product(sku: $sku) { variants {
    sku availability(storeIds: [$store]) { available reserved } } } }"""

ORDER = f"""query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"""

CANCEL = f"""mutation($id: ID!) {{ cancelOrder(orderId: $id) {{
    order {{ {ORDER_FIELDS} }} userErrors {{ code message }} }} }}"""

RETURN = f"""mutation($id: ID!, $lines: [OrderLineInput!]!, $store: ID!) {{
    returnOrderLines(orderId: $id, lines: $lines, storeId: $store) {{
    order {{ {ORDER_FIELDS} }} refunds {{ sku quantity amount {{ amount }} pointsReversed }}
    userErrors {{ code message }} }} }}"""

SALES = """query($id: ID!, $from: DateTime!, $to: DateTime!) { node(id: $id) {
    ... on Store { attributedSales(from: $from, to: $to) { orders total { amount } } } } }"""

_used: set[str] = set()


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway of its own, over the shared estate: its orders reserve stock in its own
    ledger, which the other modules' stock figures must not see."""
    served = serve_gateway(estate, pg_databases())
    yield served
    served.stop()


def _key() -> str:
    return uuid.uuid4().hex


def _available(gateway: ServedGateway, sku: str, store: str) -> int:
    body = gateway.graphql(STOCK, {"sku": sku, "store": store}).json()
    (variant,) = [v for v in body["data"]["product"]["variants"] if v["sku"] == sku]
    return sum(stock["available"] for stock in variant["availability"])


def _stocked(gateway: ServedGateway, truth: DemoEstate, store: str, at_least: int) -> str:
    """A SKU no other test has used, with ``at_least`` units available at ``store``."""
    for variant in (v for p in truth.products for v in p.variants if v.sku not in _used):
        if _available(gateway, variant.sku, store) >= at_least:
            _used.add(variant.sku)
            return variant.sku
    raise AssertionError(f"no SKU with {at_least} units at {store}")


def _store(truth: DemoEstate) -> str:
    return next(loc.code for loc in truth.locations if "CARRY_OUT" in loc.capabilities)


def _place(
    gateway: ServedGateway,
    order: dict[str, object],
    key: str = "demo-pos",
    token: str | None = None,
) -> dict:  # type: ignore[type-arg]
    body = gateway.graphql(PLACE, {"input": order}, key=key, token=token).json()
    assert "errors" not in body, body
    return body["data"]["placeOrder"]  # type: ignore[no-any-return]


def _carry_out(sku: str, store: str, quantity: int = 1, **more: object) -> dict[str, object]:
    return {
        "idempotencyKey": _key(),
        "lines": [{"sku": sku, "quantity": quantity}],
        "fulfillment": "CARRY_OUT",
        "storeId": store,
        **more,
    }


def test_a_till_sale_reserves_the_units_and_every_channel_sees_it_at_once(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 2)
    before = _available(gateway, sku, store)

    placed = _place(gateway, _carry_out(sku, store, 2))

    order = placed["order"]
    assert placed["userErrors"] == []
    assert (order["status"], order["channel"], order["fulfillment"]) == (
        "ACCEPTED",
        "pos",
        "CARRY_OUT",
    )
    assert order["allocations"] == [
        {"sku": sku, "quantity": 2, "location": {"code": store, "kind": "STORE"}}
    ]
    assert order["attributedStore"] == {"code": store}
    seen = {key: _available_as(gateway, sku, store, key) for key in GRAPHQL_KEYS}
    assert set(seen.values()) == {before - 2}


def _available_as(gateway: ServedGateway, sku: str, store: str, key: str) -> int:
    body = gateway.graphql(STOCK, {"sku": sku, "store": store}, key=key).json()
    (variant,) = [v for v in body["data"]["product"]["variants"] if v["sku"] == sku]
    return sum(stock["available"] for stock in variant["availability"])


def test_an_order_costs_what_the_cart_said(gateway: ServedGateway, truth: DemoEstate) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 3)
    cart = gateway.graphql(
        CART, {"input": {"lines": [{"sku": sku, "quantity": 3}], "storeId": store}}
    ).json()["data"]["cart"]

    order = _place(gateway, _carry_out(sku, store, 3))["order"]

    assert order["subtotal"] == cart["subtotal"]
    assert order["discountTotal"] == cart["discountTotal"]
    assert order["total"]["amount"] == cart["total"]["amount"]


def test_the_sourcing_plan_reserves_nothing(gateway: ServedGateway, truth: DemoEstate) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 1)
    before = _available(gateway, sku, store)

    body = gateway.graphql(PLAN, {"input": _carry_out(sku, store)}, key="demo-pos").json()

    plan = body["data"]["sourcingPlan"]
    assert plan["feasible"] is True
    assert plan["allocations"] == [{"sku": sku, "quantity": 1, "location": {"code": store}}]
    assert plan["lines"][0]["locationIds"] == [store]
    assert plan["lines"][0]["explanation"]
    assert _available(gateway, sku, store) == before


def test_more_than_the_store_has_is_out_of_stock_with_the_numbers(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 1)
    available = _available(gateway, sku, store)

    placed = _place(gateway, _carry_out(sku, store, available + 1))

    assert placed["order"] is None
    (error,) = placed["userErrors"]
    assert (error["code"], error["sku"]) == ("OUT_OF_STOCK", sku)
    assert (error["requested"], error["available"]) == (available + 1, available)
    assert _available(gateway, sku, store) == available


def test_the_same_key_gives_the_same_order_and_another_basket_is_refused(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 2)
    order = _carry_out(sku, store)

    first = _place(gateway, order)
    again = _place(gateway, order)
    other = _place(gateway, {**order, "lines": [{"sku": sku, "quantity": 2}]})

    assert again["order"]["id"] == first["order"]["id"]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert other["order"] is None
    assert [e["code"] for e in other["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]


def test_an_accepted_order_reaches_the_oms_and_is_submitted(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 1)
    order_id = _place(gateway, _carry_out(sku, store))["order"]["id"]

    deadline = time.monotonic() + 20
    while True:
        order = gateway.graphql(ORDER, {"id": order_id}, key="demo-pos").json()["data"]["order"]
        if order["status"] == "SUBMITTED" or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert order["status"] == "SUBMITTED"
    received = httpx.get(f"{estate.urls['oms']}/api/orders/{order_id}", timeout=5).json()
    assert received["omsOrderNo"] == order["omsOrderNumber"]
    assert received["submissions"] == 1


def test_cancelling_gives_the_units_back(gateway: ServedGateway, truth: DemoEstate) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 1)
    before = _available(gateway, sku, store)
    order_id = _place(gateway, _carry_out(sku, store))["order"]["id"]

    cancelled = gateway.graphql(CANCEL, {"id": order_id}, key="demo-pos").json()["data"]
    again = gateway.graphql(CANCEL, {"id": order_id}, key="demo-pos").json()["data"]

    assert cancelled["cancelOrder"]["order"]["status"] == "CANCELLED"
    assert _available(gateway, sku, store) == before
    assert [e["code"] for e in again["cancelOrder"]["userErrors"]] == ["ALREADY_CANCELLED"]


def test_a_return_anywhere_restocks_that_store_and_refunds_to_the_cent(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 3)
    product = next(p for p in truth.products if any(v.sku == sku for v in p.variants))
    other = next(  # another store whose assortment has it, so its stock shows
        loc.code
        for loc in truth.locations
        if loc.kind == "STORE" and loc.code != store and truth.ranged(product, loc)
    )
    order = _place(gateway, _carry_out(sku, store, 3))["order"]
    line_total = Decimal(order["lines"][0]["lineTotal"]["amount"])
    before = _available(gateway, sku, other)

    refunds = []
    for quantity in (1, 2):
        body = gateway.graphql(
            RETURN,
            {"id": order["id"], "lines": [{"sku": sku, "quantity": quantity}], "store": other},
            key="demo-csr",
        ).json()["data"]["returnOrderLines"]
        assert body["userErrors"] == [], body
        refunds.append(Decimal(body["refunds"][0]["amount"]["amount"]))
    too_many = gateway.graphql(
        RETURN,
        {"id": order["id"], "lines": [{"sku": sku, "quantity": 1}], "store": other},
        key="demo-csr",
    ).json()["data"]["returnOrderLines"]

    assert sum(refunds) == line_total
    assert _available(gateway, sku, other) >= before + 3 - 1  # the store keeps one back
    assert [e["code"] for e in too_many["userErrors"]] == ["TOO_MANY_RETURNED"]


def test_a_customer_sees_their_orders_and_nobody_elses(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 1)
    order = _place(gateway, _carry_out(sku, store), key="demo-web", token=_token("C0021"))["order"]
    mine = gateway.graphql(
        "{ me { orders { id customerId } } }", key="demo-web", token=_token("C0021")
    ).json()

    theirs = gateway.graphql(
        ORDER, {"id": order["id"]}, key="demo-web", token=_token("C0022")
    ).json()

    assert order["customerId"] == "C0021"
    assert mine["data"]["me"]["orders"][0] == {"id": order["id"], "customerId": "C0021"}
    assert theirs["data"]["order"] is None


def test_a_store_is_credited_with_the_sales_it_made(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    store = _store(truth)
    store_id = gateway.graphql(
        "query($near: GeoPointInput!) { stores(near: $near, first: 100) { id code } }",
        {"near": {"lat": 48.137, "lon": 11.575}},
    ).json()["data"]["stores"]
    global_id = next(s["id"] for s in store_id if s["code"] == store)
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    before = gateway.graphql(SALES, {"id": global_id, **window}, key="demo-csr").json()
    sku = _stocked(gateway, truth, store, 1)
    order = _place(gateway, _carry_out(sku, store))["order"]

    after = gateway.graphql(SALES, {"id": global_id, **window}, key="demo-csr").json()
    refused = gateway.graphql(SALES, {"id": global_id, **window}, key="demo-web").json()

    sales_before = before["data"]["node"]["attributedSales"]
    sales_after = after["data"]["node"]["attributedSales"]
    assert sales_after["orders"] == sales_before["orders"] + 1
    assert Decimal(sales_after["total"]["amount"]) == Decimal(
        sales_before["total"]["amount"]
    ) + Decimal(order["total"]["amount"])
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("key", ["demo-partner"])
def test_a_channel_without_the_orders_scope_cannot_order(
    gateway: ServedGateway, truth: DemoEstate, key: str
) -> None:
    store = _store(truth)
    sku = next(itertools.chain.from_iterable(p.variants for p in truth.products)).sku

    body = gateway.graphql(PLACE, {"input": _carry_out(sku, store)}, key=key).json()

    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_coupon_is_used_no_more_often_than_it_may_be_even_at_once(
    gateway: ServedGateway, truth: DemoEstate
) -> None:
    # given a customer who has not used WELCOME10 (10% off, once per customer), and a SKU
    store = _store(truth)
    sku = _stocked(gateway, truth, store, 8)
    before = _available(gateway, sku, store)
    token = _token("C0041")

    # when four orders by that customer use it at the same moment, each with its own key
    def attempt(_: int) -> dict:  # type: ignore[type-arg]
        order = _carry_out(sku, store, 1, couponCodes=["WELCOME10"])
        return _place(gateway, order, key="demo-web", token=token)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(4)))

    # then one order is accepted with the discount, the others are refused naming the coupon
    accepted = [o["order"] for o in outcomes if o["order"] is not None]
    refused = [o["userErrors"] for o in outcomes if o["order"] is None]
    assert len(accepted) == 1
    assert Decimal(accepted[0]["discountTotal"]["amount"]) > 0
    assert [errors[0]["code"] for errors in refused] == ["COUPON_LIMIT_REACHED"] * 3
    assert all(errors[0]["field"] == "couponCodes" for errors in refused)
    # and the refused orders reserved nothing
    assert _available(gateway, sku, store) == before - 1

    # and once the customer has used it, a later order is refused the same way
    again = _place(
        gateway,
        _carry_out(sku, store, 1, couponCodes=["WELCOME10"]),
        key="demo-web",
        token=token,
    )
    assert again["order"] is None
    assert again["userErrors"][0]["code"] == "COUPON_LIMIT_REACHED"


def test_orders_that_ask_at_once_share_their_calls_to_the_pricing_engine(
    gateway: ServedGateway, truth: DemoEstate, estate: RunningEstate
) -> None:
    # given six SKUs in stock, and a pricing engine that takes 300 ms to answer
    store = _store(truth)
    skus = [_stocked(gateway, truth, store, 2) for _ in range(6)]
    expected = {sku: _cart_total(gateway, sku) for sku in skus}
    pricing = estate.urls["pricing"]
    knobs = httpx.get(f"{pricing}/_sim/knobs").json()
    before = httpx.get(f"{pricing}/_sim/stats").json()["calls"].get("GetPrices", 0)
    httpx.post(f"{pricing}/_sim/knobs", json={"latency_ms": 300}).raise_for_status()

    # when six tills sell one of them each at the same moment
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            outcomes = list(pool.map(lambda sku: _place(gateway, _carry_out(sku, store)), skus))
    finally:
        httpx.post(f"{pricing}/_sim/knobs", json=knobs).raise_for_status()
    calls = httpx.get(f"{pricing}/_sim/stats").json()["calls"].get("GetPrices", 0) - before

    # then every order is placed at its own SKU's price, and the engine got fewer calls than
    # orders: those that asked while a call was out went together in the next one
    orders = [outcome["order"] for outcome in outcomes]
    assert [order["lines"][0]["sku"] for order in orders] == skus
    assert {order["lines"][0]["sku"]: order["total"]["amount"] for order in orders} == expected
    assert 1 <= calls < len(skus), calls


def _cart_total(gateway: ServedGateway, sku: str) -> str:
    lines = [{"sku": sku, "quantity": 1}]
    body = gateway.graphql(CART, {"input": {"lines": lines}}, key="demo-pos").json()
    return body["data"]["cart"]["total"]["amount"]  # type: ignore[no-any-return]


def test_a_placement_that_outlasts_its_lease_keeps_its_key(
    truth: DemoEstate, estate: RunningEstate, pg_databases: Callable[[], str]
) -> None:
    # given a gateway whose keys are leased for 0.45 s, and a pricing engine that takes 1 s
    served = serve_gateway(
        estate, pg_databases(), config={"orders": OrdersConfig(placement_lease=0.45)}
    )
    pricing = estate.urls["pricing"]
    knobs = httpx.get(f"{pricing}/_sim/knobs").json()
    store = _store(truth)
    sku = _stocked(served, truth, store, 2)
    order = _carry_out(sku, store)
    httpx.post(f"{pricing}/_sim/knobs", json={"latency_ms": 1000}).raise_for_status()
    try:
        # when the same order is sent again with its key while the first is still placing,
        # after a whole lease has passed
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(_place, served, order)
            time.sleep(0.7)
            again = pool.submit(_place, served, order)
            answers = [first.result(), again.result()]
    finally:
        httpx.post(f"{pricing}/_sim/knobs", json=knobs).raise_for_status()
        served.stop()

    # then the first kept its key (it renewed the lease) and placed the only order: the
    # second waited for it and was answered with it
    assert answers[0]["order"] is not None, answers[0]
    assert answers[1]["replayed"] is True, answers[1]
    assert answers[1]["order"]["id"] == answers[0]["order"]["id"]
