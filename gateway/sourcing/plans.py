"""Putting a plan together: canonical order, shipments, and the texts people read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import groupby

from .model import (
    Allocation,
    Candidate,
    Fulfilment,
    LineExplanation,
    OrderLine,
    Plan,
    Rejection,
    Shipment,
    ShortLine,
)


def build_plan(
    fulfilment: Fulfilment,
    allocations: Iterable[Allocation],
    explanations: Iterable[LineExplanation],
    rejections: Iterable[Rejection],
    exact: bool = True,
) -> Plan:
    """A plan with every tuple in canonical order (see ``Plan``)."""
    ordered = tuple(sorted(allocations, key=lambda a: (a.location_id, a.sku)))
    shipments = tuple(
        Shipment(location_id, tuple(group))
        for location_id, group in groupby(ordered, key=lambda a: a.location_id)
    )
    return Plan(
        fulfilment=fulfilment,
        allocations=ordered,
        shipments=shipments,
        explanations=tuple(sorted(explanations, key=lambda e: e.sku)),
        rejections=tuple(sorted(rejections, key=lambda r: r.location_id)),
        exact=exact,
    )


def whole_from(
    fulfilment: Fulfilment,
    store: Candidate,
    lines: Sequence[OrderLine],
    why: str,
    rejections: Iterable[Rejection],
) -> Plan:
    """Every line from ``store``, which the caller has checked holds them all."""
    allocations = [Allocation(line.sku, line.quantity, store.location_id) for line in lines]
    explanations = [
        LineExplanation(line.sku, line.quantity, (store.location_id,), f"{why}: {units(line)}")
        for line in lines
    ]
    return build_plan(fulfilment, allocations, explanations, rejections)


def shortfalls(store: Candidate, lines: Sequence[OrderLine]) -> tuple[ShortLine, ...]:
    """The lines ``store`` cannot serve in full, with what it holds of each."""
    return tuple(
        ShortLine(line.sku, line.quantity, store.usable(line.sku))
        for line in lines
        if store.usable(line.sku) < line.quantity
    )


def units(line: OrderLine) -> str:
    """'the 1 unit' or 'all 3 units' of a line."""
    return "the 1 unit" if line.quantity == 1 else f"all {line.quantity} units"


def count(quantity: int) -> str:
    return "1 unit" if quantity == 1 else f"{quantity} units"


def distance_text(distance_km: float | None) -> str:
    return "distance unknown" if distance_km is None else f"{distance_km:.1f} km"


def short_text(short: Sequence[ShortLine]) -> str:
    """'B-1 (3 wanted, 1 available), ...' for failure messages."""
    return ", ".join(f"{s.sku} ({s.requested} wanted, {s.available} available)" for s in short)
