"""Positions by SKU from a covering index.

A listing reads every location's position of each of its SKUs; with the counts in the index
that is one ordered range scan per SKU instead of a table lookup per row and a sort.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

COVERED = ["sku", "location_id", "on_hand", "reserved", "safety_stock"]


def upgrade() -> None:
    op.create_index("ix_inventory_positions_by_sku", "inventory_positions", COVERED)
    op.drop_index("ix_inventory_positions_sku", table_name="inventory_positions")


def downgrade() -> None:
    op.create_index("ix_inventory_positions_sku", "inventory_positions", ["sku"])
    op.drop_index("ix_inventory_positions_by_sku", table_name="inventory_positions")
