"""Invariants of the sourcing engine over small random instances, and its optimality
against a brute force that tries every set of locations."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sourcing import (
    UNKNOWN_DISTANCE_KM,
    Candidate,
    CandidateKind,
    Fulfilment,
    OrderLine,
    Plan,
    Policy,
    SourcingRequest,
    plan_sourcing,
)

SKUS = "ABCDE"
CAPABILITIES = ["SHIP", "SHIP_FROM_STORE", "DELIVERY", "PICKUP", "CARRY_OUT"]
# Few distinct values, so that ties (and 0.1 + 0.2 against 0.3) are common.
DISTANCES = st.one_of(
    st.sampled_from([1.0, 0.1, 0.2, 0.3, 0.0, 2.5, 30.0, None]),
    st.floats(min_value=0, max_value=60, allow_nan=False),
)
Objective = tuple[int, Fraction, Fraction, tuple[str, ...]]


IDS = st.lists(st.text("abXY1", min_size=1, max_size=2), min_size=2, max_size=6, unique=True)
ATP = st.fixed_dictionaries({sku: st.sampled_from([3, 1, 4, 6, 2, 0]) for sku in SKUS})
# Little stock everywhere: most baskets then need two or three locations.
SCARCE_ATP = st.fixed_dictionaries({sku: st.sampled_from([1, 2, 0]) for sku in SKUS})
UNRANGED = st.frozensets(st.sampled_from(SKUS), max_size=1)
KINDS = st.sampled_from(CandidateKind)
# Mostly every capability, so that most instances have several eligible locations.
SOME_CAPABILITIES = st.one_of(
    st.just(frozenset(CAPABILITIES)),
    st.just(frozenset(CAPABILITIES)),
    st.frozensets(st.sampled_from(CAPABILITIES)),
)
CAPACITIES = st.sampled_from([1, 3, 1, 1, 0])
COSTS = st.sampled_from([1.0, 1.5, 0.5])


@st.composite
def candidates(draw: st.DrawFn, scarce: bool) -> list[Candidate]:
    """Up to 6 candidates. ``scarce``: all capable with capacity, little stock each."""
    found = []
    for location_id in draw(IDS):
        atp = draw(SCARCE_ATP if scarce else ATP)
        found.append(
            Candidate(
                location_id=location_id,
                kind=draw(KINDS),
                distance_km=draw(DISTANCES),
                capabilities=frozenset(CAPABILITIES) if scarce else draw(SOME_CAPABILITIES),
                remaining_capacity=1 if scarce else draw(CAPACITIES),
                cost_weight=draw(COSTS),
                atp=atp,
                ranged=frozenset(atp) - draw(UNRANGED),
            )
        )
    return found


LINES = st.lists(
    st.builds(OrderLine, st.sampled_from(SKUS), st.integers(1, 4)), min_size=1, max_size=4
)
SCARCE_LINES = st.lists(
    st.builds(OrderLine, st.sampled_from(SKUS), st.integers(1, 2)), min_size=2, max_size=4
)
FULFILMENTS = st.sampled_from(Fulfilment)


policies = st.builds(
    Policy,
    max_shipments=st.integers(1, 3),
    radius_km=st.sampled_from([2.5, 25.0, 60.0]),
    max_delivery_stores=st.integers(1, 3),
)


@st.composite
def requests(
    draw: st.DrawFn, fulfilment: Fulfilment | None = None, scarce: bool = False
) -> SourcingRequest:
    found = draw(candidates(scarce))
    ids = [c.location_id for c in found]
    return SourcingRequest(
        lines=draw(SCARCE_LINES if scarce else LINES),
        fulfilment=fulfilment or draw(FULFILMENTS),
        store_id=draw(st.sampled_from([None, "missing", *ids, *ids, *ids])),
        candidates=found,
    )


def held(candidate: Candidate, sku: str) -> int:
    return candidate.atp.get(sku, 0) if sku in candidate.ranged else 0


def merged(request: SourcingRequest) -> Counter[str]:
    wanted: Counter[str] = Counter()
    for line in request.lines:
        wanted[line.sku] += line.quantity
    return wanted


def may_serve(candidate: Candidate, request: SourcingRequest, policy: Policy) -> bool:
    """The eligibility rules, written again from the brief."""
    kind, capabilities = candidate.kind, candidate.capabilities
    is_store = kind is CandidateKind.STORE
    match request.fulfilment:
        case Fulfilment.CARRY_OUT:
            return is_store and candidate.location_id == request.store_id
        case Fulfilment.PICKUP_IN_STORE:
            return (
                is_store and "PICKUP" in capabilities and candidate.location_id == request.store_id
            )
        case Fulfilment.DELIVERY_FROM_NEAREST_STORE:
            distance = candidate.distance_km
            nearby = distance is not None and distance <= policy.radius_km
            return (
                is_store
                and "DELIVERY" in capabilities
                and nearby
                and candidate.remaining_capacity >= 1
            )
        case Fulfilment.SHIP_TO_HOME:
            needed = "SHIP_FROM_STORE" if is_store else "SHIP"
            return needed in capabilities and candidate.remaining_capacity >= 1
    return False  # pragma: no cover


def brute_force(request: SourcingRequest, policy: Policy, with_cost: bool) -> Objective | None:
    """The best objective over every set of eligible locations, or None if none covers."""
    wanted = merged(request)
    pool = [c for c in request.candidates if may_serve(c, request, policy)]
    most = policy.max_shipments if with_cost else policy.max_delivery_stores
    for size in range(1, most + 1):
        ranks = [
            objective(combo, with_cost)
            for combo in combinations(pool, size)
            if all(sum(held(c, sku) for c in combo) >= n for sku, n in wanted.items())
        ]
        if ranks:
            return min(ranks)
    return None


def objective(chosen: Sequence[Candidate], with_cost: bool) -> Objective:
    def distance(c: Candidate) -> Fraction:
        return Fraction(UNKNOWN_DISTANCE_KM if c.distance_km is None else c.distance_km)

    return (
        len(chosen),
        sum((distance(c) for c in chosen), Fraction(0)),
        sum((Fraction(c.cost_weight if with_cost else 0.0) for c in chosen), Fraction(0)),
        tuple(sorted(c.location_id for c in chosen)),
    )


def plan_objective(plan: Plan, request: SourcingRequest, with_cost: bool) -> Objective:
    by_id = {c.location_id: c for c in request.candidates}
    return objective([by_id[s.location_id] for s in plan.shipments], with_cost)


def check_feasible(plan: Plan, request: SourcingRequest, policy: Policy) -> None:
    """Every line covered exactly, within what each location may give, by eligible ones."""
    by_id = {c.location_id: c for c in request.candidates}
    given: Counter[str] = Counter()
    for allocation in plan.allocations:
        location = by_id[allocation.location_id]
        assert may_serve(location, request, policy)
        assert 0 < allocation.quantity <= held(location, allocation.sku)
        given[allocation.sku] += allocation.quantity
    assert given == merged(request)
    limits = {
        Fulfilment.SHIP_TO_HOME: policy.max_shipments,
        Fulfilment.DELIVERY_FROM_NEAREST_STORE: policy.max_delivery_stores,
    }
    assert len(plan.shipments) <= limits.get(request.fulfilment, 1)
    used = [s.location_id for s in plan.shipments]
    rejected = [r.location_id for r in plan.rejections]
    assert sorted(used + rejected) == sorted(by_id)
    assert [e.sku for e in plan.explanations] == sorted(merged(request))
    for explanation in plan.explanations:
        from_plan = [a.location_id for a in plan.allocations if a.sku == explanation.sku]
        assert sorted(explanation.location_ids) == sorted(from_plan)
        assert explanation.message


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(requests(Fulfilment.SHIP_TO_HOME), requests(Fulfilment.SHIP_TO_HOME, scarce=True)),
    policies,
)
def test_ship_to_home_is_optimal_and_fails_only_when_nothing_covers(
    request: SourcingRequest, policy: Policy
) -> None:
    result = plan_sourcing(request, policy)

    best = brute_force(request, policy, with_cost=True)
    if best is None:
        assert not isinstance(result, Plan)
    else:
        assert isinstance(result, Plan)
        assert result.exact
        assert plan_objective(result, request, with_cost=True) == best


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        requests(Fulfilment.DELIVERY_FROM_NEAREST_STORE),
        requests(Fulfilment.DELIVERY_FROM_NEAREST_STORE, scarce=True),
    ),
    policies,
)
def test_store_delivery_is_optimal_and_fails_only_when_nothing_covers(
    request: SourcingRequest, policy: Policy
) -> None:
    result = plan_sourcing(request, policy)

    best = brute_force(request, policy, with_cost=False)
    if best is None:
        assert not isinstance(result, Plan)
    else:
        assert isinstance(result, Plan)
        assert plan_objective(result, request, with_cost=False) == best


@settings(max_examples=400, deadline=None)
@given(requests(), policies)
def test_every_plan_covers_every_line_exactly_from_eligible_locations(
    request: SourcingRequest, policy: Policy
) -> None:
    result = plan_sourcing(request, policy)

    if isinstance(result, Plan):
        check_feasible(result, request, policy)
    else:
        assert result.message


@settings(max_examples=200, deadline=None)
@given(requests(), policies, st.randoms(use_true_random=False))
def test_the_order_of_candidates_and_lines_does_not_change_the_result(
    request: SourcingRequest, policy: Policy, shuffler: random.Random
) -> None:
    shuffled_lines = list(request.lines)
    shuffled_candidates = list(request.candidates)
    shuffler.shuffle(shuffled_lines)
    shuffler.shuffle(shuffled_candidates)
    shuffled = SourcingRequest(
        shuffled_lines, request.fulfilment, request.store_id, shuffled_candidates
    )

    assert plan_sourcing(shuffled, policy) == plan_sourcing(request, policy)


@settings(max_examples=150, deadline=None)
@given(requests(Fulfilment.SHIP_TO_HOME), policies)
def test_splitting_a_line_in_two_does_not_change_the_result(
    request: SourcingRequest, policy: Policy
) -> None:
    first, *rest = request.lines
    halves = [OrderLine(first.sku, 1), OrderLine(first.sku, first.quantity - 1)]
    split_lines = [line for line in halves if line.quantity] + rest
    split = SourcingRequest(split_lines, request.fulfilment, None, request.candidates)

    assert plan_sourcing(split, policy) == plan_sourcing(request, policy)


@settings(max_examples=300, deadline=None)
@given(requests(Fulfilment.SHIP_TO_HOME), policies)
def test_the_heuristic_is_feasible_and_finds_a_single_covering_location(
    request: SourcingRequest, policy: Policy
) -> None:
    heuristic = Policy(max_shipments=policy.max_shipments, exact_max_lines=0)

    result = plan_sourcing(request, heuristic)

    wanted = merged(request)
    single = [
        c
        for c in request.candidates
        if may_serve(c, request, heuristic) and all(held(c, s) >= n for s, n in wanted.items())
    ]
    if isinstance(result, Plan):
        check_feasible(result, request, heuristic)
    assert isinstance(result, Plan) or not single
    if single:
        assert isinstance(result, Plan)
        assert len(result.shipments) == 1


BIG_SKUS = [f"K{n:02d}" for n in range(14)]
BIG_ATP = st.dictionaries(st.sampled_from(BIG_SKUS), st.integers(0, 4), min_size=4)


@st.composite
def big_baskets(draw: st.DrawFn) -> SourcingRequest:
    """11-14 SKUs and up to 8 shipping locations: beyond the exact search's line limit."""
    skus = BIG_SKUS[: draw(st.integers(11, 14))]
    found = []
    for number in range(draw(st.integers(1, 8))):
        atp = draw(BIG_ATP)
        found.append(
            Candidate(
                location_id=f"D{number}",
                kind=CandidateKind.DISTRIBUTION_CENTER,
                distance_km=draw(DISTANCES),
                capabilities=frozenset({"SHIP"}),
                remaining_capacity=1,
                cost_weight=1.0,
                atp=atp,
                ranged=frozenset(atp),
            )
        )
    basket = [OrderLine(sku, draw(st.integers(1, 3))) for sku in skus]
    return SourcingRequest(basket, Fulfilment.SHIP_TO_HOME, None, found)


@settings(max_examples=200, deadline=None)
@given(big_baskets(), st.integers(1, 4))
def test_large_baskets_get_feasible_plans_from_the_heuristic(
    request: SourcingRequest, max_shipments: int
) -> None:
    policy = Policy(max_shipments=max_shipments)

    result = plan_sourcing(request, policy)

    if isinstance(result, Plan):
        check_feasible(result, request, policy)
        assert result.exact is (len(result.shipments) == 1)
    else:
        assert brute_force(request, Policy(max_shipments=1), with_cost=True) is None
