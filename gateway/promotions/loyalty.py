"""Points earned on a priced basket, and points redeemed as a partial tender."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from adapters.ports import Money, PromotionRule

from .allocation import HUNDRED, ZERO, whole
from .model import LoyaltyProgram, Problem, ProblemCode, Shopper
from .rules import Ledger
from .stacking import paid


@dataclass(frozen=True, slots=True)
class Earning:
    """``total`` points: the base points plus each rule's ``bonus`` (rule id -> points)."""

    total: int
    bonus: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Redemption:
    points: int
    value: Money
    problems: tuple[Problem, ...]


def earn(
    ledger: Ledger, rules: Sequence[PromotionRule], shopper: Shopper, program: LoyaltyProgram | None
) -> Earning:
    """Base points: the amount paid x ``points_per_unit`` x the tier's multiplier, rounded
    down. Each rule with ``extra_points`` adds that percent of the same rate on what is paid for
    the units it was applied to, rounded down on its own."""
    if program is None:
        return Earning(0, {})
    multipliers = {tier.upper(): value for tier, value in program.tier_multipliers.items()}
    rate = program.points_per_unit * multipliers.get((shopper.tier or "").upper(), Decimal(1))
    bonus: dict[str, int] = {}
    for rule in rules:
        if rule.extra_points:
            amount = sum(
                (u.amount for runs in ledger.lines for u in runs if rule.id in u.applied), ZERO
            )
            bonus[rule.id] = max(whole(amount * rate * rule.extra_points / HUNDRED), 0)
    base = max(whole(paid(ledger) * rate), 0)
    return Earning(base + sum(bonus.values()), bonus)


def redeem(
    requested: int, shopper: Shopper, program: LoyaltyProgram | None, total: Money
) -> Redemption:
    """Whole points, at most the balance and at most what pays ``total``; every cap is
    reported as a problem, and the rest of the basket is priced as usual."""
    nothing = Redemption(0, Money(ZERO, total.currency), ())
    if requested <= 0:
        return nothing
    point = program.point_value if program else None
    if point is None or shopper.customer_id is None or point.currency != total.currency:
        return _refused(nothing)
    if point.amount <= 0:
        return _refused(nothing)
    problems: list[Problem] = []
    points = requested
    if requested > shopper.points_balance:
        points = max(shopper.points_balance, 0)
        problems.append(
            Problem(
                ProblemCode.NOT_ENOUGH_POINTS,
                f"Asked to redeem {requested} points; the balance is {shopper.points_balance}.",
            )
        )
    payable = whole(total.amount / point.amount)
    if points > payable:
        points = payable
        problems.append(
            Problem(
                ProblemCode.POINTS_CAPPED_AT_TOTAL,
                f"Only {payable} points are needed to pay the total.",
            )
        )
    value = (points * point.amount).quantize(total.minor_unit, rounding=ROUND_FLOOR)
    return Redemption(points, Money(value, total.currency), tuple(problems))


def _refused(nothing: Redemption) -> Redemption:
    problem = Problem(
        ProblemCode.POINTS_NOT_ACCEPTED,
        "Points can be redeemed only by a signed-in loyalty member in the program's currency.",
    )
    return Redemption(nothing.points, nothing.value, (problem,))
