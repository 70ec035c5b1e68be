"""What each rule kind does to the units it may discount.

The basket is held as ``Units``: a run of identical units of one line, all at the same current
unit price with the same promotions on them. A rule that takes only part of a run splits it.
Item rules lower the unit price (always on the minor unit, never below zero); basket rules
take an allocated amount off whole runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from adapters.ports import PromotionKind, PromotionRule, ValueType

from .allocation import ZERO, allocate, percent_of, round_money

PER_UNIT_KINDS = frozenset(
    {PromotionKind.PERCENT_OFF, PromotionKind.AMOUNT_OFF, PromotionKind.FIXED_PRICE}
)
SET_KINDS = frozenset({PromotionKind.MULTI_BUY, PromotionKind.BUY_X_GET_Y})


class Units:
    """Identical units of one line (mutable while one selection is evaluated)."""

    __slots__ = (
        "applied",
        "basket_discounts",
        "count",
        "groups",
        "line",
        "price",
        "sealed",
        "unit_discounts",
    )

    def __init__(self, line: int, count: int, price: Decimal) -> None:
        self.line = line
        self.count = count
        self.price = price
        self.groups: set[str] = set()
        self.applied: set[str] = set()
        self.sealed = False
        self.unit_discounts: dict[str, Decimal] = {}
        self.basket_discounts: dict[str, Decimal] = {}

    @property
    def amount(self) -> Decimal:
        """What these units cost now, after every discount so far."""
        return self.count * self.price - sum(self.basket_discounts.values(), ZERO)

    def copy(self) -> Units:
        """The same units with the same history, to change independently."""
        return self.split(0, keep=True)

    def split(self, count: int, keep: bool = False) -> Units:
        """Move ``count`` of these units into a new run with the same history (``keep``: copy
        all of them and leave these as they are)."""
        part = Units(self.line, self.count if keep else count, self.price)
        part.groups = set(self.groups)
        part.applied = set(self.applied)
        part.sealed = self.sealed
        part.unit_discounts = dict(self.unit_discounts)
        part.basket_discounts = dict(self.basket_discounts)
        if not keep:
            self.count -= count
        return part


class Ledger:
    """Every run of units of the basket, by canonical line index."""

    def __init__(
        self, skus: Sequence[str], quantities: Sequence[int], prices: Sequence[Decimal]
    ) -> None:
        self.skus = skus
        self.lines = [[Units(line, quantities[line], prices[line])] for line in range(len(skus))]

    def open_units(self, lines: Sequence[int], group: str) -> list[Units]:
        """Units of ``lines`` that are not sealed and have no rule of ``group`` yet."""
        return [
            units
            for line in lines
            for units in self.lines[line]
            if units.count and not units.sealed and group not in units.groups
        ]

    def take(self, units: Units, count: int) -> Units:
        """``count`` of ``units`` as a run of their own (the run itself when it has that many)."""
        if count >= units.count:
            return units
        part = units.split(count)
        self.lines[units.line].append(part)
        return part


def group_of(rule: PromotionRule) -> str:
    """A rule without a stacking group is a group of its own."""
    return rule.stacking_group or f"#{rule.id}"


def claim(units: Units, rule: PromotionRule, discount_per_unit: Decimal) -> None:
    """Put ``rule`` on ``units``, lowering their unit price by ``discount_per_unit``."""
    units.groups.add(group_of(rule))
    units.applied.add(rule.id)
    units.sealed = units.sealed or rule.exclusive
    if discount_per_unit:
        units.price -= discount_per_unit
        units.unit_discounts[rule.id] = units.unit_discounts.get(rule.id, ZERO) + discount_per_unit


def apply_item_rule(
    ledger: Ledger, rule: PromotionRule, lines: Sequence[int], unit: Decimal
) -> None:
    """Apply one item rule (every kind but BASKET_THRESHOLD) to the open units of ``lines``."""
    open_units = ledger.open_units(lines, group_of(rule))
    if rule.kind in PER_UNIT_KINDS:
        for units in open_units:
            discount = unit_discount(rule, units.price, unit)
            if discount or rule.extra_points:
                claim(units, rule, discount)
    elif rule.kind in SET_KINDS:
        _apply_sets(ledger, rule, open_units, unit)
    elif rule.kind is PromotionKind.BUNDLE_PRICE:
        _apply_bundles(ledger, rule, open_units, unit)


def unit_discount(rule: PromotionRule, price: Decimal, unit: Decimal) -> Decimal:
    """What a PERCENT_OFF, AMOUNT_OFF or FIXED_PRICE rule takes off one unit at ``price``."""
    value = max(rule.value, ZERO)
    if rule.kind is PromotionKind.PERCENT_OFF:
        return percent_of(price, value, unit)
    if rule.kind is PromotionKind.AMOUNT_OFF:
        return min(round_money(value, unit), price)
    return max(price - round_money(value, unit), ZERO)


def _set_shape(rule: PromotionRule) -> tuple[int, int]:
    """(units per set, discounted units per set); (0, 0) when the rule is malformed."""
    if rule.kind is PromotionKind.MULTI_BUY:
        size, discounted = rule.buy_quantity, rule.buy_quantity - rule.pay_quantity
    else:
        size, discounted = rule.buy_quantity + rule.get_quantity, rule.get_quantity
    if size <= 0 or discounted <= 0 or discounted > size or rule.pay_quantity < 0:
        return 0, 0
    return size, discounted


def _set_discount(rule: PromotionRule, price: Decimal, unit: Decimal) -> Decimal:
    if rule.kind is PromotionKind.MULTI_BUY:
        return price
    if rule.value_type is ValueType.AMOUNT:
        return min(round_money(max(rule.value, ZERO), unit), price)
    return percent_of(price, max(rule.value, ZERO), unit)


def _apply_sets(
    ledger: Ledger, rule: PromotionRule, open_units: list[Units], unit: Decimal
) -> None:
    """MULTI_BUY and BUY_X_GET_Y: complete sets only; the cheapest units are the discounted
    ones, the most expensive units are the ones paid for."""
    size, discounted = _set_shape(rule)
    count = sum(units.count for units in open_units)
    sets = count // size if size else 0
    if not sets:
        return
    cheapest_first = sorted(open_units, key=lambda units: (units.price, units.line))
    for units in _take_in_order(ledger, cheapest_first, sets * discounted):
        claim(units, rule, _set_discount(rule, units.price, unit))
    still_open = [units for units in cheapest_first if rule.id not in units.applied]
    dearest_first = sorted(still_open, key=lambda units: (-units.price, units.line))
    for units in _take_in_order(ledger, dearest_first, sets * (size - discounted)):
        claim(units, rule, ZERO)


def _take_in_order(ledger: Ledger, ordered: Sequence[Units], wanted: int) -> list[Units]:
    taken: list[Units] = []
    for units in ordered:
        if wanted <= 0:
            break
        part = ledger.take(units, min(wanted, units.count))
        taken.append(part)
        wanted -= part.count
    return taken


def _apply_bundles(
    ledger: Ledger, rule: PromotionRule, open_units: list[Units], unit: Decimal
) -> None:
    """BUNDLE_PRICE: as many bundles (one unit of each bundle SKU) as the open units make,
    dearest units first; each bundle costs ``value`` (AMOUNT) or ``value`` percent less
    (PERCENT), split over its units in proportion to their prices. A bundle that would cost
    more than its units is not made."""
    by_sku = _bundle_units(ledger, rule, open_units)
    if by_sku is None:
        return
    while all(by_sku):
        run = min(queue[0].count for queue in by_sku)
        heads = [ledger.take(queue[0], run) for queue in by_sku]
        prices = [units.price for units in heads]
        discounts = allocate(_bundle_saving(rule, prices, unit), prices, unit)
        if not any(discounts) and not rule.extra_points:
            return
        for units, discount in zip(heads, discounts, strict=True):
            claim(units, rule, discount)
        for queue in by_sku:
            if queue[0].count == 0 or rule.id in queue[0].applied:
                queue.pop(0)


def _bundle_units(
    ledger: Ledger, rule: PromotionRule, open_units: list[Units]
) -> list[list[Units]] | None:
    """The open units of each bundle SKU, dearest first; None when a SKU has none."""
    skus = sorted(set(rule.bundle_skus))
    queues: dict[str, list[Units]] = {sku: [] for sku in skus}
    for units in open_units:
        queue = queues.get(ledger.skus[units.line])
        if queue is not None:
            queue.append(units)
    if not skus or not all(queues.values()):
        return None
    return [sorted(queues[sku], key=lambda units: (-units.price, units.line)) for sku in skus]


def _bundle_saving(rule: PromotionRule, prices: Sequence[Decimal], unit: Decimal) -> Decimal:
    together = sum(prices, ZERO)
    if rule.value_type is ValueType.PERCENT:
        return percent_of(together, max(rule.value, ZERO), unit)
    return max(together - round_money(max(rule.value, ZERO), unit), ZERO)
