"""``plan_sourcing``: which location fulfils how many units of each line."""

from __future__ import annotations

from .model import Fulfilment, Plan, Policy, SourcingFailure, SourcingRequest
from .shipping import deliver_from_store, ship_to_home
from .store import carry_out, pickup
from .validation import by_id, canonical_lines


def plan_sourcing(request: SourcingRequest, policy: Policy) -> Plan | SourcingFailure:
    """Source ``request`` under ``policy`` by the rules of its fulfilment (docs/sourcing.md).

    Pure and deterministic: the same request gives the same plan whatever the order of its
    lines and candidates; ties go to the lower location id. Expected failures (stock, an
    invalid request) are returned as ``SourcingFailure``. Raises ValueError only for a bug
    of the caller: two candidates with one location id.
    """
    candidates = by_id(request.candidates)
    lines = canonical_lines(request.lines)
    if isinstance(lines, SourcingFailure):
        return lines
    match request.fulfilment:
        case Fulfilment.CARRY_OUT:
            return carry_out(lines, request.store_id, candidates)
        case Fulfilment.PICKUP_IN_STORE:
            return pickup(lines, request.store_id, candidates, policy)
        case Fulfilment.DELIVERY_FROM_NEAREST_STORE:
            return deliver_from_store(lines, tuple(candidates.values()), policy)
        case Fulfilment.SHIP_TO_HOME:
            return ship_to_home(lines, tuple(candidates.values()), policy)
