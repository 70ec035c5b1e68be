"""The transactional outbox: what an order owes other systems, written with the order itself.

An order and its messages to the OMS and the loyalty platform are inserted in one transaction
(``enqueue``), so they commit or roll back together: there is never an order the OMS will not
hear of, nor a message about an order that does not exist. ``OutboxWorker`` then delivers every
message at least once, retrying with backoff while a system is down. The receivers are
idempotent (the OMS by order id, the loyalty platform by request id), so a repeat is harmless;
that is what makes "at least once" good enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Executable,
    RowMapping,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.ports import BackendError, BackendRejected
from gateway.db import UtcDateTime, autocommit, retry_on_disconnect
from gateway.orders.tables import outbox

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 500  # the size of outbox.last_error
_CREDENTIALS = re.compile(r"(//[^/\s:@]+:)[^@\s/]+@")  # user:password@ in a URL


class MessageKind(enum.Enum):
    """What a message asks for. The value is what the ``outbox.kind`` column holds."""

    OMS_SUBMIT = "OMS_SUBMIT"  # hand the order to the OMS; payload {} (the order is in its tables)
    LOYALTY_EARN = "LOYALTY_EARN"  # credit the points the order earned (a PointsMovement)
    LOYALTY_REFUND = "LOYALTY_REFUND"  # give back points the order redeemed (credited)
    LOYALTY_REVERSE = "LOYALTY_REVERSE"  # take back points a returned item had earned (debited)


Payload = Mapping[str, object]
"""A message's payload as it is enqueued: JSON values (``PointsMovement.payload()`` for the
loyalty kinds, ``{}`` for ``OMS_SUBMIT``)."""


@dataclass(frozen=True, slots=True)
class PointsMovement:
    """The payload of every loyalty message. ``request_id`` is the platform's idempotency key:
    it must be the same for every delivery of one message and unique across messages."""

    customer_id: str
    points: int
    request_id: str
    reason: str

    def __post_init__(self) -> None:
        if self.points < 1:
            raise ValueError(f"points must be at least 1, not {self.points}")

    def payload(self) -> dict[str, str | int]:
        return {
            "customer_id": self.customer_id,
            "points": self.points,
            "request_id": self.request_id,
            "reason": self.reason,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, object]) -> PointsMovement:
        """Read a stored payload back; raises ValueError when it is not a movement."""
        customer_id, request_id, reason = (
            payload.get(name) for name in ("customer_id", "request_id", "reason")
        )
        points = payload.get("points")
        texts = (customer_id, request_id, reason)
        if not all(isinstance(text, str) for text in texts) or type(points) is not int:
            raise ValueError(f"not a points movement: {dict(payload)!r}")
        return cls(str(customer_id), points, str(request_id), str(reason))


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to enqueue: ``kind`` about ``order_id``, with its payload."""

    kind: MessageKind
    order_id: str
    payload: Payload = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message as a worker claimed it. ``attempts`` counts the failed deliveries before this
    one; ``payload`` is the stored JSON, to be validated by its handler."""

    id: int
    kind: MessageKind
    order_id: str
    payload: Mapping[str, object]
    attempts: int
    # A worker claimed it before and neither its delivery nor its failure was recorded (the
    # process died, or the database went away): the receiver may have it already.
    unrecorded: bool = False


@dataclass(frozen=True, slots=True)
class Write:
    """A local write that goes with a delivery: ``statement`` executed with ``parameters``.
    The writes of several deliveries marked together that share a statement (the same object)
    go to the database as one batch of parameter sets."""

    statement: Executable
    parameters: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Delivered:
    """A handler's report that the remote system took the message. ``effect`` is made just
    before the message is marked delivered, and must be idempotent: a message is delivered at
    least once, so its effect may be made again (by a later delivery, or by this one when
    another worker marked the message first). ``note`` goes to ``last_error`` for an operator:
    a delivery that did less than asked."""

    effect: Write | None = None
    note: str | None = None


Handler = Callable[[OutboxMessage, AsyncEngine], Awaitable[Delivered]]
"""Delivers one message. It may read what it needs through the engine in short connections of
its own (each statement runs on its own there: see ``gateway.db.autocommit``), must call the
remote system with no transaction open, and leaves its local writes to the returned
``Delivered.effect``. Raising means "not delivered, try again later"."""


# Built once: statement objects reused keep their compiled form in SQLAlchemy's cache without
# being rebuilt and re-keyed for every message.
_INSERT = insert(outbox)
_mine = (outbox.c.id == bindparam("message_id"), outbox.c.delivered_at.is_(None))
_DELIVERED = (
    update(outbox)
    .where(
        outbox.c.id.in_(bindparam("message_ids", expanding=True)), outbox.c.delivered_at.is_(None)
    )
    .values(delivered_at=bindparam("delivered_at", type_=UtcDateTime()))
    .returning(outbox.c.id)
)
_NOTED = (
    update(outbox)
    .where(outbox.c.id == bindparam("message_id"))
    .values(last_error=bindparam("note"))
)
_FAILED = (
    update(outbox)
    .where(*_mine)
    .values(
        attempts=outbox.c.attempts + 1,
        last_error=bindparam("error"),
        next_attempt_at=bindparam("retry_at", type_=UtcDateTime()),
    )
)


async def enqueue(
    connection: AsyncConnection,
    kind: MessageKind,
    order_id: str,
    payload: Payload,
    now: datetime,
) -> None:
    """Add one message, due at ``now``, in the caller's transaction (with the order it is
    about, so that both commit or neither does)."""
    await enqueue_many(connection, [NewMessage(kind, order_id, payload)], now)


async def enqueue_many(
    connection: AsyncConnection, messages: Iterable[NewMessage], now: datetime
) -> None:
    """``enqueue`` for several messages at once; delivered in the order given."""
    rows = [
        {
            "kind": message.kind.value,
            "order_id": message.order_id,
            "payload": dict(message.payload),
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for message in messages
    ]
    if rows:
        await connection.execute(_INSERT, rows)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a message waits after failing: ``first``, then ``factor`` times longer after
    each further failure, never more than ``most``; plus up to ``jitter`` of that (a fraction)
    so that messages which failed together do not all come back together."""

    first: timedelta = timedelta(seconds=0.5)
    factor: float = 2.0
    most: timedelta = timedelta(seconds=60)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not timedelta(0) < self.first <= self.most:
            raise ValueError("need 0 < first <= most")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("need factor >= 1 and jitter between 0 and 1")

    def delay(self, attempts: int, spread: float = 0.0) -> timedelta:
        """The wait after the ``attempts``-th failure (1 for the first). ``spread`` is a sample
        in [0, 1) chosen by the caller, so the schedule itself stays deterministic."""
        steps = max(attempts - 1, 0)
        if self.factor > 1:  # past this many steps the cap applies anyway (and powers overflow)
            steps = min(steps, math.ceil(math.log(self.most / self.first, self.factor)))
        return self.capped(self.first * self.factor**steps, spread)

    def capped(self, wait: timedelta, spread: float = 0.0) -> timedelta:
        """``wait``, at most ``most``, plus its share of jitter."""
        bounded = min(wait, self.most)
        return bounded + bounded * (self.jitter * min(max(spread, 0.0), 1.0))


class OutboxWorker:
    """Delivers due outbox messages through ``handlers``, at least once each.

    A round (``run_once``) first claims up to ``batch`` due messages in one statement: it
    selects them in id order and moves their ``next_attempt_at`` a ``lease`` ahead, so no other
    worker takes them while this one delivers. On PostgreSQL the select skips rows another
    worker is claiming (``FOR UPDATE SKIP LOCKED``), so workers in several gateway processes
    never claim the same row; on SQLite the write lock each transaction takes does the same. A
    worker that dies after claiming leaves its lease to run out, and then another delivers the
    message. An idle worker costs one such statement per ``idle_interval``.

    Then it delivers the claimed messages concurrently (``concurrency`` at a time), with no
    transaction open while a remote system is called. A handler that takes longer than the lease
    is given up on (the message may be claimed again by then). Successes are marked delivered
    (only those nobody else marked yet) with their handlers' effects in one transaction: as soon
    as a delivery ends, together with every other that ended while the last mark was written,
    so a round's marks cost a few statements however many messages it holds.

    A failure counts an attempt, keeps the error in ``last_error`` and schedules the next attempt
    by ``backoff``. A ``BackendRejected`` means the system refused the message and will refuse it
    the same way again: it is logged as an error for an operator to look at and retried at the
    longest interval, never dropped. Only messages whose kind has a handler are claimed, so a
    worker leaves other kinds to workers that know them.

    ``clock`` says what "now" is for claims, leases, retries and deliveries (UTC-aware);
    ``spread`` draws the jitter sample in [0, 1) for each retry.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        handlers: Mapping[MessageKind, Handler],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = 50,
        lease: timedelta = timedelta(seconds=30),
        idle_interval: timedelta = timedelta(seconds=0.25),
        backoff: Backoff = Backoff(),
        concurrency: int = 16,
        spread: Callable[[], float] = random.random,
    ) -> None:
        if batch < 1 or concurrency < 1 or lease <= timedelta(0):
            raise ValueError("batch and concurrency must be at least 1, lease positive")
        self._engine = engine
        self._statements = autocommit(engine)
        self._handlers = dict(handlers)
        self._clock = clock
        self._batch = batch
        self._lease = lease
        self._idle_interval = idle_interval
        self._backoff = backoff
        self._concurrency = concurrency
        self._spread = spread
        self._claim_due = _claim_statement([kind.value for kind in self._handlers], batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver rounds until ``stop`` is set, pausing ``idle_interval`` after a round that
        delivered nothing. Nothing stops it but ``stop`` or cancellation: a failing round (the
        database unreachable, say) is logged and the next one tries again."""
        while not stop.is_set():
            try:
                delivered = await self.run_once()
            except Exception:  # the loop must outlive any one round; the next round retries
                log.exception("outbox: a delivery round failed; trying again")
                delivered = 0
            if delivered == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._idle_interval.total_seconds())

    async def run_once(self) -> int:
        """Claim the due messages and deliver them; returns how many this round delivered."""
        return await self.deliver(await self.claim())

    async def claim(self) -> list[OutboxMessage]:
        """Take up to ``batch`` due messages for one lease, oldest first (see the class): one
        UPDATE that selects and leases them at once."""
        now = self._clock()
        times = {"now": now, "lease_until": now + self._lease}

        async def claim() -> Sequence[RowMapping]:
            # Run again after a lost connection: what the lost one claimed (if it committed)
            # comes back when its lease runs out, marked ``unrecorded``.
            async with self._statements.begin() as connection:
                return (await connection.execute(self._claim_due, times)).mappings().all()

        rows = await retry_on_disconnect(claim)
        return sorted((_message(row) for row in rows), key=lambda message: message.id)

    async def deliver(self, messages: Sequence[OutboxMessage]) -> int:
        """Deliver claimed ``messages`` concurrently; returns how many were marked delivered."""
        slots = asyncio.Semaphore(self._concurrency)

        async def one(message: OutboxMessage) -> tuple[OutboxMessage, Delivered | None]:
            async with slots:
                return message, await self._deliver(message)

        pending = {asyncio.ensure_future(one(message)) for message in messages}
        marked = 0
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                marked += await self._finish(_outcomes(done))
        finally:
            for task in pending:
                task.cancel()
        return marked

    async def pending(self) -> int:
        """How many messages are not delivered yet (due or not)."""
        query = select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
        async with self._statements.connect() as connection:
            count: int = (await connection.execute(query)).scalar_one()
        return count

    async def _deliver(self, message: OutboxMessage) -> Delivered | None:
        """The handler's report, or None when it failed (the failure is recorded)."""
        try:
            async with asyncio.timeout(self._lease.total_seconds()):
                return await self._handlers[message.kind](message, self._statements)
        except Exception as exc:  # whatever failed, the message stays and is retried later
            await self._fail(message, exc)
            return None

    async def _finish(self, delivered: Sequence[tuple[OutboxMessage, Delivered]]) -> int:
        """Make the effects and notes of ``delivered``, then mark them delivered, except those
        another worker marked already (after our lease ran out); returns how many this one
        marked. Each statement is its own transaction (no BEGIN or COMMIT to wait for): the
        effects are idempotent and come first, so a process that dies before the mark has
        the message delivered again, and its effect made again, later; never a mark without
        its effect."""
        if not delivered:
            return 0
        values = {"message_ids": [message.id for message, _ in delivered]}

        async def mark() -> set[int]:
            async with self._statements.begin() as connection:
                for statement, parameters in _writes(delivered):
                    await connection.execute(statement, parameters)
                result = await connection.execute(
                    _DELIVERED, {**values, "delivered_at": self._clock()}
                )
            return set(result.scalars())

        try:
            # Marking again is harmless: only rows not marked yet are; effects are idempotent.
            marked = await retry_on_disconnect(mark)
        except Exception:  # the database failed; the leases will run out and bring them back
            log.exception("outbox: messages %s: delivered, but not marked", values["message_ids"])
            return 0
        return len(marked)

    async def _fail(self, message: OutboxMessage, error: Exception) -> None:
        attempts = message.attempts + 1
        wait = self._wait_after(message, error, attempts)
        values = {
            "message_id": message.id,
            "error": _clipped(f"{error.__class__.__name__}: {error}"),
            "retry_at": self._clock() + wait,
        }

        async def record() -> None:
            async with self._statements.begin() as connection:
                await connection.execute(_FAILED, values)

        await retry_on_disconnect(record)  # twice at worst: one attempt counted twice

    def _wait_after(self, message: OutboxMessage, error: Exception, attempts: int) -> timedelta:
        """Log the failure as it deserves and say how long the message waits."""
        where = f"outbox: {message.kind.value} message {message.id} (order {message.order_id})"
        spread = self._spread()
        if isinstance(error, BackendRejected):
            log.error("%s refused, attempt %d; needs a look: %s", where, attempts, error)
            return self._backoff.capped(self._backoff.most, spread)
        if isinstance(error, BackendError):
            log.warning("%s failed, attempt %d: %s", where, attempts, error)
        elif isinstance(error, TimeoutError):
            log.warning("%s outlived its lease, attempt %d", where, attempts)
        else:
            log.error("%s failed unexpectedly, attempt %d", where, attempts, exc_info=error)
        return self._backoff.delay(attempts, spread)


PURGE_BATCH = 1000  # rows deleted per statement: short transactions, however much is due


async def purge_delivered(engine: AsyncEngine, before: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete the messages delivered before ``before``, ``batch`` rows per statement (each
    its own transaction), oldest first; returns how many. Messages not delivered are never
    touched. Several processes may purge at once: on PostgreSQL each skips the rows another
    is deleting."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    doomed = (
        select(outbox.c.id)
        .where(outbox.c.delivered_at.is_not(None), outbox.c.delivered_at < before)
        .order_by(outbox.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    statement = delete(outbox).where(outbox.c.id.in_(doomed))
    statements = autocommit(engine)
    purged = 0
    while True:

        async def one_batch() -> int:
            async with statements.begin() as connection:
                return (await connection.execute(statement)).rowcount

        deleted = await retry_on_disconnect(one_batch)  # deleting again deletes nothing more
        purged += deleted
        if deleted < batch:
            return purged


async def purge_forever(
    engine: AsyncEngine,
    retention: timedelta,
    interval: timedelta,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """``purge_delivered`` of what was delivered more than ``retention`` ago, now and then
    every ``interval`` until ``stop`` is set; a failing round is logged and tried again at the
    next interval."""
    while not stop.is_set():
        try:
            purged = await purge_delivered(engine, clock() - retention)
        except Exception:  # the loop must outlive any one round; the next round retries
            log.exception("outbox: purging delivered messages failed; trying again later")
        else:
            if purged:
                log.info("outbox: purged %d delivered messages", purged)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())


def _outcomes(
    done: Iterable[asyncio.Future[tuple[OutboxMessage, Delivered | None]]],
) -> list[tuple[OutboxMessage, Delivered]]:
    """The deliveries among ``done`` that succeeded. One whose failure could not be recorded
    (the database failed) is logged; its lease will run out."""
    succeeded = []
    for task in done:
        error = task.exception()
        if isinstance(error, Exception):
            log.error("outbox: a delivery's outcome was not recorded", exc_info=error)
        elif error is not None:
            raise error
        else:
            message, delivered = task.result()
            if delivered is not None:
                succeeded.append((message, delivered))
    return succeeded


def _writes(
    delivered: Iterable[tuple[OutboxMessage, Delivered]],
) -> list[tuple[Executable, list[Mapping[str, object]]]]:
    """The notes and effects of the deliveries, one batch per statement."""
    batches: dict[int, tuple[Executable, list[Mapping[str, object]]]] = {}

    def add(statement: Executable, parameters: Mapping[str, object]) -> None:
        batches.setdefault(id(statement), (statement, []))[1].append(parameters)

    for message, done in delivered:
        if done.note is not None:
            add(_NOTED, {"message_id": message.id, "note": _clipped(done.note)})
        if done.effect is not None:
            add(done.effect.statement, done.effect.parameters)
    return list(batches.values())


def _claim_statement(kinds: Sequence[str], batch: int) -> Update:
    """Lease the oldest ``batch`` due messages of ``kinds`` and return them. On PostgreSQL the
    inner select skips rows another worker's claim holds (``FOR UPDATE SKIP LOCKED``); SQLite
    has no row locks (its writers take turns on the database) and renders no locking clause."""
    due = (
        select(outbox.c.id)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.next_attempt_at <= bindparam("now", type_=UtcDateTime()),
            outbox.c.kind.in_(kinds),
        )
        .order_by(outbox.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return (
        update(outbox)
        .where(outbox.c.id.in_(due))
        .values(
            next_attempt_at=bindparam("lease_until", type_=UtcDateTime()),
            claims=outbox.c.claims + 1,
        )
        .returning(
            outbox.c.id,
            outbox.c.kind,
            outbox.c.order_id,
            outbox.c.payload,
            outbox.c.attempts,
            outbox.c.claims,
        )
    )


def _message(row: RowMapping) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        kind=MessageKind(row["kind"]),
        order_id=row["order_id"],
        payload=row["payload"],
        attempts=row["attempts"],
        unrecorded=row["claims"] - 1 > row["attempts"],
    )


def _clipped(text: str) -> str:
    """``text`` fit for ``last_error``: credentials in URLs masked, at most its length."""
    return _CREDENTIALS.sub(r"\1***@", text)[:MAX_ERROR_LENGTH]
