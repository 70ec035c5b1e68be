"""Available to promise, assortment and ordering of stock per location: pure functions."""

from __future__ import annotations

from datetime import time

from hypothesis import given
from hypothesis import strategies as st

from adapters.ports import GeoPoint, Location, LocationKind, OpeningHours
from gateway.availability import available_to_promise, stock_at_locations, total_available
from gateway.geo import distance_km
from gateway.ledger import Position

HOURS = (OpeningHours(1, time(9), time(20)),)


def _location(code: str, kind: LocationKind = LocationKind.STORE) -> Location:
    return Location(code, code, kind, GeoPoint(48.1, 11.5), "80331", frozenset(), 100, HOURS)


def _level(location: str, on_hand: int, reserved: int = 0, safety: int = 0) -> Position:
    return Position("100", location, on_hand, reserved, safety)


def test_a_location_that_does_not_range_the_sku_is_never_shown_even_with_stock() -> None:
    candidates = [(_location("0001"), None), (_location("0002"), None)]
    levels = [_level("0001", 5), _level("0002", 1)]

    found = stock_at_locations(levels, candidates, ranged_at={"0001"}, first=10)

    assert [(s.location.id, s.available) for s in found] == [("0001", 5)]


def test_a_ranged_location_without_a_position_shows_zero() -> None:
    found = stock_at_locations([], [(_location("0007"), 1.5)], {"0007"}, first=5)

    assert [(s.on_hand, s.available, s.distance_km) for s in found] == [(0, 0, 1.5)]


def test_the_candidates_order_is_kept_and_first_counts_only_ranged_locations() -> None:
    candidates = [(_location(code), float(i)) for i, code in enumerate(["9", "3", "5", "1"])]

    found = stock_at_locations([], candidates, ranged_at={"3", "5", "1"}, first=2)

    assert [s.location.id for s in found] == ["3", "5"]


def test_reservations_and_safety_stock_come_off_on_hand() -> None:
    found = stock_at_locations(
        [_level("0001", 10, reserved=3, safety=2)], [(_location("0001"), None)], {"0001"}, first=1
    )

    assert [(s.on_hand, s.reserved, s.available) for s in found] == [(10, 3, 5)]


@given(st.integers(-50, 500), st.integers(0, 500), st.integers(0, 50))
def test_available_to_promise_is_never_negative_nor_above_on_hand(
    on_hand: int, reserved: int, safety: int
) -> None:
    atp = available_to_promise(on_hand, reserved, safety)

    assert 0 <= atp <= max(0, on_hand)


@given(
    st.dictionaries(st.sampled_from(["1", "2", "3", "4"]), st.integers(0, 40)),
    st.sets(st.sampled_from(["1", "2", "3", "4"])),
)
def test_the_total_counts_exactly_the_ranged_locations(
    stock: dict[str, int], ranged: set[str]
) -> None:
    levels = [_level(location, units) for location, units in stock.items()]

    total = total_available(levels, ranged)

    assert total == sum(units for location, units in stock.items() if location in ranged)


def test_distances_are_great_circle_kilometres() -> None:
    # one degree along a meridian, and a quarter of the equator, on a sphere of 6,371 km
    assert round(distance_km(GeoPoint(0, 0), GeoPoint(1, 0)), 2) == 111.2
    assert round(distance_km(GeoPoint(0, 0), GeoPoint(0, 90))) == 10_008
    assert distance_km(GeoPoint(48.1, 11.5), GeoPoint(48.1, 11.5)) == 0.0
