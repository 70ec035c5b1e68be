"""The OMS's HTTP API over its order book (the wire format is in ``legacy.oms``)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from legacy.erp import BERLIN, book_movements, control_engine, unknown_stores
from legacy.launcher import default_erp_url
from legacy.oms.book import RECEIVED_FILE, FeedFaults, JsonObject, OrderBook, Received
from legacy.oms.validation import validation_errors
from legacy.sim import HeldAnswers, Knobs, SimSettings, SimulatedFailure, Simulator

FEED_LIMIT = 1000
STORED_BEFORE_FAILURE = 0.5
"""Share of random errors that strike after the order was stored."""


def _errors(status: int, errors: list[JsonObject]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


class OrderIntake:
    """The OMS's HTTP handlers over an ``OrderBook``; ``erp`` books the goods issues."""

    def __init__(
        self, book: OrderBook, simulator: Simulator, seed: int | None, erp: AsyncEngine
    ) -> None:
        self.book = book
        self.simulator = simulator
        self.faults = FeedFaults()
        simulator.on_reset.append(self.faults.reset)
        self._erp = erp
        self._random = random.Random(seed)
        self._shipping = asyncio.Lock()  # one goods issue per order, however often it is asked

    async def submit(self, request: Request) -> Response:
        try:
            await self.simulator.call("SubmitOrder")
        except SimulatedFailure as failure:
            if not failure.outage and self._random.random() < STORED_BEFORE_FAILURE:
                await self._accept(request)
            return _errors(503, [{"message": "order intake unavailable, retry later"}])
        return await self._accept(request)

    async def _accept(self, request: Request) -> Response:
        try:
            order = await request.json()
        except ValueError:
            order = None
        if not isinstance(order, dict):
            return _errors(400, [{"message": "expected a JSON object"}])
        errors = validation_errors(order)
        if errors:
            return _errors(422, errors)
        status, received = self.book.submit(order)
        if status == 201:
            self.faults.noticed(self.book)
        return JSONResponse(received.acknowledgement(), status_code=status)

    async def list_orders(self, request: Request) -> Response:
        await self.simulator.call("ListOrders")  # a failure is answered by _unavailable
        orders = [received.to_json() for received in self.book.orders.values()]
        return JSONResponse({"count": len(orders), "orders": orders})

    async def get_order(self, request: Request) -> Response:
        await self.simulator.call("GetOrder")
        received = self.book.orders.get(request.path_params["external_id"])
        if received is None:
            return _errors(404, [{"message": "order not found"}])
        return JSONResponse(received.to_json())

    async def ship(self, request: Request) -> Response:
        await self.simulator.call("ShipOrder")
        return await self._change(request, "CANCELLED", self._post_goods_issue)

    async def cancel(self, request: Request) -> Response:
        await self.simulator.call("CancelOrder")
        return await self._change(request, "SHIPPED", self._cancel)

    async def _change(
        self,
        request: Request,
        conflicting: str,
        change: Callable[[Received], Awaitable[Response | None]],
    ) -> Response:
        """``change`` a received order (its refusal, if any, is the answer); the same answer
        again once it is done; 409 when the order is ``conflicting``."""
        async with self._shipping:
            received = self.book.orders.get(request.path_params["external_id"])
            if received is None:
                return _errors(404, [{"message": "order not found"}])
            if received.status == conflicting:
                return _errors(409, [{"message": f"the order is {conflicting.lower()}"}])
            if received.status == "RECEIVED":
                refused = await change(received)
                if refused is not None:
                    return refused
        return JSONResponse(received.to_json())

    async def _post_goods_issue(self, received: Received) -> Response | None:
        lines = received.goods_issue_lines()
        deltas: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for line in lines:
            deltas[str(line["shipNode"]), str(line["itemNo"])] -= Decimal(str(line["qty"]))
        try:
            unknown = await unknown_stores(self._erp, {store for store, _ in deltas})
            if unknown:
                return _errors(
                    422, [{"field": "shipNode", "message": f"unknown to the ERP: {unknown}"}]
                )
            posted = await book_movements(self._erp, dict(deltas))
        except (SQLAlchemyError, OSError) as exc:
            return _errors(503, [{"message": f"the goods issue could not be posted: {exc}"}])
        posted_at = posted.replace(tzinfo=BERLIN).isoformat()
        self.book.ship(received, {"postedAt": posted_at, "lines": lines})
        self.faults.noticed(self.book)
        return None

    async def _cancel(self, received: Received) -> None:
        self.book.cancel(received)
        self.faults.noticed(self.book)

    async def changes(self, request: Request) -> Response:
        await self.simulator.call("GetOrderChanges")
        try:
            since = _count(request, "since", 0, minimum=0)
            limit = min(_count(request, "limit", 100, minimum=1), FEED_LIMIT)
        except ValueError as exc:
            return _errors(400, [{"message": str(exc)}])
        changes = self.faults.shown(self.book.changes_after(since, limit))
        head = len(self.book.feed)
        last = int(str(changes[-1]["seq"])) if changes else min(since, head)
        return JSONResponse({"changes": changes, "lastSeq": last, "hasMore": last < head})

    async def edit_faults(self, request: Request) -> Response:
        body = await request.json()
        try:
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(body)
        except ValueError as exc:
            return _errors(400, [{"message": str(exc)}])
        held = sorted(self.faults.held)
        return JSONResponse({"held": held, "holding": sorted(self.faults.holding)})


def _count(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}")
    return int(raw)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _errors(503, [{"message": "order management unavailable, retry later"}])


def create_app(settings: SimSettings) -> Starlette:
    """The OMS over HTTP; slow by default (250 ms plus up to 150 ms jitter per call)."""
    knobs = settings.knobs or Knobs(latency_ms=250, jitter_ms=150)
    simulator = Simulator("oms", knobs, seed=settings.seed)
    book = OrderBook(settings.data_dir / "oms" / RECEIVED_FILE)
    # Connecting waits for the first goods issue: an OMS started alone serves all but shipping.
    erp = control_engine(settings.erp_url or default_erp_url(settings.data_dir))
    intake = OrderIntake(book, simulator, settings.seed, erp)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await erp.dispose()

    routes = [
        Route("/api/orders", intake.submit, methods=["POST"]),
        Route("/api/orders", intake.list_orders, methods=["GET"]),
        Route("/api/orders/changes", intake.changes, methods=["GET"]),
        Route("/api/orders/{external_id}", intake.get_order, methods=["GET"]),
        Route("/api/orders/{external_id}/ship", intake.ship, methods=["POST"]),
        Route("/api/orders/{external_id}/cancel", intake.cancel, methods=["POST"]),
        Route("/_sim/feed", intake.edit_faults, methods=["POST"]),
        *simulator.routes(),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={SimulatedFailure: _unavailable},
        middleware=[Middleware(HeldAnswers)],
    )
