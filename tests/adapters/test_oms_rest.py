"""RestOmsOrderIntake against the simulated order management system, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.oms_rest import RestOmsOrderIntake
from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    Money,
    OmsReceipt,
    OmsStatus,
    OrderLineSubmission,
    OrderSubmission,
)
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.support import start_systems


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    running = start_systems(tmp_path_factory.mktemp("oms"), ("oms",))
    yield running
    running.stop()


@pytest.fixture
def url(estate: RunningEstate) -> str:
    """The OMS's base URL, with counters and knobs reset (received orders stay)."""
    base = estate.urls["oms"]
    httpx.post(f"{base}/_sim/reset", timeout=5).raise_for_status()
    return base


@pytest.fixture
async def oms(url: str) -> AsyncIterator[RestOmsOrderIntake]:
    adapter = RestOmsOrderIntake(url)
    yield adapter
    await adapter.aclose()


async def control(url: str, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await (client.post(path, json=body) if body else client.get(path))
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def submission(truth: DemoEstate, order_id: str) -> OrderSubmission:
    """A pickup order of two units of the first SKU at the first store."""
    variant, store = truth.products[0].variants[0], truth.locations[0]
    unit = Money(variant.base_price, "EUR")
    total = Money(variant.base_price * 2, "EUR")
    return OrderSubmission(
        order_id=order_id,
        channel="WEB",
        customer_id="C0001",
        fulfillment="PICKUP_IN_STORE",
        lines=(OrderLineSubmission(variant.sku, 2, store.code, unit, total),),
        total=total,
        placed_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    )


def oms_body(truth: DemoEstate, order_id: str) -> dict[str, object]:
    """``submission(truth, order_id)`` as the OMS must have received it."""
    variant, store = truth.products[0].variants[0], truth.locations[0]
    return {
        "externalOrderId": order_id,
        "salesChannel": "WEB",
        "customerId": "C0001",
        "fulfilmentType": "STORE_PICKUP",
        "shipToPostalCode": None,
        "orderLines": [
            {
                "lineNo": 1,
                "itemNo": variant.sku,
                "qty": 2,
                "shipNode": store.code,
                "unitPrice": f"{variant.base_price:.2f}",
                "lineTotal": f"{variant.base_price * 2:.2f}",
            }
        ],
        "orderTotal": f"{variant.base_price * 2:.2f}",
        "currency": "EUR",
        "placedAt": "2026-03-01T09:30:00Z",
    }


def listed(orders: dict[str, Any], order_id: str) -> list[dict[str, Any]]:
    return [entry for entry in orders["orders"] if entry["externalOrderId"] == order_id]


async def test_submit_hands_the_order_over_in_the_oms_shape(
    oms: RestOmsOrderIntake, url: str, truth: DemoEstate
) -> None:
    # when
    receipt = await oms.submit(submission(truth, "O-submit-1"))

    # then the receipt carries the OMS number, and the OMS holds exactly our order
    assert receipt.order_id == "O-submit-1"
    assert re.fullmatch(r"OMS-\d{7}", receipt.oms_order_number)
    assert receipt.received_at.utcoffset() is not None
    stored = await control(url, "/api/orders/O-submit-1")
    assert stored["omsOrderNo"] == receipt.oms_order_number
    assert stored["submissions"] == 1
    assert stored["order"] == oms_body(truth, "O-submit-1")


async def test_resubmitting_returns_the_same_number_and_lists_the_order_once(
    oms: RestOmsOrderIntake, url: str, truth: DemoEstate
) -> None:
    # given
    order = submission(truth, "O-resubmit-1")

    # when it is submitted twice
    first = await oms.submit(order)
    again = await oms.submit(order)

    # then
    assert again == first
    entries = listed(await control(url, "/api/orders"), "O-resubmit-1")
    assert [(e["omsOrderNo"], e["submissions"]) for e in entries] == [(first.oms_order_number, 2)]
    assert (await control(url, "/_sim/stats"))["calls"] == {"SubmitOrder": 2, "ListOrders": 1}


async def test_receipts_are_looked_up_and_unknown_orders_are_absent(
    oms: RestOmsOrderIntake, truth: DemoEstate
) -> None:
    # given two submitted orders
    first = await oms.submit(submission(truth, "O-receipts-1"))
    second = await oms.submit(submission(truth, "O-receipts-2"))

    # when
    receipts = await oms.receipts(["O-receipts-1", "O-receipts-2", "O-never-sent"])

    # then
    assert receipts == {"O-receipts-1": first, "O-receipts-2": second}


async def test_an_invalid_order_is_rejected_and_not_stored(
    oms: RestOmsOrderIntake, url: str, truth: DemoEstate
) -> None:
    # given an order line of zero units
    order = submission(truth, "O-invalid-1")
    order = replace(order, lines=(replace(order.lines[0], quantity=0),))

    # when / then
    with pytest.raises(BackendRejected) as refused:
        await oms.submit(order)
    assert refused.value.code == "INVALID_ORDER"
    assert "orderLines[0].qty" in str(refused.value)
    assert listed(await control(url, "/api/orders"), "O-invalid-1") == []


async def test_an_outage_raises_backend_unavailable_and_stores_nothing(
    oms: RestOmsOrderIntake, url: str, truth: DemoEstate
) -> None:
    # given the OMS is down
    await control(url, "/_sim/knobs", {"outage": True})

    # when / then
    with pytest.raises(BackendUnavailable):
        await oms.submit(submission(truth, "O-outage-1"))
    with pytest.raises(BackendUnavailable):
        await oms.receipts(["O-outage-1"])
    await control(url, "/_sim/knobs", {"outage": False})
    assert await oms.receipts(["O-outage-1"]) == {}


async def test_a_slow_oms_raises_backend_timed_out(url: str, truth: DemoEstate) -> None:
    # given every call takes half a second
    await control(url, "/_sim/knobs", {"latency_ms": 500})
    adapter = RestOmsOrderIntake(url, timeout=0.1)
    try:
        # when / then
        with pytest.raises(BackendTimedOut):
            await adapter.receipts(["O-submit-1"])
    finally:
        await adapter.aclose()


async def test_received_orders_survive_a_restart(
    truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # given an OMS that received two orders, one of them twice
    data_dir: Path = tmp_path_factory.mktemp("oms-restart")
    before = await _submit_to_fresh_oms(data_dir, truth)

    # when it is stopped and started again on the same data
    running = start_systems(data_dir, ("oms",))
    adapter = RestOmsOrderIntake(running.urls["oms"])
    try:
        after = await adapter.receipts(["O-restart-1", "O-restart-2"])
        orders = await control(running.urls["oms"], "/api/orders")
        third = await adapter.submit(submission(truth, "O-restart-3"))
    finally:
        await adapter.aclose()
        running.stop()

    # then nothing was lost, and numbering continues
    assert after == before
    assert [(e["externalOrderId"], e["submissions"]) for e in orders["orders"]] == [
        ("O-restart-1", 2),
        ("O-restart-2", 1),
    ]
    assert orders["orders"][0]["order"] == oms_body(truth, "O-restart-1")
    assert third.oms_order_number == "OMS-0000003"


async def _submit_to_fresh_oms(data_dir: Path, truth: DemoEstate) -> dict[str, OmsReceipt]:
    running = start_systems(data_dir, ("oms",))
    adapter = RestOmsOrderIntake(running.urls["oms"])
    try:
        first = await adapter.submit(submission(truth, "O-restart-1"))
        await adapter.submit(submission(truth, "O-restart-1"))
        second = await adapter.submit(submission(truth, "O-restart-2"))
    finally:
        await adapter.aclose()
        running.stop()
    return {"O-restart-1": first, "O-restart-2": second}


# --------------------------------------------------------------------------- after hand-off


async def test_shipping_without_an_erp_to_book_in_answers_503_and_records_nothing(
    oms: RestOmsOrderIntake, url: str, truth: DemoEstate
) -> None:
    # given an order at an OMS whose ERP database has no tables (this module starts no ERP)
    await oms.submit(submission(truth, "O-ship-no-erp"))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        # when it is shipped
        shipped = await client.post("/api/orders/O-ship-no-erp/ship")
        # then the goods issue could not be posted, and the order has not shipped
        assert shipped.status_code == 503
        assert (await client.get("/api/orders/O-ship-no-erp")).json()["status"] == "RECEIVED"
        assert (await client.post("/api/orders/O-never-sent/ship")).status_code == 404


async def test_a_cancel_is_numbered_in_the_status_feed_once_and_survives_a_restart(
    truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # given an OMS that received an order and cancelled it twice
    data_dir: Path = tmp_path_factory.mktemp("oms-cancel")
    running = start_systems(data_dir, ("oms",))
    adapter = RestOmsOrderIntake(running.urls["oms"])
    try:
        await adapter.submit(submission(truth, "O-cancel-1"))
        async with httpx.AsyncClient(base_url=running.urls["oms"], timeout=10) as client:
            first = await client.post("/api/orders/O-cancel-1/cancel")
            again = await client.post("/api/orders/O-cancel-1/cancel")
            ship = await client.post("/api/orders/O-cancel-1/ship")
        before = await adapter.status_changes(None)
    finally:
        await adapter.aclose()
        running.stop()
    # when it is started again on the same data
    running = start_systems(data_dir, ("oms",))
    adapter = RestOmsOrderIntake(running.urls["oms"])
    try:
        after = await adapter.status_changes(None)
        tail = await adapter.status_changes("1", limit=5)
    finally:
        await adapter.aclose()
        running.stop()

    # then the cancel is one change, numbered after the receipt, and the feed is the same
    assert (first.status_code, again.status_code, ship.status_code) == (200, 200, 409)
    assert first.json()["status"] == again.json()["status"] == "CANCELLED"
    assert [(c.order_id, c.status, c.cursor) for c in before.changes] == [
        ("O-cancel-1", OmsStatus.RECEIVED, "1"),
        ("O-cancel-1", OmsStatus.CANCELLED, "2"),
    ]
    assert after == before
    assert (tail.changes, tail.cursor) == (before.changes[1:], "2")
