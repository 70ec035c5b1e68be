"""Prometheus metrics: backend calls (count, errors, latency), GraphQL requests, and the round
trips to the gateway's own database.

Each ``Metrics`` owns its registry, so several apps in one process (tests, benchmarks) never
share or collide on counters. ``instrument`` wraps any port so that every call it makes to its
legacy system is counted and timed under the method's name, without the port knowing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.backends import WrappedPort
from gateway.db import SQLITE_STATEMENTS_ONLY
from gateway.security import is_operator, operator_only

# From a cache hit (1 ms) to a backend at its timeout (10 s).
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
DATABASE_ROUND_TRIPS: Final = ("begin", "commit", "rollback")  # besides statements
ANONYMOUS_OPERATION: Final = "anonymous"
OTHER_OPERATION: Final = "other"

Port = TypeVar("Port")


class Metrics:
    """The gateway's metrics in a registry of their own.

    Operation names of GraphQL requests are chosen by clients, so at most ``max_operations``
    distinct names are kept as labels; later ones are counted as ``other``.
    """

    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self, max_operations: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._max_operations = max_operations
        self._operations: set[str] = set()
        self.backend_requests = Counter(
            "gateway_backend_requests_total",
            "Calls the gateway made to a legacy backend, by port operation.",
            ["backend", "operation"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "gateway_backend_errors_total",
            "Backend calls that raised, by exception class.",
            ["backend", "operation", "error"],
            registry=self.registry,
        )
        self.backend_duration = Histogram(
            "gateway_backend_request_duration_seconds",
            "Duration of backend calls, failures included.",
            ["backend", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.graphql_requests = Counter(
            "gateway_graphql_requests_total",
            "GraphQL requests by operation name, channel and outcome (ok or error).",
            ["operation", "channel", "outcome"],
            registry=self.registry,
        )
        self.database_round_trips = Counter(
            "gateway_database_round_trips_total",
            "Round trips to the gateway's database: statements (a batch of parameter sets"
            " counts once), and BEGIN, COMMIT and ROLLBACK outside autocommit mode.",
            ["kind"],
            registry=self.registry,
        )
        self.graphql_duration = Histogram(
            "gateway_graphql_request_duration_seconds",
            "Duration of GraphQL requests by operation name.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_graphql(
        self, operation: str | None, channel: str, ok: bool, seconds: float
    ) -> None:
        """Count one GraphQL request of ``channel`` that took ``seconds``; ``ok`` is False when
        the response carried errors. A None or empty ``operation`` is ``anonymous``."""
        label = self._operation_label(operation)
        outcome = "ok" if ok else "error"
        self.graphql_requests.labels(label, channel, outcome).inc()
        self.graphql_duration.labels(label).observe(seconds)

    def render(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def _operation_label(self, operation: str | None) -> str:
        if not operation:
            return ANONYMOUS_OPERATION
        if operation in self._operations:
            return operation
        if len(self._operations) >= self._max_operations:
            return OTHER_OPERATION
        self._operations.add(operation)
        return operation


class InstrumentedPort(WrappedPort):
    """A stand-in for a port whose coroutine methods (except ``aclose``) are counted and timed."""

    def __init__(self, port: object, backend: str, metrics: Metrics) -> None:
        super().__init__(port, lambda name, method: _timed(method, backend, name, metrics))


def instrument(port: Port, backend: str, metrics: Metrics) -> Port:
    """``port`` with each call to its backend counted and timed in ``metrics`` under
    ``backend`` and the method's name; errors are counted by class and re-raised unchanged.
    The result still passes ``isinstance`` checks against the port's runtime protocol."""
    return cast(Port, InstrumentedPort(port, backend, metrics))


def _timed(
    method: Callable[..., Awaitable[object]], backend: str, operation: str, metrics: Metrics
) -> Callable[..., Awaitable[object]]:
    requests = metrics.backend_requests.labels(backend, operation)
    duration = metrics.backend_duration.labels(backend, operation)

    @functools.wraps(method)
    async def call(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        requests.inc()
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            # Counted, then re-raised untouched: the caller decides what a failure means.
            metrics.backend_errors.labels(backend, operation, type(exc).__name__).inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)

    return call


def count_round_trips(engine: AsyncEngine, metrics: Metrics) -> None:
    """Count in ``metrics`` every round trip ``engine`` makes to its database, by kind: what
    an order costs the database is read from these, in production as in the benchmarks."""
    sync_engine = engine.sync_engine
    statements = metrics.database_round_trips.labels("statement")
    ends = {kind: metrics.database_round_trips.labels(kind) for kind in DATABASE_ROUND_TRIPS}

    def statement(*_: object) -> None:
        statements.inc()

    def counter(kind: str) -> Callable[[Connection], None]:
        if kind == "begin" and engine.dialect.name == "sqlite":
            return lambda connection: None  # its BEGIN IMMEDIATE is a statement (gateway.db)

        def count(connection: Connection) -> None:
            # In autocommit mode (see gateway.db.autocommit) no BEGIN, COMMIT or ROLLBACK is sent.
            options = connection.get_execution_options()
            if (
                options.get("isolation_level") != "AUTOCOMMIT"
                and SQLITE_STATEMENTS_ONLY not in options
            ):
                ends[kind].inc()

        return count

    event.listen(sync_engine, "before_cursor_execute", statement)
    for kind in DATABASE_ROUND_TRIPS:
        event.listen(sync_engine, kind, counter(kind))


def metrics_endpoint(
    metrics: Metrics, operator_key: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint answering ``metrics`` in the text exposition format, to operators
    only (see ``is_operator``): 401 for anyone else."""

    async def endpoint(request: Request) -> Response:
        if not is_operator(request.headers, operator_key):
            return operator_only()
        return Response(metrics.render(), media_type=metrics.content_type)

    return endpoint


def metrics_route(
    metrics: Metrics, path: str = "/metrics", operator_key: str | None = None
) -> Route:
    """``GET path`` answering ``metrics`` for Prometheus to scrape with ``operator_key``."""
    return Route(path, metrics_endpoint(metrics, operator_key), methods=["GET"])
