"""Which locations can sell a SKU, and how many units: pure functions over stock and locations.

Available to promise is on hand minus open reservations minus the location's safety stock, never
below zero; the positions come from the gateway's inventory ledger (``gateway.ledger``). A SKU
only ever shows at a location that ranges it (its assortment), even when the ERP holds a stray
unit there.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from adapters.ports import Location


class Holding(Protocol):
    """What a location holds of one SKU (``gateway.ledger.Position`` is one)."""

    @property
    def location_id(self) -> str: ...
    @property
    def on_hand(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def safety_stock(self) -> int: ...


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
    holdings: Sequence[Holding],
    candidates: Sequence[Candidate],
    ranged_at: Collection[str],
    first: int,
) -> list[LocationStock]:
    """Stock of one SKU at the first ``first`` of ``candidates`` (kept in their order) that
    range it. A ranged location the ledger has no position for has 0 on hand."""
    by_location = {holding.location_id: holding for holding in holdings}
    found: list[LocationStock] = []
    for location, distance in candidates:
        if len(found) >= first:
            break
        if location.id not in ranged_at:
            continue
        holding = by_location.get(location.id)
        if holding is None:
            found.append(LocationStock(location, 0, 0, 0, distance))
            continue
        atp = available_to_promise(holding.on_hand, holding.reserved, holding.safety_stock)
        found.append(LocationStock(location, holding.on_hand, holding.reserved, atp, distance))
    return found


def total_available(holdings: Sequence[Holding], ranged_at: Collection[str]) -> int:
    """Units available to promise over every location (stores and distribution centres) that
    ranges the SKU."""
    return sum(
        available_to_promise(holding.on_hand, holding.reserved, holding.safety_stock)
        for holding in holdings
        if holding.location_id in ranged_at
    )
