"""What the engine accepts: merged lines, valid requests, a sane policy and candidates."""

from __future__ import annotations

import pytest

from gateway.sourcing import FailureCode, Fulfilment, Policy, plan_sourcing
from tests.unit.sourcing.builders import POLICY, centre, failed, order, planned, sources, store

SHIP = Fulfilment.SHIP_TO_HOME


def test_lines_with_the_same_sku_are_sourced_as_one() -> None:
    candidates = [centre("D1", {"A": 2}, distance=1.0), centre("D2", {"A": 5}, distance=2.0)]

    plan = planned(order(SHIP, [("A", 2), ("A", 1)], candidates))

    assert sources(plan) == {"D2": {"A": 3}}
    assert [(e.sku, e.quantity) for e in plan.explanations] == [("A", 3)]


def test_an_order_without_lines_is_an_invalid_fulfilment() -> None:
    failure = failed(order(SHIP, [], [centre("D1", {"A": 1})]))

    assert failure.code is FailureCode.INVALID_FULFILMENT


@pytest.mark.parametrize("quantity", [0, -1])
def test_a_line_below_one_unit_is_an_invalid_fulfilment(quantity: int) -> None:
    failure = failed(order(SHIP, [("A", 1), ("B", quantity)], [centre("D1", {"A": 1})]))

    assert failure.code is FailureCode.INVALID_FULFILMENT
    assert "B" in failure.message


@pytest.mark.parametrize(
    ("fulfilment", "store_id"),
    [
        (Fulfilment.CARRY_OUT, None),
        (Fulfilment.CARRY_OUT, "S9"),
        (Fulfilment.CARRY_OUT, "D1"),
        (Fulfilment.PICKUP_IN_STORE, None),
        (Fulfilment.PICKUP_IN_STORE, "S9"),
        (Fulfilment.PICKUP_IN_STORE, "D1"),
    ],
)
def test_a_missing_unknown_or_non_store_is_an_invalid_fulfilment(
    fulfilment: Fulfilment, store_id: str | None
) -> None:
    candidates = [store("S1", {"A": 1}), centre("D1", {"A": 1}, capabilities={"SHIP", "PICKUP"})]

    failure = failed(order(fulfilment, {"A": 1}, candidates, store_id))

    assert failure.code is FailureCode.INVALID_FULFILMENT


def test_two_candidates_with_one_id_are_a_bug_of_the_caller() -> None:
    request = order(SHIP, {"A": 1}, [centre("D1", {"A": 1}), centre("D1", {"A": 2})])

    with pytest.raises(ValueError, match="D1"):
        plan_sourcing(request, POLICY)


@pytest.mark.parametrize(
    "limits", [{"max_shipments": 0}, {"max_delivery_stores": 0}, {"radius_km": -1.0}]
)
def test_a_policy_that_allows_no_plan_is_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Policy(**limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("distance", "cost"), [(-1.0, 1.0), (float("inf"), 1.0), (1.0, float("nan")), (1.0, -0.5)]
)
def test_a_candidate_with_a_negative_or_infinite_number_is_refused(
    distance: float, cost: float
) -> None:
    with pytest.raises(ValueError, match="D1"):
        centre("D1", {"A": 1}, distance=distance, cost=cost)
