"""The promotions engine: pure functions that price a basket under the promotion rules.

No I/O, no clock, no randomness: callers pass the rules (a ``RuleBook``), the shopper, the
moment ``now`` and the loyalty program, and get a ``PricedBasket`` back. The rules of the
engine, for merchandisers, are in docs/promotions.md.
"""

from .engine import explain, price_basket
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
from .rulebook import RuleBook
from .stacking import EXACT_CHOICE_LIMIT
from .variant import VariantOffer, variant_offers

__all__ = [
    "EXACT_CHOICE_LIMIT",
    "AppliedPromotion",
    "Basket",
    "BasketLine",
    "LineDiscount",
    "LoyaltyProgram",
    "PricedBasket",
    "PricedLine",
    "Problem",
    "ProblemCode",
    "RuleBook",
    "Shopper",
    "VariantOffer",
    "explain",
    "price_basket",
    "variant_offers",
]
