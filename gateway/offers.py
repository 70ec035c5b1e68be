"""Personal offers the gateway issues itself, and coupon uses it counts, in its own database.

A call-centre agent gives one customer a discount (``PersonalOffers.issue``); from then on the
offer is a ``PromotionRule`` bound to that customer (``to_rule``), which the promotions engine
applies on every channel exactly like the promotions tool's own personal offers. Coupon codes
with usage limits are counted per order (``CouponUsage``) inside the order's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import Row, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import (
    Coupon,
    Money,
    PromotionKind,
    PromotionRule,
    PromotionTarget,
    ValueType,
)
from gateway.db import coupon_uses, personal_offers, retried_on_disconnect

# Like the promotions tool's personal offers: after the broad campaigns, in their own group so
# that they stack with them instead of competing.
PERSONAL_OFFER_PRIORITY = 9
PERSONAL_STACKING_GROUP = "PERSONAL"
RULE_ID_PREFIX = "PO-"

PERCENT_PLACES = Decimal("0.0001")  # what the database keeps of a percentage
MAX_TITLE_LENGTH = 200
MAX_KEY_LENGTH = 64

# The first key of the PostgreSQL advisory locks taken per coupon code (the second is the code's
# hash); any fixed 32-bit number, the same in every process.
COUPON_LOCK_CLASS = 0x636F7570  # "coup"


class InvalidOffer(ValueError):
    """An offer that cannot be issued; ``field`` names the ``NewPersonalOffer`` field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DuplicateCouponUse(Exception):
    """The order has used this coupon already. The transaction it happened in must be rolled
    back (PostgreSQL refuses further statements in it)."""

    def __init__(self, code: str, order_id: str) -> None:
        super().__init__(f"coupon {code} is already recorded for order {order_id}")
        self.code = code
        self.order_id = order_id


@dataclass(frozen=True, slots=True)
class NewPersonalOffer:
    """What an agent asks for. Exactly one of ``percent_off`` and ``amount_off`` (off each
    targeted unit); no SKUs and no categories means every item. ``valid_from`` defaults to the
    moment of issue."""

    customer_id: str
    title: str
    valid_until: datetime
    issued_by_channel: str
    percent_off: Decimal | None = None
    amount_off: Money | None = None
    skus: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    valid_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class PersonalOffer:
    """An issued offer, as stored. Datetimes are UTC; SKUs and categories sorted, unique."""

    id: int
    customer_id: str
    title: str
    percent_off: Decimal | None
    amount_off: Money | None
    skus: tuple[str, ...]
    categories: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime
    issued_by_channel: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def rule_id(self) -> str:
        """The id its promotion rule carries, e.g. ``PO-17``."""
        return f"{RULE_ID_PREFIX}{self.id}"


def to_rule(offer: PersonalOffer, currency: str) -> PromotionRule:
    """The offer as a promotion rule bound to its customer. ``currency`` is the shop's, which a
    percentage needs; an amount brings its own. A revoked offer's rule ends at revocation."""
    if offer.amount_off is not None:
        kind, value_type = PromotionKind.AMOUNT_OFF, ValueType.AMOUNT
        value, currency = offer.amount_off.amount, offer.amount_off.currency
    else:
        kind, value_type = PromotionKind.PERCENT_OFF, ValueType.PERCENT
        value = offer.percent_off or Decimal(0)  # issue() guarantees one of the two
    ends = offer.valid_until
    if offer.revoked_at is not None:
        ends = min(ends, offer.revoked_at)
    return PromotionRule(
        id=offer.rule_id,
        title=offer.title,
        kind=kind,
        value=value,
        value_type=value_type,
        currency=currency,
        target=PromotionTarget(skus=frozenset(offer.skus), categories=frozenset(offer.categories)),
        valid_from=offer.valid_from,
        valid_until=ends,
        priority=PERSONAL_OFFER_PRIORITY,
        stacking_group=PERSONAL_STACKING_GROUP,
        customer_id=offer.customer_id,
    )


class PersonalOffers:
    """Issues and finds personal offers. ``currency`` is the shop's: amounts off must be in it.
    ``clock`` says what "now" is when an offer is issued (UTC-aware)."""

    def __init__(
        self,
        engine: AsyncEngine,
        currency: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._currency = currency
        self._clock = clock

    async def issue(self, offer: NewPersonalOffer) -> PersonalOffer:
        """Validate and store the offer. Raises ``InvalidOffer`` naming the first bad field."""
        now = self._clock()
        values = _validated(offer, now, self._currency)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                insert(personal_offers).values(**values).returning(*personal_offers.c)
            )
            return _offer(result.one())

    @retried_on_disconnect
    async def active_for(self, customer_id: str, now: datetime) -> list[PersonalOffer]:
        """The customer's offers valid at ``now`` and not revoked by then, oldest first."""
        table = personal_offers
        query = (
            select(table)
            .where(
                table.c.customer_id == customer_id,
                or_(table.c.revoked_at.is_(None), table.c.revoked_at > now),
                table.c.valid_from <= now,
                table.c.valid_until > now,
            )
            .order_by(table.c.id)
        )
        async with self._engine.connect() as connection:
            return [_offer(row) for row in await connection.execute(query)]

    async def rules_for(self, customer_id: str, now: datetime) -> list[PromotionRule]:
        """``active_for`` as promotion rules, ready for the promotions engine."""
        offers = await self.active_for(customer_id, now)
        return [to_rule(offer, self._currency) for offer in offers]

    async def revoke(self, offer_id: int, now: datetime) -> bool:
        """Withdraw an offer from ``now`` on (which may be ahead). False if there is no such
        offer or it was revoked already."""
        table = personal_offers
        statement = (
            update(table)
            .where(table.c.id == offer_id, table.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1


def _validated(offer: NewPersonalOffer, now: datetime, currency: str) -> dict[str, object]:
    _require_key("customer_id", offer.customer_id)
    _require_key("issued_by_channel", offer.issued_by_channel)
    title = offer.title.strip()
    if not title or len(title) > MAX_TITLE_LENGTH:
        raise InvalidOffer("title", f"must be 1 to {MAX_TITLE_LENGTH} characters")
    _check_discount(offer, currency)
    valid_from = _check_validity(offer, now)
    return {
        "customer_id": offer.customer_id,
        "title": title,
        "percent_off": offer.percent_off,
        "amount_off": None if offer.amount_off is None else offer.amount_off.amount,
        "currency": None if offer.amount_off is None else offer.amount_off.currency,
        "skus": _codes("skus", offer.skus),
        "categories": _codes("categories", offer.categories),
        "valid_from": valid_from,
        "valid_until": offer.valid_until,
        "issued_by_channel": offer.issued_by_channel,
        "created_at": now,
    }


def _require_key(field: str, value: str) -> None:
    if not value.strip() or value != value.strip() or len(value) > MAX_KEY_LENGTH:
        raise InvalidOffer(field, f"must be 1 to {MAX_KEY_LENGTH} characters, no outer spaces")


def _check_discount(offer: NewPersonalOffer, currency: str) -> None:
    if (offer.percent_off is None) == (offer.amount_off is None):
        raise InvalidOffer("percent_off", "give exactly one of percent_off and amount_off")
    if offer.percent_off is not None:
        percent = offer.percent_off
        if not (percent.is_finite() and 0 < percent <= 100):
            raise InvalidOffer("percent_off", "must be more than 0 and at most 100")
        if percent != percent.quantize(PERCENT_PLACES):
            raise InvalidOffer("percent_off", "must have at most 4 decimal places")
    if offer.amount_off is not None:
        amount = offer.amount_off
        if amount.currency != currency:
            raise InvalidOffer("amount_off", f"must be in the shop's currency, {currency}")
        if not (amount.amount.is_finite() and amount.amount > 0):
            raise InvalidOffer("amount_off", "must be more than 0")
        if amount.amount != amount.amount.quantize(amount.minor_unit):
            raise InvalidOffer("amount_off", f"must be whole {amount.minor_unit} {currency}")


def _check_validity(offer: NewPersonalOffer, now: datetime) -> datetime:
    for field, moment in (("valid_until", offer.valid_until), ("valid_from", offer.valid_from)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidOffer(field, "must have a time zone")
    if offer.valid_until <= now:
        raise InvalidOffer("valid_until", "must be in the future")
    valid_from = offer.valid_from or now
    if valid_from >= offer.valid_until:
        raise InvalidOffer("valid_from", "must be before valid_until")
    return valid_from


def _codes(field: str, codes: Sequence[str]) -> list[str]:
    if any(not code.strip() or len(code) > MAX_KEY_LENGTH for code in codes):
        raise InvalidOffer(field, f"each must be 1 to {MAX_KEY_LENGTH} characters")
    return sorted(set(codes))


def _offer(row: Row[tuple[object, ...]]) -> PersonalOffer:
    values = row._mapping
    currency = values["currency"]
    amount = values["amount_off"]
    return PersonalOffer(
        id=values["id"],
        customer_id=values["customer_id"],
        title=values["title"],
        percent_off=None if values["percent_off"] is None else _plain(values["percent_off"]),
        amount_off=None if amount is None else _money(amount, currency),
        skus=tuple(values["skus"]),
        categories=tuple(values["categories"]),
        valid_from=values["valid_from"],
        valid_until=values["valid_until"],
        issued_by_channel=values["issued_by_channel"],
        created_at=values["created_at"],
        revoked_at=values["revoked_at"],
    )


def _plain(value: Decimal) -> Decimal:
    """25.0000 as 25 and 12.5000 as 12.5, as the agent typed it."""
    return value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize()


def _money(amount: Decimal, currency: str) -> Money:
    money = Money(amount, currency)
    return Money(amount.quantize(money.minor_unit), currency)


# --------------------------------------------------------------------------- coupon usage


class CouponUses(NamedTuple):
    """How often a code has been used: by everyone, and by one customer."""

    total: int
    by_customer: int


def may_use(coupon: Coupon, uses: CouponUses) -> bool:
    """Whether one more use stays within the coupon's limits (``None`` means unlimited)."""
    within_total = coupon.max_uses is None or uses.total < coupon.max_uses
    per_customer = coupon.max_uses_per_customer
    return within_total and (per_customer is None or uses.by_customer < per_customer)


class CouponUsage:
    """Counts coupon uses per order. To enforce limits under concurrency, call ``uses`` with the
    order's connection, then ``may_use``, then ``record`` in that same transaction (``claim``
    does all three): on PostgreSQL ``uses`` then holds a lock on the code until it ends, and on
    SQLite the database's write lock serialises the writers."""

    def __init__(
        self, engine: AsyncEngine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._engine = engine
        self._clock = clock

    async def uses(
        self, code: str, customer_id: str | None, connection: AsyncConnection | None = None
    ) -> CouponUses:
        """The uses of ``code`` so far; ``by_customer`` is 0 without a customer."""
        if connection is None:
            return await self._uses_alone(code, customer_id)
        if connection.dialect.name == "postgresql":
            lock = func.pg_advisory_xact_lock(COUPON_LOCK_CLASS, func.hashtext(code))
            await connection.execute(select(lock))
        return await _count(connection, code, customer_id)

    @retried_on_disconnect
    async def _uses_alone(self, code: str, customer_id: str | None) -> CouponUses:
        async with self._engine.connect() as own:
            return await _count(own, code, customer_id)

    async def record(
        self, code: str, customer_id: str | None, order_id: str, connection: AsyncConnection
    ) -> None:
        """Count one use of ``code`` by ``order_id``, in the caller's transaction (at its
        clock's time). Raises ``DuplicateCouponUse`` if the order has used the code already."""
        row = {"code": code, "customer_id": customer_id, "order_id": order_id}
        try:
            await connection.execute(insert(coupon_uses).values(**row, used_at=self._clock()))
        except IntegrityError as exc:
            raise DuplicateCouponUse(code, order_id) from exc

    async def claim(
        self, coupon: Coupon, customer_id: str | None, order_id: str, connection: AsyncConnection
    ) -> bool:
        """Record a use if the limits allow one more; False (and nothing recorded) if not."""
        uses = await self.uses(coupon.code, customer_id, connection)
        if not may_use(coupon, uses):
            return False
        await self.record(coupon.code, customer_id, order_id, connection)
        return True


async def _count(connection: AsyncConnection, code: str, customer_id: str | None) -> CouponUses:
    table = coupon_uses
    by_customer = func.count().filter(
        and_(table.c.customer_id.is_not(None), table.c.customer_id == customer_id)
    )
    query = select(func.count(), by_customer).where(table.c.code == code)
    total, mine = (await connection.execute(query)).one()
    return CouponUses(total, mine if customer_id is not None else 0)
