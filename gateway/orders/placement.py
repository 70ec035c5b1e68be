"""Placing an order: price it like the cart, source it, reserve it, write it, hand it on.

The imperative shell around the pure engines (``gateway.promotions``, ``gateway.sourcing``):

1. The idempotency key is claimed (``IdempotencyKeys``): a replay gets the first order, a
   concurrent duplicate waits for it, another request under the key is refused. On
   PostgreSQL the same statement reads the ledger's positions of the order's SKUs.
2. The basket is priced by the cart's own ``CartPricing`` on fresh prices, with everything else
   sourcing needs from remote systems (``_Basket``); ``sourcingPlan`` then sources it from the
   ledger's positions (``quote``) and stops.
3. Points to spend are redeemed at the loyalty system, keyed by the order id, once the basket
   can be sourced from the positions as they are.
4. The basket is sourced on those positions (read again after a reservation was lost, and
   where the claim could not read them); then every allocation is reserved
   (conditional updates in a fixed order), the coupons are counted, the order is written with
   its lines and allocations, its outbox messages are queued and the key is completed, all or
   nothing. On PostgreSQL an order without coupons does all of that in one autocommit
   statement (``reserve_and_insert``); otherwise it is one transaction. A reservation lost to
   a concurrent order writes nothing and sources again on fresh positions.
5. Whatever fails after points were redeemed gives them back (through the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.ports import (
    BackendError,
    Coupon,
    GeoPoint,
    InsufficientPoints,
    Location,
    LocationKind,
    LoyaltyPort,
    PromotionsPort,
)
from gateway.cart import CartPricing, CartRequest
from gateway.db import autocommit, retry_on_disconnect
from gateway.geo import distance_km
from gateway.ledger import InventoryLedger, Position, Reservation, Shortfall
from gateway.loaders import Loaders
from gateway.locations import LocationDirectory
from gateway.offers import CouponUsage
from gateway.orders.delivery import submission_payload
from gateway.orders.outbox import MessageKind, NewMessage, enqueue
from gateway.orders.store import (
    ClaimState,
    Destination,
    IdempotencyKeys,
    KeyTakenOver,
    NewOrder,
    Order,
    OrderReader,
    accepted,
    insert_order,
    reserve_and_insert,
)
from gateway.promotions import PricedBasket, ProblemCode
from gateway.promotions.rulebook import normalise_code
from gateway.sourcing import (
    Candidate,
    CandidateKind,
    Fulfilment,
    OrderLine,
    Plan,
    Policy,
    SourcingFailure,
    SourcingRequest,
    plan_sourcing,
)

log = logging.getLogger(__name__)

ATTEMPTS = 3  # sourcing rounds when concurrent orders take the stock a plan counted on
STORE_COST_WEIGHT = 1.5  # a parcel from a store costs more to pack than one from a DC
DC_COST_WEIGHT = 1.0
WAIT_POLL_SECONDS = 0.05


class ErrorCode(enum.Enum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    UNKNOWN_SKU = "UNKNOWN_SKU"
    UNKNOWN_STORE = "UNKNOWN_STORE"
    INVALID_FULFILMENT = "INVALID_FULFILMENT"
    NO_STORE_IN_RADIUS = "NO_STORE_IN_RADIUS"
    TOO_MANY_SHIPMENTS = "TOO_MANY_SHIPMENTS"
    INVALID_COUPON = "INVALID_COUPON"
    COUPON_LIMIT_REACHED = "COUPON_LIMIT_REACHED"
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    CUSTOMER_REQUIRED = "CUSTOMER_REQUIRED"
    LOYALTY_UNAVAILABLE = "LOYALTY_UNAVAILABLE"
    PRICE_UNAVAILABLE = "PRICE_UNAVAILABLE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    IN_PROGRESS = "IN_PROGRESS"


RETRYABLE = frozenset(
    {ErrorCode.IN_PROGRESS, ErrorCode.LOYALTY_UNAVAILABLE, ErrorCode.PRICE_UNAVAILABLE}
)


@dataclass(frozen=True, slots=True)
class OrderError:
    """Why no order was placed. ``sku``, ``requested`` and ``available`` for a short line;
    ``alternatives`` (store ids, nearest first) for a pickup store that cannot fulfil."""

    code: ErrorCode
    message: str
    field: str | None = None
    sku: str | None = None
    requested: int | None = None
    available: int | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


@dataclass(frozen=True, slots=True)
class OrderRequest:
    idempotency_key: str
    channel: str
    customer_id: str | None
    lines: tuple[tuple[str, int], ...]
    fulfillment: Fulfilment
    store_id: str | None = None
    destination: Destination | None = None
    redeem_points: int = 0
    coupon_codes: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A hash of everything the request asks for: the same key must come with the same.

        The JSON hashed is ``dataclasses.asdict`` of the request without its key, built by hand
        (``asdict`` deep-copies every field on every order): a fingerprint stored before an
        upgrade still matches the same request after it."""
        destination = self.destination
        body = {
            "channel": self.channel,
            "customer_id": self.customer_id,
            "lines": self.lines,
            "fulfillment": self.fulfillment.value,
            "store_id": self.store_id,
            "destination": None
            if destination is None
            else {
                "lat": destination.lat,
                "lon": destination.lon,
                "postal_code": destination.postal_code,
            },
            "redeem_points": self.redeem_points,
            "coupon_codes": self.coupon_codes,
        }
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Quote:
    """What the order would be now: priced, sourced, credited to a store."""

    priced: PricedBasket
    plan: Plan
    attributed_store_id: str | None
    coupons: tuple[Coupon, ...] = ()


@dataclass(frozen=True, slots=True)
class QuoteResult:
    quote: Quote | None
    errors: tuple[OrderError, ...] = ()
    sourcing_failure: SourcingFailure | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    order: Order | None
    errors: tuple[OrderError, ...] = ()
    replayed: bool = False


class _Abort(Exception):
    """Rolls the order's transaction back with the reason."""

    def __init__(self, errors: Sequence[OrderError], shortfalls: Sequence[Shortfall] = ()) -> None:
        super().__init__(errors)
        self.errors = tuple(errors)
        self.shortfalls = tuple(shortfalls)


@dataclass
class _CapacityCache:
    """Shipments per location today, re-read at most every ``ttl`` seconds: capacity is a
    planning aid for the day, not a hard count (the reservation is what is exact)."""

    ttl: float = 2.0
    read_at: float = field(default=-1e9)
    day: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)


class OrderService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        ledger: InventoryLedger,
        cart: CartPricing,
        locations: LocationDirectory,
        loyalty: LoyaltyPort,
        promotions: PromotionsPort,
        coupons: CouponUsage,
        keys: IdempotencyKeys,
        reader: OrderReader,
        policy: Policy,
        clock: Callable[[], datetime],
        wait_for_duplicate: float = 10.0,
    ) -> None:
        self._engine = engine
        self._statements = autocommit(engine)
        self._ledger = ledger
        self._cart = cart
        self._locations = locations
        self._loyalty = loyalty
        self._promotions = promotions
        self._coupons = coupons
        self._keys = keys
        self._reader = reader
        self._policy = policy
        self._clock = clock
        self._wait = wait_for_duplicate
        self._capacity = _CapacityCache()

    # ------------------------------------------------------------------ quote

    async def quote(self, request: OrderRequest, loaders: Loaders) -> QuoteResult:
        """Price and source ``request`` as ``placeOrder`` would now, reserving nothing."""
        basket = await self._basket(request, loaders)
        if isinstance(basket, QuoteResult):
            return basket
        return self._sourced(basket, await self._ledger.positions(list(basket.ranged)))

    async def _basket(self, request: OrderRequest, loaders: Loaders) -> _Basket | QuoteResult:
        """What sourcing needs besides the stock, gathered from the remote systems (or the
        reasons the request cannot be an order)."""
        by_id = await self._locations.by_id()
        problem = _check_stores(request, by_id)
        if problem is not None:
            return QuoteResult(None, (problem,))
        cart_request = CartRequest(
            lines=request.lines,
            coupon_codes=request.coupon_codes,
            store_id=request.store_id,
            redeem_points=request.redeem_points,
            customer_id=request.customer_id,
        )
        priced = await self._cart.price(cart_request, loaders)
        errors = _pricing_errors(priced, request)
        if errors:
            return QuoteResult(None, errors)
        skus = [line.sku for line in priced.lines]
        products = await loaders.product_by_sku.load_many(skus)
        ranged = {
            sku: next(v.ranged_at for v in product.variants if v.sku == sku)
            for sku, product in zip(skus, products, strict=True)
            if product is not None
        }
        return _Basket(
            request,
            priced,
            by_id,
            ranged,
            await self._remaining_capacity(request.fulfillment, by_id),
            await self._attributed_store(request),
            await self._applied_coupons(priced, request.coupon_codes),
        )

    def _sourced(self, basket: _Basket, positions: Mapping[str, Sequence[Position]]) -> QuoteResult:
        """``basket`` sourced from ``positions`` (pure)."""
        request, priced = basket.request, basket.priced
        candidates = _candidates(basket, positions)
        lines = [OrderLine(line.sku, line.quantity) for line in priced.lines]
        sourcing = SourcingRequest(lines, request.fulfillment, request.store_id, candidates)
        outcome = plan_sourcing(sourcing, self._policy)
        if isinstance(outcome, SourcingFailure):
            return QuoteResult(None, _sourcing_errors(outcome), outcome)
        return QuoteResult(Quote(priced, outcome, basket.attributed_store_id, basket.coupons))

    async def _remaining_capacity(
        self, fulfillment: Fulfilment, by_id: Mapping[str, Location]
    ) -> Mapping[str, int]:
        if fulfillment not in (Fulfilment.SHIP_TO_HOME, Fulfilment.DELIVERY_FROM_NEAREST_STORE):
            return {}
        now = self._clock()
        cache = self._capacity
        day = now.date().isoformat()
        if cache.day != day or time.monotonic() - cache.read_at > cache.ttl:
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            cache.counts = await self._reader.shipments_since(start)
            cache.day, cache.read_at = day, time.monotonic()
        return {
            location_id: location.daily_capacity - cache.counts.get(location_id, 0)
            for location_id, location in by_id.items()
        }

    async def _attributed_store(self, request: OrderRequest) -> str | None:
        """The POS or pickup store; for deliveries the store nearest the destination."""
        if request.fulfillment in (Fulfilment.CARRY_OUT, Fulfilment.PICKUP_IN_STORE):
            return request.store_id
        if request.destination is None:
            return None
        point = GeoPoint(request.destination.lat, request.destination.lon)
        nearest = await self._locations.near(point, None, kind=LocationKind.STORE)
        return nearest[0][0].id if nearest else None

    async def _applied_coupons(
        self, priced: PricedBasket, codes: Sequence[str]
    ) -> tuple[Coupon, ...]:
        """The entered coupons whose promotion applied: the uses to count."""
        if not codes:
            return ()
        entered = {normalise_code(code) for code in codes}
        applied = {promotion.id for promotion in priced.applied_promotions}
        promotions = await self._promotions.promotions()
        return tuple(
            sorted(
                (
                    coupon
                    for coupon in promotions.coupons
                    if normalise_code(coupon.code) in entered and coupon.promotion_id in applied
                ),
                key=lambda coupon: normalise_code(coupon.code),
            )
        )

    # ------------------------------------------------------------------ place

    async def place(self, request: OrderRequest, loaders: Loaders) -> Placement:
        """Place the order once, whatever happens to the request (see the module's steps)."""
        claimed = await self._claim(request)
        if isinstance(claimed, Placement):
            return claimed
        held = _Held(request.channel, request.idempotency_key, claimed.owner)
        renewing = _Renewing(lambda: self._keep_renewing(held), self._renew_every)
        placed: Placement | None = None
        try:
            placed = await self._place_claimed(claimed, held, request, loaders)
            return placed
        finally:
            await renewing.stop()
            if placed is None or placed.order is None:
                await self._keys.forget(held.channel, held.key, held.owner)

    @property
    def _renew_every(self) -> float:
        return self._keys.lease.total_seconds() / 3

    async def _keep_renewing(self, held: _Held) -> None:
        """Renew the key's lease, then again every third of a lease for as long as the
        placement runs, so that only a placement that has died (or stalled for a whole lease)
        is taken over."""
        while True:
            try:
                if not await self._keys.renew(held.channel, held.key, held.owner, self._clock()):
                    log.warning("key %s/%s was taken over while placing", held.channel, held.key)
                    return
            except (SQLAlchemyError, OSError) as exc:  # the next renewal tries again
                log.warning("could not renew the lease of %s/%s: %s", held.channel, held.key, exc)
            await asyncio.sleep(self._renew_every)

    async def _claim(self, request: OrderRequest) -> _Claimed | Placement:
        """The order id to place under, or the placement to answer with instead."""
        fingerprint = request.fingerprint()
        deadline = time.monotonic() + self._wait
        while True:
            order_id = "O-" + secrets.token_hex(8).upper()
            claim = await self._keys.claim(
                request.channel,
                request.idempotency_key,
                fingerprint,
                order_id,
                self._clock(),
                positions_of=[sku for sku, _ in request.lines],
            )
            if claim.state is ClaimState.NEW:
                assert claim.order_id is not None
                assert claim.owner is not None
                return _Claimed(claim.order_id, claim.owner, claim.positions)
            if claim.state is ClaimState.REUSED:
                message = "this idempotencyKey was used for a different order"
                error = OrderError(ErrorCode.IDEMPOTENCY_KEY_REUSED, message, "idempotencyKey")
                return Placement(None, (error,))
            if claim.state is ClaimState.DONE:
                assert claim.order_id is not None
                found = await self._reader.by_ids([claim.order_id])
                return Placement(found[claim.order_id], replayed=True)
            if time.monotonic() >= deadline:
                message = "an order with this idempotencyKey is being placed; retry shortly"
                error = OrderError(ErrorCode.IN_PROGRESS, message, "idempotencyKey")
                return Placement(None, (error,))
            await asyncio.sleep(WAIT_POLL_SECONDS)

    async def _place_claimed(
        self, claimed: _Claimed, held: _Held, request: OrderRequest, loaders: Loaders
    ) -> Placement:
        order_id, positions = claimed.order_id, claimed.positions
        if request.redeem_points:
            unavailable = await self._check_loyalty(request, loaders)
            if unavailable is not None:
                return Placement(None, (unavailable,))
        basket = await self._basket(request, loaders)
        if isinstance(basket, QuoteResult):
            return Placement(None, basket.errors)
        redeemed = 0
        try:
            points = basket.priced.points_redeemed
            if points:
                # Points are spent only on an order that can be sourced now.
                positions = positions or await self._ledger.positions(list(basket.ranged))
                dry_run = self._sourced(basket, positions)
                if dry_run.quote is None:
                    return Placement(None, dry_run.errors)
                failure = await self._redeem(order_id, request, points)
                if failure is not None:
                    return Placement(None, (failure,))
                redeemed = points
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    order = await retry_on_disconnect(
                        functools.partial(self._commit, order_id, held.owner, basket, positions),
                        before_retry=lambda: self._committed(order_id),
                    )
                except _Abort as abort:
                    if abort.shortfalls and attempt < ATTEMPTS:
                        positions = None  # read again: they have changed
                        continue  # another order took the units the plan counted on
                    return Placement(None, abort.errors)  # the points go back (finally)
                except KeyTakenOver:
                    # The request that took the key over carries on under this order id and
                    # owns what was redeemed for it: nothing is given back here.
                    redeemed = 0
                    message = "an order with this idempotencyKey is being placed; retry shortly"
                    error = OrderError(ErrorCode.IN_PROGRESS, message, "idempotencyKey")
                    return Placement(None, (error,))
                redeemed = 0  # they belong to the order now
                return Placement(order)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if redeemed:
                await self._give_back(order_id, request, redeemed)

    async def _check_loyalty(self, request: OrderRequest, loaders: Loaders) -> OrderError | None:
        if request.customer_id is None:
            message = "redeeming points needs a customer (a token, or customerId on a till)"
            return OrderError(ErrorCode.CUSTOMER_REQUIRED, message, "redeemPoints")
        try:
            await self._loyalty.accounts([request.customer_id])
        except BackendError:
            message = "the loyalty system is unavailable; no points can be spent now"
            return OrderError(ErrorCode.LOYALTY_UNAVAILABLE, message, "redeemPoints")
        return None

    async def _redeem(self, order_id: str, request: OrderRequest, points: int) -> OrderError | None:
        assert request.customer_id is not None
        try:
            await self._loyalty.redeem(
                request.customer_id, points, f"{order_id}:redeem", f"order {order_id}"
            )
        except InsufficientPoints:
            message = f"not enough points to redeem {points}"
            return OrderError(ErrorCode.INSUFFICIENT_POINTS, message, "redeemPoints")
        except BackendError:
            message = "the loyalty system is unavailable; no points can be spent now"
            return OrderError(ErrorCode.LOYALTY_UNAVAILABLE, message, "redeemPoints")
        return None

    async def _give_back(self, order_id: str, request: OrderRequest, points: int) -> None:
        """Points redeemed for an order that was not placed go back, durably: the outbox."""
        assert request.customer_id is not None
        payload = {
            "customer_id": request.customer_id,
            "points": points,
            "request_id": f"{order_id}:redeem-undone",
            "reason": f"order {order_id} not placed",
        }

        async def queue() -> None:
            async with self._engine.begin() as connection:
                await enqueue(
                    connection, MessageKind.LOYALTY_REFUND, order_id, payload, self._clock()
                )

        try:
            # Queued twice at worst (a COMMIT whose answer was lost): one request id, so the
            # loyalty platform credits it once.
            await retry_on_disconnect(queue)
        except Exception:
            log.exception("could not queue the refund of %s points for %s", points, order_id)

    async def _committed(self, order_id: str) -> Order | None:
        """The order, if a commit whose answer was lost went through."""
        return (await self._reader.by_ids([order_id])).get(order_id)

    async def _commit(
        self,
        order_id: str,
        owner: str,
        basket: _Basket,
        positions: Mapping[str, Sequence[Position]] | None = None,
    ) -> Order:
        """Source ``basket`` on ``positions`` (read with the claim) or on the positions as
        they are now, then reserve and write the order at once (see the module's step 4)."""
        request = basket.request
        fresh = positions is None
        if positions is None:
            positions = await self._ledger.positions(list(basket.ranged))
        result = self._sourced(basket, positions)
        if result.quote is None and not fresh:
            # No plan on what the claim read a pricing call ago: refuse only on a fresh read.
            result = self._sourced(basket, await self._ledger.positions(list(basket.ranged)))
        if result.quote is None:
            raise _Abort(result.errors)
        quote = result.quote
        new = self._new_order(order_id, request, quote)
        holds = _reservations(new)
        messages = _messages(new, request, quote)
        key = (request.channel, request.idempotency_key)
        if self._engine.dialect.name == "postgresql" and not quote.coupons:
            async with self._statements.connect() as connection:
                shortfalls = await reserve_and_insert(connection, new, holds, messages, key, owner)
            if shortfalls:
                raise _Abort(_short_errors(shortfalls), shortfalls)
            return accepted(new)
        async with self._engine.begin() as connection:
            shortfalls = await self._ledger.reserve(connection, holds)
            if shortfalls:
                raise _Abort(_short_errors(shortfalls), shortfalls)
            for coupon in quote.coupons:
                if not await self._coupons.claim(coupon, request.customer_id, order_id, connection):
                    message = f"coupon {coupon.code} has been used as often as it may be"
                    raise _Abort(
                        [OrderError(ErrorCode.COUPON_LIMIT_REACHED, message, "couponCodes")]
                    )
            await insert_order(connection, new, messages, key, owner)
        return accepted(new)

    def _new_order(self, order_id: str, request: OrderRequest, quote: Quote) -> NewOrder:
        return NewOrder(
            id=order_id,
            channel=request.channel,
            customer_id=request.customer_id,
            fulfillment=request.fulfillment.value,
            store_id=request.store_id,
            attributed_store_id=quote.attributed_store_id,
            destination=request.destination,
            priced=quote.priced,
            allocations=quote.plan.allocations,
            coupon_codes=tuple(sorted({normalise_code(c) for c in request.coupon_codes})),
            placed_at=self._clock(),
        )


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _Claimed:
    order_id: str
    owner: str
    positions: Mapping[str, Sequence[Position]] | None = None


@dataclass(frozen=True, slots=True)
class _Held:
    """An idempotency key this placement holds, as ``owner``."""

    channel: str
    key: str
    owner: str


class _Renewing:
    """Runs ``renew`` (a key's renewals) from ``after`` seconds on, until stopped: most
    placements end well within a third of their lease, and start no task at all."""

    def __init__(self, renew: Callable[[], Coroutine[object, object, None]], after: float) -> None:
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(after, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._renew())

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True, slots=True)
class _Basket:
    """A request priced, with everything sourcing needs but the stock: gathered from the
    remote systems once, before the order's transaction."""

    request: OrderRequest
    priced: PricedBasket
    by_id: Mapping[str, Location]
    ranged: Mapping[str, frozenset[str]]
    capacity: Mapping[str, int]
    attributed_store_id: str | None
    coupons: tuple[Coupon, ...]


def _candidates(basket: _Basket, positions: Mapping[str, Sequence[Position]]) -> list[Candidate]:
    by_id, ranged, capacity = basket.by_id, basket.ranged, basket.capacity
    atp: dict[str, dict[str, int]] = {}
    for sku, found in positions.items():
        for position in found:
            atp.setdefault(position.location_id, {})[sku] = position.available
    origin = _origin(basket.request, by_id)
    candidates = []
    for location in by_id.values():
        store = location.kind is LocationKind.STORE
        candidates.append(
            Candidate(
                location_id=location.id,
                kind=CandidateKind(location.kind.value),
                distance_km=None if origin is None else distance_km(origin, location.point),
                capabilities=location.capabilities,
                remaining_capacity=capacity.get(location.id, location.daily_capacity),
                cost_weight=STORE_COST_WEIGHT if store else DC_COST_WEIGHT,
                atp=atp.get(location.id, {}),
                ranged=frozenset(sku for sku, at in ranged.items() if location.id in at),
            )
        )
    return candidates


def _reservations(order: NewOrder) -> list[Reservation]:
    return [
        Reservation(allocation.location_id, allocation.sku, allocation.quantity)
        for allocation in order.allocations
    ]


def _messages(order: NewOrder, request: OrderRequest, quote: Quote) -> list[NewMessage]:
    """What a new order owes other systems: the OMS hand-off (carrying what the OMS is to
    receive), and the points it earns."""
    order_id = order.id
    messages = [NewMessage(MessageKind.OMS_SUBMIT, order_id, submission_payload(order))]
    if request.customer_id is not None and quote.priced.points_to_earn:
        payload = {
            "customer_id": request.customer_id,
            "points": quote.priced.points_to_earn,
            "request_id": f"{order_id}:earn",
            "reason": f"order {order_id}",
        }
        messages.append(NewMessage(MessageKind.LOYALTY_EARN, order_id, payload))
    return messages


def _check_stores(request: OrderRequest, by_id: Mapping[str, Location]) -> OrderError | None:
    if request.store_id is not None and request.store_id not in by_id:
        return OrderError(ErrorCode.UNKNOWN_STORE, f"unknown store {request.store_id}", "storeId")
    needs_store = request.fulfillment in (Fulfilment.CARRY_OUT, Fulfilment.PICKUP_IN_STORE)
    if needs_store and request.store_id is None:
        message = f"{request.fulfillment.value} needs a storeId"
        return OrderError(ErrorCode.INVALID_FULFILMENT, message, "storeId")
    shipped = request.fulfillment in (
        Fulfilment.SHIP_TO_HOME,
        Fulfilment.DELIVERY_FROM_NEAREST_STORE,
    )
    if shipped and request.destination is None:
        message = f"{request.fulfillment.value} needs a destination"
        return OrderError(ErrorCode.INVALID_FULFILMENT, message, "destination")
    return None


def _origin(request: OrderRequest, by_id: Mapping[str, Location]) -> GeoPoint | None:
    """Where distances are measured from: the destination, or the pickup store."""
    if request.destination is not None and request.fulfillment in (
        Fulfilment.SHIP_TO_HOME,
        Fulfilment.DELIVERY_FROM_NEAREST_STORE,
    ):
        return GeoPoint(request.destination.lat, request.destination.lon)
    if request.store_id is not None and request.store_id in by_id:
        return by_id[request.store_id].point
    return None


COUPON_PROBLEMS = frozenset(
    {
        ProblemCode.UNKNOWN_COUPON,
        ProblemCode.EXPIRED_COUPON,
        ProblemCode.COUPON_NOT_YET_VALID,
        ProblemCode.COUPON_NOT_APPLICABLE,
    }
)


def _pricing_errors(priced: PricedBasket, request: OrderRequest) -> tuple[OrderError, ...]:
    """What the cart reports as problems an order cannot be placed with."""
    errors = []
    for problem in priced.problems:
        if problem.code is ProblemCode.UNKNOWN_SKU:
            errors.append(OrderError(ErrorCode.UNKNOWN_SKU, problem.message, "lines", problem.sku))
        elif problem.code is ProblemCode.PRICE_UNAVAILABLE:
            errors.append(
                OrderError(ErrorCode.PRICE_UNAVAILABLE, problem.message, "lines", problem.sku)
            )
        elif problem.code in COUPON_PROBLEMS:
            errors.append(OrderError(ErrorCode.INVALID_COUPON, problem.message, "couponCodes"))
        elif problem.code is ProblemCode.NOT_ENOUGH_POINTS:
            errors.append(
                OrderError(ErrorCode.INSUFFICIENT_POINTS, problem.message, "redeemPoints")
            )
        elif problem.code is ProblemCode.POINTS_NOT_ACCEPTED and request.redeem_points:
            errors.append(OrderError(ErrorCode.CUSTOMER_REQUIRED, problem.message, "redeemPoints"))
    return tuple(errors)


def _sourcing_errors(failure: SourcingFailure) -> tuple[OrderError, ...]:
    code = ErrorCode(failure.code.value)
    alternatives = tuple(alternative.location_id for alternative in failure.alternatives)
    if not failure.short:
        return (OrderError(code, failure.message, "fulfillment", alternatives=alternatives),)
    return tuple(
        OrderError(
            code,
            f"{line.sku}: {line.requested} wanted, {line.available} available",
            "lines",
            line.sku,
            line.requested,
            line.available,
            alternatives,
        )
        for line in failure.short
    )


def _short_errors(shortfalls: Sequence[Shortfall]) -> list[OrderError]:
    return [
        OrderError(
            ErrorCode.OUT_OF_STOCK,
            f"{short.sku}: {short.requested} wanted at {short.location_id}, "
            f"{short.available} available",
            "lines",
            short.sku,
            short.requested,
            short.available,
        )
        for short in shortfalls
    ]
