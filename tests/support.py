"""Shared test helpers: seeding and starting parts of the simulated estate, database URLs."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.types import ASGIApp

from gateway.http_protocol import ResponseInOneWrite
from legacy.demo import DemoEstate
from legacy.launcher import EstateConfig, RunningEstate, default_erp_url, start_estate
from legacy.sim import Knobs

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_ADMIN_URL = os.environ.get(
    "POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")


class ManualClock:
    """A monotonic clock that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def missing_service(what: str, how: str) -> None:
    """Fail in CI (where every service must be up), skip elsewhere with what to start."""
    message = f"{what} is not reachable; start it with: {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def write_systems(truth: DemoEstate, data_dir: Path, systems: Iterable[str]) -> None:
    """Write the data files of ``systems`` (pim, pricing, promotions, loyalty, erp) for ``truth``.
    The ERP goes to a SQLite file in ``data_dir``."""
    import importlib

    data_dir.mkdir(parents=True, exist_ok=True)
    for system in systems:
        module = importlib.import_module(f"legacy.{system}")
        if system == "erp":
            asyncio.run(module.load(truth, default_erp_url(data_dir), None))
        elif system != "oms":
            module.write_data(truth, data_dir / system)


def start_systems(
    data_dir: Path,
    systems: tuple[str, ...],
    knobs: Knobs | None = None,
    erp_url: str | None = None,
) -> RunningEstate:
    """Start ``systems`` over HTTP with all knobs at zero (or ``knobs``)."""
    return start_estate(
        EstateConfig(
            data_dir=data_dir,
            systems=systems,
            knobs={system: knobs or Knobs() for system in systems},
            erp_url=erp_url,
        )
    )


def reset_estate(estate: RunningEstate) -> None:
    """Put every simulator's counters and knobs back to their start."""
    with httpx.Client(timeout=5) as client:
        for url in estate.urls.values():
            client.post(f"{url}/_sim/reset").raise_for_status()


ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "demo.toml"
# The web listing (a persisted operation): its batching is proven in tests/api, its speed
# measured in bench/read_listing.
LISTING = (ROOT / "config" / "operations" / "Listing.graphql").read_text()
MARIENPLATZ = {"lat": 48.1374, "lon": 11.5755}

OPERATOR = {"X-Operator-Key": "demo-operator"}  # the demo config's operator key
GRAPHQL_KEYS = ("demo-web", "demo-mobile", "demo-kiosk", "demo-pos", "demo-csr", "demo-partner")


@dataclass
class ServedGateway:
    """The gateway app served over real HTTP by uvicorn on a thread of the test process."""

    url: str
    app: Starlette
    server: uvicorn.Server
    thread: threading.Thread

    def graphql(
        self,
        query: str,
        variables: dict[str, object] | None = None,
        key: str = "demo-web",
        token: str | None = None,
    ) -> httpx.Response:
        headers = {"X-Api-Key": key}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = {"query": query, "variables": variables or {}}
        return httpx.post(f"{self.url}/graphql", json=body, headers=headers, timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        """The value of the ``/metrics`` sample ``name`` with exactly ``labels`` (0 if absent)."""
        text = httpx.get(f"{self.url}/metrics", headers=OPERATOR, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_gateway(
    estate: RunningEstate,
    database_url: str,
    redis_url: str | None = None,
    config: Mapping[str, object] | None = None,
    send_buffer: int | None = None,
) -> ServedGateway:
    """Serve the gateway, configured by the demo config (with the sections in ``config``
    replaced), over ``estate``'s backends, its own database at ``database_url`` and the Redis
    at ``redis_url`` (none: in-process); ``send_buffer``: see ``serve_on_thread``."""
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.serve import demo_backends

    settings = Settings(gateway_config=DEMO_CONFIG, database_url=database_url, redis_url=redis_url)
    backends = demo_backends(estate.urls, estate.erp_url, estate.promotions_dir, estate.api_key)
    update = {**(config or {}), "backends": backends}
    app = create_app(settings, settings.config().model_copy(update=update))
    url, server, thread = serve_on_thread(app, send_buffer)
    return ServedGateway(url, app, server, thread)


def serve_on_thread(
    app: ASGIApp, send_buffer: int | None = None
) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Serve ``app`` over HTTP with uvicorn on a thread of its own, on a free local port; the
    URL, the server (set ``should_exit`` to stop it) and its thread, once it is accepting.

    ``send_buffer`` fixes the kernel's send buffer of every accepted connection (they inherit
    the listener's) instead of letting it grow to megabytes, so that a client that stops
    reading blocks the server's sends after a few KiB, not after several MB."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, http=ResponseInOneWrite)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{listener.getsockname()[1]}", server, thread
