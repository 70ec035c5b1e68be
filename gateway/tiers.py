"""The loyalty tier the gateway last confirmed for each customer, in its own database.

While the loyalty system cannot be reached, a cart is priced with the tier the gateway saw last
(``CartPricing``) instead of silently losing the member's tier promotions and earn rate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import UtcDateTime, metadata, retried_on_disconnect, upsert_into

# A tier confirmed again after this long is written again, so that its age stays honest.
REFRESH_AFTER = timedelta(hours=1)
MEMO_SIZE = 4096  # customers whose last written tier a process keeps in memory

loyalty_tiers = Table(
    "loyalty_tiers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("tier", String(32), nullable=False),
    Column("confirmed_at", UtcDateTime(), nullable=False),
)


@dataclass(frozen=True, slots=True)
class RecalledTier:
    """A customer's tier as the loyalty system last confirmed it, and when."""

    tier: str
    confirmed_at: datetime


class KnownTiers:
    """The last tier confirmed per customer, shared by every gateway process.

    ``remember`` is called on every successful account read, so it writes only when the tier
    differs from what this process last wrote, or that write is ``refresh_after`` old; the
    process's own writes are kept for the ``memo_size`` customers seen most recently."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], datetime],
        refresh_after: timedelta = REFRESH_AFTER,
        memo_size: int = MEMO_SIZE,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._refresh_after = refresh_after
        self._memo_size = memo_size
        self._written: OrderedDict[str, RecalledTier] = OrderedDict()

    async def remember(self, customer_id: str, tier: str) -> None:
        """Record that the loyalty system has just confirmed ``tier`` for ``customer_id``.
        A confirmation older than the stored one (from another process) changes nothing."""
        now = self._clock()
        written = self._written.get(customer_id)
        if written is not None and written.tier == tier and not self._stale(written, now):
            self._written.move_to_end(customer_id)
            return
        # Noted before the write, so that the concurrent requests of one page write once.
        entry = RecalledTier(tier, now)
        self._note(customer_id, entry)
        stored = False
        try:
            await self._upsert(customer_id, entry)
            stored = True
        finally:
            if not stored and self._written.get(customer_id) == entry:
                del self._written[customer_id]

    @retried_on_disconnect
    async def recall(self, customer_id: str) -> RecalledTier | None:
        """The tier last confirmed for ``customer_id`` by any process; None if never."""
        query = select(loyalty_tiers.c.tier, loyalty_tiers.c.confirmed_at).where(
            loyalty_tiers.c.customer_id == customer_id
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one_or_none()
        return None if row is None else RecalledTier(row.tier, row.confirmed_at)

    def _stale(self, written: RecalledTier, now: datetime) -> bool:
        return now - written.confirmed_at >= self._refresh_after

    def _note(self, customer_id: str, entry: RecalledTier) -> None:
        self._written[customer_id] = entry
        self._written.move_to_end(customer_id)
        while len(self._written) > self._memo_size:
            self._written.popitem(last=False)

    async def _upsert(self, customer_id: str, entry: RecalledTier) -> None:
        statement = upsert_into(self._engine.dialect, loyalty_tiers).values(
            customer_id=customer_id, tier=entry.tier, confirmed_at=entry.confirmed_at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[loyalty_tiers.c.customer_id],
            set_={"tier": statement.excluded.tier, "confirmed_at": statement.excluded.confirmed_at},
            where=loyalty_tiers.c.confirmed_at < statement.excluded.confirmed_at,
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)
