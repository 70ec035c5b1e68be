"""Cart pricing: gather a basket's prices, products, rules and shopper, then call the engine.

The imperative shell around ``gateway.promotions``: every channel prices a cart through this one
service, so a basket costs the same in the app and at the till.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from adapters.ports import BackendError, PromotionRule, PromotionsPort
from gateway.degraded import PriceGap
from gateway.loaders import Loaders
from gateway.promotions import (
    Basket,
    BasketLine,
    LoyaltyProgram,
    PricedBasket,
    Problem,
    ProblemCode,
    RuleBook,
    Shopper,
    VariantOffer,
    price_basket,
    variant_offers,
)
from gateway.tiers import KnownTiers

log = logging.getLogger(__name__)
PERSONAL_BOOKS = 256


class OfferSource(Protocol):
    """Personal offers the gateway itself stores (issued by the call centre)."""

    async def rules_for(self, customer_id: str, now: datetime) -> Sequence[PromotionRule]: ...


@dataclass(frozen=True, slots=True)
class CartRequest:
    lines: tuple[tuple[str, int], ...]
    coupon_codes: tuple[str, ...] = ()
    store_id: str | None = None
    redeem_points: int = 0
    customer_id: str | None = None


class PromotionRules:
    """The rule book for a customer: the feed's rules (indexed once per feed version) plus the
    customer's own personal offers."""

    def __init__(self, feed: PromotionsPort, offers: OfferSource | None = None) -> None:
        self._feed = feed
        self._offers = offers
        self._version: str | None = None
        self._book: RuleBook | None = None
        self._personal: dict[tuple[str, tuple[PromotionRule, ...]], RuleBook] = {}

    async def for_customer(self, customer_id: str | None, now: datetime) -> RuleBook:
        promotions = await self._feed.promotions()
        if self._book is None or promotions.version != self._version:
            self._book = RuleBook.of(promotions)
            self._version = promotions.version
            self._personal.clear()
        if customer_id is None or self._offers is None:
            return self._book
        personal = tuple(await self._offers.rules_for(customer_id, now))
        if not personal:
            return self._book
        key = (promotions.version, personal)
        book = self._personal.get(key)
        if book is None:
            if len(self._personal) >= PERSONAL_BOOKS:
                self._personal.clear()
            book = RuleBook.from_rules((*promotions.rules, *personal), promotions.coupons)
            self._personal[key] = book
        return book


class CartPricing:
    def __init__(
        self,
        rules: PromotionRules,
        program: LoyaltyProgram,
        clock: Callable[[], datetime],
        tiers: KnownTiers | None = None,
    ) -> None:
        self._rules = rules
        self._program = program
        self._clock = clock
        self._tiers = tiers

    async def price(self, request: CartRequest, loaders: Loaders) -> PricedBasket:
        """The priced cart. Unknown SKUs are left out and reported as problems."""
        now = self._clock()
        skus = [sku for sku, _ in request.lines]
        products, prices = await asyncio.gather(
            loaders.product_by_sku.load_many(skus),
            loaders.price_by_sku.load_many([(sku, request.store_id) for sku in skus]),
        )
        lines, problems = [], []
        for (sku, quantity), product, price in zip(request.lines, products, prices, strict=True):
            if product is None or price is None:
                problems.append(Problem(ProblemCode.UNKNOWN_SKU, f"{sku} is not sold", sku))
                continue
            if isinstance(price, PriceGap):
                # A cart is what will be paid: never a last known price.
                message = f"no current price for {sku}: {price.backend} cannot answer now"
                problems.append(Problem(ProblemCode.PRICE_UNAVAILABLE, message, sku))
                continue
            lines.append(
                BasketLine(sku, quantity, price.current, product.categories, product.brand)
            )
        currency = lines[0].unit_price.currency if lines else self._program.point_value.currency
        shopper, unreachable = await self._shopper(request, loaders)
        if unreachable is not None:
            problems.append(unreachable)
        book = await self._rules.for_customer(request.customer_id, now)
        basket = Basket(currency, tuple(lines))
        priced = price_basket(basket, book, shopper, now, self._program, request.redeem_points)
        return _with_problems(priced, problems)

    async def offers_for(
        self, line: BasketLine, customer_id: str | None, loaders: Loaders
    ) -> list[VariantOffer]:
        """The promotions on ``line``'s variant on its own, for this customer (or anyone)."""
        now = self._clock()
        shopper, _ = await self._shopper(CartRequest((), customer_id=customer_id), loaders)
        book = await self._rules.for_customer(customer_id, now)
        return variant_offers(line, book, shopper, now)

    async def _shopper(
        self, request: CartRequest, loaders: Loaders
    ) -> tuple[Shopper, Problem | None]:
        """The shopper, and a problem if the loyalty system could not be reached: then the
        tier last confirmed for the customer stands in (points wait for the loyalty system)."""
        if request.customer_id is None:
            return Shopper(coupon_codes=request.coupon_codes), None
        shopper = Shopper(customer_id=request.customer_id, coupon_codes=request.coupon_codes)
        try:
            account = await loaders.account_by_customer.load(request.customer_id)
        except BackendError as exc:
            log.warning("loyalty unavailable while pricing a cart: %s", exc)
            tier, problem = await self._stand_in_tier(request.customer_id)
            return replace(shopper, tier=tier), problem
        if account is None:
            return shopper, None
        if self._tiers is not None:
            await self._tiers.remember(request.customer_id, account.tier)
        return replace(shopper, tier=account.tier, points_balance=account.points), None

    async def _stand_in_tier(self, customer_id: str) -> tuple[str | None, Problem]:
        recalled = None if self._tiers is None else await self._tiers.recall(customer_id)
        if recalled is None:
            message = (
                "the loyalty system could not be reached and no tier is known for this "
                "customer: standard prices and the base earn rate were used"
            )
            return None, Problem(ProblemCode.LOYALTY_UNAVAILABLE, message)
        message = (
            f"the loyalty system could not be reached: priced for tier {recalled.tier}, "
            f"as last confirmed at {recalled.confirmed_at:%Y-%m-%d %H:%M} UTC"
        )
        return recalled.tier, Problem(ProblemCode.LOYALTY_UNAVAILABLE, message)


def _with_problems(priced: PricedBasket, problems: list[Problem]) -> PricedBasket:
    if not problems:
        return priced
    return replace(priced, problems=(*problems, *priced.problems))
