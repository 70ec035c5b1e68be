"""Customers as the loyalty platform knows them: points, tier, history."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import strawberry

from adapters.ports import LoyaltyAccount, LoyaltyEntry, Money
from gateway.context import Info
from resolvers.common import MoneyType, check_first, user_error
from resolvers.offers import PersonalOfferType
from resolvers.orders import OrderType, customer_orders

LOOKUP_SCOPE = "customer:lookup"


@strawberry.type
class LoyaltyEntryType:
    id: str
    at: datetime
    points: int = strawberry.field(description="Positive when earned, negative when spent.")
    reason: str
    reference: str | None

    @classmethod
    def from_domain(cls, entry: LoyaltyEntry) -> LoyaltyEntryType:
        return cls(
            id=entry.id, at=entry.at, points=entry.points, reason=entry.reason,
            reference=entry.reference,
        )  # fmt: skip


@strawberry.type
class Loyalty:
    points: int
    tier: str
    card_number: str
    customer_id: strawberry.Private[str]

    @strawberry.field(description="What the points are worth when spent.")
    def points_value(self, info: Info) -> MoneyType:
        value = info.context.runtime.point_value
        amount = (value.amount * Decimal(self.points)).quantize(value.minor_unit)
        return MoneyType.from_domain(Money(amount, value.currency))

    @strawberry.field(description="Newest first.")
    async def history(self, info: Info, first: int = 20) -> list[LoyaltyEntryType]:
        loyalty = info.context.runtime.backends.loyalty
        entries = await loyalty.history(self.customer_id, check_first(first))
        return [LoyaltyEntryType.from_domain(entry) for entry in entries]


@strawberry.type
class Customer:
    id: str
    loyalty: Loyalty

    @strawberry.field(description="Newest first.")
    async def orders(self, info: Info, first: int = 20) -> list[OrderType]:
        return await customer_orders(info, self.id, first)

    @strawberry.field(description="Personal offers valid now, oldest first.")
    async def personal_offers(self, info: Info) -> list[PersonalOfferType]:
        offers = await info.context.runtime.offers.active_for(self.id, datetime.now(UTC))
        return [PersonalOfferType.from_domain(offer) for offer in offers]

    @classmethod
    def from_domain(cls, account: LoyaltyAccount) -> Customer:
        loyalty = Loyalty(
            points=account.points,
            tier=account.tier,
            card_number=account.card_number,
            customer_id=account.customer_id,
        )
        return cls(id=account.customer_id, loyalty=loyalty)


@strawberry.type
class CustomerQuery:
    @strawberry.field(description="The customer of the bearer token; null without one.")
    async def me(self, info: Info) -> Customer | None:
        customer_id = info.context.customer_id
        if customer_id is None:
            return None
        account = await info.context.loaders.account_by_customer.load(customer_id)
        return None if account is None else Customer.from_domain(account)

    @strawberry.field(description="A customer by loyalty card number (tills and call centre).")
    async def customer(self, info: Info, card_number: str) -> Customer | None:
        if not info.context.channel.allows(LOOKUP_SCOPE):
            raise user_error("this channel may not look customers up", code="FORBIDDEN")
        account = await info.context.loaders.account_by_card.load(card_number)
        return None if account is None else Customer.from_domain(account)
