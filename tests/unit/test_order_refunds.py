"""Refunds and point reversals of partial returns: any sequence adds up exactly."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.orders.changes import points_after, share_after
from gateway.orders.store import line_points
from gateway.promotions import Basket, BasketLine, RuleBook, Shopper, price_basket
from gateway.promotions.model import LoyaltyProgram
from tests.unit.test_promotions_rules import NOW, eur

CENT = Decimal("0.01")


@st.composite
def returns(draw: st.DrawFn) -> tuple[Decimal, int, int, list[int]]:
    quantity = draw(st.integers(1, 40))
    total = Decimal(draw(st.integers(0, 100_000))) * CENT
    points = draw(st.integers(0, 5_000))
    parts: list[int] = []
    left = quantity
    while left:
        part = draw(st.integers(1, left))
        parts.append(part)
        left -= part
    return total, points, quantity, parts


@given(returns())
def test_partial_refunds_add_up_to_the_line_total_and_points_to_the_points_earned(
    case: tuple[Decimal, int, int, list[int]],
) -> None:
    total, points, quantity, parts = case
    refunded, reversed_points, done = Decimal(0), 0, 0
    refunds, reversals = [], []

    for part in parts:
        done += part
        refund = share_after(total, done, quantity, CENT) - refunded
        reversal = points_after(points, done, quantity) - reversed_points
        refunded += refund
        reversed_points += reversal
        refunds.append(refund)
        reversals.append(reversal)

    assert sum(refunds) == total
    assert sum(reversals) == points
    assert all(refund >= 0 for refund in refunds)
    assert all(reversal >= 0 for reversal in reversals)


def test_one_of_three_units_refunds_a_third_rounded_half_up() -> None:
    assert share_after(Decimal("10.00"), 1, 3, CENT) == Decimal("3.33")
    assert share_after(Decimal("10.00"), 2, 3, CENT) == Decimal("6.67")
    assert share_after(Decimal("10.00"), 3, 3, CENT) == Decimal("10.00")


def test_points_never_reverse_one_too_many_on_a_partial_return() -> None:
    assert points_after(10, 1, 3) == 3
    assert points_after(10, 2, 3) == 6
    assert points_after(10, 3, 3) == 10


@given(st.lists(st.integers(1, 5_000), min_size=1, max_size=8))
def test_an_orders_points_are_split_over_its_lines_exactly(cents: list[int]) -> None:
    lines = tuple(
        BasketLine(f"SKU-{i}", 1, eur(str(Decimal(c) * CENT))) for i, c in enumerate(cents)
    )
    program = LoyaltyProgram(Decimal(1), eur("0.01"), {})
    priced = price_basket(
        Basket("EUR", lines), RuleBook.from_rules([]), Shopper("C1"), NOW, program
    )

    split = line_points(priced)

    assert sum(split) == priced.points_to_earn
    assert all(points >= 0 for points in split)
