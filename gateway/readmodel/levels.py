"""The read model's two levels: a bounded in-process one, and a shared one in Redis.

An entry is the value a legacy system gave for one entity (or its word that there is none),
with the version it was read at and when. The shared level never makes a request fail: a Redis
that errs or is slow is treated as a miss, and left alone for a moment before it is tried again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

V = TypeVar("V")
T = TypeVar("T")

TOMBSTONE = b"!"
"""A shared entry starting with this byte is a tombstone: ``!<seq>`` says the entity changed at
bus sequence ``seq``, so a fetch that began before that must not write what it read."""

# KEYS[1]: the entry. ARGV: value, the writer's feed sequence when its fetch began, ttl (ms).
_WRITE_UNLESS_NEWER = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 1) == '!' then
  if tonumber(string.sub(current, 2)) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """One entity as its source gave it. ``value`` None: the source has no such entity."""

    value: V | None
    read_at: datetime
    version: str


class LocalLevel:
    """At most ``size`` entries in this process; the least recently used goes first. Each entry
    lives ``ttl`` seconds at most (``put`` may shorten it)."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("the in-process level needs room for at least one entry")
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> object | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def holds(self, key: str) -> bool:
        """Whether ``get`` would find ``key`` now (without counting as a use)."""
        found = self._entries.get(key)
        return found is not None and found[0] > self._clock()

    def put(self, key: str, value: object, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def cap(self, ttl: float) -> None:
        """Let no entry live more than ``ttl`` seconds from now."""
        latest = self._clock() + ttl
        for key, (expires, value) in self._entries.items():
            if expires > latest:
                self._entries[key] = (latest, value)

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def evict_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix``; returns how many."""
        doomed = [key for key in self._entries if key.startswith(prefix)]
        self.evict(doomed)
        return len(doomed)


class RedisLink:
    """The one Redis client of a process, and whether Redis answers.

    ``call`` runs one Redis operation; on any Redis or socket error it logs once, marks Redis
    down for ``pause`` seconds (during which calls return ``fallback`` at once) and returns
    ``fallback``. Callers never see a Redis error."""

    def __init__(self, client: Redis, pause: float = 1.0) -> None:
        self.client = client
        self._pause = pause
        self._down_until = 0.0
        self._failing = False

    @classmethod
    def from_url(cls, url: str, timeout: float, pause: float = 1.0) -> RedisLink:
        client = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        return cls(client, pause)

    @property
    def up(self) -> bool:
        return not self._failing

    async def call(self, operation: Callable[[Redis], Awaitable[T]], fallback: T) -> T:
        if self._failing and time.monotonic() < self._down_until:
            return fallback
        try:
            result = await operation(self.client)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            return fallback
        if self._failing:
            log.info("redis answers again")
            self._failing = False
        return result

    def failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("redis failed, serving without it for now: %r", exc)
        self._failing = True
        self._down_until = time.monotonic() + self._pause

    async def aclose(self) -> None:
        await self.client.aclose()


class SharedLevel:
    """Entries in Redis under ``namespace``, shared by every instance. Values are bytes (the
    model encodes them); writes carry the writer's feed sequence so that they never overwrite a
    newer tombstone."""

    def __init__(self, link: RedisLink, namespace: str) -> None:
        self._link = link
        self._prefix = f"{{{namespace}}}:rm:"  # one hash slot: MGET works on a Redis Cluster
        self._write = link.client.register_script(_WRITE_UNLESS_NEWER)

    @property
    def up(self) -> bool:
        return self._link.up

    def key(self, name: str) -> str:
        return self._prefix + name

    async def get_many(self, names: Sequence[str]) -> list[bytes | None]:
        """The live entries (tombstones read as misses). All misses when Redis is down."""
        if not names:
            return []
        keys = [self.key(name) for name in names]

        async def read(client: Redis) -> list[bytes | None]:
            values = await client.mget(keys)
            return [
                v if isinstance(v, bytes) and not v.startswith(TOMBSTONE) else None for v in values
            ]

        return await self._link.call(read, [None] * len(names))

    async def put_many(self, items: Sequence[tuple[str, bytes]], since: int, ttl: float) -> None:
        """Write entries read by a fetch that began at feed sequence ``since``, unless the
        entity has changed after that (a newer tombstone)."""
        if not items:
            return
        milliseconds = max(1, int(ttl * 1000))

        async def write(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for name, value in items:
                    await self._write(
                        keys=[self.key(name)], args=[value, since, milliseconds], client=pipe
                    )
                await pipe.execute()

        await self._link.call(write, None)

    async def tombstone_many(self, names: Iterable[str], seq: int, ttl: float) -> bool:
        """Mark entities changed at ``seq``; True when Redis took it."""
        marker = TOMBSTONE + str(seq).encode()
        milliseconds = max(1, int(ttl * 1000))

        async def write(client: Redis) -> bool:
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.set(self.key(name), marker, px=milliseconds)
                await pipe.execute()
            return True

        return await self._link.call(write, False)

    async def drop(self, prefixes: Iterable[str]) -> bool:
        """Delete every entry under ``prefixes`` (a feed that cannot say what changed); True
        when Redis took it. Scans, so it is for rare events (a first start, a reset feed)."""

        async def delete(client: Redis) -> bool:
            for prefix in prefixes:
                batch: list[bytes] = []
                async for key in client.scan_iter(match=self.key(prefix) + "*", count=500):
                    batch.append(key)
                    if len(batch) >= 500:
                        await client.unlink(*batch)
                        batch.clear()
                if batch:
                    await client.unlink(*batch)
            return True

        return await self._link.call(delete, False)
