"""Carry-out and pickup: the whole basket from one named store."""

from __future__ import annotations

from gateway.sourcing import (
    Alternative,
    FailureCode,
    Fulfilment,
    Policy,
    RejectionReason,
    ShortLine,
)
from tests.unit.sourcing.builders import centre, failed, order, planned, reasons, sources, store

CARRY_OUT = Fulfilment.CARRY_OUT
PICKUP = Fulfilment.PICKUP_IN_STORE


def test_carry_out_takes_everything_from_the_tills_store() -> None:
    till = store("S2", {"A": 2, "B": 1})
    nearer_and_fuller = store("S1", {"A": 9, "B": 9}, distance=0.1)

    plan = planned(order(CARRY_OUT, {"A": 2, "B": 1}, [till, nearer_and_fuller], "S2"))

    assert sources(plan) == {"S2": {"A": 2, "B": 1}}
    assert reasons(plan) == {"S1": RejectionReason.NOT_CHOSEN}
    assert [e.location_ids for e in plan.explanations] == [("S2",), ("S2",)]


def test_carry_out_needs_no_capability_at_the_tills_store() -> None:
    till = store("S1", {"A": 1}, capabilities=())

    plan = planned(order(CARRY_OUT, {"A": 1}, [till], "S1"))

    assert sources(plan) == {"S1": {"A": 1}}


def test_carry_out_short_lists_each_short_line_with_what_the_store_holds() -> None:
    till = store("S1", {"A": 1, "B": 5, "C": 4}, ranged={"A", "B"})
    elsewhere = store("S2", {"A": 9, "C": 9})

    failure = failed(order(CARRY_OUT, {"A": 3, "B": 5, "C": 2}, [till, elsewhere], "S1"))

    assert failure.code is FailureCode.OUT_OF_STOCK
    assert failure.short == (ShortLine("A", 3, 1), ShortLine("C", 2, 0))
    assert reasons(failure) == {"S1": RejectionReason.NOT_RANGED}


def test_pickup_serves_the_whole_basket_at_the_pickup_store() -> None:
    pickup_store = store("S1", {"A": 3})

    plan = planned(order(PICKUP, {"A": 3}, [pickup_store, store("S2", {"A": 3})], "S1"))

    assert sources(plan) == {"S1": {"A": 3}}
    assert "S1" in plan.explanations[0].message
    assert "all 3 units" in plan.explanations[0].message


def test_pickup_at_a_store_without_pickup_is_an_invalid_fulfilment() -> None:
    no_pickup = store("S1", {"A": 3}, capabilities={"CARRY_OUT"})

    failure = failed(order(PICKUP, {"A": 1}, [no_pickup], "S1"))

    assert failure.code is FailureCode.INVALID_FULFILMENT
    assert "PICKUP" in failure.message


def test_pickup_short_offers_the_three_nearest_other_pickup_stores_holding_the_basket() -> None:
    basket = {"A": 2, "B": 1}
    candidates = [
        store("P0", {"A": 1, "B": 1}),
        store("S1", basket, distance=4.0),
        store("S2", basket, distance=1.5),
        store("S3", {"A": 2}, distance=0.5),  # holds only part of the basket
        store("S4", basket, distance=0.7, capabilities={"DELIVERY"}),  # no PICKUP
        store("S5", basket, distance=3.0),
        store("S6", basket, distance=9.0),
        centre("D1", basket, distance=0.2),  # not a store
    ]

    failure = failed(order(PICKUP, basket, candidates, "P0"))

    assert failure.code is FailureCode.OUT_OF_STOCK
    assert failure.short == (ShortLine("A", 2, 1),)
    assert failure.alternatives == (
        Alternative("S2", 1.5),
        Alternative("S5", 3.0),
        Alternative("S1", 4.0),
    )


def test_pickup_alternatives_put_unknown_distances_last_and_break_ties_by_id() -> None:
    basket = {"A": 1}
    candidates = [
        store("P0"),
        store("S9", basket, distance=None),
        store("S3", basket, distance=2.0),
        store("S2", basket, distance=2.0),
    ]

    failure = failed(order(PICKUP, basket, candidates, "P0"), Policy(alternatives=5))

    assert [a.location_id for a in failure.alternatives] == ["S2", "S3", "S9"]


def test_pickup_offers_no_more_alternatives_than_the_policy_allows() -> None:
    basket = {"A": 1}
    candidates = [store("P0"), store("S1", basket), store("S2", basket)]

    failure = failed(order(PICKUP, basket, candidates, "P0"), Policy(alternatives=1))

    assert failure.alternatives == (Alternative("S1", 1.0),)
