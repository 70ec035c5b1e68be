"""Customers as the loyalty platform knows them: points, tier, history."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import strawberry

from adapters.ports import BackendUnavailable, LoyaltyAccount, LoyaltyEntry, Money
from gateway.context import Info
from gateway.degraded import Reason
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

    @strawberry.field(
        description="Newest first; null while the loyalty system cannot answer (the answer's "
        "`errors` say so)."
    )
    async def history(self, info: Info, first: int = 20) -> list[LoyaltyEntryType] | None:
        loyalty = info.context.runtime.backends.loyalty
        try:
            entries = await loyalty.history(self.customer_id, check_first(first))
        except BackendUnavailable as exc:
            info.context.degraded.note(exc.backend, Reason.of(exc), info.path.as_list())
            return None
        return [LoyaltyEntryType.from_domain(entry) for entry in entries]


@strawberry.type
class Customer:
    id: str
    account: strawberry.Private[LoyaltyAccount | None]
    unreachable: strawberry.Private[BackendUnavailable | None] = None

    @strawberry.field(
        description="Points and tier; null while the loyalty system cannot answer (the "
        "answer's `errors` say so): the customer's orders and offers are still shown."
    )
    def loyalty(self, info: Info) -> Loyalty | None:
        if self.account is None:
            if self.unreachable is not None:
                failure = self.unreachable
                info.context.degraded.note(failure.backend, Reason.of(failure), info.path.as_list())
            return None
        account = self.account
        return Loyalty(
            points=account.points,
            tier=account.tier,
            card_number=account.card_number,
            customer_id=account.customer_id,
        )

    @strawberry.field(description="Newest first.")
    async def orders(self, info: Info, first: int = 20) -> list[OrderType]:
        return await customer_orders(info, self.id, first)

    @strawberry.field(description="Personal offers valid now, oldest first.")
    async def personal_offers(self, info: Info) -> list[PersonalOfferType]:
        offers = await info.context.runtime.offers.active_for(self.id, datetime.now(UTC))
        return [PersonalOfferType.from_domain(offer) for offer in offers]

    @classmethod
    def from_domain(cls, account: LoyaltyAccount) -> Customer:
        return cls(id=account.customer_id, account=account)


@strawberry.type
class CustomerQuery:
    @strawberry.field(description="The customer of the bearer token; null without one.")
    async def me(self, info: Info) -> Customer | None:
        customer_id = info.context.customer_id
        if customer_id is None:
            return None
        try:
            account = await info.context.loaders.account_by_customer.load(customer_id)
        except BackendUnavailable as exc:
            # The token names the customer: their orders and offers are the gateway's own.
            return Customer(id=customer_id, account=None, unreachable=exc)
        return None if account is None else Customer.from_domain(account)

    @strawberry.field(description="A customer by loyalty card number (tills and call centre).")
    async def customer(self, info: Info, card_number: str) -> Customer | None:
        if not info.context.channel.allows(LOOKUP_SCOPE):
            raise user_error("this channel may not look customers up", code="FORBIDDEN")
        account = await info.context.loaders.account_by_card.load(card_number)
        return None if account is None else Customer.from_domain(account)
