"""Shipping to the home: fewest shipments, then distance, then cost, then location id."""

from __future__ import annotations

from itertools import combinations

from gateway.sourcing import (
    SEARCH_BUDGET,
    FailureCode,
    Fulfilment,
    Policy,
    RejectionReason,
    ShortLine,
)
from tests.unit.sourcing.builders import centre, failed, order, planned, reasons, sources, store

SHIP = Fulfilment.SHIP_TO_HOME


def test_one_shipment_beats_a_nearer_split() -> None:
    candidates = [
        store("S1", {"A": 1}, distance=1.0),
        store("S2", {"B": 1}, distance=1.0),
        centre("D1", {"A": 1, "B": 1}, distance=500.0),
    ]

    plan = planned(order(SHIP, {"A": 1, "B": 1}, candidates))

    assert sources(plan) == {"D1": {"A": 1, "B": 1}}


def test_less_total_distance_beats_lower_cost() -> None:
    candidates = [
        centre("D1", {"A": 1}, distance=50.0, cost=1.0),
        store("S1", {"A": 1}, distance=49.0, cost=1.5),
    ]

    plan = planned(order(SHIP, {"A": 1}, candidates))

    assert sources(plan) == {"S1": {"A": 1}}


def test_lower_cost_beats_lower_id_at_equal_distance() -> None:
    candidates = [
        store("A1", {"A": 1}, distance=20.0, cost=1.5),
        centre("B1", {"A": 1}, distance=20.0, cost=1.0),
    ]

    plan = planned(order(SHIP, {"A": 1}, candidates))

    assert sources(plan) == {"B1": {"A": 1}}


def test_equal_plans_are_decided_by_the_lower_location_ids() -> None:
    candidates = [
        centre("D3", {"A": 1}, distance=20.0),
        centre("D2", {"A": 1}, distance=20.0),
        centre("D4", {"B": 1}, distance=20.0),
        centre("D1", {"B": 1}, distance=20.0),
    ]

    plan = planned(order(SHIP, {"A": 1, "B": 1}, candidates))

    assert sources(plan) == {"D1": {"B": 1}, "D2": {"A": 1}}


def test_total_distance_is_summed_exactly_not_in_floating_point() -> None:
    # In floating point 1.0 + 1e-17 == 1.0 + 0.0, which would leave the ids to pick B1.
    candidates = [
        centre("A1", {"A": 1}, distance=1.0),
        centre("B1", {"B": 1}, distance=1e-17),
        centre("B2", {"B": 1}, distance=0.0),
    ]

    plan = planned(order(SHIP, {"A": 1, "B": 1}, candidates))

    assert 1.0 + 1e-17 == 1.0 + 0.0
    assert sources(plan) == {"A1": {"A": 1}, "B2": {"B": 1}}


def test_a_location_without_capacity_is_never_used() -> None:
    candidates = [
        centre("D1", {"A": 5}, distance=1.0, capacity=0),
        centre("D2", {"A": 5}, distance=900.0),
    ]

    plan = planned(order(SHIP, {"A": 5}, candidates))

    assert sources(plan) == {"D2": {"A": 5}}
    assert reasons(plan)["D1"] is RejectionReason.OVER_CAPACITY


def test_an_unranged_sku_is_never_sourced_even_with_atp() -> None:
    candidates = [
        centre("D1", {"A": 5, "B": 5}, distance=1.0, ranged={"B"}),
        centre("D2", {"A": 5}, distance=900.0),
        centre("D3", {"A": 5}, distance=2.0, ranged=()),
    ]

    plan = planned(order(SHIP, {"A": 2}, candidates))

    assert sources(plan) == {"D2": {"A": 2}}
    assert reasons(plan) == {"D1": RejectionReason.NOT_RANGED, "D3": RejectionReason.NOT_RANGED}


def test_a_line_is_split_across_two_locations_nearest_first() -> None:
    candidates = [centre("D1", {"A": 3}, distance=300.0), store("S1", {"A": 2}, distance=4.0)]

    plan = planned(order(SHIP, {"A": 4}, candidates))

    assert sources(plan) == {"D1": {"A": 2}, "S1": {"A": 2}}
    assert plan.explanations[0].location_ids == ("S1", "D1")
    assert "2 units from S1 (4.0 km), 2 units from D1 (300.0 km)" in plan.explanations[0].message


def test_an_unknown_distance_loses_to_any_known_distance() -> None:
    candidates = [centre("D1", {"A": 1}, distance=None), centre("D2", {"A": 1}, distance=9999.0)]

    plan = planned(order(SHIP, {"A": 1}, candidates))

    assert sources(plan) == {"D2": {"A": 1}}


def test_stores_ship_only_with_ship_from_store_and_centres_only_with_ship() -> None:
    candidates = [
        store("S1", {"A": 1}, capabilities={"PICKUP", "DELIVERY"}),
        centre("D1", {"A": 1}, capabilities={"SHIP_FROM_STORE"}),
        store("S2", {"A": 1}, distance=700.0),
    ]

    plan = planned(order(SHIP, {"A": 1}, candidates))

    assert sources(plan) == {"S2": {"A": 1}}
    assert reasons(plan) == {"S1": RejectionReason.NOT_CAPABLE, "D1": RejectionReason.NOT_CAPABLE}


def test_out_of_stock_counts_only_what_eligible_locations_hold() -> None:
    candidates = [
        centre("D1", {"A": 2, "B": 1}),
        centre("D2", {"A": 1}),
        centre("D3", {"A": 50}, capacity=0),
        centre("D4", {"A": 50}, ranged={"B"}),
    ]

    failure = failed(order(SHIP, {"A": 4, "B": 1}, candidates))

    assert failure.code is FailureCode.OUT_OF_STOCK
    assert failure.short == (ShortLine("A", 4, 3),)


def test_stock_spread_over_more_locations_than_allowed_is_too_many_shipments() -> None:
    candidates = [centre(f"D{n}", {"A": 1}) for n in range(4)]

    failure = failed(order(SHIP, {"A": 4}, candidates))

    assert failure.code is FailureCode.TOO_MANY_SHIPMENTS
    assert reasons(failure) == {f"D{n}": RejectionReason.NOT_CHOSEN for n in range(4)}


def test_the_policy_caps_the_number_of_shipments() -> None:
    candidates = [centre(f"D{n}", {"A": 1}) for n in range(4)]

    plan = planned(order(SHIP, {"A": 4}, candidates), Policy(max_shipments=4))

    assert len(plan.shipments) == 4


def test_plan_explains_every_line_and_every_rejected_candidate() -> None:
    candidates = [
        centre("D1", {"A": 2}, distance=120.0),
        store("S1", {"B": 1}, distance=3.5),
        centre("D2", {"A": 0, "B": 0}),
        centre("D3", {"C": 4}),
        centre("D4", {"A": 9}, capacity=0),
        store("S2", {"A": 9}, capabilities={"PICKUP"}),
        centre("D5", {"A": 2}, distance=130.0),
    ]

    plan = planned(order(SHIP, {"A": 2, "B": 1}, candidates))

    assert sources(plan) == {"D1": {"A": 2}, "S1": {"B": 1}}
    assert [(e.sku, e.quantity, e.location_ids) for e in plan.explanations] == [
        ("A", 2, ("D1",)),
        ("B", 1, ("S1",)),
    ]
    assert "2 shipments" in plan.explanations[0].message
    assert "all 2 units from D1 (120.0 km)" in plan.explanations[0].message
    assert "the 1 unit from S1 (3.5 km)" in plan.explanations[1].message
    assert reasons(plan) == {
        "D2": RejectionReason.NO_STOCK,
        "D3": RejectionReason.NOT_RANGED,
        "D4": RejectionReason.OVER_CAPACITY,
        "S2": RejectionReason.NOT_CAPABLE,
        "D5": RejectionReason.NOT_CHOSEN,
    }
    assert all(rejection.message for rejection in plan.rejections)


def test_shipments_group_the_allocations_by_location() -> None:
    candidates = [centre("D2", {"A": 1, "C": 1}, distance=5.0), centre("D1", {"B": 1})]

    plan = planned(order(SHIP, {"C": 1, "B": 1, "A": 1}, candidates))

    assert [(s.location_id, [a.sku for a in s.allocations]) for s in plan.shipments] == [
        ("D1", ["B"]),
        ("D2", ["A", "C"]),
    ]
    assert [(a.location_id, a.sku) for a in plan.allocations] == [
        ("D1", "B"),
        ("D2", "A"),
        ("D2", "C"),
    ]


def test_a_search_over_its_budget_still_returns_a_valid_plan_marked_inexact() -> None:
    # Ten SKUs; 126 near locations each hold a different four of K0-K8 (none dominates
    # another), one far location holds K9. Covering takes 3 shipments, and even proving that
    # 2 cannot do would take more search nodes than the budget allows.
    skus = [f"K{n}" for n in range(10)]
    near = [
        centre("N" + "".join(map(str, four)), {f"K{n}": 1 for n in four}, distance=1.0)
        for four in combinations(range(9), 4)
    ]
    far = centre("F1", {"K9": 1, "K8": 1, "K0": 1, "K1": 1}, distance=5.0)

    plan = planned(order(SHIP, dict.fromkeys(skus, 1), [*near, far]))

    assert len(near) * (len(near) + 1) // 2 > SEARCH_BUDGET
    assert plan.exact is False
    assert sorted(a.sku for a in plan.allocations) == skus
    assert len(plan.shipments) <= 3
    assert "heuristic" in plan.explanations[0].message
