"""Rounding to a currency's minor unit and exact allocation by largest remainder."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from adapters.ports import Money

HUNDRED = Decimal(100)
ZERO = Decimal(0)


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of ``currency``, e.g. Decimal('0.01') for EUR."""
    return Money(ZERO, currency).minor_unit


def round_money(amount: Decimal, unit: Decimal) -> Decimal:
    """``amount`` rounded half up to the minor ``unit`` (0.005 -> 0.01)."""
    return amount.quantize(unit, rounding=ROUND_HALF_UP)


def percent_of(amount: Decimal, percent: Decimal, unit: Decimal) -> Decimal:
    """``percent`` of ``amount``, rounded half up, never more than ``amount`` nor below 0."""
    share = round_money(amount * percent / HUNDRED, unit)
    return min(max(share, ZERO), amount)


def whole(amount: Decimal) -> int:
    """``amount`` rounded down to a whole number (points are never rounded up)."""
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def allocate(total: Decimal, weights: Sequence[Decimal], unit: Decimal) -> list[Decimal]:
    """Split ``total`` (on the minor ``unit``) over ``weights`` in proportion, exactly.

    Each share is first rounded down to the minor unit; the cents left over go one each to the
    shares with the largest remainders, the earlier share first on equal remainders. The shares
    sum to ``total``; when ``total`` is at most the sum of the weights (all on the minor unit),
    no share exceeds its weight. Zero weights get zero.
    """
    cents = int(total / unit)
    weight_sum = sum(weights, ZERO)
    if cents <= 0 or weight_sum <= 0:
        return [ZERO for _ in weights]
    exact = [cents * weight / weight_sum for weight in weights]
    shares = [int(value) for value in exact]
    left = cents - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (shares[i] - exact[i], i))
    for index in by_remainder[:left]:
        shares[index] += 1
    return [share * unit for share in shares]
