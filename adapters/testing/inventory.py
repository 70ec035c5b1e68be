"""The contract of ``InventoryPort``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.ports import (
    GeoPoint,
    InventoryPort,
    Location,
    LocationKind,
    OpeningHours,
    StockChanges,
    StockLevel,
)
from adapters.testing.checks import (
    Lookup,
    assert_aware,
    assert_exact_type,
    assert_hashable,
    assert_text,
    check_concurrent,
    check_duplicates,
    check_empty,
    check_large_batch,
    check_unknown_absent,
    lookup_known,
)
from adapters.testing.sample import ConformanceSample, require

PAGE = 4
PAGES = 6
SCAN = 2_000
"""Rows of the stock feed scanned for negative quantities."""


class InventoryContract:
    """What every ``InventoryPort`` must do. Subclass it as ``Test...`` and provide two
    fixtures: ``inventory`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``skus`` that have stock rows and ``location_ids``)."""

    pytestmark = pytest.mark.asyncio

    async def test_is_an_inventory_port(self, inventory: InventoryPort) -> None:
        assert isinstance(inventory, InventoryPort)

    async def test_stock_levels_answer_known_skus_per_location(
        self, inventory: InventoryPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        found = await lookup_known(inventory.stock_levels, skus, "stock_levels")
        known = {location.id for location in await inventory.locations()}
        for sku, levels in found.items():
            assert isinstance(levels, Sequence), f"stock_levels[{sku!r}] is not a sequence"
            places = [level.location_id for level in levels]
            assert len(set(places)) == len(places), f"stock_levels[{sku!r}]: a location twice"
            assert set(places) <= known, f"{sku!r}: unknown locations {set(places) - known}"
            for level in levels:
                assert_level(level, f"stock_levels[{sku!r}]")
                assert level.sku == sku, f"stock_levels[{sku!r}] holds {level.sku!r}"

    async def test_stock_levels_leave_unknown_skus_out(
        self, inventory: InventoryPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], len(skus) + 2)
        await check_unknown_absent(inventory.stock_levels, skus, unknown, "stock_levels")
        await check_duplicates(_sorted_levels(inventory), skus, "stock_levels")
        await check_empty(inventory.stock_levels, "stock_levels")

    async def test_stock_levels_in_a_large_batch_equal_asked_alone(
        self, inventory: InventoryPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], 250)
        await check_large_batch(_sorted_levels(inventory), skus, unknown, "stock_levels")

    async def test_stock_levels_answer_concurrent_lookups(
        self, inventory: InventoryPort, sample: ConformanceSample
    ) -> None:
        await check_concurrent(_sorted_levels(inventory), _skus(sample), "stock_levels")

    async def test_locations_are_ordered_by_id(
        self, inventory: InventoryPort, sample: ConformanceSample
    ) -> None:
        locations = await inventory.locations()
        ids = [location.id for location in locations]
        assert ids == sorted(set(ids)), "locations are not ordered by id, or repeat"
        missing = set(require(sample.location_ids, "location_ids", "InventoryContract"))
        assert not missing - set(ids), f"sample locations missing: {missing - set(ids)}"
        for location in locations:
            assert_location(location, f"location {location.id!r}")

    async def test_stock_changes_are_oldest_first_within_the_limit(
        self, inventory: InventoryPort
    ) -> None:
        changes = await inventory.stock_changes(None, limit=PAGE * PAGES)
        assert_stock_changes(changes, "stock_changes(None)")
        assert len(changes.levels) <= PAGE * PAGES, "more rows than the limit"
        moments = [level.updated_at for level in changes.levels]
        assert moments == sorted(moments), "stock changes are not oldest first"

    async def test_stock_is_never_negative(self, inventory: InventoryPort) -> None:
        # Legacy stock goes below zero (sold before booked in); the port never shows it.
        changes = await inventory.stock_changes(None, limit=SCAN)
        for level in changes.levels:
            assert_level(level, "stock_changes(None)")
        levels = await inventory.stock_levels(sorted({row.sku for row in changes.levels}))
        for sku, found in levels.items():
            for level in found:
                assert_level(level, f"stock_levels[{sku!r}]")

    async def test_stock_changes_pages_follow_on_without_gaps(
        self, inventory: InventoryPort
    ) -> None:
        whole = await inventory.stock_changes(None, limit=PAGE * PAGES)
        paged: list[StockLevel] = []
        cursor: str | None = None
        for _ in range(PAGES):
            page = await inventory.stock_changes(cursor, limit=PAGE)
            assert_stock_changes(page, f"stock_changes after {cursor!r}")
            assert len(page.levels) <= PAGE, "more rows than the limit"
            paged.extend(page.levels)
            cursor = page.cursor
        assert paged == list(whole.levels), "small pages differ from one large read"

    async def test_stock_changes_agree_with_stock_levels(self, inventory: InventoryPort) -> None:
        changes = await inventory.stock_changes(None, limit=PAGE * PAGES)
        levels = await inventory.stock_levels(sorted({row.sku for row in changes.levels}))
        for row in changes.levels:
            assert row in levels.get(row.sku, ()), f"{row} is not in stock_levels"

    async def test_aclose_can_be_called(self, inventory: InventoryPort) -> None:
        await inventory.aclose()


def assert_level(level: object, what: str) -> None:
    """A ``StockLevel`` with a whole, never negative quantity."""
    assert_exact_type(level, StockLevel, what)
    assert isinstance(level, StockLevel)
    assert_text(level.sku, f"{what} sku")
    assert_text(level.location_id, f"{what} location_id")
    assert type(level.on_hand) is int, f"{what}: on_hand {level.on_hand!r} is not an int"
    assert level.on_hand >= 0, f"{what}: negative stock {level.on_hand}"
    assert_aware(level.updated_at, f"{what} updated_at")


def assert_location(location: object, what: str) -> None:
    assert_exact_type(location, Location, what)
    assert isinstance(location, Location)
    assert_hashable(location, what)
    assert_text(location.id, f"{what} id")
    assert type(location.name) is str, f"{what} name"
    assert_exact_type(location.kind, LocationKind, f"{what} kind")
    assert_exact_type(location.point, GeoPoint, f"{what} point")
    assert -90 <= location.point.lat <= 90, f"{what}: latitude {location.point.lat}"
    assert -180 <= location.point.lon <= 180, f"{what}: longitude {location.point.lon}"
    assert type(location.capabilities) is frozenset, f"{what}: capabilities not a frozenset"
    assert location.daily_capacity >= 0, f"{what}: negative capacity"
    days = [hours.weekday for hours in location.opening_hours]
    assert len(set(days)) == len(days), f"{what}: a weekday is listed twice"
    for hours in location.opening_hours:
        assert_exact_type(hours, OpeningHours, f"{what} opening hours")
        assert 1 <= hours.weekday <= 7, f"{what}: weekday {hours.weekday}"
        assert hours.opens < hours.closes, f"{what}: closes before it opens on {hours.weekday}"


def assert_stock_changes(changes: object, what: str) -> None:
    assert_exact_type(changes, StockChanges, what)
    assert isinstance(changes, StockChanges)
    assert_hashable(changes, what)
    assert type(changes.cursor) is str, f"{what}: cursor {changes.cursor!r} is not a str"
    for level in changes.levels:
        assert_level(level, what)


def _sorted_levels(inventory: InventoryPort) -> Lookup[tuple[StockLevel, ...]]:
    async def lookup(skus: Sequence[str]) -> dict[str, tuple[StockLevel, ...]]:
        # The order of a SKU's levels is not part of the contract; compare them in one order.
        found = await inventory.stock_levels(skus)
        return {sku: tuple(sorted(levels, key=_by_location)) for sku, levels in found.items()}

    return lookup


def _by_location(level: StockLevel) -> str:
    return level.location_id


def _skus(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.skus, "skus", "InventoryContract")
