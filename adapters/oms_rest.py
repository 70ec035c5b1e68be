"""The order management system's REST/JSON order intake, as an ``OrderIntakePort``.

What this adapter absorbs: the OMS's own order shape and fulfilment codes, amounts as decimal
strings with the currency once per order, ISO 8601 timestamps, and its status codes. The OMS is
idempotent by ``externalOrderId`` (our order id), so resubmitting after a 503 or a lost answer
is safe and returns the original number; retrying is left to the caller (the outbox).

Its status feed (``/api/orders/changes``) numbers every change; the numbers are the cursors.
A shipment's ``goodsIssue.postedAt`` is when the ERP booked the units out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from adapters.http import Answer, backend_client
from adapters.ports import (
    BackendError,
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    Money,
    OmsReceipt,
    OmsStatus,
    OrderStatusChange,
    OrderStatusChanges,
    OrderSubmission,
)

BACKEND = "oms"
FULFILMENT_TYPES: Mapping[str, str] = {
    "SHIP_TO_HOME": "HOME_DELIVERY",
    "PICKUP_IN_STORE": "STORE_PICKUP",
    "DELIVERY_FROM_NEAREST_STORE": "STORE_DELIVERY",
    "CARRY_OUT": "CARRY_OUT",
}
"""Our fulfilment names to the OMS's codes. An unknown name is passed through for the OMS to
refuse."""
FEED_LIMIT = 1000
"""The most changes the OMS answers per read."""


class RestOmsOrderIntake:
    """``OrderIntakePort`` over the OMS's ``/api/orders``.

    ``submit`` raises BackendUnavailable (BackendTimedOut after ``timeout``) when the OMS is
    down or answers 5xx, and BackendRejected when it refuses the order (422: code
    ``INVALID_ORDER``). An order whose lines are not all in the order's currency is rejected
    here with code ``CURRENCY_MISMATCH``, since the OMS has one currency per order.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        self._client = backend_client(
            base_url=base_url, timeout=timeout, max_connections=max_connections
        )
        # Waiting for a free connection should not eat into a request's own timeout.
        self._slots = asyncio.Semaphore(max_connections)

    async def submit(self, order: OrderSubmission) -> OmsReceipt:
        response = await self._send("POST", "/api/orders", json=oms_order(order))
        _raise_for_status(response)
        return _decode(response)

    async def receipts(self, order_ids: Sequence[str]) -> Mapping[str, OmsReceipt]:
        unique = list(dict.fromkeys(order_ids))
        found = await asyncio.gather(*(self._receipt(order_id) for order_id in unique))
        return {receipt.order_id: receipt for receipt in found if receipt is not None}

    async def _receipt(self, order_id: str) -> OmsReceipt | None:
        response = await self._send("GET", f"/api/orders/{quote(order_id, safe='')}")
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        return _decode(response)

    async def status_changes(self, since: str | None, limit: int = 100) -> OrderStatusChanges:
        params: dict[str, str | int] = {
            "since": since or "0",
            "limit": max(1, min(limit, FEED_LIMIT)),
        }
        response = await self._send("GET", "/api/orders/changes", params=params)
        _raise_for_status(response)
        try:
            return status_changes(response.json())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendRejected(
                BACKEND, f"unreadable status change after {since}: {exc!r}", "MALFORMED_CHANGE"
            ) from exc

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        json: Mapping[str, object] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        try:
            async with self._slots:
                return await self._client.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise BackendTimedOut(BACKEND, f"no answer in time ({exc.__class__.__name__})") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(BACKEND, f"{exc.__class__.__name__}: {exc}") from exc


def oms_order(order: OrderSubmission) -> dict[str, object]:
    """``order`` in the OMS's shape (raises BackendRejected when it cannot be expressed)."""
    currency = order.total.currency
    amounts = [money for line in order.lines for money in (line.unit_price, line.line_total)]
    if any(money.currency != currency for money in amounts):
        raise BackendRejected(BACKEND, f"{order.order_id} mixes currencies", "CURRENCY_MISMATCH")
    lines = [
        {
            "lineNo": number,
            "itemNo": line.sku,
            "qty": line.quantity,
            "shipNode": line.location_id,
            "unitPrice": _amount(line.unit_price),
            "lineTotal": _amount(line.line_total),
        }
        for number, line in enumerate(order.lines, start=1)
    ]
    return {
        "externalOrderId": order.order_id,
        "salesChannel": order.channel,
        "customerId": order.customer_id,
        "fulfilmentType": FULFILMENT_TYPES.get(order.fulfillment, order.fulfillment),
        "shipToPostalCode": order.destination_postal_code,
        "orderLines": lines,
        "orderTotal": _amount(order.total),
        "currency": currency,
        "placedAt": _timestamp(order.placed_at),
    }


def _amount(money: Money) -> str:
    """A plain decimal string, at the currency's minor unit when that loses nothing (the OMS
    refuses more than two decimals, so a value that cannot be rounded exactly is sent as is)."""
    rounded = money.amount.quantize(money.minor_unit)
    return format(rounded if rounded == money.amount else money.amount, "f")


def _timestamp(at: datetime) -> str:
    """ISO 8601 in UTC; a naive datetime is taken to be UTC already."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _raise_for_status(response: Answer) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = f"HTTP {status} from {response.request.method} {response.request.url.path}"
    if status == 429 or status >= 500:
        raise BackendUnavailable(BACKEND, detail)
    messages = "; ".join(_error_messages(response))
    code = "INVALID_ORDER" if status == 422 else f"HTTP_{status}"
    raise BackendRejected(BACKEND, f"{detail}: {messages}" if messages else detail, code=code)


def _error_messages(response: Answer) -> list[str]:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return []
    if not isinstance(errors, list):
        return []
    found = [error for error in errors if isinstance(error, dict)]
    return [f"{error.get('field', '')} {error.get('message', '')}".strip() for error in found]


def _decode(response: Answer) -> OmsReceipt:
    try:
        body: dict[str, Any] = response.json()
        return OmsReceipt(
            order_id=str(body["externalOrderId"]),
            oms_order_number=str(body["omsOrderNo"]),
            received_at=datetime.fromisoformat(str(body["receivedAt"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        path = response.request.url.path
        raise BackendError(BACKEND, f"unexpected body from {path}: {exc!r}") from exc


def status_changes(body: Any) -> OrderStatusChanges:
    """The OMS's feed answer as domain changes (raises KeyError, TypeError or ValueError for
    anything malformed: the whole answer is refused, never an entry skipped)."""
    changes = tuple(_status_change(row) for row in body["changes"])
    return OrderStatusChanges(changes, str(int(body["lastSeq"])))


def _status_change(row: Any) -> OrderStatusChange:
    code = str(row["status"]) if isinstance(row["status"], str) else None
    if code is None:
        raise TypeError(f"status {row['status']!r} of change {row.get('seq')!r}")
    status = OmsStatus[code] if code in OmsStatus.__members__ else OmsStatus.OTHER
    goods_issue = row.get("goodsIssue")
    booked = None if not goods_issue else _aware(str(goods_issue["postedAt"]))
    return OrderStatusChange(
        order_id=str(row["externalOrderId"]),
        status=status,
        at=_aware(str(row["changedAt"])),
        cursor=str(int(row["seq"])),
        stock_booked_at=booked,
    )


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {text!r}")
    return moment.astimezone(UTC)
