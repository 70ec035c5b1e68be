"""When an order shipped, and which shipped orders still hold reservations.

The OMS reports a shipment before the ERP's stock feed brings the goods issue to the ledger.
Until it does, the order keeps its units reserved (ATP must not count them as free while the
ledger still counts them on hand); ``pending_goods_issue_at`` marks such an order with the
time the ERP booked the goods issue, and is cleared once the reservations are consumed.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("orders", sa.Column("shipped_at", MOMENT))
    op.add_column("orders", sa.Column("pending_goods_issue_at", MOMENT))
    op.create_index("ix_orders_pending_goods_issue_at", "orders", ["pending_goods_issue_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_pending_goods_issue_at", table_name="orders")
    with op.batch_alter_table("orders") as orders:
        orders.drop_column("pending_goods_issue_at")
        orders.drop_column("shipped_at")
