"""``price_basket``: one price for a basket, whichever channel asks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from adapters.ports import Money, PromotionRule

from .allocation import ZERO, minor_unit
from .loyalty import Earning, earn, redeem
from .model import (
    AppliedPromotion,
    Basket,
    BasketLine,
    LineDiscount,
    LoyaltyProgram,
    PricedBasket,
    PricedLine,
    Problem,
    ProblemCode,
    Shopper,
)
from .rulebook import RuleBook, normalise_code
from .rules import Ledger
from .stacking import PreparedBasket, best_ledger


def price_basket(
    basket: Basket,
    rules: RuleBook,
    shopper: Shopper,
    now: datetime,
    loyalty: LoyaltyProgram | None = None,
    redeem_points: int = 0,
) -> PricedBasket:
    """Price ``basket`` for ``shopper`` at ``now`` under ``rules`` (see docs/promotions.md).

    Pure and deterministic: the same arguments give the same result, whatever the order of the
    lines. Coupon and points trouble is reported in ``problems``, never raised. Raises
    ValueError for a malformed basket: a quantity below 1, a negative price, a price off the
    minor unit or in another currency, or one SKU at two prices.
    """
    if redeem_points < 0:
        raise ValueError("redeem_points must not be negative")
    lines, first_seen = _canonical_lines(basket)
    prepared = _prepare(basket.currency, lines, rules, shopper, now)
    ledger = best_ledger(prepared)
    earning = earn(ledger, prepared.rules, shopper, loyalty)
    by_line = _discounts_by_line(prepared, ledger)
    priced = [_priced_line(lines[i], by_line[i], basket.currency) for i in range(len(lines))]
    applied = _applied(prepared.rules, by_line, ledger, earning)
    subtotal = prepared.subtotal
    discount_total = sum((p.discount.amount for p in applied), ZERO)
    total = _in(basket.currency)(subtotal - discount_total)
    redemption = redeem(redeem_points, shopper, loyalty, total)
    applied_ids = {promotion.id for promotion in applied}
    problems = (*_coupon_problems(rules, shopper, now, applied_ids), *redemption.problems)
    money = _in(basket.currency)
    return PricedBasket(
        currency=basket.currency,
        lines=tuple(sorted(priced, key=lambda line: first_seen[line.sku])),
        applied_promotions=tuple(applied),
        subtotal=money(subtotal),
        discount_total=money(discount_total),
        total=total,
        points_to_earn=earning.total,
        points_redeemed=redemption.points,
        points_value=money(redemption.value.amount),
        amount_due=money(total.amount - redemption.value.amount),
        problems=problems,
    )


def _in(currency: str) -> Callable[[Decimal], Money]:
    """Money in ``currency``, on its minor unit (sums of nothing are 0.00, not 0)."""
    unit = minor_unit(currency)
    return lambda amount: Money(amount.quantize(unit), currency)


def _canonical_lines(basket: Basket) -> tuple[list[BasketLine], dict[str, int]]:
    """One line per SKU, sorted by SKU, and the position where each SKU first appeared."""
    unit = minor_unit(basket.currency)
    merged: dict[str, BasketLine] = {}
    first_seen: dict[str, int] = {}
    for position, line in enumerate(basket.lines):
        _check_line(line, basket.currency, unit)
        known = merged.get(line.sku)
        if known is None:
            merged[line.sku] = line
            first_seen[line.sku] = position
            continue
        if (known.unit_price, known.brand, set(known.categories)) != (
            line.unit_price,
            line.brand,
            set(line.categories),
        ):
            raise ValueError(f"SKU {line.sku} appears with two prices or descriptions")
        merged[line.sku] = BasketLine(
            line.sku,
            known.quantity + line.quantity,
            known.unit_price,
            known.categories,
            known.brand,
        )
    return [merged[sku] for sku in sorted(merged)], first_seen


def _check_line(line: BasketLine, currency: str, unit: Decimal) -> None:
    price = line.unit_price
    if line.quantity < 1:
        raise ValueError(f"SKU {line.sku}: quantity must be at least 1")
    if (
        price.currency != currency
        or price.amount < 0
        or price.amount != price.amount.quantize(unit)
    ):
        raise ValueError(f"SKU {line.sku}: price must be a non-negative {currency} amount")


def _prepare(
    currency: str, lines: Sequence[BasketLine], rules: RuleBook, shopper: Shopper, now: datetime
) -> PreparedBasket:
    codes = frozenset(normalise_code(code) for code in shopper.coupon_codes)
    eligible: dict[int, bool] = {}
    targets: dict[int, list[int]] = defaultdict(list)
    for position, line in enumerate(lines):
        for index in rules.candidates(line):
            if index not in eligible:
                rule = rules.rules[index]
                eligible[index] = rule.currency == currency and rules.is_eligible(
                    index, shopper, codes, now
                )
            if eligible[index]:
                targets[index].append(position)
    chosen = sorted(targets)  # rule-book indexes are in rule order
    return PreparedBasket(
        currency=currency,
        unit=minor_unit(currency),
        skus=tuple(line.sku for line in lines),
        quantities=tuple(line.quantity for line in lines),
        prices=tuple(line.unit_price.amount for line in lines),
        rules=tuple(rules.rules[index] for index in chosen),
        targets=tuple(tuple(sorted(targets[index])) for index in chosen),
    )


def _discounts_by_line(basket: PreparedBasket, ledger: Ledger) -> list[dict[str, Decimal]]:
    """Rule id -> discount on each canonical line, in rule order."""
    order = {rule.id: position for position, rule in enumerate(basket.rules)}
    result: list[dict[str, Decimal]] = []
    for runs in ledger.lines:
        found: dict[str, Decimal] = defaultdict(Decimal)
        for units in runs:
            for rule_id, per_unit in units.unit_discounts.items():
                found[rule_id] += per_unit * units.count
            for rule_id, amount in units.basket_discounts.items():
                found[rule_id] += amount
        ordered = sorted((rid for rid, amount in found.items() if amount), key=order.__getitem__)
        result.append({rule_id: found[rule_id] for rule_id in ordered})
    return result


def _priced_line(line: BasketLine, discounts: Mapping[str, Decimal], currency: str) -> PricedLine:
    subtotal = line.quantity * line.unit_price.amount
    money = _in(currency)
    return PricedLine(
        sku=line.sku,
        quantity=line.quantity,
        unit_price=line.unit_price,
        subtotal=money(subtotal),
        discounts=tuple(LineDiscount(rid, money(a)) for rid, a in discounts.items()),
        line_total=money(subtotal - sum(discounts.values(), ZERO)),
    )


def _applied(
    rules: Sequence[PromotionRule],
    by_line: Sequence[Mapping[str, Decimal]],
    ledger: Ledger,
    earning: Earning,
) -> list[AppliedPromotion]:
    on_units = {rule_id for runs in ledger.lines for units in runs for rule_id in units.applied}
    discounts: dict[str, Decimal] = defaultdict(Decimal)
    for line in by_line:
        for rule_id, share in line.items():
            discounts[rule_id] += share
    applied: list[AppliedPromotion] = []
    for rule in rules:
        discount = discounts.get(rule.id, ZERO)
        if not discount and not (rule.extra_points and rule.id in on_units):
            continue
        amount = _in(rule.currency)(discount)
        applied.append(
            AppliedPromotion(
                rule.id, rule.title, explain(rule, amount), amount, earning.bonus.get(rule.id, 0)
            )
        )
    return applied


def explain(rule: PromotionRule, discount: Money) -> str:
    """The shopper's line for an applied promotion: "3 for 2 on socks: -4.99", or for a
    promotion that only awards points, "Double points on outdoor: +100% points"."""
    if discount.amount:
        return f"{rule.title}: -{discount.amount}"
    return f"{rule.title}: +{rule.extra_points}% points"


def _coupon_problems(
    rules: RuleBook, shopper: Shopper, now: datetime, applied_ids: set[str]
) -> list[Problem]:
    problems: list[Problem] = []
    for code in dict.fromkeys(normalise_code(c) for c in shopper.coupon_codes if c.strip()):
        gated = [rules.rules[index] for index in rules.codes.get(code, ())]
        problem = _coupon_problem(code, gated, shopper, now, applied_ids)
        if problem is not None:
            problems.append(problem)
    return problems


def _coupon_problem(
    code: str,
    gated: Sequence[PromotionRule],
    shopper: Shopper,
    now: datetime,
    applied_ids: set[str],
) -> Problem | None:
    if not gated:
        return Problem(ProblemCode.UNKNOWN_COUPON, f"Coupon {code} is not known.")
    active = [rule for rule in gated if rule.is_active(now)]
    if not active and all(rule.valid_until <= now for rule in gated):
        return Problem(ProblemCode.EXPIRED_COUPON, f"Coupon {code} has expired.")
    if not active:
        return Problem(ProblemCode.COUPON_NOT_YET_VALID, f"Coupon {code} is not valid yet.")
    if any(rule.id in applied_ids for rule in active):
        return None
    reason = _not_applicable_reason(active[0], shopper)
    return Problem(ProblemCode.COUPON_NOT_APPLICABLE, f"Coupon {code} {reason}.")


def _not_applicable_reason(rule: PromotionRule, shopper: Shopper) -> str:
    if rule.tiers and (shopper.tier or "").upper() not in {t.upper() for t in rule.tiers}:
        return "is for " + ", ".join(sorted(rule.tiers)) + " members only"
    if rule.customer_id is not None and rule.customer_id != shopper.customer_id:
        return "is personal to another customer"
    if rule.threshold is not None:
        return f"needs a spend of at least {rule.threshold.amount} on the items it covers"
    return "does not lower the price of this basket"
