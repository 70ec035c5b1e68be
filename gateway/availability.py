"""Which locations can sell a SKU, and how many units: pure functions over stock and locations.

Available to promise is on hand minus open reservations minus the location's safety stock, never
below zero. A SKU only ever shows at a location that ranges it (its assortment), even when the
ERP holds a stray unit there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from adapters.ports import Location, StockLevel


@dataclass(frozen=True, slots=True)
class LocationStock:
    location: Location
    on_hand: int
    reserved: int
    available: int
    distance_km: float | None


def available_to_promise(on_hand: int, reserved: int, safety_stock: int) -> int:
    return max(0, on_hand - reserved - safety_stock)


Candidate = tuple[Location, float | None]
"""A location in the order the caller wants them, with its distance when one was asked for."""


def stock_at_locations(
    levels: Sequence[StockLevel],
    candidates: Sequence[Candidate],
    ranged_at: Collection[str],
    first: int,
    reserved: Mapping[str, int] | None = None,
    safety_stock: Mapping[str, int] | None = None,
) -> list[LocationStock]:
    """Stock of one SKU at the first ``first`` of ``candidates`` (kept in their order) that
    range it. A ranged location with no ERP row has 0 on hand."""
    on_hand = {level.location_id: level.on_hand for level in levels}
    reserved = reserved or {}
    safety_stock = safety_stock or {}
    found: list[LocationStock] = []
    for location, distance in candidates:
        if len(found) >= first:
            break
        if location.id not in ranged_at:
            continue
        units = on_hand.get(location.id, 0)
        held = reserved.get(location.id, 0)
        atp = available_to_promise(units, held, safety_stock.get(location.id, 0))
        found.append(LocationStock(location, units, held, atp, distance))
    return found


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
