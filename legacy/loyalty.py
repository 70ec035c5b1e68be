"""The simulated loyalty/CRM platform: REST/JSON with its own API key, a rate limit and
idempotent point movements.

Wire format (every ``/v2`` call needs the header ``X-Loyalty-Api-Key``; without it: 401):

- ``GET /v2/members?ids=C0001,C0002`` -> ``{"members": [member...], "notFound": ["C9999"]}``,
  at most 50 ids per call (more: 400 ``TOO_MANY_IDS``).
- ``GET /v2/members/by-card/{cardNo}`` -> one member, or 404. There is no batch lookup by card.
- ``GET /v2/members/{memberId}/transactions?limit=20&offset=0`` -> ``{"memberId", "total",
  "transactions": [txn...]}``, newest first, ``limit`` at most 100.
- ``POST /v2/members/{memberId}/earn`` and ``.../redeem`` with ``{"requestId", "points",
  "reason"}`` -> 201 ``{"requestId", "memberId", "transaction": txn, "pointsBalance"}``. A
  redemption beyond the balance -> 409 ``{"error": {"code": "INSUFFICIENT_BALANCE",
  "balance": n}}``. Both outcomes are remembered by ``requestId``: a repeat gets exactly the first
  status and body, whatever its own body says. Refusals that did nothing (400, 404, 503) are not
  remembered.

A member is ``{"memberId", "cardNo", "firstName", "lastName", "email", "tierLevel",
"pointsBalance", "status", "lastActivity"}``; a transaction is ``{"txnId", "postedAt", "points",
"reason", "reference"}`` with ``points`` negative for redemptions. Timestamps are epoch
milliseconds, as the platform has always sent them. Errors are ``{"error": {"code", "message"}}``.

Requests are limited per API key by a token bucket (default 200/s, burst 50); over it the
platform answers 429 with ``Retry-After`` in whole seconds, before the call reaches the
simulator (so it is not counted as an operation). ``GET|POST /_sim/ratelimit`` reads or sets
``{"per_second", "burst"}`` and reports how many requests were ``rejected``; ``POST /_sim/reset``
also restores the initial limit. Balances live in memory, loaded from ``accounts.json`` at start.
Tiers are recomputed by a nightly batch the simulator does not run, so they never change.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from legacy.demo import DemoCustomer, DemoEstate
from legacy.sim import HeldAnswers, SimSettings, SimulatedFailure, Simulator

API_KEY_HEADER = "X-Loyalty-Api-Key"
BATCH_CAP = 50
TRANSACTIONS_CAP = 100
DEFAULT_PER_SECOND = 200.0
DEFAULT_BURST = 50.0
ACCOUNTS_FILE = "accounts.json"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

JsonObject = dict[str, object]


def epoch_millis(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


# --------------------------------------------------------------------------- data file


def write_data(estate: DemoEstate, directory: Path) -> None:
    """Write the platform's member export, ``directory/accounts.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    export = {"format": "crm-member-export/2", "members": [_export(c) for c in estate.customers]}
    (directory / ACCOUNTS_FILE).write_text(json.dumps(export, separators=(",", ":")) + "\n")


def _export(customer: DemoCustomer) -> JsonObject:
    return {
        "memberId": customer.id,
        "cardNo": customer.card_number,
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "email": customer.email,
        "tierLevel": customer.tier,
        "pointsBalance": customer.points,
        "transactions": [
            {
                "txnId": entry.entry_id,
                "postedAt": epoch_millis(entry.at),
                "points": entry.points,
                "reason": entry.reason,
                "reference": entry.reference,
            }
            for entry in customer.history
        ],
    }


@dataclass(slots=True)
class _Member:
    record: JsonObject  # the member fields as exported, minus transactions
    transactions: list[JsonObject]  # oldest first, as appended

    @property
    def balance(self) -> int:
        value = self.record["pointsBalance"]
        assert isinstance(value, int)
        return value

    def to_json(self) -> JsonObject:
        last = self.transactions[-1]["postedAt"] if self.transactions else None
        return {**self.record, "status": "ACTIVE", "lastActivity": last}


def _load_members(path: Path) -> dict[str, _Member]:
    export = json.loads(path.read_text())
    members: dict[str, _Member] = {}
    for row in export["members"]:
        transactions = row.pop("transactions")
        members[row["memberId"]] = _Member(row, transactions)
    return members


# --------------------------------------------------------------------------- rate limit


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_at: float


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per API key: ``per_second`` tokens flow in, at most ``burst`` are kept."""

    per_second: float = DEFAULT_PER_SECOND
    burst: float = DEFAULT_BURST
    rejected: int = 0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, key: str) -> int | None:
        """Take a token for ``key``; when there is none, count the rejection and return the
        whole seconds until there will be one."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(self.burst, now))
        elapsed = now - bucket.refilled_at
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.per_second)
        bucket.refilled_at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        self.rejected += 1
        return max(1, math.ceil((1 - bucket.tokens) / self.per_second))

    def configure(self, values: JsonObject) -> None:
        """Apply a partial ``{"per_second", "burst"}`` update and refill every bucket."""
        for name in values:
            if name not in ("per_second", "burst"):
                raise ValueError(f"unknown setting {name!r}; settings are burst, per_second")
        per_second = _positive_number(values.get("per_second", self.per_second), "per_second")
        burst = _positive_number(values.get("burst", self.burst), "burst")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second, self.burst = per_second, burst
        self._buckets.clear()

    def describe(self) -> JsonObject:
        return {"per_second": self.per_second, "burst": self.burst, "rejected": self.rejected}


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number")
    return float(value)


# --------------------------------------------------------------------------- the API


def _error(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


class LoyaltyPlatform:
    """The platform's state (members, remembered point movements) and its HTTP handlers."""

    def __init__(self, members: dict[str, _Member], simulator: Simulator, api_key: str) -> None:
        self.members = members
        self.by_card = {str(m.record["cardNo"]): m for m in members.values()}
        self.simulator = simulator
        self.limiter = RateLimiter()
        self._api_key = api_key
        self._outcomes: dict[str, tuple[int, JsonObject]] = {}
        self._next_transaction = 1

    async def _admit(self, request: Request, operation: str) -> Response | None:
        """Authenticate, rate-limit and run the simulator's knobs; a response means refusal."""
        key = request.headers.get(API_KEY_HEADER)
        if key != self._api_key:
            return _error(401, "UNAUTHORIZED", f"missing or invalid {API_KEY_HEADER}")
        wait = self.limiter.admit(key)
        if wait is not None:
            response = _error(429, "RATE_LIMITED", "too many requests")
            response.headers["Retry-After"] = str(wait)
            return response
        try:
            await self.simulator.call(operation)
        except SimulatedFailure as failure:
            return _error(503, "SERVICE_UNAVAILABLE", f"platform unavailable ({failure})")
        return None

    async def members_by_id(self, request: Request) -> Response:
        if (refusal := await self._admit(request, "GetMembers")) is not None:
            return refusal
        ids = [part for part in request.query_params.get("ids", "").split(",") if part]
        if not ids:
            return _error(400, "INVALID_REQUEST", "ids is required")
        if len(ids) > BATCH_CAP:
            return _error(400, "TOO_MANY_IDS", f"at most {BATCH_CAP} ids", max=BATCH_CAP)
        unique = list(dict.fromkeys(ids))
        found = [self.members[i].to_json() for i in unique if i in self.members]
        missing = [i for i in unique if i not in self.members]
        return JSONResponse({"members": found, "notFound": missing})

    async def member_by_card(self, request: Request) -> Response:
        if (refusal := await self._admit(request, "GetMemberByCard")) is not None:
            return refusal
        member = self.by_card.get(request.path_params["card"])
        if member is None:
            return _error(404, "CARD_NOT_FOUND", "no member holds this card")
        return JSONResponse(member.to_json())

    async def transactions(self, request: Request) -> Response:
        if (refusal := await self._admit(request, "GetTransactions")) is not None:
            return refusal
        member = self.members.get(request.path_params["member"])
        if member is None:
            return _error(404, "MEMBER_NOT_FOUND", "no such member")
        try:
            limit = int(request.query_params.get("limit", "20"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return _error(400, "INVALID_REQUEST", "limit and offset must be integers")
        if not 1 <= limit <= TRANSACTIONS_CAP or offset < 0:
            return _error(400, "INVALID_REQUEST", f"limit is 1..{TRANSACTIONS_CAP}, offset >= 0")
        newest_first = member.transactions[::-1][offset : offset + limit]
        body = {"memberId": member.record["memberId"], "total": len(member.transactions)}
        return JSONResponse({**body, "transactions": newest_first})

    async def earn(self, request: Request) -> Response:
        return await self._move_points(request, "EarnPoints", sign=1)

    async def redeem(self, request: Request) -> Response:
        return await self._move_points(request, "RedeemPoints", sign=-1)

    async def _move_points(self, request: Request, operation: str, sign: int) -> Response:
        if (refusal := await self._admit(request, operation)) is not None:
            return refusal
        movement = _parse_movement(await _json_object(request))
        if isinstance(movement, str):
            return _error(400, "INVALID_REQUEST", movement)
        # No await from here on: the check and the booking are atomic within the event loop.
        if movement.request_id in self._outcomes:
            status, remembered = self._outcomes[movement.request_id]
            return JSONResponse(remembered, status_code=status)
        member = self.members.get(request.path_params["member"])
        if member is None:
            return _error(404, "MEMBER_NOT_FOUND", "no such member")
        status, outcome = self._book(member, movement, sign * movement.points)
        self._outcomes[movement.request_id] = (status, outcome)
        return JSONResponse(outcome, status_code=status)

    def _book(self, member: _Member, movement: _Movement, points: int) -> tuple[int, JsonObject]:
        if member.balance + points < 0:
            error = {"code": "INSUFFICIENT_BALANCE", "balance": member.balance}
            return 409, {"error": {**error, "message": "not enough points"}}
        transaction: JsonObject = {
            "txnId": f"T{self._next_transaction:08d}",
            "postedAt": epoch_millis(datetime.now(UTC)),
            "points": points,
            "reason": movement.reason,
            "reference": movement.request_id,
        }
        self._next_transaction += 1
        member.transactions.append(transaction)
        member.record["pointsBalance"] = member.balance + points
        return 201, {
            "requestId": movement.request_id,
            "memberId": member.record["memberId"],
            "transaction": transaction,
            "pointsBalance": member.balance,
        }

    async def rate_limit(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _json_object(request)
            try:
                if body is None:
                    raise ValueError("expected a JSON object")
                self.limiter.configure(body)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.limiter.describe())

    async def reset(self, request: Request) -> Response:
        """The simulator's reset, plus the initial rate limit with full buckets."""
        self.limiter = RateLimiter()
        simulator_reset = next(r for r in self.simulator.routes() if r.path == "/_sim/reset")
        response: Response = await simulator_reset.endpoint(request)
        return response


async def _json_object(request: Request) -> JsonObject | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@dataclass(frozen=True, slots=True)
class _Movement:
    request_id: str
    points: int  # always positive; the endpoint gives the sign
    reason: str


def _parse_movement(body: JsonObject | None) -> _Movement | str:
    """The movement a request asks for, or what is wrong with it."""
    if body is None:
        return "expected a JSON object"
    request_id, points, reason = body.get("requestId"), body.get("points"), body.get("reason")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        return "requestId must be a string of 1 to 64 characters"
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        return "points must be a positive integer"
    if reason is not None and not isinstance(reason, str):
        return "reason must be a string"
    return _Movement(request_id, points, reason or "")


def create_app(settings: SimSettings) -> Starlette:
    """The platform over HTTP, loaded from ``settings.data_dir/loyalty/accounts.json``."""
    members = _load_members(settings.data_dir / "loyalty" / ACCOUNTS_FILE)
    simulator = Simulator("loyalty", settings.knobs, seed=settings.seed)
    platform = LoyaltyPlatform(members, simulator, settings.api_key)
    routes = [
        Route("/v2/members", platform.members_by_id, methods=["GET"]),
        Route("/v2/members/by-card/{card}", platform.member_by_card, methods=["GET"]),
        Route("/v2/members/{member}/transactions", platform.transactions, methods=["GET"]),
        Route("/v2/members/{member}/earn", platform.earn, methods=["POST"]),
        Route("/v2/members/{member}/redeem", platform.redeem, methods=["POST"]),
        Route("/_sim/ratelimit", platform.rate_limit, methods=["GET", "POST"]),
        Route("/_sim/reset", platform.reset, methods=["POST"]),
        *simulator.routes(),
    ]
    return Starlette(routes=routes, middleware=[Middleware(HeldAnswers)])
