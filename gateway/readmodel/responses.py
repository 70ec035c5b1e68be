"""Whole answers to shared reads, kept in this process and evicted by the change bus.

A read whose answer is the same for everyone who may see it — a query (no mutation) of the
catalogue, prices, stock and stores only, with no customer token — is answered again from here.
The key is a hash of the document text (or the persisted operation's id), the operation name,
the variables, the channel's policy (its scopes, document limits and persisted-only rule, which
decide what it may be answered: two channels of the same policy share answers) and the media type
asked for; never the channel's name or key. The hit path parses no GraphQL, validates
nothing and executes nothing: it hashes the request body and sends the stored bytes, with an
``Age`` header saying how old they are.

While the answer is made, the loaders tag it with every entity it contains (``product:<code>``,
``price:<sku>``, ``stock:<sku>``, ``listing``, ``promotions``, ``stores``). A notice on the bus
naming any of them evicts it on every instance; an answer whose entities changed while it was
being made is not stored. Every answer lives ``ttl`` seconds at most (the store master has no
feed), and ``degraded_ttl`` while the bus is cut off from Redis.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.readmodel.bus import ChangeBus, ChangeNotice
from gateway.security import Channel

SHAREABLE_ROOT_FIELDS = frozenset({"products", "product", "stores", "node", "__typename"})
"""Query fields whose answers depend on no customer; any other field makes an answer private."""

_TAG_KINDS: Mapping[str, tuple[str, ...]] = {
    "product": ("product:", "listing"),
    "price": ("price:",),
    "stock": ("stock:",),
    "promotions": ("promotions",),
}
# Answers with these tags are kept current by these feeds.
_TAG_FEEDS: Mapping[str, str] = {"stock:": "erp", "price:": "pricing"}
MAX_BODY = 256 * 1024  # a request body larger than this is not looked up
# A document that opens with a mutation is never answered from the cache (whichever of its
# operations runs, a mutation's answer is not kept): its key is not worked out.
_OPENS_WITH_MUTATION = re.compile(r"\s*mutation\b")


def _any_tag(tags: Iterable[str], prefix: str) -> bool:
    return any(tag.startswith(prefix) for tag in tags)


@dataclass(slots=True)
class Provenance:
    """What one request's answer contains, filled in while it is made."""

    tags: set[str] = field(default_factory=set)
    shareable: bool = False  # set by the schema once it knows the operation and its fields
    stock_read_at: datetime | None = None  # when the ledger's positions were read

    def tag(self, prefix: str, keys: Iterable[str]) -> None:
        self.tags.update(prefix + key for key in keys)


@dataclass(frozen=True, slots=True)
class _Answer:
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    tags: frozenset[str]
    stored: float
    expires: float
    feeds: frozenset[str] = frozenset()  # the change feeds that keep it current


class ResponseCache:
    """The answers, at most ``max_bytes`` of them (least recently used dropped first)."""

    def __init__(
        self,
        bus: ChangeBus,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 30.0,
        degraded_ttl: float = 5.0,
    ) -> None:
        self._bus = bus
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._degraded_ttl = degraded_ttl
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self._bytes = 0
        self.epoch = 0
        self._changed: dict[str, int] = {}
        self._reset_epoch = 0
        self.hits = 0
        self.stores = 0
        # Set once the feeds' followers exist: is a feed late (its values possibly stale)?
        self.feed_is_late: Callable[[str], bool] = lambda feed: False
        bus.listen(self.apply, self.cut_off)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> _Answer | None:
        answer = self._answers.get(key)
        if answer is None:
            return None
        if answer.expires <= time.monotonic() or any(map(self.feed_is_late, answer.feeds)):
            # Expired, or kept current by a feed that is late: made again, it says so.
            self._drop(key)
            return None
        self._answers.move_to_end(key)
        self.hits += 1
        return answer

    def put(
        self,
        key: str,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        tags: Iterable[str],
        started: int,
    ) -> bool:
        """Keep an answer made since epoch ``started``, unless one of its tags changed since."""
        tagged = frozenset(tags)
        if self._reset_epoch > started or any(self._changed.get(t, -1) > started for t in tagged):
            return False
        if len(body) > self._max_bytes // 4:
            return False
        now = time.monotonic()
        lifetime = self._ttl if not self._bus.shared or self._bus.connected else self._degraded_ttl
        self._drop(key)
        feeds = frozenset(feed for prefix, feed in _TAG_FEEDS.items() if _any_tag(tagged, prefix))
        self._answers[key] = _Answer(body, tuple(headers), tagged, now, now + lifetime, feeds)
        self._bytes += len(body)
        for tag in tagged:
            self._by_tag.setdefault(tag, set()).add(key)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._answers)))
        self.stores += 1
        return True

    def apply(self, notice: ChangeNotice) -> None:
        """Evict the answers containing what ``notice`` names (a bus listener)."""
        self.epoch += 1
        prefixes = _TAG_KINDS.get(notice.kind, ())
        if notice.everything:
            self._reset_epoch = self.epoch
            self._changed.clear()
            doomed = [
                key
                for key, answer in self._answers.items()
                if any(tag.startswith(prefixes) for tag in answer.tags)
            ]
        else:
            tags = [f"{notice.kind}:{key}" for key in notice.keys]
            if notice.kind == "product":
                tags.append("listing")
            if notice.kind == "promotions":
                tags = ["promotions"]
            doomed = [key for tag in tags for key in self._by_tag.get(tag, ())]
            for tag in tags:
                self._changed[tag] = self.epoch
            if len(self._changed) > 100_000:
                self._changed.clear()
                self._reset_epoch = self.epoch
        for key in doomed:
            self._drop(key)

    def cut_off(self) -> None:
        """The bus lost Redis: no answer lives more than ``degraded_ttl`` from now."""
        latest = time.monotonic() + self._degraded_ttl
        for key, answer in list(self._answers.items()):
            if answer.expires > latest:
                self._answers[key] = _Answer(
                    answer.body, answer.headers, answer.tags, answer.stored, latest
                )

    def _drop(self, key: str) -> None:
        answer = self._answers.pop(key, None)
        if answer is None:
            return
        self._bytes -= len(answer.body)
        for tag in answer.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]


class ResponseCacheMiddleware:
    """Answers shared reads of ``/graphql`` from ``ResponseCache`` (see the module docstring).
    Runs after the channel's authentication, which puts the channel on the request state."""

    def __init__(self, app: ASGIApp, path: str = "/graphql") -> None:
        self.app = app
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self._path:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        runtime = state.get("runtime")
        cache: ResponseCache | None = getattr(runtime, "responses", None)
        channel = state.get("channel")
        headers = Headers(scope=scope)
        if cache is None or channel is None or "authorization" in headers:
            await self.app(scope, receive, send)
            return
        body, receive = await _read_body(receive)
        key = _key(scope, headers, body, _policy(channel))
        if key is None:
            await self.app(scope, receive, send)
            return
        answer = cache.get(key)
        if answer is not None:
            await _send_answer(send, answer)
            return
        provenance = Provenance()
        state["provenance"] = provenance
        started = cache.epoch
        captured = _Capture(send)
        await self.app(scope, receive, captured)
        if provenance.shareable and captured.status == 200 and captured.complete:
            cache.put(key, captured.body, captured.headers, provenance.tags, started)


def _policy(channel: Channel) -> str:
    """What of a channel decides what it may be answered: its scopes, its document limits and
    cost budget, and whether it runs persisted operations only (never its name or key)."""
    return repr((sorted(channel.scopes), channel.limits, channel.persisted_only))


def _key(scope: Scope, headers: Headers, body: bytes | None, policy: str) -> str | None:
    """The cache key of a GraphQL request, or None when it cannot be one (not JSON, too big, a
    batch, a multipart upload). A persisted operation is keyed by its id."""
    if scope["method"] == "GET":
        raw = scope.get("query_string", b"")
    elif scope["method"] == "POST" and body is not None:
        if not headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict):
            return None
        query, extensions = request.get("query"), request.get("extensions")
        if not isinstance(query, str) and not isinstance(extensions, dict):
            return None
        if isinstance(query, str) and _OPENS_WITH_MUTATION.match(query):
            return None
        parts = [query, request.get("operationName"), request.get("variables"), extensions]
        try:
            raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # keys that are not strings: not a request to keep answers for
            return None
    else:
        return None
    digest = hashlib.sha256(raw)
    digest.update(orjson.dumps([policy, headers.get("accept", "")]))
    return digest.hexdigest()


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The request body (None past ``MAX_BODY``) and a ``receive`` that replays it."""
    chunks: list[bytes] = []
    size = 0
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return (b"".join(chunks) if size <= MAX_BODY else None), replay


async def _send_answer(send: Send, answer: _Answer) -> None:
    age = str(int(time.monotonic() - answer.stored)).encode()
    headers = [*answer.headers, (b"age", age), (b"x-cache", b"hit")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class _Capture:
    """Passes a response on while keeping a copy of its status, headers and body."""

    _KEPT = (b"content-type",)

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self.complete = False

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(k, v) for k, v in message.get("headers", []) if k in self._KEPT]
        elif message["type"] == "http.response.body":
            self._chunks.append(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        await self._send(message)
