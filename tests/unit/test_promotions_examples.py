"""Worked examples, computed by hand: a basket, the rules in force, the totals to the cent.

The catalogue and the rules mirror the demo promotions (legacy/demo_promotions.py). Each
comment shows the arithmetic, so a merchandiser can check it against docs/promotions.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from adapters.ports import PromotionRule, ValueType
from gateway.promotions import BasketLine, ProblemCode, Shopper
from tests.unit.test_promotions_rules import ANONYMOUS, NOW, Kind, eur, line, price, rule

AMOUNT = ValueType.AMOUNT

SOCK_A = ("S-A", "4.99", ["apparel/socks", "apparel"], "Knit")
SOCK_B = ("S-B", "5.99", ["apparel/socks", "apparel"], "Knit")
BOOT = ("B-1", "120.00", ["footwear/boots", "footwear"], "Trek")
SNEAKER = ("N-1", "79.90", ["footwear/sneakers", "footwear"], "Run")
JACKET = ("J-1", "149.00", ["outdoor/jackets", "outdoor"], "Trek")
MUG = ("M-1", "12.50", ["home/kitchen", "home"], "Home")
TOP = ("T-1", "19.99", ["apparel/women/tops", "apparel/women", "apparel"], "Knit")
GIFT = ("G-1", "99.99", ["gifts"], "Home")
BIG_GIFT = ("G-2", "250.10", ["gifts"], "Home")
CLOTH = ("C-1", "3.00", ["home/kitchen", "home"], "Home")

RULES: dict[str, PromotionRule] = {
    r.id: r
    for r in [
        rule("JACKETS20", Kind.PERCENT_OFF, "20", categories=["outdoor/jackets"], priority=10,
             stacking_group="CATEGORY"),
        rule("TREK15", Kind.PERCENT_OFF, "15", brands=["Trek"], priority=5, stacking_group="BRAND"),
        rule("KITCHEN5", Kind.AMOUNT_OFF, "5.00", AMOUNT, categories=["home/kitchen"], priority=6),
        rule("JACKET99", Kind.FIXED_PRICE, "99.00", AMOUNT, skus=["J-1"], priority=20,
             exclusive=True),
        rule("JACKET105", Kind.FIXED_PRICE, "105.00", AMOUNT, skus=["J-1"], priority=20,
             exclusive=True),
        rule("SOCKS3FOR2", Kind.MULTI_BUY, categories=["apparel/socks"], buy_quantity=3,
             pay_quantity=2, priority=15, stacking_group="MULTI"),
        rule("SOCKHALF", Kind.BUY_X_GET_Y, "50", categories=["apparel/socks"], buy_quantity=1,
             get_quantity=1, priority=14, stacking_group="MULTI"),
        rule("TOPS2GET1", Kind.BUY_X_GET_Y, "100", categories=["apparel/women/tops"],
             buy_quantity=2, get_quantity=1, priority=14, stacking_group="MULTI"),
        rule("SNEAKERSOCK79", Kind.BUNDLE_PRICE, "79.00", AMOUNT, bundle_skus=("N-1", "S-A"),
             priority=18, exclusive=True),
        rule("SOCK40", Kind.PERCENT_OFF, "40", skus=["S-A"], priority=30, exclusive=True),
        rule("SPEND100", Kind.BASKET_THRESHOLD, "10.00", AMOUNT, threshold=eur("100.00"),
             priority=1, stacking_group="BASKET"),
        rule("SPEND250", Kind.BASKET_THRESHOLD, "15", threshold=eur("250.00"), priority=2,
             stacking_group="BASKET"),
        rule("SPEND2", Kind.BASKET_THRESHOLD, "10.00", AMOUNT, threshold=eur("2.00"),
             stacking_group="BASKET"),
        rule("WELCOME10", Kind.PERCENT_OFF, "10", coupon_code="WELCOME10", priority=3,
             stacking_group="COUPON"),
        rule("SAVE20", Kind.BASKET_THRESHOLD, "20.00", AMOUNT, threshold=eur("150.00"),
             coupon_code="SAVE20", priority=2, exclusive=True),
        rule("GOLDFOOT10", Kind.PERCENT_OFF, "10", categories=["footwear"],
             tiers=frozenset({"GOLD", "PLATINUM"}), priority=7, stacking_group="TIER"),
        rule("BOOTS25", Kind.PERCENT_OFF, "25", categories=["footwear/boots"], customer_id="C0001",
             priority=9, stacking_group="PERSONAL"),
        rule("ENDED", Kind.PERCENT_OFF, "30", categories=["outdoor"],
             valid_from=datetime(2025, 1, 1, tzinfo=UTC), valid_until=NOW),
    ]
}  # fmt: skip


@dataclass(frozen=True)
class Example:
    name: str
    items: Sequence[tuple[tuple[str, str, list[str], str], int]]
    rules: Sequence[str]
    expected: tuple[str, str, str]  # subtotal, discount total, total
    applied: Sequence[str]
    shopper: Shopper = ANONYMOUS
    problems: Sequence[ProblemCode] = ()


def _lines(items: Sequence[tuple[tuple[str, str, list[str], str], int]]) -> list[BasketLine]:
    return [line(sku, qty, amount, cats, brand) for (sku, amount, cats, brand), qty in items]


EXAMPLES = [
    Example("20% off jackets: 149.00 x 20% = 29.80",
            [(JACKET, 1)], ["JACKETS20"], ("149.00", "29.80", "119.20"), ["JACKETS20"]),
    Example("category then brand stack: 149.00 -20% = 119.20, -15% (17.88) = 101.32",
            [(JACKET, 1)], ["JACKETS20", "TREK15"], ("149.00", "47.68", "101.32"),
            ["JACKETS20", "TREK15"]),
    Example("exclusive price hit 99.00 beats 20% + 15% (101.32)",
            [(JACKET, 1)], ["JACKETS20", "TREK15", "JACKET99"], ("149.00", "50.00", "99.00"),
            ["JACKET99"]),
    Example("stacked 101.32 beats an exclusive price hit of 105.00",
            [(JACKET, 1)], ["JACKETS20", "TREK15", "JACKET105"], ("149.00", "47.68", "101.32"),
            ["JACKETS20", "TREK15"]),
    Example("3 for 2 on socks: the cheapest (4.99) is free",
            [(SOCK_A, 2), (SOCK_B, 1)], ["SOCKS3FOR2"], ("15.97", "4.99", "10.98"),
            ["SOCKS3FOR2"]),
    Example("3 for 2 with four socks: one set, the fourth is paid",
            [(SOCK_A, 1), (SOCK_B, 3)], ["SOCKS3FOR2"], ("22.96", "4.99", "17.97"),
            ["SOCKS3FOR2"]),
    Example("3 for 2 with six socks: the two cheapest (2 x 4.99) are free",
            [(SOCK_A, 3), (SOCK_B, 3)], ["SOCKS3FOR2"], ("32.94", "9.98", "22.96"),
            ["SOCKS3FOR2"]),
    Example("buy 2 tops get 1 free, five tops: one set of three, 19.99 free",
            [(TOP, 5)], ["TOPS2GET1"], ("99.95", "19.99", "79.96"), ["TOPS2GET1"]),
    Example("same group: 3 for 2 takes three socks, second at half price the next two "
            "(5.99 / 2 = 2.995 -> 3.00)",
            [(SOCK_B, 5)], ["SOCKS3FOR2", "SOCKHALF"], ("29.95", "8.99", "20.96"),
            ["SOCKS3FOR2", "SOCKHALF"]),
    Example("bundle sneaker + socks 79.00: 79.90 + 4.99 = 84.89, saves 5.89",
            [(SNEAKER, 1), (SOCK_A, 1)], ["SNEAKERSOCK79"], ("84.89", "5.89", "79.00"),
            ["SNEAKERSOCK79"]),
    Example("exclusive bundle (saves 5.89) beats 3 for 2 (saves 4.99) on the same socks",
            [(SNEAKER, 1), (SOCK_A, 3)], ["SNEAKERSOCK79", "SOCKS3FOR2"],
            ("94.87", "5.89", "88.98"), ["SNEAKERSOCK79"]),
    Example("exclusive 40% on three socks (3 x 2.00) beats 3 for 2 (4.99)",
            [(SOCK_A, 3)], ["SOCK40", "SOCKS3FOR2"], ("14.97", "6.00", "8.97"), ["SOCK40"]),
    Example("exclusive 40% on one sock leaves 3 for 2 to the other socks: 2.00 + 5.99",
            [(SOCK_A, 1), (SOCK_B, 3)], ["SOCK40", "SOCKS3FOR2"], ("22.96", "7.99", "14.97"),
            ["SOCK40", "SOCKS3FOR2"]),
    Example("threshold met exactly: 8 x 12.50 = 100.00, save 10",
            [(MUG, 8)], ["SPEND100"], ("100.00", "10.00", "90.00"), ["SPEND100"]),
    Example("threshold one cent short: 99.99 saves nothing",
            [(GIFT, 1)], ["SPEND100"], ("99.99", "0.00", "99.99"), []),
    Example("threshold judged after item discounts: 9 x (12.50 - 5.00) = 67.50 < 100",
            [(MUG, 9)], ["KITCHEN5", "SPEND100"], ("112.50", "45.00", "67.50"), ["KITCHEN5"]),
    Example("threshold reached after item discounts: 119.20 >= 100, save 10",
            [(JACKET, 1)], ["JACKETS20", "SPEND100"], ("149.00", "39.80", "109.20"),
            ["JACKETS20", "SPEND100"]),
    Example("tiered thresholds in one group: 298.00 >= 250 takes 15% (44.70), not also 10.00",
            [(JACKET, 2)], ["SPEND100", "SPEND250"], ("298.00", "44.70", "253.30"),
            ["SPEND250"]),
    Example("below the upper tier only the lower threshold applies: 161.50 - 10.00",
            [(JACKET, 1), (MUG, 1)], ["SPEND100", "SPEND250"], ("161.50", "10.00", "151.50"),
            ["SPEND100"]),
    Example("percent threshold rounds half up: 15% of 250.10 = 37.515 -> 37.52",
            [(BIG_GIFT, 1)], ["SPEND250"], ("250.10", "37.52", "212.58"), ["SPEND250"]),
    Example("coupon WELCOME10 stacks after the category rule: 119.20 - 11.92",
            [(JACKET, 1)], ["JACKETS20", "WELCOME10"], ("149.00", "41.72", "107.28"),
            ["JACKETS20", "WELCOME10"], Shopper(coupon_codes=("WELCOME10",))),
    Example("coupon rule without its code does nothing",
            [(JACKET, 1)], ["JACKETS20", "WELCOME10"], ("149.00", "29.80", "119.20"),
            ["JACKETS20"]),
    Example("exclusive coupon SAVE20 (141.50) loses to the item rules (126.70)",
            [(JACKET, 1), (MUG, 1)], ["JACKETS20", "KITCHEN5", "SAVE20"],
            ("161.50", "34.80", "126.70"), ["JACKETS20", "KITCHEN5"],
            Shopper(coupon_codes=("SAVE20",)), [ProblemCode.COUPON_NOT_APPLICABLE]),
    Example("exclusive coupon SAVE20 wins without competing item rules: 161.50 - 20.00",
            [(JACKET, 1), (MUG, 1)], ["SAVE20", "SPEND100"], ("161.50", "20.00", "141.50"),
            ["SAVE20"], Shopper(coupon_codes=("save20",))),
    Example("gold member: 10% off footwear",
            [(BOOT, 1)], ["GOLDFOOT10"], ("120.00", "12.00", "108.00"), ["GOLDFOOT10"],
            Shopper("C0005", "GOLD")),
    Example("bronze member: no tier discount",
            [(BOOT, 1)], ["GOLDFOOT10"], ("120.00", "0.00", "120.00"), [],
            Shopper("C0005", "BRONZE")),
    Example("personal 25% (30.00) then gold 10% of 90.00 (9.00)",
            [(BOOT, 1)], ["GOLDFOOT10", "BOOTS25"], ("120.00", "39.00", "81.00"),
            ["BOOTS25", "GOLDFOOT10"], Shopper("C0001", "GOLD")),
    Example("another customer's personal offer does not apply",
            [(BOOT, 1)], ["GOLDFOOT10", "BOOTS25"], ("120.00", "12.00", "108.00"),
            ["GOLDFOOT10"], Shopper("C0002", "GOLD")),
    Example("5.00 off a 3.00 item stops at 0.00",
            [(CLOTH, 1)], ["KITCHEN5"], ("3.00", "3.00", "0.00"), ["KITCHEN5"]),
    Example("10.00 off a 3.00 basket stops at 0.00",
            [(CLOTH, 1)], ["SPEND2"], ("3.00", "3.00", "0.00"), ["SPEND2"]),
    Example("a rule that ended at this moment no longer applies",
            [(JACKET, 1)], ["ENDED"], ("149.00", "0.00", "149.00"), []),
]  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_worked_example(example: Example) -> None:
    rules = [RULES[rule_id] for rule_id in example.rules]

    priced = price(_lines(example.items), rules, example.shopper)

    subtotal, discount, total = example.expected
    assert (priced.subtotal, priced.discount_total, priced.total) == (
        eur(subtotal),
        eur(discount),
        eur(total),
    )
    assert [promotion.id for promotion in priced.applied_promotions] == list(example.applied)
    assert [problem.code for problem in priced.problems] == list(example.problems)
