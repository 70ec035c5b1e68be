"""The cart: one price for a basket, whichever channel asks."""

from __future__ import annotations

import enum

import strawberry

from gateway.cart import CartRequest
from gateway.context import Info
from gateway.promotions import AppliedPromotion, PricedBasket, PricedLine, Problem, VariantOffer
from resolvers.common import MoneyType, store_code, user_error

MAX_LINES = 200
MAX_QUANTITY = 999
LOOKUP_SCOPE = "customer:lookup"


@strawberry.enum(description="Why part of a cart could not be honoured; the rest is priced.")
class CartProblemCode(enum.Enum):
    UNKNOWN_SKU = "UNKNOWN_SKU"
    UNKNOWN_COUPON = "UNKNOWN_COUPON"
    EXPIRED_COUPON = "EXPIRED_COUPON"
    COUPON_NOT_YET_VALID = "COUPON_NOT_YET_VALID"
    COUPON_NOT_APPLICABLE = "COUPON_NOT_APPLICABLE"
    NOT_ENOUGH_POINTS = "NOT_ENOUGH_POINTS"
    POINTS_CAPPED_AT_TOTAL = "POINTS_CAPPED_AT_TOTAL"
    POINTS_NOT_ACCEPTED = "POINTS_NOT_ACCEPTED"
    LOYALTY_UNAVAILABLE = "LOYALTY_UNAVAILABLE"
    PRICE_UNAVAILABLE = "PRICE_UNAVAILABLE"


@strawberry.input
class CartLineInput:
    sku: str
    quantity: int


@strawberry.input
class CartInput:
    lines: list[CartLineInput]
    coupon_codes: list[str] = strawberry.field(default_factory=list)
    store_id: strawberry.ID | None = strawberry.field(
        default=None, description="Price in this store's zone (the till's or the pickup store)."
    )
    redeem_points: int = 0
    customer_id: str | None = strawberry.field(
        default=None,
        description="Price for this customer (tills and call centre); otherwise the token's.",
    )


@strawberry.type
class CartLineDiscount:
    amount: MoneyType
    promotion_id: str


@strawberry.type
class PricedCartLine:
    sku: str
    quantity: int
    unit_price: MoneyType
    subtotal: MoneyType
    line_total: MoneyType
    discounts: list[CartLineDiscount]

    @classmethod
    def from_domain(cls, line: PricedLine) -> PricedCartLine:
        return cls(
            sku=line.sku,
            quantity=line.quantity,
            unit_price=MoneyType.from_domain(line.unit_price),
            subtotal=MoneyType.from_domain(line.subtotal),
            line_total=MoneyType.from_domain(line.line_total),
            discounts=[
                CartLineDiscount(
                    amount=MoneyType.from_domain(d.amount), promotion_id=d.promotion_id
                )
                for d in line.discounts
            ],
        )


@strawberry.type(name="AppliedPromotion")
class AppliedPromotionType:
    id: str
    title: str
    explanation: str
    discount: MoneyType
    points: int = strawberry.field(description="Bonus points the promotion awards.")

    @classmethod
    def from_domain(cls, applied: AppliedPromotion) -> AppliedPromotionType:
        return cls(
            id=applied.id,
            title=applied.title,
            explanation=applied.explanation,
            discount=MoneyType.from_domain(applied.discount),
            points=applied.points,
        )


@strawberry.type
class VariantPromotion:
    id: str
    title: str
    kind: str = strawberry.field(description="PERCENT_OFF, MULTI_BUY, ... as the tool names it.")
    min_quantity: int = strawberry.field(description="Units of this variant it takes.")
    discount: MoneyType = strawberry.field(description="What `minQuantity` units save.")
    explanation: str
    points: int = strawberry.field(description="Bonus points (percent of the base) it awards.")

    @classmethod
    def from_domain(cls, offer: VariantOffer) -> VariantPromotion:
        return cls(
            id=offer.rule.id,
            title=offer.rule.title,
            kind=offer.rule.kind.value,
            min_quantity=offer.quantity,
            discount=MoneyType.from_domain(offer.discount),
            explanation=offer.explanation,
            points=offer.rule.extra_points,
        )


@strawberry.type
class CartProblem:
    code: CartProblemCode
    message: str
    sku: str | None

    @classmethod
    def from_domain(cls, problem: Problem) -> CartProblem:
        return cls(
            code=CartProblemCode(problem.code.value), message=problem.message, sku=problem.sku
        )


@strawberry.type
class PricedCart:
    lines: list[PricedCartLine]
    applied_promotions: list[AppliedPromotionType]
    subtotal: MoneyType
    discount_total: MoneyType
    total: MoneyType = strawberry.field(description="After promotions, before points.")
    points_to_earn: int
    points_redeemed: int
    points_value: MoneyType = strawberry.field(description="What the redeemed points pay.")
    amount_due: MoneyType = strawberry.field(description="Total less the redeemed points.")
    problems: list[CartProblem]

    @classmethod
    def from_domain(cls, priced: PricedBasket) -> PricedCart:
        money = MoneyType.from_domain
        return cls(
            lines=[PricedCartLine.from_domain(line) for line in priced.lines],
            applied_promotions=[
                AppliedPromotionType.from_domain(a) for a in priced.applied_promotions
            ],
            subtotal=money(priced.subtotal),
            discount_total=money(priced.discount_total),
            total=money(priced.total),
            points_to_earn=priced.points_to_earn,
            points_redeemed=priced.points_redeemed,
            points_value=money(priced.points_value),
            amount_due=money(priced.amount_due),
            problems=[CartProblem.from_domain(problem) for problem in priced.problems],
        )


def cart_request(info: Info, cart: CartInput) -> CartRequest:
    """The cart asked for, checked: sizes, quantities, points, and whose cart it is."""
    if not 0 < len(cart.lines) <= MAX_LINES:
        raise user_error(f"a cart has 1 to {MAX_LINES} lines")
    if any(not 1 <= line.quantity <= MAX_QUANTITY for line in cart.lines):
        raise user_error(f"quantity must be between 1 and {MAX_QUANTITY}")
    if cart.redeem_points < 0:
        raise user_error("redeemPoints must not be negative")
    customer = info.context.customer_id
    if cart.customer_id is not None and cart.customer_id != customer:
        if not info.context.channel.allows(LOOKUP_SCOPE):
            raise user_error("this channel may not price for another customer", "FORBIDDEN")
        customer = cart.customer_id
    return CartRequest(
        lines=tuple((line.sku, line.quantity) for line in cart.lines),
        coupon_codes=tuple(cart.coupon_codes),
        store_id=None if cart.store_id is None else store_code(cart.store_id),
        redeem_points=cart.redeem_points,
        customer_id=customer,
    )


@strawberry.type
class CartQuery:
    @strawberry.field(description="Prices a basket: identical for every channel.")
    async def cart(self, info: Info, input: CartInput) -> PricedCart:
        request = cart_request(info, input)
        # Totals a shopper pays are priced on the engine's current prices, never the read model.
        priced = await info.context.runtime.cart.price(request, info.context.loaders.for_orders())
        return PricedCart.from_domain(priced)
