"""How rules combine on one basket, and the choice among exclusive rules.

One evaluation applies, in this order: the chosen exclusive rules, then every non-exclusive
item rule, then every non-exclusive basket rule, each group in rule order (priority, then id).
Which exclusive rules are chosen is searched: every combination when there are few, a greedy
pass beyond ``EXACT_CHOICE_LIMIT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from itertools import combinations

from adapters.ports import PromotionKind, PromotionRule, ValueType

from .allocation import ZERO, allocate, percent_of, round_money
from .rules import PER_UNIT_KINDS, Ledger, apply_item_rule, claim, group_of

# 2**8 = 256 evaluations at most; beyond that the greedy fallback decides.
EXACT_CHOICE_LIMIT = 8


@dataclass(frozen=True)
class PreparedBasket:
    """The basket in canonical order (by SKU) with the rules that may touch it.

    ``rules`` are eligible for this shopper and moment, in rule order; ``targets[i]`` are the
    canonical line indexes rule ``i`` may apply to."""

    currency: str
    unit: Decimal
    skus: tuple[str, ...]
    quantities: tuple[int, ...]
    prices: tuple[Decimal, ...]
    rules: tuple[PromotionRule, ...]
    targets: tuple[tuple[int, ...], ...]

    @cached_property
    def shared_order(self) -> tuple[int, ...]:
        """The non-exclusive rules in the order they apply: item rules, then basket rules."""
        items = [i for i, r in enumerate(self.rules) if not r.exclusive and not _is_basket(r)]
        return (*items, *(i for i, r in enumerate(self.rules) if not r.exclusive and _is_basket(r)))

    @property
    def subtotal(self) -> Decimal:
        return sum((q * p for q, p in zip(self.quantities, self.prices, strict=True)), ZERO)


def evaluate(basket: PreparedBasket, chosen: Iterable[int], base: Ledger | None = None) -> Ledger:
    """The basket with the exclusive rules ``chosen`` (indexes into ``basket.rules``) and all
    non-exclusive rules applied. With ``base`` (see ``_settled``), the lines it settled are
    copied from it instead of being worked out again."""
    ledger = Ledger(basket.skus, basket.quantities, basket.prices)
    settled: set[int] = set()
    if base is not None:
        settled = {line for line, runs in enumerate(base.lines) if runs}
        for line in settled:
            ledger.lines[line] = [units.copy() for units in base.lines[line]]
    for index in (*sorted(set(chosen)), *basket.shared_order):
        rule, lines = basket.rules[index], basket.targets[index]
        if _is_basket(rule):
            apply_basket_rule(ledger, basket, rule, lines)
        else:
            open_lines = [line for line in lines if line not in settled] if settled else lines
            if open_lines:
                apply_item_rule(ledger, rule, open_lines, basket.unit)
    return ledger


def best_ledger(basket: PreparedBasket) -> Ledger:
    """The evaluation best for the customer: the lowest total; on equal totals the choice
    whose exclusive rules, in rule order, come first (fewer rules first when one choice is
    the start of another)."""
    useful = [i for i, rule in enumerate(basket.rules) if rule.exclusive and _useful(basket, i)]
    if not useful:
        return evaluate(basket, ())
    base = _settled(basket, useful)
    if len(useful) <= EXACT_CHOICE_LIMIT:
        choices: Iterable[tuple[int, ...]] = (
            combo for size in range(len(useful) + 1) for combo in combinations(useful, size)
        )
        return _best_of(basket, choices, base)[1]
    return _greedy(basket, useful, base)


def _settled(basket: PreparedBasket, useful: Sequence[int]) -> Ledger | None:
    """The item rules applied once to the lines no exclusive rule can reach, directly or
    through a multi-buy or bundle that also covers a line it reaches (rules of the other kinds
    discount each unit on its own): those lines come out the same whichever exclusive rules
    are chosen, so every choice copies them. None when every line can be reached."""
    if any(_is_basket(basket.rules[i]) for i in useful):
        return None
    reached = {line for index in useful for line in basket.targets[index]}
    items = [i for i, r in enumerate(basket.rules) if not r.exclusive and not _is_basket(r)]
    linking = [i for i in items if basket.rules[i].kind not in PER_UNIT_KINDS]
    grown = True
    while grown:
        grown = False
        for index in linking:
            lines = basket.targets[index]
            if reached.intersection(lines) and not reached.issuperset(lines):
                reached.update(lines)
                grown = True
    if len(reached) == len(basket.skus):
        return None
    ledger = Ledger(basket.skus, basket.quantities, basket.prices)
    for index in items:
        unreached = [line for line in basket.targets[index] if line not in reached]
        if unreached:
            apply_item_rule(ledger, basket.rules[index], unreached, basket.unit)
    for line in reached:
        ledger.lines[line] = []  # worked out for each choice
    return ledger


def paid(ledger: Ledger) -> Decimal:
    """What the basket costs after every discount of ``ledger``."""
    return sum((units.amount for runs in ledger.lines for units in runs), ZERO)


def _best_of(
    basket: PreparedBasket, choices: Iterable[tuple[int, ...]], base: Ledger | None
) -> tuple[tuple[int, ...], Ledger]:
    best: tuple[tuple[Decimal, tuple[int, ...]], tuple[int, ...], Ledger] | None = None
    for choice in choices:
        ledger = evaluate(basket, choice, base)
        rank = (paid(ledger), choice)  # rule indexes are already in rule order
        if best is None or rank < best[0]:
            best = (rank, choice, ledger)
    assert best is not None  # the empty choice is always among them
    return best[1], best[2]


def _greedy(basket: PreparedBasket, useful: Sequence[int], base: Ledger | None) -> Ledger:
    """Beyond the exact limit: take each exclusive rule in rule order when adding it to the
    rules taken so far lowers the total."""
    chosen: tuple[int, ...] = ()
    ledger = evaluate(basket, chosen, base)
    for index in useful:
        trial = tuple(sorted((*chosen, index)))
        candidate = evaluate(basket, trial, base)
        if paid(candidate) < paid(ledger):
            chosen, ledger = trial, candidate
    return ledger


def _useful(basket: PreparedBasket, index: int) -> bool:
    """An exclusive rule that changes nothing on its own changes nothing with others either:
    other exclusive rules only ever leave it fewer units and a lower spend."""
    ledger = Ledger(basket.skus, basket.quantities, basket.prices)
    rule = basket.rules[index]
    if _is_basket(rule):
        apply_basket_rule(ledger, basket, rule, basket.targets[index])
    else:
        apply_item_rule(ledger, rule, basket.targets[index], basket.unit)
    return any(rule.id in units.applied for runs in ledger.lines for units in runs)


def _is_basket(rule: PromotionRule) -> bool:
    return rule.kind is PromotionKind.BASKET_THRESHOLD


def apply_basket_rule(
    ledger: Ledger, basket: PreparedBasket, rule: PromotionRule, lines: Sequence[int]
) -> None:
    """BASKET_THRESHOLD: when the spend on the targeted units after item discounts (sealed
    units included) reaches ``threshold``, take ``value`` (AMOUNT) or ``value`` percent of
    their current amount (PERCENT) off the open targeted units, allocated over them in
    proportion to what they cost now, by largest remainder."""
    targeted = [units for line in lines for units in ledger.lines[line] if units.count]
    spend = sum((units.count * units.price for units in targeted), ZERO)
    threshold = rule.threshold
    if threshold is not None and (
        threshold.currency != basket.currency or spend < threshold.amount
    ):
        return
    open_units = ledger.open_units(lines, group_of(rule))
    amounts = [units.amount for units in open_units]
    base = sum(amounts, ZERO)
    value = max(rule.value, ZERO)
    if rule.value_type is ValueType.PERCENT:
        discount = percent_of(base, value, basket.unit)
    else:
        discount = min(round_money(value, basket.unit), base)
    if not discount and not rule.extra_points:
        return
    for units, share in zip(open_units, allocate(discount, amounts, basket.unit), strict=True):
        claim(units, rule, ZERO)
        if share:
            units.basket_discounts[rule.id] = share
