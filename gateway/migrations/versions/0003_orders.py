"""Orders with their lines, allocations and returns; idempotency keys; the outbox.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# The types as gateway/db.py maps them, spelled out so that this revision never changes.
IDENTIFIER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DECIMAL = sa.Numeric(12, 4).with_variant(sa.String(40), "sqlite")  # exact text on SQLite
MOMENT = sa.DateTime(timezone=True)
ZERO = sa.text("0")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("fulfillment", sa.String(32), nullable=False),
        sa.Column("store_id", sa.String(16)),
        sa.Column("attributed_store_id", sa.String(16)),
        sa.Column("destination", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal", DECIMAL, nullable=False),
        sa.Column("discount_total", DECIMAL, nullable=False),
        sa.Column("total", DECIMAL, nullable=False),
        sa.Column("points_redeemed", sa.Integer, nullable=False),
        sa.Column("points_value", DECIMAL, nullable=False),
        sa.Column("amount_due", DECIMAL, nullable=False),
        sa.Column("points_earned", sa.Integer, nullable=False),
        sa.Column("coupon_codes", sa.JSON, nullable=False),
        sa.Column("promotions", sa.JSON, nullable=False),
        sa.Column("oms_order_number", sa.String(64)),
        sa.Column("placed_at", MOMENT, nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
    )
    op.create_index("ix_orders_customer_id_placed_at", "orders", ["customer_id", "placed_at"])
    op.create_index(
        "ix_orders_attributed_store_id_placed_at", "orders", ["attributed_store_id", "placed_at"]
    )
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", DECIMAL, nullable=False),
        sa.Column("subtotal", DECIMAL, nullable=False),
        sa.Column("line_total", DECIMAL, nullable=False),
        sa.Column("points_earned", sa.Integer, nullable=False),
        sa.Column("returned_quantity", sa.Integer, nullable=False, server_default=ZERO),
        sa.Column("refunded", DECIMAL, nullable=False, server_default=sa.text("'0'")),
        sa.Column("points_reversed", sa.Integer, nullable=False, server_default=ZERO),
        sa.PrimaryKeyConstraint("order_id", "sku", name="pk_order_lines"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name="fk_order_lines_order_id_orders"),
        sa.CheckConstraint("quantity > 0", name="ck_order_lines_positive_quantity"),
        sa.CheckConstraint(
            "returned_quantity BETWEEN 0 AND quantity",
            name="ck_order_lines_returns_within_quantity",
        ),
    )
    op.create_table(
        "order_allocations",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("location_id", sa.String(16), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("released", sa.Integer, nullable=False, server_default=ZERO),
        sa.PrimaryKeyConstraint("order_id", "location_id", "sku", name="pk_order_allocations"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_order_allocations_order_id_orders"
        ),
        sa.CheckConstraint(
            "released BETWEEN 0 AND quantity",
            name="ck_order_allocations_released_within_quantity",
        ),
    )
    op.create_table(
        "order_returns",
        sa.Column("id", IDENTIFIER, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("store_id", sa.String(16), nullable=False),
        sa.Column("refund", DECIMAL, nullable=False),
        sa.Column("points_reversed", sa.Integer, nullable=False),
        sa.Column("returned_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_returns"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_order_returns_order_id_orders"
        ),
    )
    op.create_index("ix_order_returns_order_id", "order_returns", ["order_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("locked_until", MOMENT, nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("channel", "key", name="pk_idempotency_keys"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", IDENTIFIER, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=ZERO),
        sa.Column("next_attempt_at", MOMENT, nullable=False),
        sa.Column("delivered_at", MOMENT),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_outbox_delivered_at_next_attempt_at", "outbox", ["delivered_at", "next_attempt_at"]
    )
    op.create_index("ix_outbox_order_id", "outbox", ["order_id"])


def downgrade() -> None:
    for table in (
        "outbox", "idempotency_keys", "order_returns", "order_allocations", "order_lines",
        "orders",
    ):  # fmt: skip
        op.drop_table(table)
