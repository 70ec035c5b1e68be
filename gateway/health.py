"""Liveness (``/healthz``) and readiness (``/readyz``) for load balancers and orchestrators.

Liveness says only that the process serves. Readiness is 503 ``draining`` from the moment the
process is told to stop (``Draining``), before it stops accepting: load balancers take it out
while it still answers what they send meanwhile. Readiness probes every backend with a cheap real
call of its port, all at once and each under a short timeout. The gateway is not ready while a
backend that every read needs (PIM, pricing, promotions, ERP) is down; it is ``degraded`` while
only loyalty or the OMS is down, since reads still work and orders queue in the outbox. Anyone
gets the status (and its HTTP code); only an operator (``security.operator_key``) gets each
backend's address and error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.backends import Backends
from gateway.config import BackendsConfig
from gateway.readmodel.levels import RedisLink
from gateway.security import is_operator

PROBE_KEY: Final = "__probe__"  # a key no system knows: the lookup answers empty, cheaply
REQUIRED: Final = ("pim", "pricing", "promotions", "erp")
OPTIONAL: Final = ("loyalty", "oms", "redis")
ERROR_LENGTH: Final = 200

ReadinessStatus = Literal["ready", "degraded", "unavailable"]


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """One backend's probe: ``error`` is None when it is up."""

    name: str
    url: str | None
    latency_ms: int
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, object]:
        return {
            "status": "up" if self.up else "down",
            "url": self.url,
            "latencyMs": self.latency_ms,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Every backend's probe, in the order pim, pricing, promotions, erp, loyalty, oms (and
    redis, when the gateway has one)."""

    backends: tuple[BackendStatus, ...]

    @property
    def status(self) -> ReadinessStatus:
        down = {backend.name for backend in self.backends if not backend.up}
        if down.intersection(REQUIRED):
            return "unavailable"
        return "degraded" if down else "ready"

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "backends": {backend.name: backend.as_json() for backend in self.backends},
        }


class Readiness:
    """Probes ``backends`` concurrently, each within ``timeout`` seconds, and keeps the report
    for ``cache_seconds`` (by ``clock``) so that frequent polling reaches the backends at most
    once per period. ``urls`` gives the address shown for each backend name."""

    def __init__(
        self,
        backends: Backends,
        urls: Mapping[str, str],
        timeout: float = 1.0,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        redis: RedisLink | None = None,
    ) -> None:
        """``redis``: the shared read model's Redis, when configured; while it is down the
        gateway serves from each instance's own level and reports ``degraded``."""
        self._probes: dict[str, Callable[[], Awaitable[object]]] = {
            "pim": backends.catalogue.categories,
            "pricing": lambda: backends.prices.prices([PROBE_KEY]),
            "promotions": backends.promotions.promotions,
            "erp": backends.inventory.locations,
            "loyalty": lambda: backends.loyalty.accounts([PROBE_KEY]),
            "oms": lambda: backends.orders.receipts([PROBE_KEY]),
        }
        if redis is not None:
            self._probes["redis"] = redis.client.ping
        self._urls = dict(urls)
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._cached: tuple[float, ReadinessReport] | None = None

    async def check(self) -> ReadinessReport:
        """The latest report, probing anew when the cached one is older than the cache period.
        Concurrent callers share one round of probes."""
        async with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            statuses = await asyncio.gather(
                *(self._probe(name, probe) for name, probe in self._probes.items())
            )
            report = ReadinessReport(tuple(statuses))
            self._cached = (self._clock(), report)
            return report

    async def _probe(self, name: str, probe: Callable[[], Awaitable[object]]) -> BackendStatus:
        started = time.perf_counter()
        error: str | None = None
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except Exception as exc:
            # Readiness must answer whatever a probe raises: any failure means "down".
            error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
        latency_ms = round((time.perf_counter() - started) * 1000)
        return BackendStatus(name, self._urls.get(name), latency_ms, error)


class Draining:
    """Whether the process is shutting down: set once, by the server on SIGTERM."""

    def __init__(self) -> None:
        self.active = False

    def begin(self) -> None:
        self.active = True


def backend_urls(config: BackendsConfig) -> dict[str, str]:
    """The address of each backend as ``/readyz`` shows it, with any password removed."""
    return {
        "pim": config.pim.url,
        "pricing": config.pricing.url,
        "promotions": str(config.promotions.folder),
        "erp": without_password(config.erp.url),
        "loyalty": config.loyalty.url,
        "oms": config.oms.url,
    }


def without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


async def liveness(request: Request) -> JSONResponse:
    """200 ``{"status": "ok"}`` for as long as the process serves requests."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def readiness_endpoint(
    readiness: Readiness | None = None,
    operator_key: str | None = None,
    draining: Draining | None = None,
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """A Starlette endpoint answering a readiness report: 503 while unavailable. Only the
    status is shown, unless the request carries ``operator_key`` (see ``is_operator``): then
    every backend's probe is, with its address and error. Without ``readiness`` it uses the one
    the app's lifespan yielded in its state as ``readiness``. While ``draining``, 503
    ``{"status": "draining"}`` without probing anything."""

    async def endpoint(request: Request) -> JSONResponse:
        if draining is not None and draining.active:
            return JSONResponse(
                {"status": "draining"}, status_code=503, headers={"Cache-Control": "no-store"}
            )
        report = await (readiness or _from_state(request)).check()
        detailed = is_operator(request.headers, operator_key)
        return JSONResponse(
            report.as_json() if detailed else {"status": report.status},
            status_code=report.http_status,
            headers={"Cache-Control": "no-store"},
        )

    return endpoint


def health_routes(
    readiness: Readiness | None = None,
    operator_key: str | None = None,
    draining: Draining | None = None,
) -> list[Route]:
    """``GET /healthz`` and ``GET /readyz`` (see ``readiness_endpoint``)."""
    ready = readiness_endpoint(readiness, operator_key, draining)
    return [
        Route("/healthz", liveness, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
    ]


def _from_state(request: Request) -> Readiness:
    found = getattr(request.state, "readiness", None)
    if not isinstance(found, Readiness):
        raise RuntimeError("no Readiness in the app state: the lifespan must yield 'readiness'")
    return found
