"""The promotions engine, one rule per test: kinds, stacking, gates, rounding, points."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.ports import Coupon, Money, PromotionKind, PromotionRule, PromotionTarget, ValueType
from gateway.promotions import (
    EXACT_CHOICE_LIMIT,
    Basket,
    BasketLine,
    LoyaltyProgram,
    PricedBasket,
    ProblemCode,
    RuleBook,
    Shopper,
    price_basket,
)
from gateway.promotions.allocation import allocate

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
STARTED = datetime(2026, 1, 1, tzinfo=UTC)
ENDS = datetime(2027, 1, 1, tzinfo=UTC)
LOYALTY = LoyaltyProgram(
    points_per_unit=Decimal(1),
    point_value=Money(Decimal("0.01"), "EUR"),
    tier_multipliers={"GOLD": Decimal("1.5"), "PLATINUM": Decimal(2)},
)

Kind = PromotionKind
ANONYMOUS = Shopper()


def eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def rule(
    rule_id: str,
    kind: PromotionKind,
    value: str = "0",
    value_type: ValueType = ValueType.PERCENT,
    *,
    skus: Sequence[str] = (),
    categories: Sequence[str] = (),
    brands: Sequence[str] = (),
    title: str | None = None,
    currency: str = "EUR",
    valid_from: datetime = STARTED,
    valid_until: datetime = ENDS,
    **fields: object,
) -> PromotionRule:
    """A rule with a whole-year validity window around NOW; ``fields`` as in PromotionRule."""
    target = PromotionTarget(frozenset(skus), frozenset(categories), frozenset(brands))
    return PromotionRule(
        rule_id,
        title or rule_id,
        kind,
        Decimal(value),
        value_type,
        currency,
        target,
        valid_from,
        valid_until,
        **fields,  # type: ignore[arg-type]
    )


def line(
    sku: str, quantity: int, price: str, categories: Sequence[str] = (), brand: str = "ACME"
) -> BasketLine:
    return BasketLine(sku, quantity, eur(price), tuple(categories), brand)


def price(
    lines: Sequence[BasketLine],
    rules: Sequence[PromotionRule],
    shopper: Shopper = ANONYMOUS,
    *,
    coupons: Sequence[Coupon] = (),
    redeem_points: int = 0,
    now: datetime = NOW,
    currency: str = "EUR",
) -> PricedBasket:
    book = RuleBook.from_rules(rules, coupons)
    return price_basket(Basket(currency, tuple(lines)), book, shopper, now, LOYALTY, redeem_points)


def totals(priced: PricedBasket) -> tuple[str, str, str]:
    return (
        str(priced.subtotal.amount),
        str(priced.discount_total.amount),
        str(priced.total.amount),
    )


def line_totals(priced: PricedBasket) -> dict[str, str]:
    return {priced_line.sku: str(priced_line.line_total.amount) for priced_line in priced.lines}


def codes(priced: PricedBasket) -> list[ProblemCode]:
    return [problem.code for problem in priced.problems]


# --------------------------------------------------------------------------- targets


def test_a_category_rule_matches_products_in_its_subcategories() -> None:
    boots = line("B1", 1, "100.00", ["footwear/boots"])

    priced = price([boots], [rule("R", Kind.PERCENT_OFF, "10", categories=["footwear"])])

    assert totals(priced) == ("100.00", "10.00", "90.00")


def test_a_category_rule_does_not_match_a_category_that_only_shares_a_name_prefix() -> None:
    footwear = line("B1", 1, "100.00", ["footwear/boots"])

    priced = price([footwear], [rule("R", Kind.PERCENT_OFF, "10", categories=["foot"])])

    assert priced.applied_promotions == ()


def test_a_rule_without_a_target_applies_to_every_item_and_a_brand_rule_to_its_brand() -> None:
    lines = [line("A", 1, "10.00", brand="Knit"), line("B", 1, "20.00", brand="Trek")]

    priced = price(
        lines,
        [
            rule("ALL", Kind.AMOUNT_OFF, "1.00"),
            rule("TREK", Kind.AMOUNT_OFF, "2.00", brands=["Trek"]),
        ],
    )

    assert line_totals(priced) == {"A": "9.00", "B": "17.00"}


# --------------------------------------------------------------------------- kinds


def test_percent_off_rounds_each_unit_half_up_to_the_cent() -> None:
    # 15% of 9.99 = 1.4985 -> 1.50 a unit, so 3 units save 4.50 (not 4.4955 rounded once).
    priced = price([line("A", 3, "9.99")], [rule("R", Kind.PERCENT_OFF, "15")])

    assert totals(priced) == ("29.97", "4.50", "25.47")


def test_amount_off_never_takes_a_unit_below_zero() -> None:
    priced = price([line("A", 2, "3.00")], [rule("R", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT)])

    assert totals(priced) == ("6.00", "6.00", "0.00")


def test_a_fixed_price_above_the_current_price_does_nothing() -> None:
    priced = price([line("A", 1, "8.00")], [rule("R", Kind.FIXED_PRICE, "9.00", ValueType.AMOUNT)])

    assert (totals(priced), priced.applied_promotions) == (("8.00", "0.00", "8.00"), ())


def test_a_multi_buy_gives_the_cheapest_units_free_across_lines() -> None:
    socks = [line("CHEAP", 1, "4.00", ["socks"]), line("DEAR", 2, "6.00", ["socks"])]

    priced = price(
        socks, [rule("R", Kind.MULTI_BUY, buy_quantity=3, pay_quantity=2, categories=["socks"])]
    )

    assert line_totals(priced) == {"CHEAP": "0.00", "DEAR": "12.00"}


def test_a_multi_buy_counts_only_complete_sets() -> None:
    multi_buy = rule("R", Kind.MULTI_BUY, buy_quantity=3, pay_quantity=2)

    assert price([line("A", 2, "5.00")], [multi_buy]).discount_total == eur("0.00")
    assert price([line("A", 5, "5.00")], [multi_buy]).discount_total == eur("5.00")


def test_buy_x_get_y_discounts_the_cheapest_units_by_its_percent() -> None:
    lines = [line("A", 1, "30.00"), line("B", 1, "20.00"), line("C", 1, "10.00")]

    priced = price(lines, [rule("R", Kind.BUY_X_GET_Y, "50", buy_quantity=2, get_quantity=1)])

    assert line_totals(priced) == {"A": "30.00", "B": "20.00", "C": "5.00"}


def test_buy_x_get_y_with_an_amount_takes_that_amount_off_each_discounted_unit() -> None:
    rules = [rule("R", Kind.BUY_X_GET_Y, "3.00", ValueType.AMOUNT, buy_quantity=1, get_quantity=1)]

    priced = price([line("A", 4, "10.00")], rules)

    assert totals(priced) == ("40.00", "6.00", "34.00")


def test_a_bundle_price_splits_its_saving_over_the_bundle_in_proportion_to_prices() -> None:
    lines = [line("SHOE", 1, "80.00"), line("SOCK", 1, "20.00")]
    bundle = rule("R", Kind.BUNDLE_PRICE, "90.00", ValueType.AMOUNT, bundle_skus=("SHOE", "SOCK"))

    priced = price(lines, [bundle])

    assert line_totals(priced) == {"SHOE": "72.00", "SOCK": "18.00"}


def test_a_bundle_is_made_as_often_as_every_sku_allows_and_needs_every_sku() -> None:
    bundle = rule("R", Kind.BUNDLE_PRICE, "90.00", ValueType.AMOUNT, bundle_skus=("SHOE", "SOCK"))

    twice = price([line("SHOE", 3, "80.00"), line("SOCK", 2, "20.00")], [bundle])
    never = price([line("SHOE", 3, "80.00")], [bundle])

    assert (twice.discount_total, never.discount_total) == (eur("20.00"), eur("0.00"))


def test_a_bundle_dearer_than_its_items_is_not_made() -> None:
    bundle = rule("R", Kind.BUNDLE_PRICE, "50.00", ValueType.AMOUNT, bundle_skus=("A", "B"))

    priced = price([line("A", 1, "20.00"), line("B", 1, "20.00")], [bundle])

    assert priced.applied_promotions == ()


# --------------------------------------------------------------------------- stacking


def test_each_unit_takes_at_most_one_rule_per_stacking_group_the_higher_priority_first() -> None:
    rules = [
        rule("LOW", Kind.PERCENT_OFF, "50", priority=1, stacking_group="G"),
        rule("HIGH", Kind.PERCENT_OFF, "10", priority=9, stacking_group="G"),
    ]

    priced = price([line("A", 1, "100.00")], rules)

    assert [p.id for p in priced.applied_promotions] == ["HIGH"]
    assert priced.total == eur("90.00")


def test_rules_in_different_groups_stack_each_on_the_price_left_by_the_one_before() -> None:
    rules = [
        rule("AMOUNT", Kind.AMOUNT_OFF, "10.00", ValueType.AMOUNT, priority=1),
        rule("PERCENT", Kind.PERCENT_OFF, "10", priority=9),
    ]

    priced = price([line("A", 1, "100.00")], rules)

    assert totals(priced) == ("100.00", "20.00", "80.00")  # 100 -10% = 90, then -10.00


def test_a_same_group_rule_takes_the_units_a_multi_buy_left_over() -> None:
    rules = [
        rule(
            "3FOR2", Kind.MULTI_BUY, buy_quantity=3, pay_quantity=2, priority=9, stacking_group="M"
        ),
        rule("HALF", Kind.PERCENT_OFF, "50", priority=1, stacking_group="M"),
    ]

    priced = price([line("A", 4, "10.00")], rules)

    assert [(p.id, str(p.discount.amount)) for p in priced.applied_promotions] == [
        ("3FOR2", "10.00"),
        ("HALF", "5.00"),
    ]


def test_an_exclusive_rule_excludes_every_other_rule_on_its_units() -> None:
    rules = [
        rule("EXCLUSIVE", Kind.PERCENT_OFF, "30", skus=["A"], exclusive=True),
        rule("OTHER", Kind.PERCENT_OFF, "10"),
    ]

    priced = price([line("A", 1, "100.00"), line("B", 1, "100.00")], rules)

    assert line_totals(priced) == {"A": "70.00", "B": "90.00"}


def test_the_exclusive_choice_best_for_the_customer_wins_even_at_a_lower_priority() -> None:
    rules = [
        rule("HIGH", Kind.PERCENT_OFF, "10", priority=9, exclusive=True),
        rule("LOW", Kind.PERCENT_OFF, "25", priority=1, exclusive=True),
    ]

    priced = price([line("A", 1, "100.00")], rules)

    assert [p.id for p in priced.applied_promotions] == ["LOW"]


def test_an_exclusive_rule_is_not_chosen_when_the_stacked_rules_are_cheaper() -> None:
    rules = [
        rule("FIXED", Kind.FIXED_PRICE, "95.00", ValueType.AMOUNT, exclusive=True),
        rule("A", Kind.PERCENT_OFF, "5"),
        rule("B", Kind.PERCENT_OFF, "5"),
    ]

    priced = price([line("A", 1, "100.00")], rules)

    assert priced.total == eur("90.25")


def test_equal_exclusive_choices_are_broken_by_priority_then_rule_id() -> None:
    equal = [
        rule("B", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT, priority=3, exclusive=True),
        rule("A", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT, priority=3, exclusive=True),
        rule("C", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT, priority=1, exclusive=True),
    ]

    priced = price([line("X", 1, "100.00")], equal)

    assert [p.id for p in priced.applied_promotions] == ["A"]


def test_beyond_the_exact_limit_the_greedy_choice_is_never_worse_than_no_exclusive_rule() -> None:
    lines = [line(f"S{i}", 1, "10.00") for i in range(EXACT_CHOICE_LIMIT + 2)]
    exclusives = [
        rule(f"X{i}", Kind.AMOUNT_OFF, "1.00", ValueType.AMOUNT, skus=[f"S{i}"], exclusive=True)
        for i in range(EXACT_CHOICE_LIMIT + 2)
    ]

    priced = price(lines, [*exclusives, rule("ALL", Kind.AMOUNT_OFF, "0.50", ValueType.AMOUNT)])

    assert priced.discount_total == eur(f"{EXACT_CHOICE_LIMIT + 2}.00")


# --------------------------------------------------------------------------- basket thresholds


def test_a_basket_threshold_is_judged_after_item_discounts() -> None:
    rules = [
        rule("ITEM", Kind.AMOUNT_OFF, "1.00", ValueType.AMOUNT),
        rule("SPEND", Kind.BASKET_THRESHOLD, "10.00", ValueType.AMOUNT, threshold=eur("100.00")),
    ]

    priced = price([line("A", 1, "100.00")], rules)

    assert totals(priced) == ("100.00", "1.00", "99.00")


def test_a_basket_discount_is_allocated_by_largest_remainder_to_the_cent() -> None:
    lines = [line("A", 1, "10.00"), line("B", 1, "10.00"), line("C", 1, "10.00")]
    spend = rule("SPEND", Kind.BASKET_THRESHOLD, "10.00", ValueType.AMOUNT, threshold=eur("30.00"))

    priced = price(lines, [spend])

    assert [str(d.amount.amount) for p in priced.lines for d in p.discounts] == [
        "3.34",
        "3.33",
        "3.33",
    ]


def test_largest_remainder_gives_leftover_cents_to_the_largest_remainders() -> None:
    cent = Decimal("0.01")

    shares = allocate(Decimal("1.00"), [Decimal("1.00"), Decimal("1.00"), Decimal("1.00")], cent)
    skewed = allocate(Decimal("0.10"), [Decimal("0.05"), Decimal("0.16"), Decimal("0.09")], cent)

    assert shares == [Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]
    assert (sum(skewed), skewed) == (
        Decimal("0.10"),
        [Decimal("0.02"), Decimal("0.05"), Decimal("0.03")],
    )


def test_an_exclusive_items_spend_counts_toward_a_threshold_but_takes_no_share() -> None:
    rules = [
        rule("EXCL", Kind.AMOUNT_OFF, "1.00", ValueType.AMOUNT, skus=["A"], exclusive=True),
        rule("SPEND", Kind.BASKET_THRESHOLD, "5.00", ValueType.AMOUNT, threshold=eur("50.00")),
    ]

    priced = price([line("A", 1, "41.00"), line("B", 1, "10.00")], rules)

    assert line_totals(priced) == {"A": "40.00", "B": "5.00"}


# --------------------------------------------------------------------------- gates


def test_a_coupon_rule_applies_only_with_its_code_entered_in_any_case() -> None:
    coupon = rule("C", Kind.PERCENT_OFF, "10", coupon_code="WELCOME10")

    without = price([line("A", 1, "50.00")], [coupon])
    entered = price([line("A", 1, "50.00")], [coupon], Shopper(coupon_codes=(" welcome10 ",)))

    assert (without.total, entered.total, entered.problems) == (eur("50.00"), eur("45.00"), ())


def test_a_coupon_of_the_feed_unlocks_the_rule_it_names() -> None:
    gated = rule("C", Kind.PERCENT_OFF, "10", coupon_code="MAIN")

    priced = price(
        [line("A", 1, "50.00")],
        [gated],
        Shopper(coupon_codes=("PARTNER",)),
        coupons=[Coupon("PARTNER", "C", None, None)],
    )

    assert priced.total == eur("45.00")


def test_unknown_expired_not_yet_valid_and_unusable_coupons_are_problems() -> None:
    rules = [
        rule("OLD", Kind.PERCENT_OFF, "10", coupon_code="OLD", valid_until=NOW),
        rule(
            "NEXT", Kind.PERCENT_OFF, "10", coupon_code="NEXT", valid_from=NOW + timedelta(days=1)
        ),
        rule("SOCKS", Kind.PERCENT_OFF, "10", coupon_code="SOCKS", categories=["socks"]),
    ]
    shopper = Shopper(coupon_codes=("NOPE", "OLD", "NEXT", "SOCKS"))

    priced = price([line("A", 1, "50.00")], rules, shopper)

    assert priced.total == eur("50.00")
    assert codes(priced) == [
        ProblemCode.UNKNOWN_COUPON,
        ProblemCode.EXPIRED_COUPON,
        ProblemCode.COUPON_NOT_YET_VALID,
        ProblemCode.COUPON_NOT_APPLICABLE,
    ]


def test_tier_rules_apply_only_to_the_tiers_they_name() -> None:
    gold_only = rule("T", Kind.PERCENT_OFF, "10", tiers=frozenset({"GOLD", "PLATINUM"}))

    gold = price([line("A", 1, "50.00")], [gold_only], Shopper(tier="gold"))
    silver = price([line("A", 1, "50.00")], [gold_only], Shopper(tier="SILVER"))
    anonymous = price([line("A", 1, "50.00")], [gold_only])

    assert (gold.total, silver.total, anonymous.total) == (eur("45.00"), eur("50.00"), eur("50.00"))


def test_a_personal_offer_applies_only_to_its_customer() -> None:
    personal = rule("P", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT, customer_id="C0001")

    mine = price([line("A", 1, "50.00")], [personal], Shopper(customer_id="C0001"))
    theirs = price([line("A", 1, "50.00")], [personal], Shopper(customer_id="C0002"))

    assert (mine.total, theirs.total) == (eur("45.00"), eur("50.00"))


def test_a_rule_applies_from_its_start_up_to_but_not_at_its_end() -> None:
    window = rule("W", Kind.PERCENT_OFF, "10", valid_from=NOW, valid_until=NOW + timedelta(hours=1))
    basket = [line("A", 1, "50.00")]

    at_start = price(basket, [window], now=NOW)
    at_end = price(basket, [window], now=NOW + timedelta(hours=1))
    before = price(basket, [window], now=NOW - timedelta(seconds=1))

    assert (at_start.total, at_end.total, before.total) == (
        eur("45.00"),
        eur("50.00"),
        eur("50.00"),
    )


def test_a_rule_in_another_currency_does_not_apply() -> None:
    dollars = rule("USD", Kind.AMOUNT_OFF, "5.00", ValueType.AMOUNT, currency="USD")

    priced = price([line("A", 1, "50.00")], [dollars])

    assert priced.total == eur("50.00")


def test_a_currency_without_minor_units_rounds_to_whole_amounts() -> None:
    yen = rule("JPY", Kind.PERCENT_OFF, "15", currency="JPY")
    item = BasketLine("A", 1, Money(Decimal(1999), "JPY"))

    priced = price_basket(Basket("JPY", (item,)), RuleBook.from_rules([yen]), Shopper(), NOW)

    assert priced.total == Money(Decimal(1699), "JPY")


# --------------------------------------------------------------------------- points


def test_points_are_earned_on_the_amount_paid_times_the_tier_multiplier_rounded_down() -> None:
    ten_off = rule("R", Kind.AMOUNT_OFF, "10.00", ValueType.AMOUNT)

    priced = price([line("A", 1, "59.99")], [ten_off], Shopper("C1", "GOLD", points_balance=500))

    assert priced.points_to_earn == 74  # 49.99 x 1 x 1.5 = 74.985


def test_extra_points_are_a_percent_bonus_on_the_points_of_the_items_the_rule_covers() -> None:
    double = rule("DOUBLE", Kind.PERCENT_OFF, "0", categories=["outdoor"], extra_points=100)
    lines = [line("TENT", 1, "40.00", ["outdoor"]), line("MUG", 1, "10.00", ["home"])]

    priced = price(lines, [double])

    assert priced.points_to_earn == 90  # 50 base + 100% of the tent's 40
    assert [(p.id, p.points, p.explanation) for p in priced.applied_promotions] == [
        ("DOUBLE", 40, "DOUBLE: +100% points")
    ]


def test_redeemed_points_are_capped_by_the_balance() -> None:
    shopper = Shopper("C1", points_balance=300)

    priced = price([line("A", 1, "50.00")], [], shopper, redeem_points=500)

    assert (priced.points_redeemed, priced.points_value, priced.amount_due) == (
        300,
        eur("3.00"),
        eur("47.00"),
    )
    assert codes(priced) == [ProblemCode.NOT_ENOUGH_POINTS]


def test_redeemed_points_are_capped_by_the_amount_due_and_earn_on_the_amount_before_them() -> None:
    shopper = Shopper("C1", points_balance=10_000)

    priced = price([line("A", 1, "50.00")], [], shopper, redeem_points=9_000)

    assert (priced.points_redeemed, priced.amount_due, priced.points_to_earn) == (
        5_000,
        eur("0.00"),
        50,
    )
    assert codes(priced) == [ProblemCode.POINTS_CAPPED_AT_TOTAL]


def test_points_cannot_be_redeemed_without_a_customer() -> None:
    priced = price([line("A", 1, "50.00")], [], Shopper(points_balance=100), redeem_points=10)

    assert (priced.points_redeemed, codes(priced)) == (0, [ProblemCode.POINTS_NOT_ACCEPTED])


# --------------------------------------------------------------------------- the basket


def test_lines_with_the_same_sku_are_priced_as_one_in_first_seen_order() -> None:
    lines = [line("B", 1, "5.00"), line("A", 2, "4.00"), line("B", 2, "5.00")]

    priced = price(lines, [rule("3FOR2", Kind.MULTI_BUY, buy_quantity=3, pay_quantity=2)])

    assert [(p.sku, p.quantity, str(p.line_total.amount)) for p in priced.lines] == [
        ("B", 3, "15.00"),
        ("A", 2, "4.00"),  # 5 units make one set: one A, the cheapest, is free
    ]


def test_an_explanation_names_the_promotion_and_its_saving() -> None:
    socks = rule("PR008", Kind.MULTI_BUY, title="3 for 2 on socks", buy_quantity=3, pay_quantity=2)

    priced = price([line("SOCK", 3, "4.99")], [socks])

    assert [p.explanation for p in priced.applied_promotions] == ["3 for 2 on socks: -4.99"]


@pytest.mark.parametrize(
    "bad",
    [
        line("A", 0, "1.00"),
        line("A", 1, "-1.00"),
        line("A", 1, "1.001"),
        BasketLine("A", 1, Money(Decimal("1.00"), "USD")),
    ],
)
def test_a_malformed_line_is_refused(bad: BasketLine) -> None:
    with pytest.raises(ValueError, match="SKU A"):
        price([bad], [])


def test_one_sku_at_two_prices_is_refused() -> None:
    with pytest.raises(ValueError, match="two prices"):
        price([line("A", 1, "1.00"), line("A", 1, "2.00")], [])
