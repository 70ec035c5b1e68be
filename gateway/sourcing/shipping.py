"""The multi-location fulfilments: delivery from nearby stores and shipping to the home."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .model import (
    Allocation,
    Candidate,
    FailureCode,
    Fulfilment,
    LineExplanation,
    OrderLine,
    Plan,
    Policy,
    RejectionReason,
    ShortLine,
    SourcingFailure,
)
from .plans import build_plan, count, distance_text, short_text, units
from .screening import Screened, delivery_gate, not_chosen, screen, ship_gate
from .search import UNKNOWN_DISTANCE_KM, Choice, Option, choose

# Reasons that say "this store cannot deliver here today", whatever it holds.
_NOT_NEARBY = frozenset(
    {RejectionReason.NOT_CAPABLE, RejectionReason.OUT_OF_RADIUS, RejectionReason.OVER_CAPACITY}
)


@dataclass(frozen=True, slots=True)
class _Words:
    """How the plan's texts name the locations of one fulfilment."""

    fulfilment: Fulfilment
    one: str  # why a single location was chosen
    many: str  # why a split was chosen; formatted with size= and distance=
    limit: str  # the policy limit, for failures; formatted with size=


DELIVERY_WORDS = _Words(
    Fulfilment.DELIVERY_FROM_NEAREST_STORE,
    "nearest store with DELIVERY holding the whole basket",
    "no store nearby holds the whole basket; split over {size} stores, "
    "the fewest, with the least total distance ({distance})",
    "more than {size} stores",
)
SHIP_WORDS = _Words(
    Fulfilment.SHIP_TO_HOME,
    "nearest location that ships the whole basket in one shipment",
    "no location holds the whole basket; {size} shipments, the fewest, "
    "with the least total distance ({distance})",
    "more than {size} shipments",
)


def deliver_from_store(
    lines: Sequence[OrderLine], candidates: Sequence[Candidate], policy: Policy
) -> Plan | SourcingFailure:
    """The nearest store within the radius holding everything, else the best split over at
    most ``policy.max_delivery_stores`` of them (ranked without cost weights)."""
    screened = screen(candidates, lines, delivery_gate(policy.radius_km), with_cost=False)
    nearby = any(rejection.reason not in _NOT_NEARBY for rejection in screened.rejections)
    if not screened.eligible and not nearby:
        message = f"no store can deliver within {policy.radius_km:g} km today"
        return SourcingFailure(
            FailureCode.NO_STORE_IN_RADIUS, message, rejections=screened.rejections
        )
    exact = len(lines) <= policy.exact_max_lines
    return _from_many(lines, screened, policy.max_delivery_stores, exact, DELIVERY_WORDS)


def ship_to_home(
    lines: Sequence[OrderLine], candidates: Sequence[Candidate], policy: Policy
) -> Plan | SourcingFailure:
    """The best set of at most ``policy.max_shipments`` shipping locations (see
    docs/sourcing.md for the objective)."""
    screened = screen(candidates, lines, ship_gate, with_cost=True)
    exact = len(lines) <= policy.exact_max_lines
    return _from_many(lines, screened, policy.max_shipments, exact, SHIP_WORDS)


def _from_many(
    lines: Sequence[OrderLine], screened: Screened, most: int, exact: bool, words: _Words
) -> Plan | SourcingFailure:
    need = tuple(line.quantity for line in lines)
    choice = choose(screened.options, need, most, exact)
    if choice is None:
        return _failure(lines, screened, most, words)
    chosen = {option.location_id: option for option in choice.options}
    allocations = _assign(lines, choice.options)
    why = f"the plan uses {', '.join(sorted(chosen))}"
    rejections = [
        *screened.rejections,
        *(not_chosen(o, lines, why) for o in screened.options if o.location_id not in chosen),
    ]
    explanations = _explain(lines, allocations, screened, choice, words)
    return build_plan(words.fulfilment, allocations, explanations, rejections, choice.exact)


def _assign(lines: Sequence[OrderLine], options: Sequence[Option]) -> list[Allocation]:
    """Each line from the nearest chosen location first (options are in preference order)."""
    allocations: list[Allocation] = []
    for index, line in enumerate(lines):
        wanted = line.quantity
        for option in options:
            taken = min(option.supply[index], wanted)
            if taken:
                allocations.append(Allocation(line.sku, taken, option.location_id))
                wanted -= taken
    return allocations


def _explain(
    lines: Sequence[OrderLine],
    allocations: Sequence[Allocation],
    screened: Screened,
    choice: Choice,
    words: _Words,
) -> list[LineExplanation]:
    distances = {c.location_id: c.distance_km for c in screened.eligible}
    size = len(choice.options)
    why = words.one if size == 1 else words.many.format(size=size, distance=_total(choice))
    if not choice.exact:
        why += " (found by the heuristic, not proven best)"
    return [
        _line_explanation(line, [a for a in allocations if a.sku == line.sku], distances, why)
        for line in lines
    ]


def _line_explanation(
    line: OrderLine, parts: Sequence[Allocation], distances: dict[str, float | None], why: str
) -> LineExplanation:
    """'<why>: all 3 units from DC1 (310.0 km)' or '<why>: 2 units from ..., 1 unit from ...'."""
    if len(parts) == 1:
        source = f"{units(line)} from {_at(parts[0].location_id, distances)}"
    else:
        source = ", ".join(
            f"{count(a.quantity)} from {_at(a.location_id, distances)}" for a in parts
        )
    location_ids = tuple(a.location_id for a in parts)
    return LineExplanation(line.sku, line.quantity, location_ids, f"{why}: {source}")


def _total(choice: Choice) -> str:
    distances = [option.distance_km for option in choice.options]
    if any(distance >= UNKNOWN_DISTANCE_KM for distance in distances):
        return "some distances unknown"
    return f"{math.fsum(distances):.1f} km"


def _at(location_id: str, distances: dict[str, float | None]) -> str:
    return f"{location_id} ({distance_text(distances[location_id])})"


def _failure(
    lines: Sequence[OrderLine], screened: Screened, most: int, words: _Words
) -> SourcingFailure:
    """OUT_OF_STOCK when the eligible locations together hold too little of some line,
    TOO_MANY_SHIPMENTS when no plan within the limit was found although they hold enough."""
    short = tuple(
        ShortLine(line.sku, line.quantity, total)
        for line in lines
        if (total := sum(c.usable(line.sku) for c in screened.eligible)) < line.quantity
    )
    limit = words.limit.format(size=most)
    why = "together they hold too little" if short else f"no plan of at most {most} covers it"
    unused = (not_chosen(option, lines, why) for option in screened.options)
    rejections = tuple(sorted([*screened.rejections, *unused], key=lambda r: r.location_id))
    if short:
        message = f"not enough stock: {short_text(short)}"
        return SourcingFailure(FailureCode.OUT_OF_STOCK, message, short, (), rejections)
    message = f"no plan covers the basket without {limit}"
    return SourcingFailure(FailureCode.TOO_MANY_SHIPMENTS, message, rejections=rejections)
