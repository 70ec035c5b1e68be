"""The pure rules of the OMS's status changes: what each does to an order, and which changes of
a read may be applied (never one past a gap)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.oms_rest import status_changes
from adapters.ports import OmsStatus, OrderStatusChange
from gateway.orders.shipments import Step, in_sequence, status_after, step_for
from gateway.orders.store import OrderStatus

AT = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


def _changes(cursors: list[int]) -> list[OrderStatusChange]:
    return [OrderStatusChange("O-1", OmsStatus.SHIPPED, AT, str(c)) for c in cursors]


@pytest.mark.parametrize(
    ("reported", "current", "step"),
    [
        (OmsStatus.SHIPPED, OrderStatus.ACCEPTED, Step.SHIP),
        (OmsStatus.SHIPPED, OrderStatus.SUBMITTED, Step.SHIP),
        (OmsStatus.SHIPPED, OrderStatus.SHIPPED, Step.NOTHING),
        (OmsStatus.SHIPPED, OrderStatus.CANCELLED, Step.CONFLICT),
        (OmsStatus.CANCELLED, OrderStatus.SUBMITTED, Step.CANCEL),
        (OmsStatus.CANCELLED, OrderStatus.CANCELLED, Step.NOTHING),
        (OmsStatus.CANCELLED, OrderStatus.SHIPPED, Step.CONFLICT),
        (OmsStatus.RECEIVED, OrderStatus.ACCEPTED, Step.NOTHING),
        (OmsStatus.OTHER, OrderStatus.SUBMITTED, Step.NOTHING),
    ],
)
def test_each_report_does_one_thing_to_each_order(
    reported: OmsStatus, current: OrderStatus, step: Step
) -> None:
    assert step_for(reported, current) is step


@given(st.sampled_from(OmsStatus), st.sampled_from(OrderStatus))
def test_a_report_applied_once_does_nothing_when_seen_again(
    reported: OmsStatus, current: OrderStatus
) -> None:
    after = status_after(step_for(reported, current), current)
    assert step_for(reported, after) in (Step.NOTHING, Step.CONFLICT)
    assert status_after(step_for(reported, after), after) is after


@given(st.sampled_from(OrderStatus))
def test_a_finished_order_is_never_changed_by_the_oms(current: OrderStatus) -> None:
    if current in (OrderStatus.SHIPPED, OrderStatus.CANCELLED):
        for reported in OmsStatus:
            assert status_after(step_for(reported, current), current) is current


def test_the_changes_before_a_gap_are_applied_and_the_gap_named() -> None:
    applied, gap = in_sequence("4", _changes([5, 6, 8, 9]))
    assert [change.cursor for change in applied] == ["5", "6"]
    assert gap == ("6", "8")


def test_a_gap_right_after_the_cursor_leaves_nothing_to_apply() -> None:
    assert in_sequence("4", _changes([6, 7])) == ((), ("4", "6"))


def test_a_read_from_the_start_or_of_opaque_cursors_shows_no_gap() -> None:
    assert in_sequence(None, _changes([3, 9]))[1] is None
    opaque = [OrderStatusChange("O-1", OmsStatus.SHIPPED, AT, "a1"), *_changes([2])]
    assert in_sequence("0", opaque) == (tuple(opaque), None)


@given(st.integers(0, 50), st.lists(st.integers(1, 5), max_size=20))
def test_no_change_past_a_gap_is_ever_applied(since: int, steps: list[int]) -> None:
    cursors = [since + sum(steps[: index + 1]) for index in range(len(steps))]
    applied, gap = in_sequence(str(since), _changes(cursors))
    numbers = [since, *(int(change.cursor) for change in applied)]
    assert all(after == before + 1 for before, after in itertools.pairwise(numbers))
    if gap is None:
        assert len(applied) == len(cursors)
    else:
        assert int(gap[1]) == cursors[len(applied)]
        assert int(gap[0]) == numbers[-1]


def test_the_oms_feed_reads_statuses_bookings_and_unknown_codes() -> None:
    body = {
        "changes": [
            {
                "seq": 7,
                "externalOrderId": "O-1",
                "status": "SHIPPED",
                "changedAt": "2031-03-01T09:00:00.000Z",
                "goodsIssue": {"postedAt": "2031-03-01T10:00:01.250000+01:00", "lines": []},
            },
            {
                "seq": 8,
                "externalOrderId": "O-2",
                "status": "PICKED",
                "changedAt": "2031-03-01T09:01:00Z",
            },
        ],
        "lastSeq": 8,
        "hasMore": False,
    }
    shipped, picked = status_changes(body).changes
    assert shipped == OrderStatusChange(
        "O-1", OmsStatus.SHIPPED, AT, "7", datetime(2031, 3, 1, 9, 0, 1, 250000, tzinfo=UTC)
    )
    assert (picked.status, picked.stock_booked_at, status_changes(body).cursor) == (
        OmsStatus.OTHER,
        None,
        "8",
    )


@pytest.mark.parametrize(
    "entry",
    [
        {"seq": 9, "status": 17, "changedAt": "yesterday"},
        {"seq": 9, "externalOrderId": "O-1", "status": "SHIPPED", "changedAt": "2031-03-01T09:00"},
        {
            "seq": "nine",
            "externalOrderId": "O-1",
            "status": "CANCELLED",
            "changedAt": "2031-03-01T09:00Z",
        },
    ],
)
def test_a_malformed_entry_refuses_the_whole_answer(entry: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        status_changes({"changes": [entry], "lastSeq": 9})
