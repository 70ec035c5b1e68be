"""The values the sourcing engine takes and returns: plain frozen dataclasses and enums.

The caller loads the candidates (stock, assortment, capacity, distance) and passes them in;
the engine only decides. Every tuple the engine returns is in a canonical order, so equal
inputs give equal results whatever order the caller listed lines and candidates in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Fulfilment(enum.Enum):
    """How the shopper gets the goods; each has its own sourcing rule (docs/sourcing.md)."""

    CARRY_OUT = "CARRY_OUT"
    PICKUP_IN_STORE = "PICKUP_IN_STORE"
    DELIVERY_FROM_NEAREST_STORE = "DELIVERY_FROM_NEAREST_STORE"
    SHIP_TO_HOME = "SHIP_TO_HOME"


class CandidateKind(enum.Enum):
    """Same values as the location kinds of the ERP, so callers map by value."""

    STORE = "STORE"
    DISTRIBUTION_CENTER = "DISTRIBUTION_CENTER"


@dataclass(frozen=True, slots=True)
class OrderLine:
    """``quantity`` units of ``sku``. Lines with the same SKU are merged into one."""

    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A location that might fulfil (part of) the order.

    ``distance_km`` is from the delivery destination (from the pickup store for pickup), None
    when unknown. ``remaining_capacity`` counts the shipments it can still take today (below 1
    means full). ``cost_weight`` is the relative cost of shipping from it. ``atp`` is what it
    can promise per SKU, already net of reservations and safety stock. A SKU outside
    ``ranged`` is never sourced from it, whatever ``atp`` says.
    """

    location_id: str
    kind: CandidateKind
    distance_km: float | None
    capabilities: frozenset[str]
    remaining_capacity: int
    cost_weight: float
    atp: Mapping[str, int]
    ranged: frozenset[str]

    def __post_init__(self) -> None:
        distance = 0.0 if self.distance_km is None else self.distance_km
        if not (math.isfinite(distance) and distance >= 0):
            raise ValueError(f"{self.location_id}: distance_km must be finite, at least 0")
        if not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ValueError(f"{self.location_id}: cost_weight must be finite, at least 0")

    def usable(self, sku: str) -> int:
        """Units of ``sku`` this location may promise: its ATP if ranged, else none."""
        if sku not in self.ranged:
            return 0
        return max(self.atp.get(sku, 0), 0)


@dataclass(frozen=True, slots=True)
class SourcingRequest:
    """``store_id`` is the till's store (CARRY_OUT) or the pickup store (PICKUP_IN_STORE);
    the other fulfilments ignore it."""

    lines: Sequence[OrderLine]
    fulfilment: Fulfilment
    store_id: str | None
    candidates: Sequence[Candidate]


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of sourcing.

    ``max_shipments``: most locations one SHIP_TO_HOME order ships from.
    ``radius_km``: how far a DELIVERY_FROM_NEAREST_STORE store may be from the destination.
    ``max_delivery_stores``: most stores one store delivery is split over.
    ``alternatives``: how many other pickup stores a failed pickup suggests.
    ``exact_max_lines``: baskets with more lines are sourced by the greedy heuristic.
    """

    max_shipments: int = 3
    radius_km: float = 25.0
    max_delivery_stores: int = 2
    alternatives: int = 3
    exact_max_lines: int = 10

    def __post_init__(self) -> None:
        if self.max_shipments < 1 or self.max_delivery_stores < 1:
            raise ValueError("max_shipments and max_delivery_stores must be at least 1")
        if self.alternatives < 0 or self.exact_max_lines < 0 or self.radius_km < 0:
            raise ValueError("alternatives, exact_max_lines and radius_km must not be negative")


@dataclass(frozen=True, slots=True)
class Allocation:
    """``quantity`` units of ``sku`` come from ``location_id``."""

    sku: str
    quantity: int
    location_id: str


@dataclass(frozen=True, slots=True)
class Shipment:
    """What one location sends (or hands over): its allocations, by SKU."""

    location_id: str
    allocations: tuple[Allocation, ...]


@dataclass(frozen=True, slots=True)
class LineExplanation:
    """Where one (merged) line comes from and why, for people: support, stores, logs."""

    sku: str
    quantity: int
    location_ids: tuple[str, ...]
    message: str


class RejectionReason(enum.Enum):
    """Why a candidate was not used. The first reason that applies is reported."""

    NOT_CAPABLE = "NOT_CAPABLE"  # wrong kind or capability for the fulfilment
    OUT_OF_RADIUS = "OUT_OF_RADIUS"  # too far (or distance unknown) for store delivery
    OVER_CAPACITY = "OVER_CAPACITY"  # can take no more shipments today
    NOT_RANGED = "NOT_RANGED"  # none of the basket's SKUs is in its assortment
    NO_STOCK = "NO_STOCK"  # ranged, but no units of any of the basket's SKUs
    NOT_CHOSEN = "NOT_CHOSEN"  # could have helped, but a better plan did without it


@dataclass(frozen=True, slots=True)
class Rejection:
    location_id: str
    reason: RejectionReason
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Where every unit comes from.

    ``allocations`` are sorted by location id, then SKU; ``shipments`` group them by location
    (sorted by id). ``explanations`` has one entry per merged line, by SKU; ``rejections`` one
    per candidate not used, by location id. ``exact`` is False when the set of locations came
    from the heuristic (large baskets, or a search that hit its budget): still a valid plan,
    not necessarily the best one.
    """

    fulfilment: Fulfilment
    allocations: tuple[Allocation, ...]
    shipments: tuple[Shipment, ...]
    explanations: tuple[LineExplanation, ...]
    rejections: tuple[Rejection, ...]
    exact: bool = True


class FailureCode(enum.Enum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    INVALID_FULFILMENT = "INVALID_FULFILMENT"
    NO_STORE_IN_RADIUS = "NO_STORE_IN_RADIUS"
    # Enough stock in total, but spread over more locations than the policy allows.
    TOO_MANY_SHIPMENTS = "TOO_MANY_SHIPMENTS"


@dataclass(frozen=True, slots=True)
class ShortLine:
    """A line that cannot be served: ``available`` is what the eligible locations hold
    together (for carry-out and pickup: what the one store holds)."""

    sku: str
    requested: int
    available: int


@dataclass(frozen=True, slots=True)
class Alternative:
    """Another pickup store that holds the whole basket; ``distance_km`` from the one asked
    for (None when unknown)."""

    location_id: str
    distance_km: float | None


@dataclass(frozen=True, slots=True)
class SourcingFailure:
    """The order cannot be sourced as asked. ``short`` lists the lines that fall short (by
    SKU), ``alternatives`` other pickup stores (nearest first), ``rejections`` why each
    candidate could not help."""

    code: FailureCode
    message: str
    short: tuple[ShortLine, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    rejections: tuple[Rejection, ...] = ()
