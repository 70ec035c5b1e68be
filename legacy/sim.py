"""What every simulated legacy system shares: knobs (latency, jitter, errors, outage) and call
statistics, exposed at ``GET /_sim/stats``, ``GET|POST /_sim/knobs`` and ``POST /_sim/reset``.

A system's handlers call ``await simulator.call("Operation")`` first: it counts the call, sets
the latency of the answer, and raises ``SimulatedFailure`` for an outage or a random error, which
the system turns into its own protocol's error (a 503, a SOAP fault...).

The latency is the time from the request's arrival to the answer, the system's own work
included: a system at 20 ms answers 20 ms after it was asked (``HeldAnswers`` holds the answer
back until then), as long as its work takes less. A simulator's work is not the legacy system's,
so it must not lengthen the latency a benchmark sets. Without ``HeldAnswers`` around the app,
``call`` waits the latency itself, before the work.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SimulatedFailure(Exception):
    """The knobs say this call fails. ``outage`` tells a full outage from a random error."""

    def __init__(self, outage: bool) -> None:
        super().__init__("outage" if outage else "random error")
        self.outage = outage


@dataclass(slots=True)
class Knobs:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    outage: bool = False

    def update(self, values: dict[str, object]) -> None:
        """Apply a partial update; raises ValueError naming the bad knob."""
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}; knobs are {sorted(known)}")
            if name == "outage":
                if not isinstance(value, bool):
                    raise ValueError("outage must be true or false")
                self.outage = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            if name == "error_rate" and value > 1:
                raise ValueError("error_rate must be between 0 and 1")
            setattr(self, name, float(value))


@dataclass(slots=True)
class _Answer:
    """When the answer to the request being handled may leave (event loop time)."""

    arrived: float
    not_before: float = field(default=0.0)


_ANSWER: ContextVar[_Answer | None] = ContextVar("simulated_answer", default=None)


class HeldAnswers:
    """ASGI middleware: holds each HTTP answer until the latency its handler's ``call`` set
    has passed since the request arrived."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        answer = _Answer(arrived=loop.time())

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start":
                wait = answer.not_before - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            await send(message)

        token = _ANSWER.set(answer)
        try:
            await self.app(scope, receive, held)
        finally:
            _ANSWER.reset(token)


class Simulator:
    """Counts and delays the calls of one simulated system, as its knobs say."""

    def __init__(self, name: str, knobs: Knobs | None = None, seed: int | None = None) -> None:
        self.name = name
        self.knobs = knobs or Knobs()
        self._initial = replace(self.knobs)
        self.calls: Counter[str] = Counter()
        self._random = random.Random(seed)
        self.on_reset: list[Callable[[], None]] = []
        """What a system resets of its own (fault knobs of its protocol) on ``/_sim/reset``."""

    async def call(self, operation: str) -> None:
        self.calls[operation] += 1
        delay = (self.knobs.latency_ms + self._random.uniform(0, self.knobs.jitter_ms)) / 1000
        answer = _ANSWER.get()
        if answer is not None:
            answer.not_before = max(answer.not_before, answer.arrived + delay)
        elif delay > 0:
            await asyncio.sleep(delay)
        if self.knobs.outage:
            raise SimulatedFailure(outage=True)
        if self.knobs.error_rate and self._random.random() < self.knobs.error_rate:
            raise SimulatedFailure(outage=False)

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/stats", self._stats, methods=["GET"]),
            Route("/_sim/knobs", self._knobs, methods=["GET", "POST"]),
            Route("/_sim/reset", self._reset, methods=["POST"]),
        ]

    async def _stats(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {"system": self.name, "calls": dict(self.calls), "total": sum(self.calls.values())}
        )

    async def _knobs(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await request.json()
            if not isinstance(body, dict):
                return JSONResponse({"error": "expected a JSON object of knobs"}, status_code=400)
            try:
                self.knobs.update(body)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(self.knobs))

    async def _reset(self, request: Request) -> JSONResponse:
        """Clear the counters and set every knob back to the value it had at start."""
        self.calls.clear()
        self.knobs.update(asdict(self._initial))
        for reset in self.on_reset:
            reset()
        return JSONResponse({"system": self.name, "reset": True})


DEFAULT_LOYALTY_API_KEY = "demo-loyalty-key"


@dataclass(frozen=True, slots=True)
class SimSettings:
    """What every simulated system is started with (``legacy.<system>.create_app(settings)``).

    ``data_dir`` is the seeded estate's folder; ``erp_url`` is the ERP database's SQLAlchemy URL
    (used by the ERP only); ``api_key`` is the key the loyalty system demands.
    """

    data_dir: Path
    knobs: Knobs | None = None
    erp_url: str | None = None
    api_key: str = DEFAULT_LOYALTY_API_KEY
    seed: int | None = None
