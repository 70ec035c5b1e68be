"""Following the legacy change feeds: one instance at a time per feed, everyone told.

Each feed (the PIM's ``/api/v1/changes``, the pricing engine's ``GetPriceChanges``, the
promotions folder, the ERP's ``LAST_UPD`` through the inventory ledger) has one follower per
instance. With Redis, the followers of a feed compete for a lease (``SET NX PX``, renewed while
held): the holder reads the feed from the cursor stored in the gateway's database, tombstones
the changed entities in Redis, publishes them on the change bus, and only then moves the stored
cursor (compare and set). A holder that dies or hangs stops renewing; another instance takes the
lease when it expires and resumes from the stored cursor, so a change is never skipped, and at
worst published twice (evicting twice is harmless).

Without Redis (the embedded default) the one process holds every feed itself. When Redis is
configured but unreachable, every instance follows each feed on its own from the last cursor it
knows, for itself only, without storing the cursor: its own entries stay current, and the next
lease holder publishes what happened meanwhile for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.ports import (
    BackendError,
    CataloguePort,
    ChangeBatch,
    InventoryPort,
    PricesPort,
    PromotionsPort,
    StockLevel,
)
from gateway.db import autocommit, move_state, read_state
from gateway.ledger import InventoryLedger
from gateway.readmodel.bus import FEED_KINDS, ChangeNotice
from gateway.readmodel.levels import RedisLink
from gateway.readmodel.model import ReadModel

log = logging.getLogger(__name__)

# KEYS[1]: the lease. ARGV: holder, ttl (ms). Renew if ours, take if free.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What one read of a feed found: the keys changed (``everything``: cannot say which) and
    the cursor to read on from. ``more``: read again at once."""

    keys: tuple[str, ...]
    cursor: str | None
    everything: bool = False
    more: bool = False


class FeedSource(Protocol):
    """A change feed with a cursor: what a retailer's adapter must offer to be followed."""

    name: str

    async def read(self, cursor: str | None) -> FeedRead:
        """The changes after ``cursor`` (None: the follower knows no cursor yet; answer the
        current position, with ``everything`` so that nothing cached survives)."""
        ...


GAP_RETRIES = 3
"""Reads of a feed position that shows a gap before the gap is taken as the feed's own."""


class SequencedFeed:
    """A feed of the ports' ``changes(since) -> ChangeBatch`` shape (the PIM, pricing).

    A batch that goes back, or whose numbered entries skip a number (entries lost on the way,
    or not yet committed on the source's side), is refused as the source's failure: it is read
    again at the next interval, and only after ``GAP_RETRIES`` reads showing the same gap is it
    taken as the feed's own (logged). Nothing is evicted for a refused batch, and the read model
    is never emptied for it."""

    def __init__(self, name: str, changes: Callable[[str | None], Awaitable[ChangeBatch]]) -> None:
        self.name = name
        self._changes = changes
        self._gap_reads: dict[str | None, int] = {}

    async def read(self, cursor: str | None) -> FeedRead:
        batch = await self._changes(cursor)
        keys = tuple(dict.fromkeys(change.key for change in batch.changes))
        if cursor is not None and batch.cursor and _number(batch.cursor) < _number(cursor):
            raise BackendError(self.name, f"change feed went back from {cursor} to {batch.cursor}")
        gap = _gap(cursor, [change.cursor for change in batch.changes])
        if gap is not None:
            reads = self._gap_reads[cursor] = self._gap_reads.get(cursor, 0) + 1
            if reads < GAP_RETRIES:
                raise BackendError(self.name, f"change feed skips from {gap[0]} to {gap[1]}")
            log.warning("feed %s: taking the gap from %s to %s as the feed's own", self.name, *gap)
        self._gap_reads.pop(cursor, None)
        return FeedRead(keys, batch.cursor or cursor, everything=cursor is None, more=bool(keys))


def _gap(since: str | None, cursors: list[str]) -> tuple[str, str] | None:
    return in_sequence(since, cursors)[1]


def in_sequence(since: str | None, cursors: Sequence[str]) -> tuple[int, tuple[str, str] | None]:
    """How many of ``cursors`` follow ``since`` one by one, and the first two consecutive
    numbered positions that are not one apart, if any. Only a feed that numbers its entries
    can show a gap (an opaque cursor cannot); nor can a read from the start (``since`` None)."""
    if since is None or not cursors or not all(c.isdigit() for c in [since, *cursors]):
        return len(cursors), None
    for index, (before, after) in enumerate(itertools.pairwise([since, *cursors])):
        if int(after) != int(before) + 1:
            return index, (before, after)
    return len(cursors), None


def catalogue_feed(catalogue: CataloguePort) -> SequencedFeed:
    return SequencedFeed("pim", catalogue.changes)


def price_feed(prices: PricesPort) -> SequencedFeed:
    return SequencedFeed("pricing", prices.changes)


class RulebookFeed:
    """The promotions tool's rule set: a change is a new ``version``. The holder shares the new
    rule book through Redis before telling, so every instance reads the same one."""

    name = "promotions"

    def __init__(self, promotions: PromotionsPort, model: ReadModel) -> None:
        self._promotions = promotions
        self._model = model

    async def read(self, cursor: str | None) -> FeedRead:
        rulebook = await self._promotions.promotions()
        if rulebook.version == cursor:
            return FeedRead((), cursor)
        await self._model.share_rulebook(rulebook, self._model.bus.seen(self.name) + 1)
        return FeedRead(("rulebook",), rulebook.version)


class StockFeed:
    """The ERP's stock changes, applied to the inventory ledger (which keeps its own cursor,
    moved in the same transaction as the rows); the SKUs applied are the changes. ``then``
    runs after each read (the reservations of shipments whose goods issue the ledger now
    shows are consumed there); the SKUs it moved are changes too."""

    name = "erp"

    def __init__(
        self,
        ledger: InventoryLedger,
        inventory: InventoryPort,
        then: Callable[[], Awaitable[Sequence[str]]] | None = None,
    ) -> None:
        self._ledger = ledger
        self._inventory = inventory
        self._then = then

    async def read(self, cursor: str | None) -> FeedRead:
        levels: list[StockLevel] = []
        await self._ledger.load_from(self._inventory, applied_levels=levels)
        moved = [] if self._then is None else await self._then()
        keys = tuple(dict.fromkeys([*(level.sku for level in levels), *moved]))
        return FeedRead(keys, None)


class Lease:
    """One feed's lease in Redis, held by this instance's ``holder`` id for ``ttl`` seconds."""

    def __init__(self, link: RedisLink, namespace: str, feed: str, holder: str, ttl: float):
        self._link = link
        self._key = f"{{{namespace}}}:lease:{feed}"
        self._holder = holder
        self._milliseconds = int(ttl * 1000)
        self._hold = link.client.register_script(_HOLD)
        self._release = link.client.register_script(_RELEASE)

    async def hold(self) -> bool:
        async def hold(client: Redis) -> bool:
            return bool(await self._hold(keys=[self._key], args=[self._holder, self._milliseconds]))

        return await self._link.call(hold, False)

    async def release(self) -> None:
        async def release(client: Redis) -> None:
            await self._release(keys=[self._key], args=[self._holder])

        await self._link.call(release, None)


@dataclass(frozen=True, slots=True)
class FollowSettings:
    interval: float = 0.25  # seconds between reads of a feed
    lease_ttl: float = 3.0  # a dead holder's lease is taken over within this (plus interval)


class Follower:
    """Follows one feed for as long as ``run`` runs (see the module's docstring)."""

    def __init__(
        self,
        source: FeedSource,
        model: ReadModel,
        database: AsyncEngine,
        lease: Lease | None,
        settings: FollowSettings,
    ) -> None:
        self.source = source
        self._model = model
        self._bus = model.bus
        self._database = autocommit(database)
        self._lease = lease
        self._settings = settings
        self._state = f"feed:{source.name}"
        self._cursor: str | None = None
        self._cursor_known = False
        self.holding = lease is None
        self.failures = 0
        self.read_at: float | None = None  # when this process last read the feed (epoch s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            more = await self.step()
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.interval)
        if self._lease is not None and self.holding:
            await self._lease.release()

    async def step(self) -> bool:
        """One read, as holder or on its own; True when the feed has more to read now."""
        try:
            if self._lease is None:
                return self._read(await self._follow(durable=True))
            held = await self._lease.hold()
            if held and not self.holding:
                self._cursor_known = False  # newly the holder: resume from the stored cursor
            self.holding = held
            if self.holding:
                return self._read(await self._follow(durable=True))
            if not self._bus.connected:
                return self._read(await self._follow(durable=False))
            self._cursor_known = False  # another instance holds it: read the stored one later
        except BackendError as exc:
            self.failures += 1
            log.warning("feed %s: the source failed, trying again: %s", self.source.name, exc)
        except (OperationalError, InterfaceError, OSError) as exc:
            self.failures += 1
            log.warning("feed %s: the database failed, trying again: %s", self.source.name, exc)
        return False

    def _read(self, more: bool) -> bool:
        self.read_at = time.time()
        return more

    async def _follow(self, *, durable: bool) -> bool:
        # While it holds the feed without a break, the holder's own cursor is the stored one
        # (its compare and set below says so): the database is read only after a change.
        if not self._cursor_known:
            self._cursor = await read_state(self._database, self._state)
            self._cursor_known = True
        since = self._cursor
        read = await self.source.read(since)
        moves = read.cursor is not None and read.cursor != since
        if read.keys or read.everything:
            if durable and self._lease is not None:
                if not await self._publish(read):
                    return False  # Redis did not take it: the stored cursor stays, to publish again
            else:
                self._apply_here(read)
        elif not moves:
            return False  # nothing read (a source that only moves its cursor still moves it)
        if read.cursor is not None and read.cursor != since:
            if durable:
                async with self._database.connect() as connection:
                    moved = await move_state(connection, self._state, since, read.cursor)
                if not moved:
                    log.info("feed %s: another instance moved the cursor", self.source.name)
                    self._cursor_known = False
                    return False
            self._cursor = read.cursor
        return read.more

    async def _publish(self, read: FeedRead) -> bool:
        """Tombstone the changed entities in Redis, then tell every instance."""
        feed = self.source.name
        seq = self._bus.seen(feed) + 1
        notice = ChangeNotice(feed, FEED_KINDS[feed], read.keys, seq, self._model.clock())
        shared = self._model.shared
        if shared is not None:
            if read.everything:
                taken = await shared.drop(self._model.shared_prefixes(notice.kind))
            else:
                names = self._model.shared_keys(notice)
                lifetime = self._model.lifetimes.tombstone
                taken = not names or await shared.tombstone_many(names, seq, lifetime)
            if not taken:
                return False
        return await self._bus.publish(feed, read.keys, read.cursor, everything=read.everything)

    def _apply_here(self, read: FeedRead) -> None:
        self._bus.deliver_here(self.source.name, read.keys, read.cursor, everything=read.everything)


def followers(
    sources: list[FeedSource],
    model: ReadModel,
    database: AsyncEngine,
    link: RedisLink | None,
    namespace: str,
    intervals: dict[str, FollowSettings],
) -> list[Follower]:
    """One follower per source, each with its lease when there is Redis."""
    holder = uuid.uuid4().hex
    return [
        Follower(
            source,
            model,
            database,
            None
            if link is None
            else Lease(link, namespace, source.name, holder, intervals[source.name].lease_ttl),
            intervals[source.name],
        )
        for source in sources
    ]


def _number(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        return 0
