"""The simulated order management system (OMS): REST/JSON order intake, slow and sometimes 503.

Wire format:

- ``POST /api/orders`` with an order in the OMS's own shape::

      {"externalOrderId": "O-1", "salesChannel": "WEB", "customerId": "C0001" | null,
       "fulfilmentType": "HOME_DELIVERY" | "STORE_PICKUP" | "STORE_DELIVERY" | "CARRY_OUT",
       "shipToPostalCode": "80331" | null,
       "orderLines": [{"lineNo": 1, "itemNo": "SKU", "qty": 2, "shipNode": "0001",
                       "unitPrice": "12.99", "lineTotal": "25.98"}],
       "orderTotal": "25.98", "currency": "EUR", "placedAt": "2026-01-05T10:00:00Z"}

  Amounts are decimal strings with at most two decimals; ``placedAt`` must carry an offset.
  -> 201 ``{"omsOrderNo": "OMS-0000001", "externalOrderId", "status": "RECEIVED",
  "receivedAt"}``. The same ``externalOrderId`` again -> 200 with exactly that body (the first
  order is kept; the repeat is only counted). Invalid -> 422 ``{"errors": [{"field",
  "message"}]}``; a body that is not a JSON object -> 400.
- ``GET /api/orders`` -> ``{"count", "orders": [{"omsOrderNo", "externalOrderId", "status",
  "receivedAt", "submissions", "order"}]}`` in the order received; ``GET /api/orders/{id}`` one
  of them, or 404.

Every order and every repeat is appended to ``data_dir/oms/received.jsonl`` and replayed at
start, so a restart loses nothing (a torn last line from a crash is skipped).

Failures: an outage answers 503 and stores nothing. A random error (``error_rate``) answers 503
too, but in about half of those cases the order had already been stored, as when a real OMS
commits and then fails to answer. A client that resubmits the same ``externalOrderId`` after a
503 is safe either way: it gets the original number.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from legacy.sim import HeldAnswers, Knobs, SimSettings, SimulatedFailure, Simulator

RECEIVED_FILE = "received.jsonl"
FULFILMENT_TYPES = frozenset({"HOME_DELIVERY", "STORE_PICKUP", "STORE_DELIVERY", "CARRY_OUT"})
STORED_BEFORE_FAILURE = 0.5
"""Share of random errors that strike after the order was stored."""
_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

JsonObject = dict[str, object]


@dataclass(slots=True)
class _Received:
    number: str
    external_id: str
    received_at: str
    order: JsonObject
    submissions: int = 1

    def acknowledgement(self) -> JsonObject:
        return {
            "omsOrderNo": self.number,
            "externalOrderId": self.external_id,
            "status": "RECEIVED",
            "receivedAt": self.received_at,
        }

    def to_json(self) -> JsonObject:
        return {**self.acknowledgement(), "submissions": self.submissions, "order": self.order}


class OrderBook:
    """The orders received, in order, kept in memory and journalled to a JSON-lines file."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal
        self.orders: dict[str, _Received] = {}
        if journal.is_file():
            self._replay(journal.read_text(encoding="utf-8"))

    def _replay(self, text: str) -> None:
        complete, _, torn = text.rpartition("\n")
        if torn:
            # A crash cut the last append short; its client never got an answer. Drop it, so
            # the next append starts on a line of its own.
            with self._journal.open("r+", encoding="utf-8") as journal:
                journal.truncate(len(complete.encode()) + 1 if complete else 0)
        for line in complete.splitlines():
            self._apply(json.loads(line))

    def _apply(self, event: JsonObject) -> None:
        if event["event"] == "received":
            order = event["order"]
            assert isinstance(order, dict)
            external_id = str(order["externalOrderId"])
            number, at = str(event["omsOrderNo"]), str(event["receivedAt"])
            self.orders[external_id] = _Received(number, external_id, at, order)
        else:
            self.orders[str(event["externalOrderId"])].submissions += 1

    def submit(self, order: JsonObject) -> tuple[int, _Received]:
        """Store a validated order, or count a repeat of a known one. Returns the HTTP status
        (201 new, 200 repeat) and the record."""
        external_id = str(order["externalOrderId"])
        known = self.orders.get(external_id)
        now = _timestamp(datetime.now(UTC))
        if known is not None:
            self._append({"event": "resubmitted", "externalOrderId": external_id, "at": now})
            known.submissions += 1
            return 200, known
        received = _Received(f"OMS-{len(self.orders) + 1:07d}", external_id, now, order)
        event = {"event": "received", "omsOrderNo": received.number, "receivedAt": now}
        self._append({**event, "order": order})
        self.orders[external_id] = received
        return 201, received

    def _append(self, event: JsonObject) -> None:
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        with self._journal.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(event, separators=(",", ":")) + "\n")


def _timestamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- validation


def validation_errors(order: JsonObject) -> list[JsonObject]:
    """What is wrong with an order, as the OMS reports it; empty when it is acceptable."""
    errors = [
        *_text(order, "externalOrderId", 64),
        *_text(order, "salesChannel", 32),
        *_optional_text(order, "customerId"),
        *_optional_text(order, "shipToPostalCode"),
        *_amount(order, "orderTotal", "orderTotal"),
        *_placed_at(order),
    ]
    if order.get("fulfilmentType") not in FULFILMENT_TYPES:
        errors.append(_problem("fulfilmentType", f"one of {sorted(FULFILMENT_TYPES)}"))
    if not _CURRENCY.match(str(order.get("currency", ""))):
        errors.append(_problem("currency", "an ISO 4217 code"))
    lines = order.get("orderLines")
    if not isinstance(lines, list) or not lines:
        return [*errors, _problem("orderLines", "a non-empty list")]
    for index, line in enumerate(lines):
        errors += _line_errors(line, f"orderLines[{index}]")
    return errors


def _line_errors(line: object, where: str) -> list[JsonObject]:
    if not isinstance(line, dict):
        return [_problem(where, "an object")]
    errors = [
        *_text(line, "itemNo", 64, where),
        *_text(line, "shipNode", 16, where),
        *_amount(line, "unitPrice", f"{where}.unitPrice"),
        *_amount(line, "lineTotal", f"{where}.lineTotal"),
    ]
    for name in ("lineNo", "qty"):
        value = line.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            errors.append(_problem(f"{where}.{name}", "a positive integer"))
    return errors


def _problem(field: str, expected: str) -> JsonObject:
    return {"field": field, "message": f"must be {expected}"}


def _text(body: JsonObject, name: str, longest: int, where: str = "") -> list[JsonObject]:
    value = body.get(name)
    if isinstance(value, str) and 0 < len(value) <= longest:
        return []
    return [_problem(f"{where}.{name}" if where else name, f"a string of 1 to {longest}")]


def _optional_text(body: JsonObject, name: str) -> list[JsonObject]:
    value = body.get(name)
    return [] if value is None or isinstance(value, str) else [_problem(name, "a string or null")]


def _amount(body: JsonObject, name: str, field: str) -> list[JsonObject]:
    value = body.get(name)
    if isinstance(value, str) and _AMOUNT.match(value):
        return []
    return [_problem(field, 'a decimal string with at most two decimals, e.g. "12.99"')]


def _placed_at(order: JsonObject) -> list[JsonObject]:
    value = order.get("placedAt")
    try:
        placed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        placed = None
    if placed is not None and placed.tzinfo is not None:
        return []
    return [_problem("placedAt", "an ISO 8601 timestamp with an offset")]


# --------------------------------------------------------------------------- the API


def _errors(status: int, errors: list[JsonObject]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


class OrderIntake:
    """The OMS's HTTP handlers over an ``OrderBook``."""

    def __init__(self, book: OrderBook, simulator: Simulator, seed: int | None) -> None:
        self.book = book
        self.simulator = simulator
        self._random = random.Random(seed)

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


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _errors(503, [{"message": "order management unavailable, retry later"}])


def create_app(settings: SimSettings) -> Starlette:
    """The OMS over HTTP; slow by default (250 ms plus up to 150 ms jitter per call)."""
    knobs = settings.knobs or Knobs(latency_ms=250, jitter_ms=150)
    simulator = Simulator("oms", knobs, seed=settings.seed)
    book = OrderBook(settings.data_dir / "oms" / RECEIVED_FILE)
    intake = OrderIntake(book, simulator, settings.seed)
    routes = [
        Route("/api/orders", intake.submit, methods=["POST"]),
        Route("/api/orders", intake.list_orders, methods=["GET"]),
        Route("/api/orders/{external_id}", intake.get_order, methods=["GET"]),
        *simulator.routes(),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={SimulatedFailure: _unavailable},
        middleware=[Middleware(HeldAnswers)],
    )
