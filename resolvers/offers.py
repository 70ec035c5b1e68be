"""Personal offers: a call-centre agent gives one customer a discount that every channel honours."""

from __future__ import annotations

import datetime
from decimal import Decimal

import strawberry

from adapters.ports import Money
from gateway.context import Info
from gateway.offers import InvalidOffer, NewPersonalOffer, PersonalOffer
from resolvers.common import MoneyType, user_error

ISSUE_SCOPE = "offers:issue"
MAX_TARGETS = 100

# ``NewPersonalOffer``'s fields as the graph spells them, for ``UserError.field``.
FIELD_NAMES = {
    "customer_id": "customerId",
    "title": "title",
    "percent_off": "percentOff",
    "amount_off": "amountOff",
    "skus": "skus",
    "categories": "categories",
    "valid_from": "validFrom",
    "valid_until": "validUntil",
}


@strawberry.type(description="Why a mutation did not do what was asked; nothing was changed.")
class UserError:
    code: str
    message: str
    field: str | None = strawberry.field(description="The input field at fault, if one is.")


@strawberry.type(name="PersonalOffer")
class PersonalOfferType:
    id: str = strawberry.field(description="The promotion id the cart shows, e.g. PO-17.")
    customer_id: str
    title: str
    percent_off: Decimal | None
    amount_off: MoneyType | None
    skus: list[str] = strawberry.field(description="Empty with no categories: every item.")
    categories: list[str]
    valid_from: datetime.datetime
    valid_until: datetime.datetime
    issued_by_channel: str

    @classmethod
    def from_domain(cls, offer: PersonalOffer) -> PersonalOfferType:
        amount = offer.amount_off
        return cls(
            id=offer.rule_id,
            customer_id=offer.customer_id,
            title=offer.title,
            percent_off=offer.percent_off,
            amount_off=None if amount is None else MoneyType.from_domain(amount),
            skus=list(offer.skus),
            categories=list(offer.categories),
            valid_from=offer.valid_from,
            valid_until=offer.valid_until,
            issued_by_channel=offer.issued_by_channel,
        )


@strawberry.input
class IssuePersonalOfferInput:
    customer_id: str
    title: str
    valid_until: datetime.datetime
    percent_off: Decimal | None = strawberry.field(
        default=None, description="Percent off each targeted unit; give this or amountOff."
    )
    amount_off: Decimal | None = strawberry.field(
        default=None, description="Off each targeted unit, in the shop's currency."
    )
    skus: list[str] = strawberry.field(default_factory=list)
    categories: list[str] = strawberry.field(default_factory=list)
    valid_from: datetime.datetime | None = strawberry.field(
        default=None, description="Defaults to now."
    )


@strawberry.type
class IssuePersonalOfferPayload:
    offer: PersonalOfferType | None
    user_errors: list[UserError]


def _rejected(code: str, message: str, field: str | None) -> IssuePersonalOfferPayload:
    return IssuePersonalOfferPayload(
        offer=None, user_errors=[UserError(code=code, message=message, field=field)]
    )


async def _unknown_reference(info: Info, input: IssuePersonalOfferInput) -> UserError | None:
    """An agent's typo must not silently create an offer nobody can use."""
    loaders = info.context.loaders
    if await loaders.account_by_customer.load(input.customer_id) is None:
        message = f"no customer {input.customer_id}"
        return UserError(code="UNKNOWN_CUSTOMER", message=message, field="customerId")
    products = await loaders.product_by_sku.load_many(input.skus)
    unknown = [sku for sku, product in zip(input.skus, products, strict=True) if product is None]
    if unknown:
        message = f"unknown SKU: {', '.join(sorted(set(unknown)))}"
        return UserError(code="UNKNOWN_SKU", message=message, field="skus")
    return None


@strawberry.type
class OfferMutation:
    @strawberry.mutation(
        description="Gives one customer a personal offer that every channel's cart applies "
        "(call centre only)."
    )
    async def issue_personal_offer(
        self, info: Info, input: IssuePersonalOfferInput
    ) -> IssuePersonalOfferPayload:
        context = info.context
        if not context.channel.allows(ISSUE_SCOPE):
            raise user_error("this channel may not issue personal offers", code="FORBIDDEN")
        if len(input.skus) + len(input.categories) > MAX_TARGETS:
            return _rejected(
                "INVALID", f"at most {MAX_TARGETS} SKUs and categories together", "skus"
            )
        unknown = await _unknown_reference(info, input)
        if unknown is not None:
            return IssuePersonalOfferPayload(offer=None, user_errors=[unknown])
        currency = context.runtime.point_value.currency
        offer = NewPersonalOffer(
            customer_id=input.customer_id,
            title=input.title,
            valid_until=input.valid_until,
            issued_by_channel=context.channel.name,
            percent_off=input.percent_off,
            amount_off=None if input.amount_off is None else Money(input.amount_off, currency),
            skus=tuple(input.skus),
            categories=tuple(input.categories),
            valid_from=input.valid_from,
        )
        try:
            issued = await context.runtime.offers.issue(offer)
        except InvalidOffer as exc:
            return _rejected("INVALID", exc.message, FIELD_NAMES.get(exc.field, exc.field))
        return IssuePersonalOfferPayload(
            offer=PersonalOfferType.from_domain(issued), user_errors=[]
        )
