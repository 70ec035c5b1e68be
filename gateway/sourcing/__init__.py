"""The sourcing engine: pure functions that decide which locations fulfil an order.

No I/O, no clock, no randomness: callers pass the order lines, the fulfilment and the
candidate locations (stock, assortment, capacity, distance already loaded) with a ``Policy``,
and get a ``Plan`` or a ``SourcingFailure`` back. The rules are in docs/sourcing.md.
"""

from .engine import plan_sourcing
from .model import (
    Allocation,
    Alternative,
    Candidate,
    CandidateKind,
    FailureCode,
    Fulfilment,
    LineExplanation,
    OrderLine,
    Plan,
    Policy,
    Rejection,
    RejectionReason,
    Shipment,
    ShortLine,
    SourcingFailure,
    SourcingRequest,
)
from .search import SEARCH_BUDGET, UNKNOWN_DISTANCE_KM

__all__ = [
    "SEARCH_BUDGET",
    "UNKNOWN_DISTANCE_KM",
    "Allocation",
    "Alternative",
    "Candidate",
    "CandidateKind",
    "FailureCode",
    "Fulfilment",
    "LineExplanation",
    "OrderLine",
    "Plan",
    "Policy",
    "Rejection",
    "RejectionReason",
    "Shipment",
    "ShortLine",
    "SourcingFailure",
    "SourcingRequest",
    "plan_sourcing",
]
