"""The one-store fulfilments: carry-out at the till's store and pickup at the chosen store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .model import (
    Alternative,
    Candidate,
    CandidateKind,
    FailureCode,
    Fulfilment,
    OrderLine,
    Plan,
    Policy,
    Rejection,
    RejectionReason,
    ShortLine,
    SourcingFailure,
)
from .plans import short_text, shortfalls, whole_from
from .validation import asked_store


def carry_out(
    lines: Sequence[OrderLine], store_id: str | None, candidates: Mapping[str, Candidate]
) -> Plan | SourcingFailure:
    """Everything from the till's store, which needs no capability: the shopper is in it."""
    store = asked_store(store_id, candidates, capability=None)
    if isinstance(store, SourcingFailure):
        return store
    short = shortfalls(store, lines)
    if short:
        message = f"the till's store {store.location_id} is short of {short_text(short)}"
        return SourcingFailure(
            FailureCode.OUT_OF_STOCK, message, short, rejections=(_short_at(store, short),)
        )
    others = _others(store, candidates, "carry-out leaves from the till's store only")
    why = f"carry-out from the till's store {store.location_id}"
    return whole_from(Fulfilment.CARRY_OUT, store, lines, why, others)


def pickup(
    lines: Sequence[OrderLine],
    store_id: str | None,
    candidates: Mapping[str, Candidate],
    policy: Policy,
) -> Plan | SourcingFailure:
    """Everything at the pickup store; if it falls short, the nearest other pickup stores
    that hold the whole basket are offered instead."""
    store = asked_store(store_id, candidates, capability="PICKUP")
    if isinstance(store, SourcingFailure):
        return store
    short = shortfalls(store, lines)
    if short:
        alternatives = _alternatives(store, lines, candidates, policy.alternatives)
        message = f"pickup store {store.location_id} is short of {short_text(short)}"
        rejection = _short_at(store, short)
        return SourcingFailure(FailureCode.OUT_OF_STOCK, message, short, alternatives, (rejection,))
    others = _others(store, candidates, f"pickup is at {store.location_id}")
    why = f"pickup at {store.location_id}, which holds the whole basket"
    return whole_from(Fulfilment.PICKUP_IN_STORE, store, lines, why, others)


def _alternatives(
    store: Candidate, lines: Sequence[OrderLine], candidates: Mapping[str, Candidate], most: int
) -> tuple[Alternative, ...]:
    """Other stores with PICKUP holding every line: nearest first (unknown distances
    last), ties by id."""
    able = [
        candidate
        for candidate in candidates.values()
        if candidate.location_id != store.location_id
        and candidate.kind is CandidateKind.STORE
        and "PICKUP" in candidate.capabilities
        and not shortfalls(candidate, lines)
    ]
    able.sort(key=_nearest_first)
    return tuple(Alternative(c.location_id, c.distance_km) for c in able[:most])


def _nearest_first(candidate: Candidate) -> tuple[bool, float, str]:
    distance = candidate.distance_km
    return (distance is None, 0.0 if distance is None else distance, candidate.location_id)


def _short_at(store: Candidate, short: Sequence[ShortLine]) -> Rejection:
    unranged = any(line.sku not in store.ranged for line in short)
    reason = RejectionReason.NOT_RANGED if unranged else RejectionReason.NO_STOCK
    return Rejection(store.location_id, reason, f"short of {short_text(short)}")


def _others(
    store: Candidate, candidates: Mapping[str, Candidate], why: str
) -> tuple[Rejection, ...]:
    return tuple(
        Rejection(location_id, RejectionReason.NOT_CHOSEN, why)
        for location_id in candidates
        if location_id != store.location_id
    )
