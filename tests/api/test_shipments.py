"""What the OMS does after hand-off, over real HTTP, SQL and Redis: shipping an order at the OMS
books its goods issue in the ERP and consumes its reservations once the ledger has the ERP's
booking; cancelling it there cancels it here. The status feed is followed by the gateway's
feed follower, holding its lease in Redis.

The estate is this module's own: its shipments take stock out of the ERP, which the other
modules' figures must not see.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError

from adapters.erp_sql import SqlErpInventory
from gateway.config import Settings
from legacy.demo import DemoEstate
from legacy.launcher import HTTP_SYSTEMS, RunningEstate
from tests.support import (
    DEMO_CONFIG,
    REDIS_TEST_URL,
    ServedGateway,
    missing_service,
    serve_gateway,
    start_systems,
    write_systems,
)

pytestmark = pytest.mark.redis

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id } userErrors { code message } } }"""
ORDER = """query($id: ID!) { order(id: $id) { id status shippedAt omsOrderNumber } }"""
CANCEL = """mutation($id: ID!) { cancelOrder(orderId: $id) {
    order { status } userErrors { code } } }"""
STOCK = """query($sku: String!, $store: ID!) { product(sku: $sku) { variants {
    sku availability(storeIds: [$store]) { available onHand reserved } } } }"""
WAIT = 20.0  # seconds a feed may take, at most, in these tests

_used: set[str] = set()


@pytest.fixture(scope="module")
def estate(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    data_dir = tmp_path_factory.mktemp("shipments")
    write_systems(truth, data_dir, ("pim", "pricing", "promotions", "loyalty", "erp"))
    running = start_systems(data_dir, HTTP_SYSTEMS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    """A Redis namespace of this module's own; its keys are deleted after."""
    client = Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        client.close()
        missing_service(f"Redis ({exc!r})", "redis-server --daemonize yes --port 6379")
    name = f"ship{uuid.uuid4().hex[:8]}"
    yield name
    for key in client.scan_iter(match=f"{{{name}}}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def database(pg_databases: Callable[[], str]) -> str:
    return pg_databases()


def _serve(estate: RunningEstate, database: str, namespace: str) -> ServedGateway:
    demo = Settings(gateway_config=DEMO_CONFIG).config()
    read_model = demo.read_model.model_copy(update={"namespace": namespace})
    return serve_gateway(estate, database, REDIS_TEST_URL, config={"read_model": read_model})


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, database: str, namespace: str) -> Iterator[ServedGateway]:
    served = _serve(estate, database, namespace)
    yield served
    served.stop()


# --------------------------------------------------------------------------- helpers


def _store(truth: DemoEstate) -> str:
    return next(loc.code for loc in truth.locations if "CARRY_OUT" in loc.capabilities)


def _stock(gateway: ServedGateway, sku: str, store: str) -> dict[str, int]:
    body = gateway.graphql(STOCK, {"sku": sku, "store": store}).json()
    (variant,) = [v for v in body["data"]["product"]["variants"] if v["sku"] == sku]
    (stock,) = variant["availability"]
    return {name: int(stock[name]) for name in ("available", "onHand", "reserved")}


def _stocked(gateway: ServedGateway, truth: DemoEstate, store: str, at_least: int) -> str:
    """A SKU no other test here has used, with ``at_least`` units available at ``store``."""
    for variant in (v for p in truth.products for v in p.variants if v.sku not in _used):
        body = gateway.graphql(STOCK, {"sku": variant.sku, "store": store}).json()
        found = [v for v in body["data"]["product"]["variants"] if v["sku"] == variant.sku]
        if (
            found
            and found[0]["availability"]
            and found[0]["availability"][0]["available"] >= at_least
        ):
            _used.add(variant.sku)
            return variant.sku
    raise AssertionError(f"no SKU with {at_least} units at {store}")


def _place(gateway: ServedGateway, sku: str, store: str, quantity: int) -> str:
    order = {
        "idempotencyKey": uuid.uuid4().hex,
        "lines": [{"sku": sku, "quantity": quantity}],
        "fulfillment": "CARRY_OUT",
        "storeId": store,
    }
    body = gateway.graphql(PLACE, {"input": order}, key="demo-pos").json()
    assert body["data"]["placeOrder"]["userErrors"] == [], body
    order_id: str = body["data"]["placeOrder"]["order"]["id"]
    _until(lambda: _order(gateway, order_id)["status"] == "SUBMITTED", "the OMS took it")
    return order_id


def _at_the_oms(
    gateway: ServedGateway, truth: DemoEstate, units: int
) -> tuple[str, str, dict[str, int], str]:
    """An order of ``units`` of a fresh SKU at a till, handed to the OMS: the store, the SKU,
    its stock there before, and the order's id."""
    store = _store(truth)
    sku = _stocked(gateway, truth, store, units + 1)
    before = _stock(gateway, sku, store)
    return store, sku, before, _place(gateway, sku, store, units)


def _order(gateway: ServedGateway, order_id: str) -> dict[str, Any]:
    order: dict[str, Any] = gateway.graphql(ORDER, {"id": order_id}, key="demo-pos").json()["data"][
        "order"
    ]
    return order


def _at_oms(estate: RunningEstate, order_id: str, action: str) -> dict[str, Any]:
    response = httpx.post(f"{estate.urls['oms']}/api/orders/{order_id}/{action}", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _feed_faults(estate: RunningEstate, **faults: object) -> None:
    httpx.post(f"{estate.urls['oms']}/_sim/feed", json=faults, timeout=5).raise_for_status()


def _erp_on_hand(estate: RunningEstate, sku: str, store: str) -> int:
    async def read() -> int:
        erp = SqlErpInventory.from_url(estate.erp_url)
        try:
            levels = await erp.stock_levels([sku])
        finally:
            await erp.aclose()
        return next(level.on_hand for level in levels[sku] if level.location_id == store)

    return asyncio.run(read())


def _until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- shipments


def test_a_shipment_consumes_the_reservation_once_the_erp_booked_it_and_atp_never_rises(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given an order of 2 units placed at a till, handed to the OMS
    store, sku, before, order_id = _at_the_oms(gateway, truth, 2)
    placed = _stock(gateway, sku, store)
    assert placed == {
        **before,
        "reserved": before["reserved"] + 2,
        "available": before["available"] - 2,
    }

    # when the OMS ships it (and posts the goods issue in the ERP)
    shipped = _at_oms(estate, order_id, "ship")

    # then, watching all the way: available never goes above what the order left, and the
    # end is the units gone from on hand and no longer reserved
    assert shipped["status"] == "SHIPPED"
    assert shipped["goodsIssue"]["lines"] == [{"shipNode": store, "itemNo": sku, "qty": 2}]
    final = {**placed, "onHand": before["onHand"] - 2, "reserved": before["reserved"]}
    seen: list[dict[str, int]] = []

    def settled() -> bool:
        seen.append(_stock(gateway, sku, store))
        return seen[-1] == final

    _until(settled, "the reservation consumed")
    assert max(stock["available"] for stock in seen) == placed["available"], seen
    assert (before["onHand"], before["reserved"]) not in [
        (s["onHand"], s["reserved"]) for s in seen
    ]
    assert _erp_on_hand(estate, sku, store) == before["onHand"] - 2
    order = _order(gateway, order_id)
    assert order["status"] == "SHIPPED"
    assert order["shippedAt"] is not None
    # and it stays so: nothing is counted twice on later reads of either feed
    time.sleep(1.0)
    assert _stock(gateway, sku, store) == final
    refused = gateway.graphql(CANCEL, {"id": order_id}, key="demo-pos").json()["data"]
    assert refused["cancelOrder"]["userErrors"] == [{"code": "ALREADY_SHIPPED"}]


def test_a_cancel_at_the_oms_releases_the_units_and_cancels_the_order(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given an order handed to the OMS
    store, sku, before, order_id = _at_the_oms(gateway, truth, 1)

    # when the OMS cancels it
    assert _at_oms(estate, order_id, "cancel")["status"] == "CANCELLED"

    # then the gateway's order is CANCELLED and its unit free again, the ERP untouched
    _until(lambda: _order(gateway, order_id)["status"] == "CANCELLED", "the order cancelled")
    assert _stock(gateway, sku, store) == before
    assert _erp_on_hand(estate, sku, store) == before["onHand"]
    again = gateway.graphql(CANCEL, {"id": order_id}, key="demo-pos").json()["data"]
    assert again["cancelOrder"]["userErrors"] == [{"code": "ALREADY_CANCELLED"}]


def test_a_gap_in_the_feed_holds_what_follows_until_it_fills(
    gateway: ServedGateway,
    estate: RunningEstate,
    truth: DemoEstate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given two orders at the OMS; the first one's next change is held back (not committed yet)
    store = _store(truth)
    first_sku, second_sku = (_stocked(gateway, truth, store, 2) for _ in range(2))
    first, second = _place(gateway, first_sku, store, 1), _place(gateway, second_sku, store, 1)
    _feed_faults(estate, hold=[first])
    failures = gateway.metric("gateway_feed_failures_total", feed="oms")
    caplog.set_level(logging.WARNING, logger="gateway.readmodel.feeds")

    # when both are cancelled there, the first one's change missing from the feed
    _at_oms(estate, first, "cancel")
    _at_oms(estate, second, "cancel")

    # then the gateway reads again and again, logging the gap, and applies neither meanwhile
    _until(
        lambda: gateway.metric("gateway_feed_failures_total", feed="oms") >= failures + 2, "retries"
    )
    assert any("skips from" in record.getMessage() for record in caplog.records)
    assert [_order(gateway, order_id)["status"] for order_id in (first, second)] == [
        "SUBMITTED"
    ] * 2
    # and once the change shows, both are applied
    _feed_faults(estate, release=True)
    _until(lambda: _order(gateway, second)["status"] == "CANCELLED", "the second cancelled")
    assert _order(gateway, first)["status"] == "CANCELLED"


def test_a_garbled_answer_is_retried_and_loses_nothing(
    gateway: ServedGateway,
    estate: RunningEstate,
    truth: DemoEstate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given an order at the OMS, and a feed whose next three answers are garbled
    store, sku, before, order_id = _at_the_oms(gateway, truth, 1)
    failures = gateway.metric("gateway_feed_failures_total", feed="oms")
    caplog.set_level(logging.WARNING, logger="gateway.readmodel.feeds")
    _feed_faults(estate, garble=3)

    # when it is cancelled there
    _at_oms(estate, order_id, "cancel")

    # then the garbled reads are logged and counted, and the cancel still arrives
    _until(lambda: _order(gateway, order_id)["status"] == "CANCELLED", "the order cancelled")
    assert gateway.metric("gateway_feed_failures_total", feed="oms") >= failures + 3
    assert any("unreadable status change" in record.getMessage() for record in caplog.records)
    assert _stock(gateway, sku, store) == before


def test_reading_the_whole_feed_again_changes_nothing(
    gateway: ServedGateway, estate: RunningEstate, truth: DemoEstate, database: str, namespace: str
) -> None:
    # given a shipped order and a cancelled one, both applied
    store = _store(truth)
    shipped_sku, cancelled_sku = (_stocked(gateway, truth, store, 2) for _ in range(2))
    shipped, cancelled = (
        _place(gateway, shipped_sku, store, 1),
        _place(gateway, cancelled_sku, store, 1),
    )
    _at_oms(estate, shipped, "ship")
    _at_oms(estate, cancelled, "cancel")
    _until(lambda: _order(gateway, cancelled)["status"] == "CANCELLED", "the cancel applied")
    _until(lambda: _stock(gateway, shipped_sku, store)["reserved"] == 0, "the shipment consumed")
    stock = {sku: _stock(gateway, sku, store) for sku in (shipped_sku, cancelled_sku)}

    # when a gateway that lost the feed's cursor reads the whole feed again from the start
    gateway.stop()
    asyncio.run(_forget_cursor(database))
    again = _serve(estate, database, namespace)
    try:
        _until(lambda: again.metric("gateway_feed_holding", feed="oms") == 1, "the lease held")
        time.sleep(1.0)  # several reads of both feeds
        # then every change was seen twice and did nothing the second time
        assert {sku: _stock(again, sku, store) for sku in stock} == stock
        assert [_order(again, order_id)["status"] for order_id in (shipped, cancelled)] == [
            "SHIPPED",
            "CANCELLED",
        ]
    finally:
        again.stop()


async def _forget_cursor(database: str) -> None:
    from sqlalchemy import delete

    from gateway.db import create_engine, ledger_state

    engine = create_engine(database)
    try:
        async with engine.begin() as connection:
            await connection.execute(delete(ledger_state).where(ledger_state.c.name == "feed:oms"))
    finally:
        await engine.dispose()
