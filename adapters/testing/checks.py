"""Assertions shared by the contracts: value shapes, batch lookups and change feeds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from adapters.ports import Change, ChangeBatch, Money

Value = TypeVar("Value")
Lookup = Callable[[Sequence[str]], Awaitable[Mapping[str, Value]]]
Normalise = Callable[[Value], object]

LARGE_BATCH = 250
"""Keys in one "large" lookup: above any batch cap a legacy system plausibly has."""

MAX_FEED_BATCHES = 1_000
"""A change feed still returning entries after this many reads is taken to never end."""

_CURRENCY = re.compile(r"[A-Z]{3}")


# --------------------------------------------------------------------------- value shapes


def assert_exact_type(value: object, expected: type, what: str) -> None:
    """``value`` is an instance of exactly ``expected`` (a port type, not a look-alike)."""
    assert type(value) is expected, f"{what}: expected {expected.__name__}, got {value!r}"


def assert_hashable(value: object, what: str) -> None:
    """Frozen all the way down: tuples and frozensets, never lists, sets or dicts."""
    try:
        hash(value)
    except TypeError as exc:
        raise AssertionError(f"{what} holds a mutable field: {value!r}") from exc


def assert_text(value: object, what: str) -> None:
    assert type(value) is str, f"{what}: expected a str, got {value!r}"
    assert value.strip(), f"{what}: expected a non-blank str, got {value!r}"


def assert_aware(moment: object, what: str) -> None:
    """A datetime with a time zone: naive datetimes cannot be compared across systems."""
    assert isinstance(moment, datetime), f"{what}: expected a datetime, got {moment!r}"
    assert moment.utcoffset() is not None, f"{what}: {moment!r} has no time zone"


def assert_money(money: object, what: str) -> None:
    """A ``Money`` with a finite ``Decimal`` amount and an ISO 4217-shaped currency."""
    assert_exact_type(money, Money, what)
    assert isinstance(money, Money)
    assert type(money.amount) is Decimal, f"{what}: amount {money.amount!r} is not a Decimal"
    assert money.amount.is_finite(), f"{what}: amount {money.amount!r} is not finite"
    assert _CURRENCY.fullmatch(money.currency), f"{what}: currency {money.currency!r}"


def assert_currency(currency: object, what: str) -> None:
    assert isinstance(currency, str), f"{what}: currency {currency!r} is not a str"
    assert _CURRENCY.fullmatch(currency), f"{what}: currency {currency!r} is not 3 capitals"


def assert_mapping(result: object, asked: Iterable[str], what: str) -> None:
    """A Mapping whose keys are among the keys asked for, with no None values."""
    assert isinstance(result, Mapping), f"{what}: expected a Mapping, got {type(result)}"
    extra = set(result) - set(asked)
    assert not extra, f"{what}: answered keys that were not asked: {sorted(extra)[:10]}"
    empty = sorted(key for key, value in result.items() if value is None)
    assert not empty, f"{what}: unknown keys must be absent, not None: {empty[:10]}"


# --------------------------------------------------------------------------- batch lookups


async def lookup_known(
    lookup: Lookup[Value], known: Sequence[str], what: str
) -> Mapping[str, Value]:
    """Ask for the sample's keys: every one is answered, nothing else is."""
    result = await lookup(list(known))
    assert_mapping(result, known, what)
    missing = sorted(set(known) - set(result))
    assert not missing, f"{what}: keys from the sample are missing: {missing}"
    return result


async def check_unknown_absent(
    lookup: Lookup[Value], known: Sequence[str], unknown: Sequence[str], what: str
) -> None:
    """Unknown keys mixed with known ones are left out, without an error."""
    asked = [key for pair in zip(unknown, known, strict=False) for key in pair]
    asked += list(unknown[len(known) :]) + list(known[len(unknown) :])
    result = await lookup(asked)
    assert_mapping(result, asked, what)
    assert set(result) == set(known), f"{what}: expected exactly {sorted(known)}"
    only_unknown = await lookup(list(unknown))
    assert dict(only_unknown) == {}, f"{what}: unknown keys answered: {sorted(only_unknown)}"


async def check_duplicates(lookup: Lookup[Value], known: Sequence[str], what: str) -> None:
    """Asking for a key several times answers it once, as asking for it once does."""
    once = await lookup(list(known))
    repeated = await lookup([key for key in known for _ in range(3)] + list(reversed(known)))
    assert_mapping(repeated, known, what)
    assert dict(repeated) == dict(once), f"{what}: duplicates changed the answer"


async def check_empty(lookup: Lookup[Value], what: str) -> None:
    result = await lookup([])
    assert isinstance(result, Mapping), f"{what}: expected a Mapping, got {type(result)}"
    assert dict(result) == {}, f"{what}: nothing asked, something answered"


async def check_large_batch(
    lookup: Lookup[Value],
    known: Sequence[str],
    unknown: Sequence[str],
    what: str,
    normalise: Normalise[Value] = lambda value: value,
) -> None:
    """A batch of ``LARGE_BATCH`` keys, the known ones spread across it so that every chunk
    an adapter cuts holds some, answers each key as asking for it alone does."""
    asked = spread(known, unknown, LARGE_BATCH)
    batch = await lookup(asked)
    assert_mapping(batch, asked, what)
    assert set(batch) == set(known), f"{what}: a large batch lost or invented keys"
    for key in known:
        alone = await lookup([key])
        assert set(alone) == {key}, f"{what}: {key!r} asked alone was not answered"
        assert normalise(alone[key]) == normalise(batch[key]), f"{what}: {key!r} differs"


async def check_concurrent(
    lookup: Lookup[Value],
    known: Sequence[str],
    what: str,
    normalise: Normalise[Value] = lambda value: value,
) -> None:
    """Overlapping lookups running at once (as the gateway's loaders do) answer as one by one."""
    subsets = [list(known[start:]) + list(known[:start]) for start in range(len(known))]
    subsets = (subsets * 8)[:8]
    sequential = [await lookup(keys) for keys in subsets]
    concurrent = await asyncio.gather(*(lookup(keys) for keys in subsets))
    for alone, together in zip(sequential, concurrent, strict=True):
        assert {key: normalise(value) for key, value in together.items()} == {
            key: normalise(value) for key, value in alone.items()
        }, f"{what}: concurrent lookups answered differently"


def spread(known: Sequence[str], filler: Sequence[str], size: int) -> list[str]:
    """``size`` keys: ``filler`` with the ``known`` keys placed evenly across it."""
    assert len(filler) + len(known) >= size, "not enough filler keys"
    keys = list(filler[: size - len(known)])
    step = max(1, size // max(1, len(known)))
    for index, key in enumerate(known):
        keys.insert(min(len(keys), index * step + step // 2), key)
    return keys


# --------------------------------------------------------------------------- change feeds


FeedReader = Callable[[str | None], Awaitable[ChangeBatch]]


async def walk_feed(read: FeedReader, what: str) -> list[Change]:
    """Read a change feed from the start to its end, checking each batch; return every change."""
    changes: list[Change] = []
    cursor: str | None = None
    for _ in range(MAX_FEED_BATCHES):
        batch = await read(cursor)
        assert_change_batch(batch, what)
        if not batch.changes:
            again = await read(batch.cursor)
            assert not again.changes, f"{what}: the cursor of an empty batch went backwards"
            return _checked_walk(changes, what)
        assert batch.cursor != cursor, f"{what}: a non-empty batch did not move the cursor"
        changes.extend(batch.changes)
        cursor = batch.cursor
    raise AssertionError(f"{what}: still returning changes after {MAX_FEED_BATCHES} reads")


async def assert_followable(read: FeedReader, lookup: Lookup[object], what: str) -> None:
    """What the gateway's feed follower needs of a feed (docs/read-model.md): read from the
    start to its end, an idle read keeps the cursor it was given (the follower stores it with
    compare and set), and the keys of its entries are keys the port's lookup answers (an
    entry that names something else would evict nothing)."""
    changes = await walk_feed(read, what)
    cursor = changes[-1].cursor if changes else (await read(None)).cursor
    for _ in range(2):
        idle = await read(cursor)
        assert not idle.changes, f"{what}: a read after the last entry found {idle.changes}"
        assert idle.cursor == cursor, (
            f"{what}: an idle read moved the cursor {cursor} -> {idle.cursor}"
        )
    keys = list(dict.fromkeys(change.key for change in changes[-20:]))
    if keys:
        found = await lookup(keys)
        assert found, f"{what}: the lookup answers none of the feed's keys {keys[:5]}"


def assert_change_batch(batch: object, what: str) -> None:
    assert_exact_type(batch, ChangeBatch, what)
    assert isinstance(batch, ChangeBatch)
    assert_hashable(batch, what)
    assert type(batch.cursor) is str, f"{what}: cursor {batch.cursor!r} is not a str"
    for change in batch.changes:
        assert_exact_type(change, Change, f"{what} entry")
        assert_text(change.entity, f"{what} entity")
        assert_text(change.key, f"{what} key")
        assert_aware(change.at, f"{what} at")
        assert_text(change.cursor, f"{what} entry cursor")


def _checked_walk(changes: list[Change], what: str) -> list[Change]:
    cursors = [change.cursor for change in changes]
    assert len(set(cursors)) == len(cursors), f"{what}: an entry was returned twice"
    moments = [change.at for change in changes]
    assert moments == sorted(moments), f"{what}: entries are not oldest first"
    return changes
