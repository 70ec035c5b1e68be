"""The loyalty tiers the gateway remembers, in its own database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.tiers import KnownTiers, RecalledTier, loyalty_tiers
from tests.adapters.conftest import migrated
from tests.adapters.test_outbox import Clock

NOW = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated gateway database with no tiers (the PostgreSQL one is shared)."""
    async with migrated(database_url, loyalty_tiers) as engine:
        yield engine


@pytest.fixture
def writes(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements that write to ``loyalty_tiers`` from now on."""
    statements: list[str] = []

    def record(*arguments: object) -> None:
        statement = str(arguments[2])
        if statement.lstrip().upper().startswith("INSERT") and "loyalty_tiers" in statement:
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_remembered_tier_is_recalled_with_its_time_by_another_process(
    engine: AsyncEngine,
) -> None:
    # given one process that saw C0016 as GOLD
    await KnownTiers(engine, Clock(NOW)).remember("C0016", "GOLD")

    # when another process recalls C0016's tier
    recalled = await KnownTiers(engine, Clock(NOW + timedelta(hours=5))).recall("C0016")

    # then it gets GOLD, as confirmed at that moment
    assert recalled == RecalledTier("GOLD", NOW)


async def test_a_customer_never_seen_has_no_tier(engine: AsyncEngine) -> None:
    # given a process that saw only C0016
    tiers = KnownTiers(engine, Clock(NOW))
    await tiers.remember("C0016", "GOLD")

    # when it recalls C0017
    recalled = await tiers.recall("C0017")

    # then nothing is known
    assert recalled is None


async def test_a_changed_tier_replaces_the_remembered_one(engine: AsyncEngine) -> None:
    # given C0016 seen as GOLD
    clock = Clock(NOW)
    tiers = KnownTiers(engine, clock)
    await tiers.remember("C0016", "GOLD")

    # when five minutes later the loyalty system says PLATINUM
    clock.now = NOW + timedelta(minutes=5)
    await tiers.remember("C0016", "PLATINUM")

    # then PLATINUM is remembered, from then
    assert await tiers.recall("C0016") == RecalledTier("PLATINUM", NOW + timedelta(minutes=5))


async def test_the_same_tier_is_written_again_only_once_its_write_is_an_hour_old(
    engine: AsyncEngine, writes: list[str]
) -> None:
    # given C0016 seen as GOLD
    clock = Clock(NOW)
    tiers = KnownTiers(engine, clock)
    await tiers.remember("C0016", "GOLD")

    # when GOLD is confirmed again after 59 minutes
    clock.now = NOW + timedelta(minutes=59)
    await tiers.remember("C0016", "GOLD")

    # then nothing is written: the tier keeps its first confirmation
    assert len(writes) == 1
    assert await tiers.recall("C0016") == RecalledTier("GOLD", NOW)

    # when it is confirmed once more an hour after the write
    clock.now = NOW + timedelta(hours=1)
    await tiers.remember("C0016", "GOLD")

    # then that confirmation is written
    assert len(writes) == 2
    assert await tiers.recall("C0016") == RecalledTier("GOLD", NOW + timedelta(hours=1))


async def test_a_page_confirming_one_tier_many_times_at_once_writes_it_once(
    engine: AsyncEngine, writes: list[str]
) -> None:
    # given a process that has never seen C0016
    tiers = KnownTiers(engine, Clock(NOW))

    # when twenty concurrent reads of one page confirm GOLD
    await asyncio.gather(*(tiers.remember("C0016", "GOLD") for _ in range(20)))

    # then one write stored it
    assert len(writes) == 1
    assert await tiers.recall("C0016") == RecalledTier("GOLD", NOW)


async def test_a_confirmation_older_than_the_stored_one_changes_nothing(
    engine: AsyncEngine,
) -> None:
    # given one process that saw C0016 become PLATINUM at 9:40
    later = NOW + timedelta(minutes=10)
    await KnownTiers(engine, Clock(later)).remember("C0016", "PLATINUM")

    # when another process's read from 9:30 (still GOLD) is written after it
    await KnownTiers(engine, Clock(NOW)).remember("C0016", "GOLD")

    # then the newer confirmation stands
    assert await KnownTiers(engine, Clock(later)).recall("C0016") == RecalledTier("PLATINUM", later)


async def test_the_memo_forgets_the_customers_seen_least_recently(
    engine: AsyncEngine, writes: list[str]
) -> None:
    # given a memo of two customers: C1 and C2 written, C1 seen again, then C3 written
    clock = Clock(NOW)
    tiers = KnownTiers(engine, clock, memo_size=2)
    for customer in ("C1", "C2", "C1", "C3"):
        await tiers.remember(customer, "GOLD")
    assert len(writes) == 3

    # when C1 and C2 are confirmed again five minutes later
    clock.now = NOW + timedelta(minutes=5)
    await tiers.remember("C1", "GOLD")
    await tiers.remember("C2", "GOLD")

    # then only C2, forgotten, is written again
    assert len(writes) == 4
    assert await tiers.recall("C1") == RecalledTier("GOLD", NOW)
    assert await tiers.recall("C2") == RecalledTier("GOLD", NOW + timedelta(minutes=5))
