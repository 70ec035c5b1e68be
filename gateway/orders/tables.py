"""The order tables of the gateway's database (revision 0003), on ``gateway.db.metadata``.

An order is written in one transaction with its lines, its allocations (which location gives how
many units of which SKU), its idempotency record and its outbox rows; the outbox is what later
reaches the OMS and the loyalty system.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)

from gateway.db import ExactDecimal, Identifier, UtcDateTime, metadata

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("customer_id", String(64)),
    Column("fulfillment", String(32), nullable=False),
    Column("store_id", String(16)),  # the till's store (CARRY_OUT) or the pickup store
    Column("attributed_store_id", String(16)),  # the store credited with the sale
    Column("destination", JSON),  # {"lat", "lon", "postal_code"} when delivered
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", ExactDecimal(), nullable=False),
    Column("discount_total", ExactDecimal(), nullable=False),
    Column("total", ExactDecimal(), nullable=False),
    Column("points_redeemed", Integer, nullable=False),
    Column("points_value", ExactDecimal(), nullable=False),
    Column("amount_due", ExactDecimal(), nullable=False),
    Column("points_earned", Integer, nullable=False),
    Column("coupon_codes", JSON, nullable=False),
    Column("promotions", JSON, nullable=False),  # the applied promotions, as shown
    Column("oms_order_number", String(64)),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("shipped_at", UtcDateTime()),  # when the OMS shipped it (revision 0007)
    # While a shipped order still holds reservations: when the ERP booked its goods issue, which
    # the ledger's positions must show before the reservations are consumed (revision 0007).
    Column("pending_goods_issue_at", UtcDateTime()),
    Index(None, "customer_id", "placed_at"),
    Index(None, "attributed_store_id", "placed_at"),
    Index(None, "pending_goods_issue_at"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", ExactDecimal(), nullable=False),
    Column("subtotal", ExactDecimal(), nullable=False),
    Column("line_total", ExactDecimal(), nullable=False),  # after its share of every discount
    Column("points_earned", Integer, nullable=False),
    Column("returned_quantity", Integer, nullable=False, server_default=text("0")),
    Column("refunded", ExactDecimal(), nullable=False, server_default=text("'0'")),
    Column("points_reversed", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("order_id", "sku"),
    CheckConstraint("quantity > 0", name="positive_quantity"),
    CheckConstraint("returned_quantity BETWEEN 0 AND quantity", name="returns_within_quantity"),
)

order_allocations = Table(
    "order_allocations",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.id"), nullable=False),
    Column("location_id", String(16), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("released", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("order_id", "location_id", "sku"),
    CheckConstraint("released BETWEEN 0 AND quantity", name="released_within_quantity"),
)

order_returns = Table(
    "order_returns",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("order_id", String(36), ForeignKey("orders.id"), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("store_id", String(16), nullable=False),  # the store that took it back
    Column("refund", ExactDecimal(), nullable=False),
    Column("points_reversed", Integer, nullable=False),
    Column("returned_at", UtcDateTime(), nullable=False),
    Index(None, "order_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("channel", String(32), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("order_id", String(36), nullable=False),
    Column("state", String(16), nullable=False),  # IN_PROGRESS, DONE
    Column("owner", String(32)),  # the token of the request holding the lease (revision 0006)
    Column("locked_until", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("channel", "key"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # see gateway.orders.outbox.MessageKind
    Column("order_id", String(36), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Times claimed by a worker (revision 0006): more claims than failed attempts means a
    # delivery ended unrecorded (its process died), so the receiver may have it already.
    Column("claims", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime()),
    Column("last_error", String(500)),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "delivered_at", "next_attempt_at"),
    Index(None, "order_id"),
    sqlite_autoincrement=True,
)
