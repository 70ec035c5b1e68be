"""The loyalty/CRM platform over its REST/JSON API, as a ``LoyaltyPort``.

What this adapter absorbs: the platform's API key header, its 50-id batch cap (ids are chunked
and the chunks fetched concurrently), the absence of a batch lookup by card (cards are looked up
one by one, concurrently), its 429 rate limit (waits ``Retry-After`` and retries), timestamps in
epoch milliseconds, its own field names, and its error bodies ``{"error": {"code", ...}}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from adapters.http import Answer, backend_client
from adapters.ports import (
    BackendError,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    InsufficientPoints,
    LoyaltyAccount,
    LoyaltyEntry,
    LoyaltyReceipt,
)

BACKEND = "loyalty"
API_KEY_HEADER = "X-Loyalty-Api-Key"
BATCH_CAP = 50
TRANSACTIONS_PAGE = 100
MAX_RETRY_AFTER = 5.0
"""Longest wait honoured from a ``Retry-After``: a caller waiting longer is better served by a
BackendUnavailable it can degrade on."""
RETRY_BACKOFF = 0.1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class RestLoyalty:
    """``LoyaltyPort`` over the platform's ``/v2`` API.

    Reads are retried only when rate-limited. Earn and redeem are idempotent by request id on
    the platform, so they are also retried, with the same request id, after a 5xx, a timeout or
    a lost connection, at most ``max_retries`` times. A receipt's ``points`` is signed like a
    history entry: positive for an earn, negative for a redemption.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        max_retries: int = 3,
        max_connections: int = 32,
    ) -> None:
        self._client = backend_client(
            base_url=base_url,
            headers={API_KEY_HEADER: api_key},
            timeout=timeout,
            max_connections=max_connections,
        )
        self._max_retries = max_retries
        # Waiting for a free connection should not eat into a request's own timeout.
        self._slots = asyncio.Semaphore(max_connections)

    async def accounts(self, customer_ids: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        unique = list(dict.fromkeys(customer_ids))
        chunks = [unique[start : start + BATCH_CAP] for start in range(0, len(unique), BATCH_CAP)]
        pages = await asyncio.gather(*(self._members(chunk) for chunk in chunks))
        return {account.customer_id: account for page in pages for account in page}

    async def _members(self, ids: Sequence[str]) -> list[LoyaltyAccount]:
        response = await self._send("GET", "/v2/members", params={"ids": ",".join(ids)})
        _raise_for_status(response)
        return _decode(response, _members)

    async def accounts_by_card(self, card_numbers: Sequence[str]) -> Mapping[str, LoyaltyAccount]:
        unique = list(dict.fromkeys(card_numbers))
        found = await asyncio.gather(*(self._member_by_card(card) for card in unique))
        return {card: account for card, account in zip(unique, found, strict=True) if account}

    async def _member_by_card(self, card_number: str) -> LoyaltyAccount | None:
        response = await self._send("GET", f"/v2/members/by-card/{quote(card_number, safe='')}")
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        return _decode(response, _account)

    async def history(self, customer_id: str, limit: int = 50) -> Sequence[LoyaltyEntry]:
        offsets = range(0, max(limit, 0), TRANSACTIONS_PAGE)
        sizes = [min(TRANSACTIONS_PAGE, limit - offset) for offset in offsets]
        pages = await asyncio.gather(
            *(self._transactions(customer_id, o, s) for o, s in zip(offsets, sizes, strict=True))
        )
        return [entry for page in pages for entry in page]

    async def _transactions(self, customer_id: str, offset: int, limit: int) -> list[LoyaltyEntry]:
        path = f"/v2/members/{quote(customer_id, safe='')}/transactions"
        response = await self._send("GET", path, params={"limit": limit, "offset": offset})
        if response.status_code == 404:
            return []
        _raise_for_status(response)
        return _decode(response, _entries)

    async def earn(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        return await self._move_points("earn", customer_id, points, request_id, reason)

    async def redeem(
        self, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        return await self._move_points("redeem", customer_id, points, request_id, reason)

    async def _move_points(
        self, action: str, customer_id: str, points: int, request_id: str, reason: str
    ) -> LoyaltyReceipt:
        path = f"/v2/members/{quote(customer_id, safe='')}/{action}"
        body = {"requestId": request_id, "points": points, "reason": reason}
        response = await self._send("POST", path, json=body, idempotent=True)
        if response.status_code == 404:
            raise BackendRejected(BACKEND, f"no member {customer_id}", code="UNKNOWN_CUSTOMER")
        if response.status_code == 409:
            error = _error_body(response)
            balance = error.get("balance")
            if error.get("code") == "INSUFFICIENT_BALANCE" and isinstance(balance, int):
                raise InsufficientPoints(BACKEND, f"{customer_id} holds {balance}", balance)
        _raise_for_status(response)
        return _decode(response, _receipt)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Mapping[str, object] | None = None,
        idempotent: bool = False,
    ) -> Answer:
        """One request, retried while rate-limited (and, when ``idempotent``, while failing
        transiently). Returns the last response, whatever its status."""
        for attempt in range(self._max_retries + 1):
            last = attempt == self._max_retries
            try:
                async with self._slots:
                    response = await self._client.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if last or not idempotent:
                    raise _transport_error(exc) from exc
                await asyncio.sleep(RETRY_BACKOFF * 2**attempt)
                continue
            if last or not _retryable(response, idempotent):
                return response
            await asyncio.sleep(_retry_delay(response, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _retryable(response: Answer, idempotent: bool) -> bool:
    return response.status_code == 429 or (idempotent and response.status_code >= 500)


def _retry_delay(response: Answer, attempt: int) -> float:
    if response.status_code == 429:
        try:
            return min(MAX_RETRY_AFTER, max(0.0, float(response.headers["Retry-After"])))
        except (KeyError, ValueError):
            return 1.0
    return float(RETRY_BACKOFF * 2**attempt)


def _transport_error(exc: httpx.TransportError) -> BackendUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimedOut(BACKEND, f"no answer in time ({exc.__class__.__name__})")
    return BackendUnavailable(BACKEND, f"{exc.__class__.__name__}: {exc}")


def _raise_for_status(response: Answer) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 429 or status >= 500:
        raise BackendUnavailable(BACKEND, f"HTTP {status} from {response.request.url.path}")
    code = str(_error_body(response).get("code") or f"HTTP_{status}")
    raise BackendRejected(BACKEND, f"HTTP {status} from {response.request.url.path}", code=code)


def _error_body(response: Answer) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _object(response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(BACKEND, f"not JSON from {response.request.url.path}") from exc
    if not isinstance(body, dict):
        raise BackendError(BACKEND, f"not a JSON object from {response.request.url.path}")
    return body


def _decode(response: Answer, parse: Callable[[dict[str, Any]], T]) -> T:
    """Parse a successful response, reporting a body of the wrong shape as a BackendError."""
    try:
        return parse(_object(response))
    except (KeyError, TypeError, ValueError) as exc:
        path = response.request.url.path
        raise BackendError(BACKEND, f"unexpected body from {path}: {exc!r}") from exc


def _members(body: dict[str, Any]) -> list[LoyaltyAccount]:
    return [_account(member) for member in body["members"]]


def _account(member: dict[str, Any]) -> LoyaltyAccount:
    return LoyaltyAccount(
        customer_id=str(member["memberId"]),
        card_number=str(member["cardNo"]),
        points=int(member["pointsBalance"]),
        tier=str(member["tierLevel"]).upper(),
    )


def _entries(body: dict[str, Any]) -> list[LoyaltyEntry]:
    return [_entry(transaction) for transaction in body["transactions"]]


def _entry(transaction: dict[str, Any]) -> LoyaltyEntry:
    reference = transaction.get("reference")
    return LoyaltyEntry(
        id=str(transaction["txnId"]),
        at=_from_epoch_millis(transaction["postedAt"]),
        points=int(transaction["points"]),
        reason=str(transaction["reason"]),
        reference=None if reference is None else str(reference),
    )


def _receipt(body: dict[str, Any]) -> LoyaltyReceipt:
    transaction = body["transaction"]
    return LoyaltyReceipt(
        request_id=str(body["requestId"]),
        customer_id=str(body["memberId"]),
        points=int(transaction["points"]),
        balance=int(body["pointsBalance"]),
        entry_id=str(transaction["txnId"]),
    )


def _from_epoch_millis(millis: object) -> datetime:
    """The platform's timestamps are integer milliseconds since the epoch, in UTC."""
    if isinstance(millis, bool) or not isinstance(millis, int):
        raise ValueError(f"expected epoch milliseconds, got {millis!r}")
    return _EPOCH + timedelta(milliseconds=millis)
