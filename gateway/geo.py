"""Distances on the earth's surface, for "nearest store" questions."""

from __future__ import annotations

import math
from functools import lru_cache

from adapters.ports import GeoPoint

EARTH_RADIUS_KM = 6371.0088


@lru_cache(maxsize=65_536)  # every variant of a listing asks for the same few hundred pairs
def distance_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle (haversine) distance between two points, in kilometres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
