"""Which candidates may serve a multi-location fulfilment, and why the others may not.

Each candidate gets the first reason that applies, in the order of ``RejectionReason``:
capability (and, for store delivery, radius), capacity, assortment, stock. Candidates that
pass become search options; the ones the chosen plan leaves out are ``NOT_CHOSEN``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import Candidate, CandidateKind, OrderLine, Rejection, RejectionReason
from .search import UNKNOWN_DISTANCE_KM, Option

# A fulfilment-specific check: the rejection, or None when the candidate may serve.
Gate = Callable[[Candidate], Rejection | None]


@dataclass(frozen=True, slots=True)
class Screened:
    """``eligible`` candidates (with their search options, same order) and the rejected."""

    eligible: tuple[Candidate, ...]
    options: tuple[Option, ...]
    rejections: tuple[Rejection, ...]


def screen(
    candidates: Sequence[Candidate], lines: Sequence[OrderLine], gate: Gate, with_cost: bool
) -> Screened:
    """Split ``candidates`` into those that may serve ``lines`` and those rejected.
    ``with_cost`` False ranks eligible locations without their cost weight."""
    eligible: list[Candidate] = []
    options: list[Option] = []
    rejections: list[Rejection] = []
    for candidate in candidates:
        rejection = gate(candidate) or _capacity(candidate)
        if rejection is None:
            option = _option(candidate, lines, with_cost)
            if any(option.supply):
                eligible.append(candidate)
                options.append(option)
                continue
            rejection = _no_stock(candidate, lines)
        rejections.append(rejection)
    return Screened(tuple(eligible), tuple(options), tuple(rejections))


def ship_gate(candidate: Candidate) -> Rejection | None:
    """Shipping: distribution centres with SHIP, stores with SHIP_FROM_STORE."""
    needed = "SHIP" if candidate.kind is CandidateKind.DISTRIBUTION_CENTER else "SHIP_FROM_STORE"
    if needed in candidate.capabilities:
        return None
    return _reject(candidate, RejectionReason.NOT_CAPABLE, f"cannot ship (no {needed})")


def delivery_gate(radius_km: float) -> Gate:
    """Store delivery: stores with DELIVERY within ``radius_km`` of the destination."""

    def gate(candidate: Candidate) -> Rejection | None:
        if candidate.kind is not CandidateKind.STORE:
            return _reject(candidate, RejectionReason.NOT_CAPABLE, "not a store")
        if "DELIVERY" not in candidate.capabilities:
            return _reject(candidate, RejectionReason.NOT_CAPABLE, "store without DELIVERY")
        distance = candidate.distance_km
        if distance is None:
            return _reject(candidate, RejectionReason.OUT_OF_RADIUS, "distance unknown")
        if distance > radius_km:
            message = f"{distance:.1f} km away, beyond {radius_km:g} km"
            return _reject(candidate, RejectionReason.OUT_OF_RADIUS, message)
        return None

    return gate


def not_chosen(option: Option, lines: Sequence[OrderLine], why: str) -> Rejection:
    wanted = sum(line.quantity for line in lines)
    message = f"could supply {sum(option.supply)} of {wanted} units; {why}"
    return Rejection(option.location_id, RejectionReason.NOT_CHOSEN, message)


def _capacity(candidate: Candidate) -> Rejection | None:
    if candidate.remaining_capacity >= 1:
        return None
    return _reject(candidate, RejectionReason.OVER_CAPACITY, "no shipment capacity left today")


def _no_stock(candidate: Candidate, lines: Sequence[OrderLine]) -> Rejection:
    """Why a capable candidate holds nothing of the basket."""
    skus = [line.sku for line in lines]
    if not any(sku in candidate.ranged for sku in skus):
        return _reject(candidate, RejectionReason.NOT_RANGED, f"does not range {_listing(skus)}")
    return _reject(candidate, RejectionReason.NO_STOCK, f"no units of {_listing(skus)}")


def _option(candidate: Candidate, lines: Sequence[OrderLine], with_cost: bool) -> Option:
    distance = candidate.distance_km
    atp, ranged = candidate.atp, candidate.ranged
    # Capped at the quantity: more is never used, and tighter offers prune the search more.
    supply = tuple(
        max(min(atp.get(line.sku, 0), line.quantity), 0) if line.sku in ranged else 0
        for line in lines
    )
    return Option(
        location_id=candidate.location_id,
        distance_km=UNKNOWN_DISTANCE_KM if distance is None else distance,
        cost=candidate.cost_weight if with_cost else 0.0,
        supply=supply,
    )


def _reject(candidate: Candidate, reason: RejectionReason, message: str) -> Rejection:
    return Rejection(candidate.location_id, reason, message)


def _listing(skus: Sequence[str]) -> str:
    return ", ".join(skus)
