"""Which locations can sell a SKU, and how many units: pure functions over stock and locations.

Available to promise is on hand minus open reservations minus the location's safety stock, never
below zero. A SKU only ever shows at a location that ranges it (its assortment), even when the
ERP holds a stray unit there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from adapters.ports import GeoPoint, Location, LocationKind, StockLevel
from gateway.geo import distance_km


@dataclass(frozen=True, slots=True)
class StockQuery:
    """What a caller asks: near a point (and within a radius), or at named locations."""

    near: GeoPoint | None = None
    radius_km: float | None = None
    location_ids: Collection[str] | None = None
    first: int = 10


@dataclass(frozen=True, slots=True)
class LocationStock:
    location: Location
    on_hand: int
    reserved: int
    available: int
    distance_km: float | None


def available_to_promise(on_hand: int, reserved: int, safety_stock: int) -> int:
    return max(0, on_hand - reserved - safety_stock)


def stock_at_locations(
    levels: Sequence[StockLevel],
    locations: Sequence[Location],
    ranged_at: Collection[str],
    query: StockQuery,
    reserved: Mapping[str, int] | None = None,
    safety_stock: Mapping[str, int] | None = None,
) -> list[LocationStock]:
    """Stock of one SKU at the locations that range it and match ``query``: stores only unless
    ``query.location_ids`` names others; nearest first when ``query.near`` is given (ties by
    id), by id otherwise; at most ``query.first``. A ranged location with no ERP row has 0."""
    on_hand = {level.location_id: level.on_hand for level in levels}
    reserved = reserved or {}
    safety_stock = safety_stock or {}
    found = []
    for location in _candidates(locations, ranged_at, query):
        distance = None if query.near is None else distance_km(query.near, location.point)
        if distance is not None and query.radius_km is not None and distance > query.radius_km:
            continue
        units = on_hand.get(location.id, 0)
        held = reserved.get(location.id, 0)
        atp = available_to_promise(units, held, safety_stock.get(location.id, 0))
        found.append(LocationStock(location, units, held, atp, distance))
    found.sort(key=lambda stock: (stock.distance_km or 0.0, stock.location.id))
    return found[: max(0, query.first)]


def _candidates(
    locations: Sequence[Location], ranged_at: Collection[str], query: StockQuery
) -> list[Location]:
    if query.location_ids is not None:
        wanted = set(query.location_ids)
        return [loc for loc in locations if loc.id in wanted and loc.id in ranged_at]
    return [loc for loc in locations if loc.kind is LocationKind.STORE and loc.id in ranged_at]


def total_available(
    levels: Sequence[StockLevel],
    ranged_at: Collection[str],
    reserved: Mapping[str, int] | None = None,
    safety_stock: Mapping[str, int] | None = None,
) -> int:
    """Units available to promise over every location (stores and distribution centres) that
    ranges the SKU."""
    reserved = reserved or {}
    safety_stock = safety_stock or {}
    return sum(
        available_to_promise(
            level.on_hand,
            reserved.get(level.location_id, 0),
            safety_stock.get(level.location_id, 0),
        )
        for level in levels
        if level.location_id in ranged_at
    )
