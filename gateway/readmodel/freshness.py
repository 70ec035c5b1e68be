"""How long ago each change feed was last read, by whichever instance follows it.

A feed that has not been read lately (its source is down, stalled or slow) leaves the values
it feeds out of date: the stock of the ERP above all, which no request reads from the ERP
itself. The instance that holds a feed's lease stamps the time of its last good read in Redis;
every instance reads the stamps once a ``interval``, so ``age`` is a plain lookup for the
resolvers. Without Redis, or while it is down, each instance follows the feeds itself and its
own stamps are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from gateway.readmodel.feeds import Follower
from gateway.readmodel.levels import RedisLink

STAMP_LIFETIME_MS = 24 * 3600 * 1000


class FeedFreshness:
    def __init__(
        self,
        followers: Sequence[Follower],
        link: RedisLink | None,
        namespace: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._followers = {follower.source.name: follower for follower in followers}
        self._link = link
        self._namespace = namespace
        self._interval = interval
        self._clock = clock
        self._shared: dict[str, float] = {}

    def follows(self, feed: str) -> bool:
        return feed in self._followers

    def is_late(self, feed: str, after: float) -> bool:
        """Has ``feed`` (one this gateway follows) gone unread for more than ``after`` s?"""
        if not self.follows(feed):
            return False
        age = self.age(feed)
        return age is None or age > after

    def age(self, feed: str) -> float | None:
        """Seconds since ``feed`` was last read well anywhere; None if never (or unknown)."""
        follower = self._followers.get(feed)
        here = None if follower is None else follower.read_at
        stamps = [stamp for stamp in (here, self._shared.get(feed)) if stamp is not None]
        return None if not stamps else max(0.0, self._clock() - max(stamps))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.exchange()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def exchange(self) -> None:
        """Stamp the feeds this instance holds; read everyone's stamps."""
        if self._link is None:
            return
        names = list(self._followers)
        keys = [f"{{{self._namespace}}}:read:{name}" for name in names]
        stamps = {
            key: follower.read_at
            for key, follower in zip(keys, self._followers.values(), strict=True)
            if follower.holding and follower.read_at is not None
        }

        async def exchange(client: Redis) -> list[bytes | None]:
            async with client.pipeline(transaction=False) as pipe:
                for key, stamp in stamps.items():
                    pipe.set(key, repr(stamp), px=STAMP_LIFETIME_MS)
                pipe.mget(keys)
                answers = await pipe.execute()
            return list(answers[-1])

        nothing: list[bytes | None] = [None] * len(keys)
        values = await self._link.call(exchange, nothing)
        for name, value in zip(names, values, strict=True):
            if value is not None:
                self._shared[name] = float(value)
