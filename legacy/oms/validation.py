"""What the OMS accepts as an order, and how it says what is wrong with one."""

from __future__ import annotations

import re
from datetime import datetime

from legacy.oms.book import JsonObject

FULFILMENT_TYPES = frozenset({"HOME_DELIVERY", "STORE_PICKUP", "STORE_DELIVERY", "CARRY_OUT"})
_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


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
