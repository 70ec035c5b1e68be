"""Who holds an idempotency key's lease, and how often each outbox message was claimed.

A placement renews a short lease on its key while it runs; the owner token lets only the
holder renew, complete or forget it, so a request that stalled past its lease cannot finish an
order that another request took over. An outbox message claimed more often than it failed was
delivered by a worker that died before recording it: the next delivery asks the receiver
first.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("owner", sa.String(32)))
    op.add_column(
        "outbox", sa.Column("claims", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as outbox:
        outbox.drop_column("claims")
    with op.batch_alter_table("idempotency_keys") as keys:
        keys.drop_column("owner")
