"""Delivery from the nearest store: one store, else a split over two, else an error."""

from __future__ import annotations

from gateway.sourcing import FailureCode, Fulfilment, Policy, RejectionReason, ShortLine
from tests.unit.sourcing.builders import centre, failed, order, planned, reasons, sources, store

DELIVERY = Fulfilment.DELIVERY_FROM_NEAREST_STORE


def test_delivery_takes_the_nearest_store_holding_everything() -> None:
    basket = {"A": 2, "B": 1}
    candidates = [
        store("S1", basket, distance=8.0),
        store("S2", basket, distance=3.0),
        store("S3", {"A": 2}, distance=0.5),
    ]

    plan = planned(order(DELIVERY, basket, candidates))

    assert sources(plan) == {"S2": {"A": 2, "B": 1}}
    assert reasons(plan) == {"S1": RejectionReason.NOT_CHOSEN, "S3": RejectionReason.NOT_CHOSEN}
    assert "nearest store with DELIVERY" in plan.explanations[0].message
    assert "3.0 km" in plan.explanations[0].message


def test_delivery_uses_only_stores_with_delivery_within_the_radius_and_capacity() -> None:
    basket = {"A": 1}
    candidates = [
        store("S1", basket, distance=30.0),
        store("S2", basket, distance=None),
        store("S3", basket, distance=1.0, capabilities={"PICKUP"}),
        store("S4", basket, distance=2.0, capacity=0),
        centre("D1", basket, distance=0.1, capabilities={"SHIP", "DELIVERY"}),
        store("S5", basket, distance=25.0),
    ]

    plan = planned(order(DELIVERY, basket, candidates))

    assert sources(plan) == {"S5": {"A": 1}}
    assert reasons(plan) == {
        "S1": RejectionReason.OUT_OF_RADIUS,
        "S2": RejectionReason.OUT_OF_RADIUS,
        "S3": RejectionReason.NOT_CAPABLE,
        "S4": RejectionReason.OVER_CAPACITY,
        "D1": RejectionReason.NOT_CAPABLE,
    }


def test_delivery_splits_over_two_stores_when_none_holds_everything() -> None:
    candidates = [
        store("S1", {"A": 2}, distance=1.0),
        store("S2", {"B": 1}, distance=5.0),
        store("S3", {"A": 2, "B": 1}, distance=30.0),  # beyond the radius
    ]

    plan = planned(order(DELIVERY, {"A": 2, "B": 1}, candidates))

    assert sources(plan) == {"S1": {"A": 2}, "S2": {"B": 1}}
    assert "split over 2 stores" in plan.explanations[0].message


def test_delivery_split_prefers_least_total_distance_then_lower_ids() -> None:
    candidates = [
        store("S1", {"A": 1}, distance=1.0),
        store("S2", {"B": 1}, distance=9.0),
        store("S3", {"A": 1}, distance=4.0, cost=9.0),
        store("S4", {"B": 1}, distance=6.0, cost=0.1),
        store("S5", {"B": 1}, distance=6.0, cost=0.2),
    ]

    plan = planned(order(DELIVERY, {"A": 1, "B": 1}, candidates))

    # S1+S4 and S1+S5 (7 km) beat S1+S2 (10 km); between them the id decides, not the cost.
    assert sources(plan) == {"S1": {"A": 1}, "S4": {"B": 1}}


def test_delivery_that_needs_more_than_two_stores_fails_without_short_lines() -> None:
    candidates = [store("S1", {"A": 1}), store("S2", {"B": 1}), store("S3", {"C": 1})]

    failure = failed(order(DELIVERY, {"A": 1, "B": 1, "C": 1}, candidates))

    assert failure.code is FailureCode.TOO_MANY_SHIPMENTS
    assert failure.short == ()


def test_delivery_splits_over_as_many_stores_as_the_policy_allows() -> None:
    candidates = [store("S1", {"A": 1}), store("S2", {"B": 1}), store("S3", {"C": 1})]
    policy = Policy(max_delivery_stores=3)

    plan = planned(order(DELIVERY, {"A": 1, "B": 1, "C": 1}, candidates), policy)

    assert sources(plan) == {"S1": {"A": 1}, "S2": {"B": 1}, "S3": {"C": 1}}


def test_delivery_short_of_stock_nearby_lists_the_short_lines() -> None:
    candidates = [
        store("S1", {"A": 1, "B": 4}, distance=2.0),
        store("S2", {"A": 1}, distance=3.0),
        store("S3", {"A": 9}, distance=40.0),  # beyond the radius: does not count
    ]

    failure = failed(order(DELIVERY, {"A": 3, "B": 1}, candidates))

    assert failure.code is FailureCode.OUT_OF_STOCK
    assert failure.short == (ShortLine("A", 3, 2),)


def test_delivery_with_no_store_in_the_radius_says_so() -> None:
    candidates = [store("S1", {"A": 1}, distance=26.0), store("S2", {"A": 1}, capacity=0)]

    failure = failed(order(DELIVERY, {"A": 1}, candidates))

    assert failure.code is FailureCode.NO_STORE_IN_RADIUS
    assert reasons(failure) == {
        "S1": RejectionReason.OUT_OF_RADIUS,
        "S2": RejectionReason.OVER_CAPACITY,
    }
