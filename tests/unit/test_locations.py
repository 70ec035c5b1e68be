"""The location directory: nearest first, remembered, and kept when a refresh fails."""

from __future__ import annotations

from datetime import time

from adapters.ports import BackendUnavailable, GeoPoint, Location, LocationKind, OpeningHours
from gateway.locations import LocationDirectory
from tests.fakes import FakeInventory

HOURS = (OpeningHours(1, time(9), time(20)),)


def _location(code: str, lat: float, kind: LocationKind = LocationKind.STORE) -> Location:
    capabilities = frozenset({"PICKUP"} if kind is LocationKind.STORE else {"SHIP"})
    return Location(code, code, kind, GeoPoint(lat, 11.5), "80000", capabilities, 10, HOURS)


LOCATIONS = [
    _location("0001", 48.30),
    _location("0002", 48.10),
    _location("0003", 48.20),
    _location("9001", 48.11, LocationKind.DISTRIBUTION_CENTER),
]


async def test_near_is_nearest_first_filtered_by_radius_kind_and_capability() -> None:
    directory = LocationDirectory(FakeInventory(LOCATIONS, []))
    point = GeoPoint(48.10, 11.5)

    everything = await directory.near(point)
    stores = await directory.near(point, radius_km=12, kind=LocationKind.STORE)
    shipping = await directory.near(point, capability="SHIP")

    assert [loc.id for loc, _ in everything] == ["0002", "9001", "0003", "0001"]
    assert [loc.id for loc, _ in stores] == ["0002", "0003"]
    assert [loc.id for loc, _ in shipping] == ["9001"]


async def test_the_directory_is_read_once_within_its_ttl() -> None:
    inventory = FakeInventory(LOCATIONS, [])
    now = [0.0]
    directory = LocationDirectory(inventory, ttl=60, clock=lambda: now[0])

    await directory.all()
    await directory.near(GeoPoint(48.1, 11.5))
    now[0] = 59
    await directory.stores()
    first_reads = inventory.calls["locations"]
    now[0] = 61
    await directory.all()

    assert (first_reads, inventory.calls["locations"]) == (1, 2)


async def test_a_failed_refresh_keeps_the_directory_read_before() -> None:
    inventory = FakeInventory(LOCATIONS, [])
    now = [0.0]
    directory = LocationDirectory(inventory, ttl=60, clock=lambda: now[0])
    await directory.all()

    inventory.fail_with = BackendUnavailable("erp", "down")
    now[0] = 120
    kept = await directory.all()

    assert [loc.id for loc in kept] == ["0001", "0002", "0003", "9001"]
