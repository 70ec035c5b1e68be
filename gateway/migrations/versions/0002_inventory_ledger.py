"""The inventory ledger: positions per (location, SKU), and the ERP change feed's cursor.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# The types as gateway/db.py maps them, spelled out so that this revision never changes.
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inventory_positions",
        sa.Column("location_id", sa.String(16), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("safety_stock", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("erp_updated_at", MOMENT),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("location_id", "sku", name="pk_inventory_positions"),
        sa.CheckConstraint("reserved >= 0", name="ck_inventory_positions_reserved_not_negative"),
    )
    op.create_index("ix_inventory_positions_sku", "inventory_positions", ["sku"])
    op.create_table(
        "ledger_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ledger_state"),
    )


def downgrade() -> None:
    op.drop_table("ledger_state")
    op.drop_table("inventory_positions")
