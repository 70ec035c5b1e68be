"""Orders in the graph: the sourcing plan, placement, the order itself, cancel and return."""

from __future__ import annotations

import datetime
import enum

import strawberry

from gateway.context import Info
from gateway.orders.changes import Changed, ChangeError, LineRefund, Refusal
from gateway.orders.placement import OrderError, OrderRequest, QuoteResult
from gateway.orders.store import Destination, Order, OrderAllocation, OrderLine
from gateway.sourcing import Allocation, Fulfilment, Plan
from resolvers.cart import LOOKUP_SCOPE, MAX_LINES, MAX_QUANTITY, PricedCart
from resolvers.common import MoneyType, check_first, store_code, user_error
from resolvers.stores import StoreType

ORDER_SCOPE = "orders:write"
MAX_KEY_LENGTH = 255

strawberry.enum(Fulfilment, name="Fulfillment")  # the sourcing engine's enum, as it is


@strawberry.enum
class OrderStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"
    SUBMITTED = "SUBMITTED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@strawberry.input
class OrderLineInput:
    sku: str
    quantity: int


@strawberry.input
class DestinationInput:
    lat: float
    lon: float
    postal_code: str | None = None


@strawberry.input
class PlaceOrderInput:
    idempotency_key: str = strawberry.field(
        description="The client's key for this order: sending it again never makes a second one."
    )
    lines: list[OrderLineInput]
    fulfillment: Fulfilment
    store_id: strawberry.ID | None = strawberry.field(
        default=None, description="The till's store (CARRY_OUT) or the pickup store."
    )
    destination: DestinationInput | None = None
    redeem_points: int = 0
    coupon_codes: list[str] = strawberry.field(default_factory=list)
    customer_id: str | None = strawberry.field(
        default=None, description="For this customer (tills and call centre); else the token's."
    )


@strawberry.type
class OrderUserError:
    code: str
    message: str
    field: str | None
    sku: str | None = None
    requested: int | None = None
    available: int | None = None
    alternatives: list[str] = strawberry.field(
        default_factory=list, description="Other stores (ids) that could fulfil it all."
    )

    @classmethod
    def from_domain(cls, error: OrderError) -> OrderUserError:
        return cls(
            code=error.code.value,
            message=error.message,
            field=error.field,
            sku=error.sku,
            requested=error.requested,
            available=error.available,
            alternatives=list(error.alternatives),
        )

    @classmethod
    def from_refusal(cls, refusal: Refusal) -> OrderUserError:
        return cls(code=refusal.code.value, message=refusal.message, field=None, sku=refusal.sku)


async def _store(info: Info, location_id: str) -> StoreType:
    by_id = await info.context.runtime.locations.by_id()
    return StoreType.from_domain(by_id[location_id])


@strawberry.type
class AllocationType:
    sku: str
    quantity: int
    location_id: strawberry.Private[str]

    @strawberry.field(description="A store, or a distribution centre (a Store of another kind).")
    async def location(self, info: Info) -> StoreType:
        return await _store(info, self.location_id)


@strawberry.type
class Shipment:
    location_id: strawberry.Private[str]
    lines: list[AllocationType]

    @strawberry.field
    async def location(self, info: Info) -> StoreType:
        return await _store(info, self.location_id)


@strawberry.type
class OrderLineType:
    sku: str
    quantity: int
    unit_price: MoneyType
    subtotal: MoneyType
    line_total: MoneyType = strawberry.field(description="After its share of every discount.")
    points_earned: int
    returned_quantity: int
    refunded: MoneyType

    @classmethod
    def from_domain(cls, line: OrderLine) -> OrderLineType:
        money = MoneyType.from_domain
        return cls(
            sku=line.sku,
            quantity=line.quantity,
            unit_price=money(line.unit_price),
            subtotal=money(line.subtotal),
            line_total=money(line.line_total),
            points_earned=line.points_earned,
            returned_quantity=line.returned_quantity,
            refunded=money(line.refunded),
        )


@strawberry.type
class OrderPromotionType:
    id: str
    title: str
    explanation: str
    discount: MoneyType


@strawberry.type(name="Order")
class OrderType:
    id: str
    status: OrderStatus
    channel: str
    customer_id: str | None
    fulfillment: Fulfilment
    lines: list[OrderLineType]
    allocations: list[AllocationType]
    shipments: list[Shipment]
    applied_promotions: list[OrderPromotionType]
    subtotal: MoneyType
    discount_total: MoneyType
    total: MoneyType
    points_earned: int
    points_redeemed: int
    points_value: MoneyType
    amount_due: MoneyType
    oms_order_number: str | None = strawberry.field(description="Once the OMS has confirmed.")
    placed_at: datetime.datetime
    shipped_at: datetime.datetime | None = strawberry.field(
        description="When the OMS reported every unit shipped."
    )
    store_id: strawberry.Private[str | None]
    attributed_store_id: strawberry.Private[str | None]

    @strawberry.field(description="The till's or pickup store.")
    async def store(self, info: Info) -> StoreType | None:
        return None if self.store_id is None else await _store(info, self.store_id)

    @strawberry.field(description="The store credited with the sale.")
    async def attributed_store(self, info: Info) -> StoreType | None:
        store = self.attributed_store_id
        return None if store is None else await _store(info, store)

    @classmethod
    def from_domain(cls, order: Order) -> OrderType:
        money = MoneyType.from_domain
        allocations = [_allocation(a) for a in order.allocations]
        by_location: dict[str, list[AllocationType]] = {}
        for allocation in allocations:
            by_location.setdefault(allocation.location_id, []).append(allocation)
        return cls(
            id=order.id,
            status=OrderStatus(order.status.value),
            channel=order.channel,
            customer_id=order.customer_id,
            fulfillment=Fulfilment(order.fulfillment),
            lines=[OrderLineType.from_domain(line) for line in order.lines],
            allocations=allocations,
            shipments=[Shipment(location_id=k, lines=v) for k, v in by_location.items()],
            applied_promotions=[
                OrderPromotionType(
                    id=p.id, title=p.title, explanation=p.explanation, discount=money(p.discount)
                )
                for p in order.promotions
            ],
            subtotal=money(order.subtotal),
            discount_total=money(order.discount_total),
            total=money(order.total),
            points_earned=order.points_earned,
            points_redeemed=order.points_redeemed,
            points_value=money(order.points_value),
            amount_due=money(order.amount_due),
            oms_order_number=order.oms_order_number,
            placed_at=order.placed_at,
            shipped_at=order.shipped_at,
            store_id=order.store_id,
            attributed_store_id=order.attributed_store_id,
        )


def _allocation(allocation: OrderAllocation | Allocation) -> AllocationType:
    """An order's allocation, or a plan's: the same thing before and after it is reserved."""
    return AllocationType(
        sku=allocation.sku, quantity=allocation.quantity, location_id=allocation.location_id
    )


@strawberry.type
class PlannedLine:
    sku: str
    quantity: int
    location_ids: list[str]
    explanation: str


@strawberry.type
class RejectedCandidate:
    location_id: str
    reason: str
    message: str


@strawberry.type
class SourcingPlan:
    feasible: bool
    exact: bool = strawberry.field(description="False when a heuristic chose the locations.")
    allocations: list[AllocationType]
    shipments: list[Shipment]
    lines: list[PlannedLine]
    rejected: list[RejectedCandidate]
    cart: PricedCart | None = strawberry.field(description="The totals placeOrder would charge.")
    user_errors: list[OrderUserError]

    @classmethod
    def from_domain(cls, result: QuoteResult) -> SourcingPlan:
        quote = result.quote
        plan: Plan | None = None if quote is None else quote.plan
        failure = result.sourcing_failure
        rejections = plan.rejections if plan else failure.rejections if failure else ()
        allocations = [] if plan is None else [_allocation(a) for a in plan.allocations]
        return cls(
            feasible=quote is not None,
            exact=plan is None or plan.exact,
            allocations=allocations,
            shipments=[]
            if plan is None
            else [
                Shipment(location_id=s.location_id, lines=[_allocation(a) for a in s.allocations])
                for s in plan.shipments
            ],
            lines=[]
            if plan is None
            else [
                PlannedLine(
                    sku=e.sku,
                    quantity=e.quantity,
                    location_ids=list(e.location_ids),
                    explanation=e.message,
                )
                for e in plan.explanations
            ],
            rejected=[
                RejectedCandidate(
                    location_id=r.location_id, reason=r.reason.value, message=r.message
                )
                for r in rejections
            ],
            cart=None if quote is None else PricedCart.from_domain(quote.priced),
            user_errors=[OrderUserError.from_domain(error) for error in result.errors],
        )


@strawberry.type
class PlaceOrderPayload:
    order: OrderType | None
    user_errors: list[OrderUserError]
    replayed: bool = strawberry.field(
        description="True when this answers an idempotencyKey already used for this order."
    )


@strawberry.type
class RefundType:
    sku: str
    quantity: int
    amount: MoneyType
    points_reversed: int

    @classmethod
    def from_domain(cls, refund: LineRefund) -> RefundType:
        return cls(
            sku=refund.sku,
            quantity=refund.quantity,
            amount=MoneyType.from_domain(refund.amount),
            points_reversed=refund.points_reversed,
        )


@strawberry.type
class OrderChangePayload:
    order: OrderType | None
    refunds: list[RefundType]
    user_errors: list[OrderUserError]

    @classmethod
    def from_domain(cls, outcome: Changed | Refusal) -> OrderChangePayload:
        if isinstance(outcome, Refusal):
            return cls(order=None, refunds=[], user_errors=[OrderUserError.from_refusal(outcome)])
        return cls(
            order=OrderType.from_domain(outcome.order),
            refunds=[RefundType.from_domain(refund) for refund in outcome.refunds],
            user_errors=[],
        )


def order_request(info: Info, input: PlaceOrderInput) -> OrderRequest:
    """The order asked for, checked: sizes, quantities, points, and whose order it is."""
    context = info.context
    if not context.channel.allows(ORDER_SCOPE):
        raise user_error("this channel may not place orders", code="FORBIDDEN")
    key = input.idempotency_key
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise user_error(f"idempotencyKey must be 1 to {MAX_KEY_LENGTH} characters")
    if not 0 < len(input.lines) <= MAX_LINES:
        raise user_error(f"an order has 1 to {MAX_LINES} lines")
    if any(not 1 <= line.quantity <= MAX_QUANTITY for line in input.lines):
        raise user_error(f"quantity must be between 1 and {MAX_QUANTITY}")
    if input.redeem_points < 0:
        raise user_error("redeemPoints must not be negative")
    customer = context.customer_id
    if input.customer_id is not None and input.customer_id != customer:
        if not context.channel.allows(LOOKUP_SCOPE):
            raise user_error("this channel may not order for another customer", "FORBIDDEN")
        customer = input.customer_id
    destination = input.destination
    if destination is not None and not (
        -90 <= destination.lat <= 90 and -180 <= destination.lon <= 180
    ):
        raise user_error("destination lat must be within [-90, 90] and lon within [-180, 180]")
    return OrderRequest(
        idempotency_key=key,
        channel=context.channel.name,
        customer_id=customer,
        lines=tuple((line.sku, line.quantity) for line in input.lines),
        fulfillment=input.fulfillment,
        store_id=None if input.store_id is None else store_code(input.store_id),
        destination=None
        if destination is None
        else Destination(destination.lat, destination.lon, destination.postal_code),
        redeem_points=input.redeem_points,
        coupon_codes=tuple(input.coupon_codes),
    )


def may_see(info: Info, order: Order) -> bool:
    """The customer's own orders; a till or the call centre sees any; a channel sees the
    anonymous orders it placed itself."""
    context = info.context
    if context.customer_id is not None and context.customer_id == order.customer_id:
        return True
    if context.channel.allows(LOOKUP_SCOPE):
        return True
    return order.customer_id is None and order.channel == context.channel.name


async def visible_order(info: Info, order_id: str) -> Order | None:
    found = await info.context.runtime.orders.reader.by_ids([order_id])
    order = found.get(order_id)
    return order if order is not None and may_see(info, order) else None


@strawberry.type
class OrderQuery:
    @strawberry.field(
        description="What placeOrder would do now: plan and totals; reserves nothing."
    )
    async def sourcing_plan(self, info: Info, input: PlaceOrderInput) -> SourcingPlan:
        request = order_request(info, input)
        loaders = info.context.loaders.for_orders()
        result = await info.context.runtime.orders.service.quote(request, loaders)
        return SourcingPlan.from_domain(result)

    @strawberry.field(
        description="An order you may see (your own; any, on a till or in the call centre)."
    )
    async def order(self, info: Info, id: strawberry.ID) -> OrderType | None:
        order = await visible_order(info, str(id))
        return None if order is None else OrderType.from_domain(order)


@strawberry.type
class OrderMutation:
    @strawberry.mutation(
        description="Prices, sources, reserves and records an order, once per key."
    )
    async def place_order(self, info: Info, input: PlaceOrderInput) -> PlaceOrderPayload:
        request = order_request(info, input)
        loaders = info.context.loaders.for_orders()
        placed = await info.context.runtime.orders.service.place(request, loaders)
        if placed.order is not None and not placed.replayed:
            await stock_moved(info, placed.order)
        return PlaceOrderPayload(
            order=None if placed.order is None else OrderType.from_domain(placed.order),
            user_errors=[OrderUserError.from_domain(error) for error in placed.errors],
            replayed=placed.replayed,
        )

    @strawberry.mutation(description="Cancels an order: releases its stock, returns its points.")
    async def cancel_order(self, info: Info, order_id: strawberry.ID) -> OrderChangePayload:
        if not info.context.channel.allows(ORDER_SCOPE):
            raise user_error("this channel may not change orders", code="FORBIDDEN")
        order = await visible_order(info, str(order_id))
        if order is None:
            return OrderChangePayload.from_domain(_not_found(str(order_id)))
        outcome = await info.context.runtime.orders.changes.cancel(str(order_id))
        await stock_moved(info, order)
        return OrderChangePayload.from_domain(outcome)

    @strawberry.mutation(description="Takes lines back at any store: restocks it, refunds exactly.")
    async def return_order_lines(
        self,
        info: Info,
        order_id: strawberry.ID,
        lines: list[OrderLineInput],
        store_id: strawberry.ID,
    ) -> OrderChangePayload:
        if not info.context.channel.allows(ORDER_SCOPE):
            raise user_error("this channel may not change orders", code="FORBIDDEN")
        if not lines or len(lines) > MAX_LINES:
            raise user_error(f"a return has 1 to {MAX_LINES} lines")
        store = store_code(store_id)
        if store not in await info.context.runtime.locations.by_id():
            raise user_error(f"unknown store: {store}", code="UNKNOWN_STORE")
        order = await visible_order(info, str(order_id))
        if order is None:
            return OrderChangePayload.from_domain(_not_found(str(order_id)))
        outcome = await info.context.runtime.orders.changes.return_lines(
            str(order_id), [(line.sku, line.quantity) for line in lines], store
        )
        await stock_moved(info, order)
        return OrderChangePayload.from_domain(outcome)


async def stock_moved(info: Info, order: Order) -> None:
    """Tell every instance that the stock of ``order``'s SKUs moved (a sale, cancel or return)."""
    skus = sorted({allocation.sku for allocation in order.allocations})
    runtime = info.context.runtime
    if runtime.stock is not None:
        runtime.stock.forget(skus)  # seen here at once, before the notice comes back
    await runtime.bus.publish("ledger", skus)


def _not_found(order_id: str) -> Refusal:
    return Refusal(ChangeError.NOT_FOUND, f"no order {order_id}")


async def customer_orders(info: Info, customer_id: str, first: int) -> list[OrderType]:
    orders = await info.context.runtime.orders.reader.for_customer(customer_id, check_first(first))
    return [OrderType.from_domain(order) for order in orders]
