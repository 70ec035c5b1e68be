"""Calls to the legacy systems that fail well: the request's deadline, a time limit per call,
retries of reads under a budget, and a circuit breaker per backend.

``guard`` wraps a port the way ``gateway.metrics.instrument`` does, so the adapters know
nothing of it. Each call to the backend:

- is refused at once with ``CircuitOpen`` while that backend's breaker is open;
- gets at most the backend's ``timeout`` and never more than what is left of the request's
  deadline (``deadline``, set per HTTP request by ``RequestDeadline``); a call with no time left
  is not made;
- when it fails with ``BackendUnavailable`` and the operation only reads, is tried again after a
  jittered exponential backoff ("full jitter"), at most ``retries`` times, as long as the
  backend's ``RetryBudget`` allows: retries stay a fixed share of calls (10 % by default), so a
  failing backend is not sent twice its usual load by the gateway's own retries;
- when a batch lookup comes back as a ``PartialAnswer``, the retry asks only for the keys that
  were not answered, and what was answered is kept.

A refusal (``BackendRejected``) is an answer: it is neither retried nor counted against the
backend's health; nor is a ``PartialAnswer`` (what it missed is retried). The breaker opens
when, over its window, at least ``min_calls`` calls were made
and ``failure_ratio`` of them failed; after ``open_for`` seconds one probe is let through, and
its success closes the breaker (its failure opens it again).
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.ports import (
    BackendError,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    PartialAnswer,
)
from gateway.backends import WrappedPort

T = TypeVar("T")
Port = TypeVar("Port")

_DEADLINE: ContextVar[float | None] = ContextVar("request_deadline", default=None)

# Operations that change something at the backend: never retried here (their callers, the
# outbox above all, retry them with the same request id, on their own schedule).
WRITES: Final = frozenset({"earn", "redeem", "submit"})


class CircuitOpen(BackendUnavailable):
    """The backend's breaker is open: the call was not made. ``retry_after``: seconds until
    the breaker lets a probe through."""

    def __init__(self, backend: str, detail: str, retry_after: float) -> None:
        super().__init__(backend, detail)
        self.retry_after = retry_after


# --------------------------------------------------------------------------- deadline


def remaining() -> float | None:
    """Seconds left before the current request's deadline; None outside a request."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Every backend call made inside gets at most ``seconds`` from now, all told (an outer
    deadline that comes sooner stays)."""
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class RequestDeadline:
    """ASGI middleware: each HTTP request's backend calls end within ``seconds`` of its
    arrival (WebSocket connections live longer; each of their operations is bounded by the
    backends' own timeouts)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with deadline(self.seconds):
            await self.app(scope, receive, send)


# --------------------------------------------------------------------------- budget and breaker


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How calls to one backend are bounded, retried and cut off."""

    timeout: float = 5.0  # seconds for one call, whatever the adapter's own timeouts
    retries: int = 2  # further attempts of a read, budget permitting
    backoff: float = 0.05  # seconds, doubled per attempt, fully jittered
    max_backoff: float = 0.5
    retry_ratio: float = 0.1  # retries at most this share of calls...
    retry_floor: float = 1.0  # ...plus this many per second, so a quiet gateway may retry
    window: float = 10.0  # seconds of history the budget and the breaker look at
    failure_ratio: float = 0.8  # the breaker opens at this share of failed calls...
    min_calls: int = 20  # ...among at least this many calls in the window
    open_for: float = 5.0  # seconds before a probe is let through


class _Buckets:
    """Counts per second over the last ``window`` seconds."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._span = max(1, math.ceil(window))
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [second, a, b]

    def add(self, a: float = 0.0, b: float = 0.0) -> None:
        now = math.floor(self._clock())
        self._expire(now)
        if self._buckets and self._buckets[-1][0] == now:
            bucket = self._buckets[-1]
            bucket[1] += a
            bucket[2] += b
        else:
            self._buckets.append([now, a, b])

    def totals(self) -> tuple[float, float]:
        self._expire(math.floor(self._clock()))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def clear(self) -> None:
        self._buckets.clear()

    def _expire(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] <= now - self._span:
            self._buckets.popleft()


class RetryBudget:
    """Finagle's retry budget: each call deposits ``ratio`` of a retry, each retry withdraws
    one; deposits lapse after ``window`` seconds, and ``floor`` retries per second are always
    allowed on top."""

    def __init__(
        self,
        ratio: float,
        floor: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._reserve = floor * window
        self._counts = _Buckets(window, clock)  # (calls, retries)

    def deposit(self) -> None:
        self._counts.add(a=1)

    def withdraw(self) -> bool:
        """Take one retry if the budget holds one."""
        calls, retries = self._counts.totals()
        if calls * self._ratio + self._reserve - retries < 1:
            return False
        self._counts.add(b=1)
        return True


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One backend's breaker (see the module's docstring)."""

    def __init__(self, policy: CallPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._counts = _Buckets(policy.window, clock)  # (calls, failures)
        self.state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probing = False

    def admit(self) -> bool:
        """May a call go out now? In the half-open state, only one at a time (the probe)."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self._policy.open_for:
                return False
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
        return True

    def record(self, ok: bool) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            if ok:
                self.state = BreakerState.CLOSED
                self._counts.clear()
            else:
                self._open()
            return
        self._counts.add(a=1, b=0 if ok else 1)
        if ok or self.state is BreakerState.OPEN:
            return
        calls, failures = self._counts.totals()
        if calls >= self._policy.min_calls and failures >= self._policy.failure_ratio * calls:
            self._open()

    def abandon(self) -> None:
        """A call was let through and ended without telling whether the backend works."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False

    def retry_after(self) -> float:
        """Seconds until a probe may go out (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._policy.open_for - (self._clock() - self._opened_at))

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = self._clock()


# --------------------------------------------------------------------------- guard


class GuardMetrics:
    """The guards' counters, in the gateway's registry."""

    def __init__(self, registry: Any) -> None:
        self.retries = Counter(
            "gateway_backend_retries_total",
            "Backend calls sent again after a failure, by backend.",
            ["backend"],
            registry=registry,
        )
        self.retries_refused = Counter(
            "gateway_backend_retries_refused_total",
            "Retries not made because the backend's retry budget was spent.",
            ["backend"],
            registry=registry,
        )
        self.short_circuited = Counter(
            "gateway_backend_short_circuited_total",
            "Calls refused without being made, because the backend's breaker was open.",
            ["backend"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "gateway_backend_circuit_open",
            "1 while the backend's breaker is open or probing, else 0.",
            ["backend"],
            registry=registry,
        )


class Guard:
    """One backend's deadline, timeout, retries and breaker (see the module's docstring)."""

    def __init__(
        self,
        backend: str,
        policy: CallPolicy,
        metrics: GuardMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.breaker = CircuitBreaker(policy, clock)
        self.budget = RetryBudget(policy.retry_ratio, policy.retry_floor, policy.window, clock)
        self._metrics = metrics
        if metrics is not None:
            metrics.circuit_open.labels(backend).set_function(
                lambda: float(self.breaker.state is not BreakerState.CLOSED)
            )

    async def call(
        self, attempt: Callable[[Sequence[Any] | None], Awaitable[T]], *, retried: bool
    ) -> T:
        """``attempt(None)`` once, and again under the rules above while it fails and
        ``retried``; after a ``PartialAnswer``, ``attempt(unanswered keys)``, and the answers
        are merged (``T`` is then a mapping)."""
        self.budget.deposit()
        kept: dict[Any, Any] = {}
        keys: Sequence[Any] | None = None
        tries = 1 + (self.policy.retries if retried else 0)
        for number in range(tries):
            try:
                answer = await self._once(attempt, keys)
            except PartialAnswer as partial:
                kept.update(partial.found)
                keys = partial.unanswered
                failure: BackendError = partial
            except BackendUnavailable as exc:
                failure = exc
            else:
                if not kept:
                    return answer
                return cast(T, {**kept, **cast(Mapping[Any, Any], answer)})
            pause = None if number + 1 == tries else self._retry_pause(number)
            if pause is None:
                break
            await asyncio.sleep(pause)
        if kept:
            raise PartialAnswer(self.backend, str(failure), kept, keys or ()) from failure
        raise failure

    async def _once(
        self, attempt: Callable[[Sequence[Any] | None], Awaitable[T]], keys: Sequence[Any] | None
    ) -> T:
        left = remaining()
        if left is not None and left <= 0:
            raise BackendTimedOut(self.backend, "no time left before the request's deadline")
        if not self.breaker.admit():
            if self._metrics is not None:
                self._metrics.short_circuited.labels(self.backend).inc()
            raise CircuitOpen(
                self.backend,
                "circuit open: the backend failed too often",
                self.breaker.retry_after(),
            )
        limit = self.policy.timeout if left is None else min(self.policy.timeout, left)
        try:
            async with asyncio.timeout(limit):
                answer = await attempt(keys)
        except TimeoutError as exc:
            self.breaker.record(False)
            raise BackendTimedOut(self.backend, f"no answer within {limit:.2f} s") from exc
        except (BackendRejected, PartialAnswer):
            # It answered (refused, or answered part of a batch split into several calls):
            # only a call that got nothing back counts against its health.
            self.breaker.record(True)
            raise
        except BackendUnavailable:
            self.breaker.record(False)
            raise
        except BaseException:
            self.breaker.abandon()  # cancelled, or our own bug: says nothing of the backend
            raise
        self.breaker.record(True)
        return answer

    def _retry_pause(self, number: int) -> float | None:
        """How long to wait before retry ``number + 1``, or None when it must not be made: no
        time left, the breaker not closed, or the budget spent."""
        pause = random.uniform(0, min(self.policy.max_backoff, self.policy.backoff * 2**number))
        left = remaining()
        if left is not None and left <= pause:
            return None
        if self.breaker.state is not BreakerState.CLOSED or not self.budget.withdraw():
            if self._metrics is not None:
                self._metrics.retries_refused.labels(self.backend).inc()
            return None
        if self._metrics is not None:
            self._metrics.retries.labels(self.backend).inc()
        return pause


class GuardedPort(WrappedPort):
    """A stand-in for a port whose coroutine methods (except ``aclose``) go through a
    ``Guard``; reads are retried, the operations in ``writes`` are not."""

    def __init__(self, port: object, guard: Guard, writes: Collection[str] = WRITES) -> None:
        super().__init__(
            port, lambda name, method: _guarded(method, guard, retried=name not in writes)
        )


def guard(port: Port, backend_guard: Guard) -> Port:
    """``port`` with every call to its backend under ``backend_guard``."""
    return cast(Port, GuardedPort(port, backend_guard))


def _guarded(
    method: Callable[..., Awaitable[object]], guard: Guard, *, retried: bool
) -> Callable[..., Awaitable[object]]:
    async def call(*args: object, **kwargs: object) -> object:
        async def attempt(keys: Sequence[Any] | None) -> object:
            if keys is None:
                return await method(*args, **kwargs)
            # A batch lookup takes its keys first (the ports' convention): ask for the rest.
            return await method(list(keys), *args[1:], **kwargs)

        return await guard.call(attempt, retried=retried)

    call.__name__ = getattr(method, "__name__", "call")
    call.__doc__ = method.__doc__
    return call
