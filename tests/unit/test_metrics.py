"""Metrics: every backend call counted and timed under its port operation, GraphQL requests by
operation and channel, each app's metrics in a registry of its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from adapters.ports import (
    BackendUnavailable,
    CataloguePort,
    InventoryPort,
    LoyaltyPort,
    OrderIntakePort,
    PricesPort,
    PromotionsPort,
)
from gateway.db import autocommit, create_engine
from gateway.metrics import Metrics, count_round_trips, instrument, metrics_route
from legacy.demo import DemoEstate
from tests.fakes import FakeEstate, catalogue_from_demo

PORTS = [
    ("catalogue", CataloguePort),
    ("prices", PricesPort),
    ("promotions", PromotionsPort),
    ("inventory", InventoryPort),
    ("loyalty", LoyaltyPort),
    ("order_intake", OrderIntakePort),
]

OPERATOR_KEY = "operator-key-for-tests"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_instrumented_calls_are_counted_and_timed_per_operation(truth: DemoEstate) -> None:
    # given
    fake = catalogue_from_demo(truth)
    metrics = Metrics()
    catalogue = instrument(fake, "pim", metrics)
    code = truth.products[0].code
    # when
    first = await catalogue.products([code])
    await catalogue.products([code, "UNKNOWN"])
    categories = await catalogue.categories()
    # then
    assert list(first) == [code]
    assert len(categories) == len(truth.categories)
    assert fake.calls == {"products": 2, "categories": 1}
    count = "gateway_backend_requests_total"
    assert sample(metrics, count, backend="pim", operation="products") == 2
    assert sample(metrics, count, backend="pim", operation="categories") == 1
    assert sample(metrics, count, backend="pim", operation="ranging") == 0  # present from the start
    timed = "gateway_backend_request_duration_seconds_count"
    assert sample(metrics, timed, backend="pim", operation="products") == 2
    assert b"gateway_backend_errors_total{" not in metrics.render()


async def test_failing_calls_are_counted_by_error_and_raised_unchanged(truth: DemoEstate) -> None:
    # given
    fake = catalogue_from_demo(truth)
    metrics = Metrics()
    catalogue = instrument(fake, "pim", metrics)
    outage = BackendUnavailable("pim", "connection refused")
    fake.fail_with = outage
    # when
    for _ in range(3):
        with pytest.raises(BackendUnavailable) as raised:
            await catalogue.categories()
    # then
    assert raised.value is outage
    labels = {"backend": "pim", "operation": "categories"}
    assert sample(metrics, "gateway_backend_requests_total", **labels) == 3
    assert (
        sample(metrics, "gateway_backend_errors_total", error="BackendUnavailable", **labels) == 3
    )
    assert sample(metrics, "gateway_backend_request_duration_seconds_count", **labels) == 3


@pytest.mark.parametrize(("field", "protocol"), PORTS)
def test_an_instrumented_port_still_satisfies_its_protocol(
    truth: DemoEstate, field: str, protocol: type
) -> None:
    port = getattr(FakeEstate.from_demo(truth), field)

    assert isinstance(instrument(port, "backend", Metrics()), protocol)


async def test_closing_is_passed_through_and_not_counted(truth: DemoEstate) -> None:
    fake = catalogue_from_demo(truth)
    metrics = Metrics()
    catalogue = instrument(fake, "pim", metrics)

    await catalogue.aclose()

    assert fake.closed
    assert b'operation="aclose"' not in metrics.render()


def test_plain_attributes_are_read_from_the_port(truth: DemoEstate) -> None:
    fake = catalogue_from_demo(truth)

    catalogue = instrument(fake, "pim", Metrics())

    assert catalogue.calls is fake.calls
    assert catalogue.backend == "pim"


def test_graphql_requests_are_counted_by_operation_channel_and_outcome() -> None:
    metrics = Metrics()

    metrics.observe_graphql("Listing", "web", ok=True, seconds=0.02)
    metrics.observe_graphql("Listing", "web", ok=True, seconds=0.03)
    metrics.observe_graphql("Listing", "pos", ok=False, seconds=0.5)
    metrics.observe_graphql(None, "kiosk", ok=True, seconds=0.01)

    count = "gateway_graphql_requests_total"
    assert sample(metrics, count, operation="Listing", channel="web", outcome="ok") == 2
    assert sample(metrics, count, operation="Listing", channel="pos", outcome="error") == 1
    assert sample(metrics, count, operation="anonymous", channel="kiosk", outcome="ok") == 1
    timed = "gateway_graphql_request_duration_seconds"
    assert sample(metrics, f"{timed}_count", operation="Listing") == 3
    assert sample(metrics, f"{timed}_sum", operation="Listing") == pytest.approx(0.55)
    assert sample(metrics, f"{timed}_bucket", operation="Listing", le="0.025") == 1


def test_operation_names_beyond_the_limit_are_counted_as_other() -> None:
    metrics = Metrics(max_operations=2)

    for name in ("First", "Second", "Third", "Fourth", "First"):
        metrics.observe_graphql(name, "web", ok=True, seconds=0.01)

    count = "gateway_graphql_requests_total"
    assert sample(metrics, count, operation="First", channel="web", outcome="ok") == 2
    assert sample(metrics, count, operation="Second", channel="web", outcome="ok") == 1
    assert sample(metrics, count, operation="other", channel="web", outcome="ok") == 2
    assert sample(metrics, count, operation="Third", channel="web", outcome="ok") is None


def test_each_metrics_object_counts_on_its_own() -> None:
    first, second = Metrics(), Metrics()

    first.observe_graphql("Listing", "web", ok=True, seconds=0.01)

    labels = {"operation": "Listing", "channel": "web", "outcome": "ok"}
    assert sample(first, "gateway_graphql_requests_total", **labels) == 1
    assert sample(second, "gateway_graphql_requests_total", **labels) is None


async def test_without_an_operator_key_set_the_metrics_are_served_to_no_one() -> None:
    app = Starlette(routes=[metrics_route(Metrics())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        response = await client.get("/metrics", headers={"X-Operator-Key": ""})

    assert response.status_code == 401


async def test_the_metrics_route_serves_the_text_exposition_to_operators(truth: DemoEstate) -> None:
    # given
    metrics = Metrics()
    prices = instrument(FakeEstate.from_demo(truth).prices, "pricing", metrics)
    await prices.prices([truth.products[0].variants[0].sku])
    metrics.observe_graphql("Listing", "web", ok=True, seconds=0.01)
    app = Starlette(routes=[metrics_route(metrics, operator_key=OPERATOR_KEY)])
    # when
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        response = await client.get("/metrics", headers={"X-Operator-Key": OPERATOR_KEY})
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        anonymous = await client.get("/metrics")
        guessed = await client.get("/metrics", headers={"X-Operator-Key": "demo-web"})
    # then
    assert scraped.text == response.text
    assert anonymous.status_code == guessed.status_code == 401
    assert "gateway_" not in anonymous.text + guessed.text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert 'gateway_backend_requests_total{backend="pricing",operation="prices"} 1.0' in lines
    listing = 'gateway_graphql_requests_total{channel="web",operation="Listing",outcome="ok"} 1.0'
    assert listing in lines
    for name in (
        "gateway_backend_requests_total",
        "gateway_backend_errors_total",
        "gateway_backend_request_duration_seconds",
        "gateway_graphql_requests_total",
        "gateway_graphql_request_duration_seconds",
    ):
        assert f"# TYPE {name} " in response.text
    bucket = 'gateway_backend_request_duration_seconds_bucket{backend="pricing",le="0.001",'
    assert bucket in response.text


async def test_round_trips_to_the_database_are_counted_by_kind(tmp_path: Path) -> None:
    # given an engine whose round trips are counted
    metrics = Metrics()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'counted.db'}")
    count_round_trips(engine, metrics)
    try:
        # when a transaction runs two statements, and autocommit mode one more
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        async with autocommit(engine).connect() as connection:
            await connection.execute(text("SELECT x FROM t"))
    finally:
        await engine.dispose()

    # then three statements went, and BEGIN (a statement on SQLite) and COMMIT only for the
    # transaction
    trips = "gateway_database_round_trips_total"
    assert sample(metrics, trips, kind="statement") == 4
    assert sample(metrics, trips, kind="begin") == 0
    assert sample(metrics, trips, kind="commit") == 1
    assert sample(metrics, trips, kind="rollback") == 0
