"""Following change feeds: refused batches, failing sources and the lease, over the gateway's
real database (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.ports import BackendUnavailable, Change, ChangeBatch
from gateway.db import ledger_state
from gateway.readmodel.bus import ChangeBus, ChangeNotice
from gateway.readmodel.feeds import (
    GAP_RETRIES,
    Follower,
    FollowSettings,
    Lease,
    SequencedFeed,
)
from gateway.readmodel.levels import LocalLevel, RedisLink
from gateway.readmodel.model import ReadModel
from legacy.demo import DemoEstate
from tests.adapters.conftest import migrated
from tests.fakes import FakeEstate
from tests.support import REDIS_TEST_URL, missing_service

AT = datetime(2026, 6, 1, tzinfo=UTC)


class ScriptedFeed:
    """A feed that answers the batches it is given, one per read, then nothing new."""

    def __init__(self, batches: Sequence[ChangeBatch | Exception]) -> None:
        self._batches = list(batches)
        self.reads: list[str | None] = []

    async def changes(self, since: str | None) -> ChangeBatch:
        self.reads.append(since)
        if not self._batches:
            return ChangeBatch((), since or "0")
        answer = self._batches[0]
        if isinstance(answer, Exception):
            self._batches.pop(0)
            raise answer
        if len(self._batches) > 1:
            self._batches.pop(0)
        return answer


def _batch(*numbers: int, key: str = "P1") -> ChangeBatch:
    changes = tuple(Change("product", f"{key}-{n}", AT, str(n)) for n in numbers)
    return ChangeBatch(changes, str(numbers[-1]))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated(database_url, ledger_state) as engine:
        yield engine


def _model(truth: DemoEstate) -> tuple[ReadModel, list[ChangeNotice]]:
    estate = FakeEstate.from_demo(truth)
    bus = ChangeBus(None)
    seen: list[ChangeNotice] = []
    bus.listen(seen.append)
    model = ReadModel(estate.catalogue, estate.prices, estate.promotions, bus, LocalLevel(1000))
    return model, seen


async def test_a_batch_that_skips_entries_is_read_again_and_evicts_nothing_until_taken(
    engine: AsyncEngine, truth: DemoEstate
) -> None:
    # given a follower that has read up to entry 2, and a model holding products since
    model, seen = _model(truth)
    feed = ScriptedFeed([_batch(1, 2), _batch(5, 6)])  # 3 and 4 are missing
    follower = Follower(SequencedFeed("pim", feed.changes), model, engine, None, FollowSettings())
    await follower.step()
    codes = [product.code for product in truth.products[:3]]
    await model.products(codes)
    notices_before = len(seen)

    # when it reads the batch with the gap, again and again
    for _ in range(GAP_RETRIES):
        await follower.step()

    # then it was refused until the last read, which took it; the model was never emptied
    assert follower.failures == GAP_RETRIES - 1
    assert feed.reads[1 : 1 + GAP_RETRIES] == ["2"] * GAP_RETRIES
    assert [notice.keys for notice in seen[notices_before:]] == [("P1-5", "P1-6")]
    assert all(model.local.get(f"product:{code}") is not None for code in codes)


async def test_a_failing_feed_is_logged_by_name_and_read_again_from_the_same_cursor(
    engine: AsyncEngine, truth: DemoEstate, caplog: pytest.LogCaptureFixture
) -> None:
    model, seen = _model(truth)
    feed = ScriptedFeed(
        [_batch(1), BackendUnavailable("pricing", "HTTP 503"), _batch(2, key="SKU")]
    )
    follower = Follower(
        SequencedFeed("pricing", feed.changes), model, engine, None, FollowSettings()
    )

    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await follower.step()

    assert feed.reads == [None, "1", "1"]
    assert any("feed pricing" in record.getMessage() for record in caplog.records)
    assert seen[-1].keys == ("SKU-2",)


@pytest.fixture
async def redis_link() -> AsyncIterator[tuple[RedisLink, str]]:
    client = Redis.from_url(REDIS_TEST_URL)
    try:
        await client.ping()
    except OSError as exc:
        missing_service(f"Redis ({exc!r})", "redis-server --daemonize yes --port 6379")
    finally:
        await client.aclose()
    link = RedisLink.from_url(REDIS_TEST_URL, timeout=0.5)
    yield link, f"t{uuid.uuid4().hex[:10]}"
    await link.aclose()


@pytest.mark.redis
async def test_one_instance_holds_a_feed_and_another_takes_it_when_the_lease_lapses(
    redis_link: tuple[RedisLink, str],
) -> None:
    link, namespace = redis_link
    first = Lease(link, namespace, "pim", "instance-a", ttl=0.3)
    second = Lease(link, namespace, "pim", "instance-b", ttl=0.3)

    held = [await first.hold(), await second.hold()]
    renewed = await first.hold()
    await asyncio.sleep(0.4)  # the first stops renewing: it died or hangs
    taken = await second.hold()
    lost = await first.hold()

    assert held == [True, False]
    assert renewed is True
    assert (taken, lost) == (True, False)
