"""The contract of ``PromotionsPort``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.ports import (
    Coupon,
    PromotionKind,
    PromotionRule,
    PromotionSet,
    PromotionsPort,
    PromotionTarget,
    ValueType,
)
from adapters.testing.checks import (
    assert_aware,
    assert_currency,
    assert_exact_type,
    assert_hashable,
    assert_money,
    assert_text,
)
from adapters.testing.sample import ConformanceSample


class PromotionsContract:
    """What every ``PromotionsPort`` must do. Subclass it as ``Test...`` and provide two
    fixtures: ``promotions`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample``; its ``promotion_ids`` and ``coupon_codes``, when given, must be in
    the set)."""

    pytestmark = pytest.mark.asyncio

    async def test_is_a_promotions_port(self, promotions: PromotionsPort) -> None:
        assert isinstance(promotions, PromotionsPort)

    async def test_set_holds_well_formed_rules(self, promotions: PromotionsPort) -> None:
        current = await promotions.promotions()
        assert_exact_type(current, PromotionSet, "promotions()")
        assert_hashable(current, "promotions()")
        assert_text(current.version, "version")
        assert type(current.rules) is tuple, "rules is not a tuple"
        ids = [rule.id for rule in current.rules]
        assert len(set(ids)) == len(ids), "a rule id is used twice"
        for rule in current.rules:
            assert_rule(rule, f"rule {rule.id!r}")

    async def test_coupons_point_at_rules(self, promotions: PromotionsPort) -> None:
        current = await promotions.promotions()
        assert type(current.coupons) is tuple, "coupons is not a tuple"
        rules = {rule.id: rule for rule in current.rules}
        codes = [coupon.code for coupon in current.coupons]
        assert len(set(codes)) == len(codes), "a coupon code is listed twice"
        for coupon in current.coupons:
            assert_coupon(coupon, f"coupon {coupon.code!r}")
            assert coupon.promotion_id in rules, f"coupon {coupon.code!r} has no rule"

    async def test_sample_rules_and_coupons_are_in_the_set(
        self, promotions: PromotionsPort, sample: ConformanceSample
    ) -> None:
        current = await promotions.promotions()
        ids = {rule.id for rule in current.rules}
        codes = {coupon.code for coupon in current.coupons}
        assert set(sample.promotion_ids) <= ids, f"missing {set(sample.promotion_ids) - ids}"
        assert set(sample.coupon_codes) <= codes, f"missing {set(sample.coupon_codes) - codes}"

    async def test_unchanged_source_keeps_its_version(self, promotions: PromotionsPort) -> None:
        first = await promotions.promotions()
        again = await promotions.promotions()
        assert again.version == first.version, "version changed without a change"
        assert again == first, "the same version answered a different set"

    async def test_aclose_can_be_called(self, promotions: PromotionsPort) -> None:
        await promotions.aclose()


def assert_rule(rule: object, what: str) -> None:
    """A ``PromotionRule`` whose fields fit its kind."""
    assert_exact_type(rule, PromotionRule, what)
    assert isinstance(rule, PromotionRule)
    assert_text(rule.id, f"{what} id")
    assert type(rule.title) is str, f"{what} title"
    assert_exact_type(rule.kind, PromotionKind, f"{what} kind")
    assert_exact_type(rule.value_type, ValueType, f"{what} value_type")
    assert type(rule.value) is Decimal, f"{what}: value {rule.value!r} is not a Decimal"
    assert rule.value.is_finite(), f"{what}: value {rule.value!r} is not finite"
    assert rule.value >= 0, f"{what}: negative value {rule.value!r}"
    assert_currency(rule.currency, what)
    assert_target(rule.target, what)
    assert_aware(rule.valid_from, f"{what} valid_from")
    assert_aware(rule.valid_until, f"{what} valid_until")
    assert rule.valid_from < rule.valid_until, f"{what}: valid_until is not after valid_from"
    assert type(rule.tiers) is frozenset, f"{what}: tiers is not a frozenset"
    assert type(rule.bundle_skus) is tuple, f"{what}: bundle_skus is not a tuple"
    assert rule.extra_points >= 0, f"{what}: negative extra points"
    _assert_kind_fields(rule, what)


def assert_target(target: object, what: str) -> None:
    assert_exact_type(target, PromotionTarget, f"{what} target")
    assert isinstance(target, PromotionTarget)
    for name in ("skus", "categories", "brands"):
        assert type(getattr(target, name)) is frozenset, f"{what}: target {name} not frozen"


def assert_coupon(coupon: object, what: str) -> None:
    assert_exact_type(coupon, Coupon, what)
    assert isinstance(coupon, Coupon)
    assert_text(coupon.code, f"{what} code")
    for limit in (coupon.max_uses, coupon.max_uses_per_customer):
        assert limit is None or limit > 0, f"{what}: a use limit of {limit}"


def _assert_kind_fields(rule: PromotionRule, what: str) -> None:
    if rule.value_type is ValueType.PERCENT:
        assert rule.value <= 100, f"{what}: more than 100 percent"
    if rule.kind is PromotionKind.MULTI_BUY:
        assert rule.buy_quantity > rule.pay_quantity > 0, f"{what}: buy/pay quantities"
    if rule.kind is PromotionKind.BUY_X_GET_Y:
        assert rule.buy_quantity > 0, f"{what}: buy quantity {rule.buy_quantity}"
        assert rule.get_quantity > 0, f"{what}: get quantity {rule.get_quantity}"
    if rule.kind is PromotionKind.BUNDLE_PRICE:
        assert len(rule.bundle_skus) >= 2, f"{what}: a bundle of fewer than two SKUs"
    if rule.kind is PromotionKind.BASKET_THRESHOLD:
        assert rule.threshold is not None, f"{what}: a basket threshold without threshold"
    if rule.threshold is not None:
        assert_money(rule.threshold, f"{what} threshold")
        assert rule.threshold.currency == rule.currency, f"{what}: threshold currency"
