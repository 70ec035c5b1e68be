"""The change bus: every change any feed follower or any sale sees, delivered to every instance.

A change is published on one Redis pub/sub channel by a script that also increments that feed's
sequence number, atomically, so every subscriber sees each feed's notices in sequence order.
A subscriber that sees a feed's sequence jump (messages lost while it reconnected or stalled),
or go back (Redis restarted), cannot know what it missed, so it drops everything that feed may
have changed: it delivers a notice for the whole kind. It also compares the sequence numbers
stored in Redis with what it has seen every ``check_interval`` seconds, which notices a loss
even when no later message comes.

Without Redis (the embedded default) the bus is one process's: ``publish`` delivers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.readmodel.levels import RedisLink

log = logging.getLogger(__name__)

FEED_KINDS: Final[Mapping[str, str]] = {
    "pim": "product",
    "pricing": "price",
    "promotions": "promotions",
    "erp": "stock",
    "ledger": "stock",  # sales, cancels and returns on any instance
    "oms": "stock",  # shipments and cancellations at the OMS
}
"""Each feed and the kind of entity its changes name."""

# KEYS[1]: the feed's sequence. ARGV: channel, the notice without its sequence (JSON object
# text, without the closing brace).
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ',"seq":' .. seq .. '}')
return seq
"""


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """``keys`` of ``kind`` changed (``everything``: any of that kind may have), as the feed
    reported up to ``cursor``. ``seq`` is the feed's bus sequence number (0 when local)."""

    feed: str
    kind: str
    keys: tuple[str, ...]
    seq: int
    at: datetime
    cursor: str | None = None
    everything: bool = False

    def encode_without_seq(self) -> bytes:
        body = orjson.dumps(
            {
                "feed": self.feed,
                "kind": self.kind,
                "keys": list(self.keys),
                "at": self.at.isoformat(),
                "cursor": self.cursor,
                "everything": self.everything,
            }
        )
        return body[:-1]

    @classmethod
    def decode(cls, data: bytes) -> ChangeNotice:
        raw = orjson.loads(data)
        return cls(
            feed=str(raw["feed"]),
            kind=str(raw["kind"]),
            keys=tuple(str(key) for key in raw["keys"]),
            seq=int(raw["seq"]),
            at=datetime.fromisoformat(raw["at"]),
            cursor=None if raw.get("cursor") is None else str(raw["cursor"]),
            everything=bool(raw.get("everything")),
        )


Listener = Callable[[ChangeNotice], None]


class ChangeBus:
    """Publishes notices and delivers every notice, from any instance, to ``listeners``."""

    def __init__(
        self,
        link: RedisLink | None,
        namespace: str = "cg",
        check_interval: float = 1.0,
        reconnect_delay: float = 0.5,
    ) -> None:
        self._link = link
        self._channel = f"{{{namespace}}}:changes"
        self._sequence_prefix = f"{{{namespace}}}:seq:"
        self._check_interval = check_interval
        self._reconnect_delay = reconnect_delay
        self._listeners: list[Listener] = []
        self._cut_off: list[Callable[[], None]] = []
        self._seen: dict[str, int] = dict.fromkeys(FEED_KINDS, 0)
        self._lagging: dict[str, int] = {}
        self._connected = link is None
        self._subscribed_before = False
        self._script = None if link is None else link.client.register_script(_PUBLISH)
        self.gaps = 0

    @property
    def shared(self) -> bool:
        """True when notices travel through Redis to other instances."""
        return self._link is not None

    @property
    def connected(self) -> bool:
        """True while this instance receives every instance's notices (always, without Redis)."""
        return self._connected

    def listen(self, listener: Listener, cut_off: Callable[[], None] | None = None) -> None:
        """Deliver every notice to ``listener``; call ``cut_off`` whenever this instance loses
        the subscription (notices from other instances stop arriving until it is back)."""
        self._listeners.append(listener)
        if cut_off is not None:
            self._cut_off.append(cut_off)

    def seen(self, feed: str) -> int:
        """The last sequence number of ``feed`` this instance has applied."""
        return self._seen[feed]

    async def publish(
        self,
        feed: str,
        keys: Iterable[str],
        cursor: str | None = None,
        *,
        everything: bool = False,
    ) -> bool:
        """Tell every instance that ``keys`` changed. True when it went out to all of them;
        False when Redis did not take it (this instance has applied it all the same)."""
        if self._link is None or self._script is None:
            self.deliver_here(feed, keys, cursor, everything=everything)
            return True
        notice = ChangeNotice(
            feed, FEED_KINDS[feed], tuple(keys), 0, datetime.now(UTC), cursor, everything
        )
        script = self._script
        message = notice.encode_without_seq()

        async def send(client: Redis) -> bool:
            await script(keys=[self._sequence_prefix + feed], args=[self._channel, message])
            return True

        sent = await self._link.call(send, False)
        if not sent or not self._connected:
            self._deliver(notice)  # the subscription would not bring it back to this instance
        return sent

    def deliver_here(
        self,
        feed: str,
        keys: Iterable[str],
        cursor: str | None = None,
        *,
        everything: bool = False,
    ) -> None:
        """Apply a change in this instance only (a follower on its own while Redis is down)."""
        self._deliver(
            ChangeNotice(
                feed, FEED_KINDS[feed], tuple(keys), 0, datetime.now(UTC), cursor, everything
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Receive notices until ``stop``; reconnects by itself. Without Redis, only waits."""
        if self._link is None:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await self._receive(self._link.client, stop)
            except (RedisError, OSError) as exc:
                if self._connected:
                    log.warning("change bus: lost the subscription, reconnecting: %r", exc)
                    self._connected = False
                    for callback in self._cut_off:
                        callback()
                self._link.failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._reconnect_delay)
        self._connected = False

    async def _receive(self, client: Redis, stop: asyncio.Event) -> None:
        pubsub: PubSub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            await self._check_sequences(client, settle=False)
            if self._subscribed_before:
                # Sales made while Redis was unreachable were told to their own instance only:
                # what they moved is re-read (the ledger has it), whatever the sequences say.
                self._gap("ledger", "subscribed again")
            if not self._connected:
                log.info("change bus: subscribed")
            self._connected = self._subscribed_before = True
            loop = asyncio.get_running_loop()
            next_check = loop.time() + self._check_interval
            while not stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                if message is not None and message["type"] == "message":
                    self._on_message(message["data"])
                if loop.time() >= next_check:
                    await self._check_sequences(client, settle=True)
                    next_check = loop.time() + self._check_interval
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _on_message(self, data: bytes) -> None:
        try:
            notice = ChangeNotice.decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("change bus: dropped a malformed notice: %r", exc)
            return
        if notice.feed not in self._seen:
            return
        seen = self._seen[notice.feed]
        # A notice at or below what was seen was already covered by a gap's drop (Redis
        # restarting resets the sequences, but also breaks the subscription: see _receive).
        if notice.seq > seen:
            self._seen[notice.feed] = notice.seq
            if notice.seq != seen + 1:
                self._gap(notice.feed, f"sequence {seen} then {notice.seq}")
        self._deliver(notice)

    async def _check_sequences(self, client: Redis, *, settle: bool) -> None:
        """Compare the feeds' sequences in Redis with what was seen. At subscribe time any
        difference is a gap; later, only one that lasts from one check to the next (a notice
        may be on its way)."""
        feeds = list(self._seen)
        stored = await client.mget([self._sequence_prefix + feed for feed in feeds])
        for feed, value in zip(feeds, stored, strict=True):
            current = int(value or 0)
            seen = self._seen[feed]
            behind = self._lagging.pop(feed, None)
            if current == seen:
                continue
            if not settle or current < seen or (behind is not None and seen < behind):
                self._seen[feed] = current
                self._gap(feed, f"seen {seen}, Redis has {current}")
            else:
                self._lagging[feed] = current

    def _gap(self, feed: str, detail: str) -> None:
        self.gaps += 1
        log.warning(
            "change bus: feed %s has a gap (%s); dropping what it may have changed", feed, detail
        )
        self._deliver(
            ChangeNotice(
                feed, FEED_KINDS[feed], (), self._seen[feed], datetime.now(UTC), everything=True
            )
        )

    def _deliver(self, notice: ChangeNotice) -> None:
        for listener in self._listeners:
            try:
                listener(notice)
            except Exception:  # a listener's bug must not stop the bus for the others
                log.exception("change bus: a listener failed on %s", notice)
