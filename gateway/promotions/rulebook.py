"""The rule set indexed for pricing many baskets: by SKU, category, brand and coupon code."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from adapters.ports import Coupon, PromotionKind, PromotionRule, PromotionSet

from .model import BasketLine, Shopper


def rule_order(rule: PromotionRule) -> tuple[int, str]:
    """The order rules are applied and ties are broken in: higher priority, then lower id."""
    return (-rule.priority, rule.id)


def normalise_code(code: str) -> str:
    """Coupon codes compare without case and surrounding blanks."""
    return code.strip().upper()


def category_prefixes(categories: Iterable[str]) -> set[str]:
    """Every category path and its ancestors: "a/b/c" gives "a/b/c", "a/b" and "a"."""
    found: set[str] = set()
    for path in categories:
        parts = path.split("/")
        found.update("/".join(parts[:end]) for end in range(1, len(parts) + 1))
    return found


@dataclass(frozen=True, slots=True)
class RuleBook:
    """Every rule and coupon, indexed once per rule-set version and reused for each basket.

    Build it with ``RuleBook.of(promotion_set)`` or ``RuleBook.from_rules(rules, coupons)``.
    ``rules`` are in application order (``rule_order``).
    """

    rules: tuple[PromotionRule, ...]
    by_sku: Mapping[str, tuple[int, ...]]
    by_category: Mapping[str, tuple[int, ...]]
    by_brand: Mapping[str, tuple[int, ...]]
    everywhere: tuple[int, ...]
    codes: Mapping[str, tuple[int, ...]]
    coupon_gated: frozenset[int]

    @classmethod
    def of(cls, promotions: PromotionSet) -> RuleBook:
        return cls.from_rules(promotions.rules, promotions.coupons)

    @classmethod
    def from_rules(cls, rules: Sequence[PromotionRule], coupons: Sequence[Coupon] = ()) -> RuleBook:
        ordered = tuple(sorted(rules, key=rule_order))
        by_sku: dict[str, list[int]] = defaultdict(list)
        by_category: dict[str, list[int]] = defaultdict(list)
        by_brand: dict[str, list[int]] = defaultdict(list)
        everywhere: list[int] = []
        for index, rule in enumerate(ordered):
            if rule.kind is PromotionKind.BUNDLE_PRICE:
                for sku in set(rule.bundle_skus):
                    by_sku[sku].append(index)
            elif rule.target.everything:
                everywhere.append(index)
            else:
                for sku in rule.target.skus:
                    by_sku[sku].append(index)
                for category in rule.target.categories:
                    by_category[category].append(index)
                for brand in rule.target.brands:
                    by_brand[brand].append(index)
        codes = _coupon_codes(ordered, coupons)
        gated = frozenset(index for indexes in codes.values() for index in indexes)
        return cls(
            ordered,
            _frozen(by_sku),
            _frozen(by_category),
            _frozen(by_brand),
            tuple(everywhere),
            codes,
            gated,
        )

    def candidates(self, line: BasketLine) -> set[int]:
        """Indexes of the rules whose target may include ``line`` (bundles: its SKU)."""
        found = set(self.everywhere)
        found.update(self.by_sku.get(line.sku, ()))
        found.update(self.by_brand.get(line.brand, ()))
        for prefix in category_prefixes(line.categories):
            found.update(self.by_category.get(prefix, ()))
        return found

    def is_eligible(
        self, index: int, shopper: Shopper, codes: frozenset[str], now: datetime
    ) -> bool:
        """Whether rule ``index`` may apply to this shopper at ``now``: active, and each gate
        (coupon code entered, tier, personal customer) it has is open."""
        rule = self.rules[index]
        if not rule.is_active(now):
            return False
        if index in self.coupon_gated and not self._code_entered(index, codes):
            return False
        if rule.tiers and (shopper.tier or "").upper() not in {t.upper() for t in rule.tiers}:
            return False
        return rule.customer_id is None or rule.customer_id == shopper.customer_id

    def _code_entered(self, index: int, codes: frozenset[str]) -> bool:
        return any(index in self.codes.get(code, ()) for code in codes)


def _coupon_codes(
    rules: Sequence[PromotionRule], coupons: Sequence[Coupon]
) -> Mapping[str, tuple[int, ...]]:
    position = {rule.id: index for index, rule in enumerate(rules)}
    codes: dict[str, set[int]] = defaultdict(set)
    for index, rule in enumerate(rules):
        if rule.coupon_code:
            codes[normalise_code(rule.coupon_code)].add(index)
    for coupon in coupons:
        if coupon.promotion_id in position:
            codes[normalise_code(coupon.code)].add(position[coupon.promotion_id])
    return {code: tuple(sorted(indexes)) for code, indexes in codes.items()}


def _frozen(index: Mapping[str, list[int]]) -> Mapping[str, tuple[int, ...]]:
    return {key: tuple(values) for key, values in index.items()}
