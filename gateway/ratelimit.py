"""Rate limits per channel and per customer: token buckets, shared by every instance in Redis.

Each bucket holds up to ``burst`` requests and refills at ``per_second``. A request takes one
token from its channel's bucket and, with a bearer token, one from its customer's, both or
neither, in one Redis script on Redis's own clock, so all instances draw on the same buckets.
When there is no Redis, or it does not answer within ``timeout``, the buckets of this process
are used instead (each instance then allows the full rate) and Redis is tried again after
``retry_after`` seconds: no request ever fails or waits long because of Redis.

``RateLimit`` (the middleware) answers 429 with ``Retry-After`` and ``RATE_LIMITED``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.limits import refuse

if TYPE_CHECKING:  # security imports this module
    from gateway.security import Channel

log = logging.getLogger("gateway.ratelimit")
RATE_LIMITED: Final = "RATE_LIMITED"
# Takes a token for one more operation of a WebSocket connection: 0, or the seconds to wait.
TokenTaker = Callable[[], Awaitable[float]]

# KEYS: the buckets; ARGV: per_second and burst of each, in turn. Takes one token from every
# bucket, or from none; returns "0", or the seconds until every bucket has one.
TAKE: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local tokens, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local held = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  held = math.min(burst, held + math.max(0, now - at) * rate)
  tokens[i] = held
  if held < 1 then wait = math.max(wait, (1 - held) / rate) end
end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local held = tokens[i]
  if wait == 0 then held = held - 1 end
  redis.call('HSET', key, 'tokens', held, 'at', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return tostring(wait)
"""


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    rate: Rate


class LocalBuckets:
    """Token buckets in this process; the ``max_buckets`` used last are kept."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        self._clock = clock
        self._max = max_buckets
        self._held: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, buckets: Sequence[Bucket]) -> float:
        """0 after taking a token from each of ``buckets``; else the seconds to wait (and
        nothing is taken)."""
        now = self._clock()
        held = [self._refilled(bucket, now) for bucket in buckets]
        wait = max(
            (
                (1 - tokens) / bucket.rate.per_second
                for bucket, tokens in zip(buckets, held, strict=True)
                if tokens < 1
            ),
            default=0.0,
        )
        for bucket, tokens in zip(buckets, held, strict=True):
            self._held[bucket.key] = (tokens - (1 if wait == 0 else 0), now)
            self._held.move_to_end(bucket.key)
        while len(self._held) > self._max:
            self._held.popitem(last=False)
        return wait

    def _refilled(self, bucket: Bucket, now: float) -> float:
        tokens, at = self._held.get(bucket.key, (float(bucket.rate.burst), now))
        return min(float(bucket.rate.burst), tokens + (now - at) * bucket.rate.per_second)


class SharedBuckets:
    """Token buckets in Redis (``redis``, None for none), falling back to ``local`` while
    Redis fails or is slower than ``timeout``, and trying it again after ``retry_after``."""

    def __init__(
        self,
        redis: Redis | None,
        local: LocalBuckets | None = None,
        timeout: float = 0.1,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._script = None if redis is None else redis.register_script(TAKE)
        self._local = local or LocalBuckets(clock)
        self._timeout = timeout
        self._retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether the last decision was Redis's (all instances), not this process's."""
        return self._script is not None and self._clock() >= self._down_until

    async def take(self, buckets: Sequence[Bucket]) -> float:
        if not self.shared or self._script is None:
            return self._local.take(buckets)
        arguments = [
            value for bucket in buckets for value in (bucket.rate.per_second, bucket.rate.burst)
        ]
        try:
            async with asyncio.timeout(self._timeout):
                wait = await self._script(keys=[bucket.key for bucket in buckets], args=arguments)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate limits in-process for %g s: Redis failed: %r", self._retry_after, exc)
            self._down_until = self._clock() + self._retry_after
            return self._local.take(buckets)
        return float(wait)


class RateLimit:
    """Takes a token from the channel's bucket (and the customer's, with a token) for every
    request on ``paths`` that ``ChannelAuthMiddleware`` identified; 429 when one is empty. A
    WebSocket connection gets ``take_token`` in its state instead, for each operation.
    The buckets are the app state's ``rate_limits`` (a ``SharedBuckets``); without them, or
    for the unidentified (GraphiQL's page), nothing is limited."""

    def __init__(
        self,
        app: ASGIApp,
        customer_rate: Rate,
        prefix: str = "gateway:ratelimit",
        paths: tuple[str, ...] = ("/graphql",),
    ) -> None:
        self.app = app
        self.customer_rate = customer_rate
        self.prefix = prefix
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {})
        limits = state.get("rate_limits")
        channel = state.get("channel")
        if (
            scope["type"] not in ("http", "websocket")
            or scope["path"] not in self.paths
            or not isinstance(limits, SharedBuckets)
        ):
            await self.app(scope, receive, send)
            return
        if channel is None:
            if scope["type"] == "websocket":  # identified by connection_init, later
                takers = partial(self._taker, limits)
                state = {**state, "take_token_for": takers}
            await self.app({**scope, "state": state}, receive, send)
            return
        buckets = self.buckets(channel.name, channel.rate, state.get("customer_id"))
        if scope["type"] == "websocket":
            # Every operation the connection runs takes a token (resolvers/websocket.py).
            taker: TokenTaker = partial(limits.take, buckets)
            await self.app({**scope, "state": {**state, "take_token": taker}}, receive, send)
            return
        wait = await limits.take(buckets)
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            message = "too many requests: try again later"
            await refuse(send, 429, RATE_LIMITED, message, {"retry-after": retry})
            return
        await self.app(scope, receive, send)

    def _taker(
        self, limits: SharedBuckets, channel: Channel, customer_id: str | None
    ) -> TokenTaker:
        return partial(limits.take, self.buckets(channel.name, channel.rate, customer_id))

    def buckets(self, channel: str, rate: Rate, customer_id: str | None) -> list[Bucket]:
        found = [Bucket(f"{self.prefix}:channel:{channel}", rate)]
        if customer_id is not None:
            found.append(Bucket(f"{self.prefix}:customer:{customer_id}", self.customer_rate))
        return found
