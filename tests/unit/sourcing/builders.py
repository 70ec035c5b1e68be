"""Small builders for sourcing tests: candidates, requests, and reading plans back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from gateway.sourcing import (
    Candidate,
    CandidateKind,
    Fulfilment,
    OrderLine,
    Plan,
    Policy,
    RejectionReason,
    SourcingFailure,
    SourcingRequest,
    plan_sourcing,
)

STORE_CAPABILITIES = frozenset({"CARRY_OUT", "PICKUP", "DELIVERY", "SHIP_FROM_STORE"})
POLICY = Policy()


def store(
    location_id: str,
    stock: Mapping[str, int] | None = None,
    *,
    distance: float | None = 1.0,
    capabilities: Iterable[str] = STORE_CAPABILITIES,
    capacity: int = 10,
    cost: float = 1.5,
    ranged: Iterable[str] | None = None,
) -> Candidate:
    """A store that ranges what it stocks unless ``ranged`` says otherwise."""
    return _candidate(
        CandidateKind.STORE, location_id, stock, distance, capabilities, capacity, cost, ranged
    )


def centre(
    location_id: str,
    stock: Mapping[str, int] | None = None,
    *,
    distance: float | None = 100.0,
    capabilities: Iterable[str] = ("SHIP",),
    capacity: int = 10,
    cost: float = 1.0,
    ranged: Iterable[str] | None = None,
) -> Candidate:
    """A distribution centre that ranges what it stocks unless ``ranged`` says otherwise."""
    return _candidate(
        CandidateKind.DISTRIBUTION_CENTER,
        location_id,
        stock,
        distance,
        capabilities,
        capacity,
        cost,
        ranged,
    )


def _candidate(
    kind: CandidateKind,
    location_id: str,
    stock: Mapping[str, int] | None,
    distance: float | None,
    capabilities: Iterable[str],
    capacity: int,
    cost: float,
    ranged: Iterable[str] | None,
) -> Candidate:
    atp = dict(stock or {})
    return Candidate(
        location_id=location_id,
        kind=kind,
        distance_km=distance,
        capabilities=frozenset(capabilities),
        remaining_capacity=capacity,
        cost_weight=cost,
        atp=atp,
        ranged=frozenset(atp if ranged is None else ranged),
    )


def order(
    fulfilment: Fulfilment,
    lines: Mapping[str, int] | Sequence[tuple[str, int]],
    candidates: Sequence[Candidate],
    store_id: str | None = None,
) -> SourcingRequest:
    pairs = lines.items() if isinstance(lines, Mapping) else lines
    return SourcingRequest(
        lines=[OrderLine(sku, quantity) for sku, quantity in pairs],
        fulfilment=fulfilment,
        store_id=store_id,
        candidates=candidates,
    )


def planned(request: SourcingRequest, policy: Policy = POLICY) -> Plan:
    result = plan_sourcing(request, policy)
    assert isinstance(result, Plan), result
    return result


def failed(request: SourcingRequest, policy: Policy = POLICY) -> SourcingFailure:
    result = plan_sourcing(request, policy)
    assert isinstance(result, SourcingFailure), result
    return result


def sources(plan: Plan) -> dict[str, dict[str, int]]:
    """location id -> sku -> units, read from the allocations."""
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for allocation in plan.allocations:
        found[allocation.location_id][allocation.sku] = allocation.quantity
    return dict(found)


def reasons(result: Plan | SourcingFailure) -> dict[str, RejectionReason]:
    return {rejection.location_id: rejection.reason for rejection in result.rejections}
