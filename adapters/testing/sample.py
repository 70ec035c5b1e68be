"""The keys a conformance run may rely on: the only data assumption the suite makes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

_DIGITS = re.compile(r"\d")


@dataclass(frozen=True)
class ConformanceSample:
    """Keys known to exist in the system under test, chosen by whoever runs the suite.

    Every key listed must exist: ``skus`` must be known to the catalogue, priced by the pricing
    system and have at least one stock row; ``product_codes`` must be products of the catalogue;
    ``location_ids`` must be locations of the inventory system that the pricing system prices
    for; ``customer_ids`` and
    ``card_numbers`` must be loyalty accounts (the first customer's points may be moved and are
    put back); ``currency`` and ``postal_code`` shape the orders the order intake contract
    submits. A contract uses only the fields of its port and fails, naming the field, when one
    it needs is empty. A handful of keys per field is enough; more only makes runs slower.

    Keys that must be unknown are made by ``unknown_keys``; override it in a subclass when the
    default would produce keys your system knows.
    """

    skus: tuple[str, ...] = ()
    product_codes: tuple[str, ...] = ()
    location_ids: tuple[str, ...] = ()
    customer_ids: tuple[str, ...] = ()
    card_numbers: tuple[str, ...] = ()
    promotion_ids: tuple[str, ...] = ()
    coupon_codes: tuple[str, ...] = ()
    currency: str = "EUR"
    postal_code: str | None = None

    def unknown_keys(self, like: str, count: int) -> tuple[str, ...]:
        """``count`` distinct keys shaped like ``like`` that the system must not know.

        The digits of ``like`` are replaced by a number counted down from all nines
        (``C0001`` gives ``C9999``, ``C9998``...), so that systems validating the shape of a key
        still accept the question. Keys without enough digits get a numbered suffix instead.
        """
        slots = len(_DIGITS.findall(like))
        if slots < 3 or 10**slots - count < 10 ** (slots - 1):
            return tuple(f"{like}-UNKNOWN-{number:04d}" for number in range(count))
        return tuple(_fill_digits(like, str(10**slots - 1 - number)) for number in range(count))


def require(values: Sequence[str], field: str, contract: str) -> Sequence[str]:
    """``values`` when there are any; otherwise fail the test naming the sample field."""
    if not values:
        pytest.fail(f"{contract} needs ConformanceSample.{field}: give it at least one key")
    return values


def _fill_digits(template: str, digits: str) -> str:
    supply = iter(digits)
    return _DIGITS.sub(lambda _: next(supply), template)
