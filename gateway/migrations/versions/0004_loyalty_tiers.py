"""The loyalty tier last confirmed per customer, for pricing while the loyalty system is down.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# The types as gateway/db.py maps them, spelled out so that this revision never changes.
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "loyalty_tiers",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("confirmed_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_loyalty_tiers"),
    )


def downgrade() -> None:
    op.drop_table("loyalty_tiers")
