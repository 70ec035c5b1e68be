"""The values the promotions engine takes and returns: plain frozen dataclasses.

Amounts are ``Money`` (``Decimal`` plus a currency). Every amount the engine returns is on the
currency's minor unit.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from adapters.ports import Money


@dataclass(frozen=True, slots=True)
class BasketLine:
    """One SKU in the basket at its selling price.

    ``categories`` are the product's category paths (any order; ancestors may be listed or
    not: a rule on "footwear" matches "footwear/boots" either way). ``brand`` is the product's
    brand. ``unit_price`` must be in the basket's currency and on its minor unit.
    """

    sku: str
    quantity: int
    unit_price: Money
    categories: tuple[str, ...] = ()
    brand: str = ""


@dataclass(frozen=True, slots=True)
class Basket:
    """The lines to price, all in ``currency``. Lines with the same SKU are priced as one."""

    currency: str
    lines: tuple[BasketLine, ...]


@dataclass(frozen=True, slots=True)
class Shopper:
    """Who is buying: unlocks personal offers (``customer_id``), tier rules (``tier``) and
    coupon rules (``coupon_codes``, compared without case or surrounding blanks).
    ``points_balance`` is the loyalty balance that redemptions are capped by."""

    customer_id: str | None = None
    tier: str | None = None
    coupon_codes: tuple[str, ...] = ()
    points_balance: int = 0


@dataclass(frozen=True, slots=True)
class LoyaltyProgram:
    """How points are earned and spent.

    ``points_per_unit``: points per whole currency unit paid (e.g. 1 per euro).
    ``tier_multipliers``: upper-case tier -> multiplier of the earned points (1 when absent).
    ``point_value``: what one redeemed point pays, e.g. Money("0.01", "EUR").
    """

    points_per_unit: Decimal
    point_value: Money
    tier_multipliers: Mapping[str, Decimal] = field(default_factory=dict)


class ProblemCode(enum.Enum):
    """Why part of a request could not be honoured. The basket is still priced."""

    UNKNOWN_SKU = "UNKNOWN_SKU"  # reported by callers that cannot price a SKU
    PRICE_UNAVAILABLE = "PRICE_UNAVAILABLE"  # by callers whose pricing engine cannot answer now
    UNKNOWN_COUPON = "UNKNOWN_COUPON"
    EXPIRED_COUPON = "EXPIRED_COUPON"
    COUPON_NOT_YET_VALID = "COUPON_NOT_YET_VALID"
    COUPON_NOT_APPLICABLE = "COUPON_NOT_APPLICABLE"
    NOT_ENOUGH_POINTS = "NOT_ENOUGH_POINTS"
    POINTS_CAPPED_AT_TOTAL = "POINTS_CAPPED_AT_TOTAL"
    POINTS_NOT_ACCEPTED = "POINTS_NOT_ACCEPTED"
    LOYALTY_UNAVAILABLE = "LOYALTY_UNAVAILABLE"  # by callers that cannot reach the loyalty system


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    message: str
    sku: str | None = None


@dataclass(frozen=True, slots=True)
class LineDiscount:
    """The part of one promotion's discount that falls on one line."""

    promotion_id: str
    amount: Money


@dataclass(frozen=True, slots=True)
class PricedLine:
    """``subtotal`` is quantity x unit price; ``line_total`` is the subtotal less the
    ``discounts`` (never below zero)."""

    sku: str
    quantity: int
    unit_price: Money
    subtotal: Money
    discounts: tuple[LineDiscount, ...]
    line_total: Money


@dataclass(frozen=True, slots=True)
class AppliedPromotion:
    """A promotion that changed the basket: its whole ``discount`` (the sum of its line
    discounts), the bonus ``points`` it awards, and an ``explanation`` for the shopper."""

    id: str
    title: str
    explanation: str
    discount: Money
    points: int = 0


@dataclass(frozen=True, slots=True)
class PricedBasket:
    """The priced basket.

    ``total`` = ``subtotal`` - ``discount_total``: the price of the goods after promotions.
    ``points_value`` is what ``points_redeemed`` pay of it; ``amount_due`` is the rest.
    ``points_to_earn`` are earned on ``total`` (after discounts, before points are redeemed).
    ``lines`` keep the order in which their SKUs first appear in the basket.
    """

    currency: str
    lines: tuple[PricedLine, ...]
    applied_promotions: tuple[AppliedPromotion, ...]
    subtotal: Money
    discount_total: Money
    total: Money
    points_to_earn: int
    points_redeemed: int
    points_value: Money
    amount_due: Money
    problems: tuple[Problem, ...]
