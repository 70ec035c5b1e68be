"""``commerce-gateway serve`` and ``schema``: run the gateway, export or check its schema."""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import math
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from pydantic import SecretStr

from gateway.config import (
    BackendsConfig,
    ErpBackend,
    GatewayConfig,
    LoyaltyBackend,
    OmsBackend,
    PimBackend,
    PricingBackend,
    PromotionsBackend,
    Settings,
)
from gateway.health import Draining
from gateway.http_protocol import ResponseInOneWrite
from gateway.live import LiveSockets

if TYPE_CHECKING:
    from legacy.sim import Knobs

SCHEMA_FILE = Path("schema.graphql")


def serve(
    settings: Settings,
    demo_data: Path | None = None,
    knobs: Mapping[str, Knobs] | None = None,
    erp_url: str | None = None,
) -> int:
    """Serve on ``settings.host:settings.port``. With ``demo_data``, first start the simulated
    estate seeded there and point the backends at it; stop it again on the way out."""
    from gateway.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with _estate(settings, demo_data, knobs or {}, erp_url) as config:
        app = create_app(settings, config)
        _tune_garbage_collection()
        print(f"gateway     http://{settings.host}:{settings.port}/graphql", flush=True)
        shutdown = config.shutdown
        server = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            http=ResponseInOneWrite,
            timeout_graceful_shutdown=max(1, math.ceil(shutdown.grace)),
        )
        # uvicorn re-raises Ctrl-C once it has shut down gracefully; that is the normal way out.
        with contextlib.suppress(KeyboardInterrupt):
            GatewayServer(server, drain=shutdown.drain).run()
    return 0


class GatewayServer(uvicorn.Server):
    """uvicorn's server, draining first on SIGTERM, and closing the subscriptions' sockets with
    1001 (going away) before its own shutdown fails every connection with 1012: devices
    reconnect elsewhere at once.

    On SIGTERM ``/readyz`` answers 503 for ``drain`` seconds while everything else is still
    served, so that a load balancer stops sending requests here; then uvicorn's shutdown closes
    the listener, lets the requests in flight finish (``timeout_graceful_shutdown``) and runs the
    lifespan's shutdown, where the outbox ends the round it is delivering. SIGINT (Ctrl-C), or a
    second SIGTERM, skips what is left of the drain."""

    def __init__(self, config: uvicorn.Config, drain: float = 0.0) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        draining = _state(self.config.app, "draining")
        if sig == signal.SIGTERM and self._drain_until is None and self._drain > 0:
            if isinstance(draining, Draining):
                draining.begin()
            self._drain_until = time.monotonic() + self._drain
            self._captured_signals.append(sig)  # re-raised once shut down, as uvicorn does
            return
        if isinstance(draining, Draining):
            draining.begin()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        live = _state(self.config.app, "live_sockets")
        if isinstance(live, LiveSockets):
            await live.close_all()
        await super().shutdown(sockets)


def _state(app: object, name: str) -> object:
    return getattr(getattr(app, "state", None), name, None)


def _tune_garbage_collection() -> None:
    """A GraphQL response is thousands of short-lived objects; with the default thresholds the
    collector runs several times per request and walks the whole (long-lived) heap each time.
    Freeze what start-up built and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@contextmanager
def _estate(
    settings: Settings, demo_data: Path | None, knobs: Mapping[str, Knobs], erp_url: str | None
) -> Iterator[GatewayConfig]:
    config = settings.config()
    if demo_data is None:
        yield config
        return
    from legacy.launcher import EstateConfig, start_estate

    estate = start_estate(EstateConfig(data_dir=demo_data, knobs=knobs, erp_url=erp_url))
    try:
        for line in estate.describe():
            print(line, flush=True)
        backends = demo_backends(estate.urls, estate.erp_url, estate.promotions_dir, estate.api_key)
        yield config.model_copy(update={"backends": backends})
    finally:
        estate.stop()


def demo_backends(
    urls: dict[str, str], erp_url: str, promotions: Path, loyalty_key: str
) -> BackendsConfig:
    """The backends of a locally started demo estate."""
    return BackendsConfig(
        pim=PimBackend(url=urls["pim"]),
        pricing=PricingBackend(url=urls["pricing"]),
        promotions=PromotionsBackend(folder=promotions),
        erp=ErpBackend(url=erp_url),
        loyalty=LoyaltyBackend(url=urls["loyalty"], api_key=SecretStr(loyalty_key)),
        oms=OmsBackend(url=urls["oms"]),
    )


def schema_text() -> str:
    from resolvers.schema import build_schema

    return str(build_schema()).rstrip() + "\n"


def export_schema(path: Path = SCHEMA_FILE) -> int:
    path.write_text(schema_text())
    print(f"wrote {path}")
    return 0


def check_schema(path: Path = SCHEMA_FILE) -> int:
    """0 when ``path`` is the served schema; 1 with a unified diff otherwise."""
    served = schema_text()
    stored = path.read_text() if path.exists() else ""
    if stored == served:
        print(f"{path} matches the served schema")
        return 0
    diff = difflib.unified_diff(
        stored.splitlines(keepends=True), served.splitlines(keepends=True), str(path), "served"
    )
    print("".join(diff), end="")
    print(f"{path} differs from the served schema; run: commerce-gateway schema export")
    return 1
