"""Personal offers issued by the gateway, and coupon uses counted per order.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# The types as gateway/db.py maps them, spelled out so that this revision never changes.
IDENTIFIER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DECIMAL = sa.Numeric(12, 4).with_variant(sa.String(40), "sqlite")  # exact text on SQLite
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "personal_offers",
        sa.Column("id", IDENTIFIER, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("percent_off", DECIMAL),
        sa.Column("amount_off", DECIMAL),
        sa.Column("currency", sa.String(3)),
        sa.Column("skus", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("valid_from", MOMENT, nullable=False),
        sa.Column("valid_until", MOMENT, nullable=False),
        sa.Column("issued_by_channel", sa.String(64), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("revoked_at", MOMENT),
        sa.PrimaryKeyConstraint("id", name="pk_personal_offers"),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL)",
            name="ck_personal_offers_one_discount",
        ),
        sa.CheckConstraint(
            "(amount_off IS NULL) = (currency IS NULL)",
            name="ck_personal_offers_currency_with_amount",
        ),
        sa.CheckConstraint("valid_from < valid_until", name="ck_personal_offers_validity"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_personal_offers_customer_id_valid_until",
        "personal_offers",
        ["customer_id", "valid_until"],
    )
    op.create_table(
        "coupon_uses",
        sa.Column("id", IDENTIFIER, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("used_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_coupon_uses"),
        sa.UniqueConstraint("code", "order_id", name="uq_coupon_uses_code_order_id"),
    )
    op.create_index("ix_coupon_uses_code_customer_id", "coupon_uses", ["code", "customer_id"])


def downgrade() -> None:
    op.drop_table("coupon_uses")
    op.drop_table("personal_offers")
