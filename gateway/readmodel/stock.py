"""The ledger's positions as the reads that show stock see them, held in this process.

A listing of 24 products shows the stock of about a hundred SKUs at some sixty locations: a few
thousand rows read again from PostgreSQL for every listing, though the rows change only when a
sale, a cancel, a return or the ERP's feed moves them, and each of those is told on the change
bus (feeds ``ledger`` and ``erp``, kind ``stock``). So the positions a read fetched are kept,
per SKU, until the bus names that SKU, and ``ttl`` seconds at most, which bounds how stale a
position can be even if a write went untold.

Three rules keep what is held true:
- A read that a change overtook (the bus named one of its SKUs while it was fetching) keeps
  nothing of those SKUs: the rows it read may be older than the change.
- While the bus is cut off from the other instances (Redis unreachable), their sales would go
  unheard, so nothing is held: reads go to the ledger, as without this level.
- A write in this process is forgotten here at once (``forget``), before its notice travels.

Orders never read through here: their stock is the ledger's, read in their own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

from gateway.ledger import InventoryLedger, Position
from gateway.readmodel.bus import ChangeBus, ChangeNotice
from gateway.readmodel.levels import LocalLevel

STOCK_KIND = "stock"


class StockPositions:
    """At most ``size`` SKUs' positions, each for ``ttl`` seconds at most."""

    def __init__(
        self,
        ledger: InventoryLedger,
        bus: ChangeBus,
        size: int = 50_000,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._bus = bus
        self._size = size
        self._ttl = ttl
        self._clock = clock
        # SKU -> (read at, positions)
        self._held = LocalLevel(size, clock)
        # Per read in flight, what overtook it (None: everything did).
        self._fetching: dict[int, set[str] | None] = {}
        self._reads = 0
        self.hits = 0
        self.misses = 0
        bus.listen(self._on_notice, cut_off=self.clear)

    def __len__(self) -> int:
        return len(self._held)

    async def positions(
        self, skus: Sequence[str]
    ) -> tuple[dict[str, tuple[Position, ...]], datetime]:
        """Every location's position for each SKU (SKUs without any are absent), and when the
        oldest of them was read from the ledger."""
        found: dict[str, tuple[Position, ...]] = {}
        oldest: datetime | None = None
        missing: list[str] = []
        unique = dict.fromkeys(skus)
        for sku in unique:
            held = cast(tuple[datetime, tuple[Position, ...]] | None, self._held.get(sku))
            if held is None:
                missing.append(sku)
                continue
            read_at, positions = held
            oldest = read_at if oldest is None or read_at < oldest else oldest
            if positions:
                found[sku] = positions
        self.hits += len(unique) - len(missing)
        if not missing:
            return found, oldest or datetime.now(UTC)
        self.misses += len(missing)
        read_at = datetime.now(UTC)
        self._reads += 1
        read = self._reads
        self._fetching[read] = set()
        try:
            fetched = await self._ledger.positions(missing)
        finally:
            overtaken = self._fetching.pop(read)
        for sku in missing:
            positions = tuple(fetched.get(sku, ()))
            if positions:
                found[sku] = positions
            if self._bus.connected and overtaken is not None and sku not in overtaken:
                self._held.put(sku, (read_at, positions), self._ttl)
        return found, oldest or read_at  # held entries were read before this one

    def forget(self, skus: Iterable[str]) -> None:
        """``skus`` moved (this process wrote them): drop them, and keep no read in flight of
        them."""
        skus = list(skus)
        self._held.evict(skus)
        for overtaken in self._fetching.values():
            if overtaken is not None:
                overtaken.update(skus)

    def clear(self) -> None:
        """Drop everything, and keep nothing that reads in flight bring back."""
        self._held = LocalLevel(self._size, self._clock)
        self._fetching = dict.fromkeys(self._fetching)

    def _on_notice(self, notice: ChangeNotice) -> None:
        if notice.kind != STOCK_KIND:
            return
        if notice.everything:
            self.clear()
        else:
            self.forget(notice.keys)
