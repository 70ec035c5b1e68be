"""Invariants of the promotions engine over random baskets and random rule sets."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ports import Money, PromotionKind, PromotionRule, ValueType
from gateway.promotions import BasketLine, PricedBasket, Shopper
from tests.unit.test_promotions_rules import eur, price, rule

CATALOGUE = {
    "A": (["apparel/socks", "apparel"], "Knit"),
    "B": (["apparel/socks", "apparel"], "Trek"),
    "C": (["footwear/boots", "footwear"], "Trek"),
    "D": (["footwear/sneakers", "footwear"], "Run"),
    "E": (["home/kitchen", "home"], "Home"),
    "F": (["home"], "Home"),
}
CATEGORIES = ["apparel", "apparel/socks", "footwear", "footwear/boots", "home"]

cents = st.integers(min_value=0, max_value=20_000).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def baskets(draw: st.DrawFn) -> list[BasketLine]:
    skus = draw(st.lists(st.sampled_from(sorted(CATALOGUE)), min_size=1, max_size=6, unique=True))
    lines = []
    for sku in skus:
        categories, brand = CATALOGUE[sku]
        quantity = draw(st.integers(min_value=1, max_value=6))
        lines.append(BasketLine(sku, quantity, Money(draw(cents), "EUR"), tuple(categories), brand))
    return lines


@st.composite
def rules(draw: st.DrawFn, rule_id: str, exclusive: bool | None = None) -> PromotionRule:
    kind = draw(st.sampled_from(list(PromotionKind)))
    target = draw(
        st.sampled_from(
            [{}, {"skus": ["A", "C"]}, {"categories": ["apparel"]}, {"brands": ["Trek"]}]
            + [{"categories": [category]} for category in CATEGORIES]
        )
    )
    percent = draw(st.integers(min_value=0, max_value=100))
    value_type = draw(st.sampled_from(list(ValueType)))
    value = str(percent) if value_type is ValueType.PERCENT else str(draw(cents))
    return rule(
        rule_id,
        kind,
        value,
        value_type,
        **target,
        priority=draw(st.integers(min_value=0, max_value=3)),
        exclusive=draw(st.booleans()) if exclusive is None else exclusive,
        stacking_group=draw(st.sampled_from([None, "G1", "G2"])),
        buy_quantity=draw(st.integers(min_value=1, max_value=4)),
        pay_quantity=draw(st.integers(min_value=0, max_value=3)),
        get_quantity=draw(st.integers(min_value=1, max_value=2)),
        bundle_skus=tuple(draw(st.lists(st.sampled_from("ABCDEF"), min_size=1, max_size=3))),
        threshold=eur(str(draw(cents))),
        extra_points=draw(st.sampled_from([0, 0, 50, 100])),
    )


@st.composite
def rule_sets(draw: st.DrawFn, max_size: int = 6) -> list[PromotionRule]:
    size = draw(st.integers(min_value=0, max_value=max_size))
    return [draw(rules(f"R{number:02d}")) for number in range(size)]


def _comparable(priced: PricedBasket) -> tuple[object, ...]:
    """Everything of the result but the order of the lines."""
    lines = sorted(priced.lines, key=lambda line: line.sku)
    return (lines, priced.applied_promotions, priced.total, priced.points_to_earn)


@settings(max_examples=300, deadline=None)
@given(baskets(), rule_sets())
def test_totals_and_lines_are_never_negative_and_add_up(
    lines: list[BasketLine], promotion_rules: list[PromotionRule]
) -> None:
    priced = price(lines, promotion_rules)

    assert priced.total.amount >= 0
    assert all(line.line_total.amount >= 0 for line in priced.lines)
    assert priced.total.amount == priced.subtotal.amount - priced.discount_total.amount
    assert priced.total.amount == sum(line.line_total.amount for line in priced.lines)
    assert all(line.line_total.amount == line.line_total.amount.quantize(Decimal("0.01"))
               for line in priced.lines)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(baskets(), rule_sets())
def test_every_discount_is_allocated_to_lines_exactly(
    lines: list[BasketLine], promotion_rules: list[PromotionRule]
) -> None:
    priced = price(lines, promotion_rules)

    allocated: dict[str, Decimal] = defaultdict(Decimal)
    for priced_line in priced.lines:
        discounts = sum(discount.amount.amount for discount in priced_line.discounts)
        assert priced_line.line_total.amount == priced_line.subtotal.amount - discounts
        for discount in priced_line.discounts:
            allocated[discount.promotion_id] += discount.amount.amount
    assert allocated == {
        p.id: p.discount.amount for p in priced.applied_promotions if p.discount.amount
    }
    assert priced.discount_total.amount == sum(allocated.values(), Decimal(0))


@settings(max_examples=200, deadline=None)
@given(baskets(), rule_sets(), st.randoms(use_true_random=False))
def test_the_order_of_the_lines_does_not_change_the_result(
    lines: list[BasketLine], promotion_rules: list[PromotionRule], shuffler: random.Random
) -> None:
    shuffled = list(lines)
    shuffler.shuffle(shuffled)

    assert _comparable(price(shuffled, promotion_rules)) == _comparable(
        price(lines, promotion_rules)
    )


@settings(max_examples=300, deadline=None)
@given(baskets(), rule_sets(max_size=5), rules("ZNEW", exclusive=True))
def test_adding_an_exclusive_rule_never_makes_the_best_result_worse(
    lines: list[BasketLine], promotion_rules: list[PromotionRule], added: PromotionRule
) -> None:
    without = price(lines, promotion_rules)

    with_it = price(lines, [*promotion_rules, added])

    assert with_it.total.amount <= without.total.amount


@settings(max_examples=200, deadline=None)
@given(
    baskets(),
    rule_sets(),
    st.integers(min_value=0, max_value=50_000),
    st.integers(min_value=0, max_value=50_000),
)
def test_points_redeemed_never_exceed_the_balance_or_the_amount(
    lines: list[BasketLine], promotion_rules: list[PromotionRule], balance: int, asked: int
) -> None:
    shopper = Shopper("C0001", "GOLD", points_balance=balance)

    priced = price(lines, promotion_rules, shopper, redeem_points=asked)

    assert 0 <= priced.points_redeemed <= min(balance, asked)
    assert priced.points_value.amount <= priced.total.amount
    assert priced.amount_due.amount == priced.total.amount - priced.points_value.amount >= 0
    assert priced.points_to_earn >= 0
