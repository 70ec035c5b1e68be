"""The store and distribution-centre directory: ERP master data, held in memory.

Locations change a few times a year, and every availability question needs them, so the gateway
reads them once and refreshes them at most every ``ttl`` seconds. If a refresh fails, the last
directory stays in use (master data this stale is harmless) and the failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from adapters.ports import BackendError, GeoPoint, InventoryPort, Location, LocationKind
from gateway.geo import distance_km

log = logging.getLogger(__name__)

NEAR_MEMORY = 1024
NearKey = tuple[GeoPoint, float | None, str | None, LocationKind | None]


class LocationDirectory:
    def __init__(
        self,
        inventory: InventoryPort,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inventory = inventory
        self._ttl = ttl
        self._clock = clock
        self._locations: tuple[Location, ...] | None = None
        self._by_id: dict[str, Location] = {}
        self._stores: tuple[Location, ...] = ()
        self._near: dict[NearKey, tuple[tuple[Location, float], ...]] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def all(self) -> Sequence[Location]:
        """Every location, ordered by id. Raises BackendError only if never loaded."""
        if self._locations is None or self._clock() - self._loaded_at > self._ttl:
            await self._refresh()
        assert self._locations is not None
        return self._locations

    async def by_id(self) -> Mapping[str, Location]:
        await self.all()
        return self._by_id

    async def near(
        self,
        point: GeoPoint,
        radius_km: float | None = None,
        capability: str | None = None,
        kind: LocationKind | None = None,
    ) -> Sequence[tuple[Location, float]]:
        """Locations (of ``kind``, with ``capability``) within ``radius_km`` of ``point``,
        nearest first, ties by id. Remembered per question until the directory is refreshed:
        every variant of a listing asks the same one."""
        await self.all()
        found = self.fresh_near(point, radius_km, capability, kind)
        assert found is not None
        return found

    def fresh_near(
        self,
        point: GeoPoint,
        radius_km: float | None = None,
        capability: str | None = None,
        kind: LocationKind | None = None,
    ) -> Sequence[tuple[Location, float]] | None:
        """What ``near`` answers, at once, or None when that needs a (re)load first."""
        if not self._fresh():
            return None
        key = (point, radius_km, capability, kind)
        found = self._near.get(key)
        if found is None:
            assert self._locations is not None
            found = _nearest(self._locations, point, radius_km, capability, kind)
            if len(self._near) >= NEAR_MEMORY:
                self._near.clear()
            self._near[key] = found
        return found

    def fresh_stores(self) -> Sequence[Location] | None:
        """What ``stores`` answers, at once, or None when that needs a (re)load first."""
        return self._stores if self._fresh() else None

    def _fresh(self) -> bool:
        return self._locations is not None and self._clock() - self._loaded_at <= self._ttl

    async def stores(self) -> Sequence[Location]:
        """Stores only (no distribution centres), ordered by id."""
        await self.all()
        return self._stores

    async def _refresh(self) -> None:
        async with self._lock:
            if self._locations is not None and self._clock() - self._loaded_at <= self._ttl:
                return
            try:
                locations = tuple(await self._inventory.locations())
            except BackendError:
                if self._locations is None:
                    raise
                log.warning("location refresh failed; keeping the directory read before")
                self._loaded_at = self._clock()
                return
            self._locations = locations
            self._by_id = {location.id: location for location in locations}
            self._stores = tuple(loc for loc in locations if loc.kind is LocationKind.STORE)
            self._near.clear()
            self._loaded_at = self._clock()


def _nearest(
    locations: Sequence[Location],
    point: GeoPoint,
    radius_km: float | None,
    capability: str | None,
    kind: LocationKind | None,
) -> tuple[tuple[Location, float], ...]:
    found = []
    for location in locations:
        if capability is not None and capability not in location.capabilities:
            continue
        if kind is not None and location.kind is not kind:
            continue
        distance = distance_km(point, location.point)
        if radius_km is None or distance <= radius_km:
            found.append((location, distance))
    found.sort(key=lambda pair: (pair[1], pair[0].id))
    return tuple(found)
