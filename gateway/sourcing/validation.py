"""Turning a request into canonical lines and the asked-for store, or INVALID_FULFILMENT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .model import Candidate, CandidateKind, FailureCode, OrderLine, SourcingFailure


def canonical_lines(lines: Sequence[OrderLine]) -> tuple[OrderLine, ...] | SourcingFailure:
    """The lines merged by SKU (quantities added) and sorted by SKU.

    Merging, rather than refusing, because a basket may well list one SKU twice (two adds to
    cart) and what sourcing needs is the total per SKU.
    """
    if not lines:
        return invalid("the order has no lines")
    if any(not line.sku for line in lines):
        return invalid("every line needs a SKU")
    wrong = sorted({line.sku for line in lines if line.quantity < 1})
    if wrong:
        return invalid(f"quantities must be at least 1 ({', '.join(wrong)})")
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(OrderLine(sku, totals[sku]) for sku in sorted(totals))


def by_id(candidates: Sequence[Candidate]) -> dict[str, Candidate]:
    """The candidates keyed and ordered by location id. Raises ValueError on a repeated id:
    that is a bug of the caller, not something a shopper can fix."""
    found: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=lambda candidate: candidate.location_id):
        if candidate.location_id in found:
            raise ValueError(f"location {candidate.location_id} is a candidate twice")
        found[candidate.location_id] = candidate
    return found


def asked_store(
    store_id: str | None, candidates: Mapping[str, Candidate], capability: str | None
) -> Candidate | SourcingFailure:
    """The store the request names, which must be a candidate, a store, and have
    ``capability`` (when given)."""
    if store_id is None:
        return invalid("this fulfilment needs a store")
    store = candidates.get(store_id)
    if store is None:
        return invalid(f"store {store_id} is unknown")
    if store.kind is not CandidateKind.STORE:
        return invalid(f"{store_id} is not a store")
    if capability is not None and capability not in store.capabilities:
        return invalid(f"store {store_id} does not offer {capability}")
    return store


def invalid(message: str) -> SourcingFailure:
    return SourcingFailure(FailureCode.INVALID_FULFILMENT, message)
