"""``commerce-gateway serve`` and ``schema``: run the gateway, export or check its schema."""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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
        server = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
        # uvicorn re-raises Ctrl-C once it has shut down gracefully; that is the normal way out.
        with contextlib.suppress(KeyboardInterrupt):
            GatewayServer(server).run()
    return 0


class GatewayServer(uvicorn.Server):
    """uvicorn's server, closing the subscriptions' sockets with 1001 (going away) before its
    own shutdown fails every connection with 1012: devices reconnect elsewhere at once."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        live = getattr(getattr(self.config.app, "state", None), "live_sockets", None)
        if isinstance(live, LiveSockets):
            await live.close_all()
        await super().shutdown(sockets)


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
