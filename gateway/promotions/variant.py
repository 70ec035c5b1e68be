"""The promotions a variant has on its own: what a product page or a shelf-edge label shows.

"On its own" means without the rest of a basket: rules on the variant's SKU, category or brand,
active now and open to this shopper without a coupon. Basket thresholds and bundles need other
items, so they are left to the cart. Each offer is priced by the engine itself on the smallest
basket that triggers it (one unit, or one multi-buy set), so the explanation a shopper reads here
is the one the cart will print.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from adapters.ports import Money, PromotionKind, PromotionRule

from .engine import price_basket
from .model import Basket, BasketLine, Shopper
from .rulebook import RuleBook

BASKET_WIDE = frozenset({PromotionKind.BASKET_THRESHOLD, PromotionKind.BUNDLE_PRICE})


@dataclass(frozen=True, slots=True)
class VariantOffer:
    """One promotion for one variant: from ``quantity`` units it saves ``discount``."""

    rule: PromotionRule
    quantity: int
    discount: Money
    explanation: str


def min_quantity(rule: PromotionRule) -> int:
    """Units of one SKU it takes to trigger ``rule``: a whole multi-buy set, else one."""
    if rule.kind is PromotionKind.MULTI_BUY:
        return max(rule.buy_quantity, 1)
    if rule.kind is PromotionKind.BUY_X_GET_Y:
        return max(rule.buy_quantity + rule.get_quantity, 1)
    return 1


def variant_offers(
    line: BasketLine, book: RuleBook, shopper: Shopper, now: datetime
) -> list[VariantOffer]:
    """The offers on ``line``'s variant (its quantity is ignored), in application order.

    ``shopper``'s coupon codes are ignored: a coupon is something a shopper enters in a cart."""
    shopper = Shopper(customer_id=shopper.customer_id, tier=shopper.tier)
    offers = []
    for index in sorted(book.candidates(line)):
        rule = book.rules[index]
        if rule.kind in BASKET_WIDE or not book.is_eligible(index, shopper, frozenset(), now):
            continue
        quantity = min_quantity(rule)
        basket = Basket(line.unit_price.currency, (_with_quantity(line, quantity),))
        priced = price_basket(basket, RuleBook.from_rules((rule,)), shopper, now)
        for applied in priced.applied_promotions:
            offers.append(VariantOffer(rule, quantity, applied.discount, applied.explanation))
    return offers


def _with_quantity(line: BasketLine, quantity: int) -> BasketLine:
    return BasketLine(line.sku, quantity, line.unit_price, line.categories, line.brand)
