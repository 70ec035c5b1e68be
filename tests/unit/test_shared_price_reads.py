"""Orders' fresh prices: concurrent lookups of a zone share calls, and none is answered by a
call that was already on its way when it asked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ports import BackendRejected, Money, PartialAnswer, Price
from gateway.orders.prices import SharedPriceReads

AT = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Engine:
    """A pricing engine whose every answer says which call made it: the price of each SKU is
    the call's number. Calls come back when the test lets them (``release``)."""

    started: list[tuple[int, tuple[str, ...], str | None]] = field(default_factory=list)
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    out: dict[str | None, int] = field(default_factory=dict)
    most_out: dict[str | None, int] = field(default_factory=dict)
    failure: Exception | None = None
    unknown: frozenset[str] = frozenset()

    async def prices(self, skus: Sequence[str], store: str | None) -> Mapping[str, Price]:
        number = len(self.started) + 1
        self.started.append((number, tuple(skus), store))
        self.out[store] = self.out.get(store, 0) + 1
        self.most_out[store] = max(self.most_out.get(store, 0), self.out[store])
        gate = self.gates.setdefault(number, asyncio.Event())
        try:
            await gate.wait()
        finally:
            self.out[store] -= 1
        if self.failure is not None:
            raise self.failure
        return {sku: _price(sku, number) for sku in skus if sku not in self.unknown}

    def release(self, number: int) -> None:
        self.gates.setdefault(number, asyncio.Event()).set()

    def release_all(self) -> None:
        for number in range(1, len(self.started) + 1):
            self.release(number)


def _price(sku: str, call: int) -> Price:
    return Price(sku, Money(Decimal(call), "EUR"), None, "BASE", AT)


def _calls(answer: Mapping[str, Price]) -> set[int]:
    return {int(price.current.amount) for price in answer.values()}


async def _turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_lookup_alone_goes_at_once_with_its_own_skus() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices)
    lookup = asyncio.create_task(shared(["A", "B"], "0001"))
    await _turns()
    assert engine.started == [(1, ("A", "B"), "0001")]
    engine.release(1)
    assert set(await lookup) == {"A", "B"}


async def test_lookups_that_ask_while_a_call_is_out_share_the_next_call_and_not_that_one() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices)
    first = asyncio.create_task(shared(["A"], "0001"))
    await _turns()
    later = [asyncio.create_task(shared(skus, "0001")) for skus in (["A", "B"], ["C"], ["B"])]
    await _turns()
    assert len(engine.started) == 1  # one call of the zone at a time: the others wait

    engine.release(1)
    await _turns()
    assert engine.started[1] == (2, ("A", "B", "C"), "0001")
    engine.release(2)
    answers = [await lookup for lookup in later]

    assert _calls(await first) == {1}
    assert [set(answer) for answer in answers] == [{"A", "B"}, {"C"}, {"B"}]
    assert all(_calls(answer) == {2} for answer in answers)
    assert shared.calls == 2


async def test_zones_do_not_wait_for_each_other() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices)
    lookups = [asyncio.create_task(shared(["A"], store)) for store in ("0001", None, "0002")]
    await _turns()
    assert sorted(str(store) for _, _, store in engine.started) == ["0001", "0002", "None"]
    engine.release_all()
    assert [set(await lookup) for lookup in lookups] == [{"A"}] * 3


async def test_more_calls_per_zone_go_at_once_when_allowed() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices, calls_per_zone=2)
    first = asyncio.create_task(shared(["A"], None))
    await _turns()
    second = asyncio.create_task(shared(["B"], None))
    await _turns()
    third = asyncio.create_task(shared(["C"], None))
    await _turns()
    assert [skus for _, skus, _ in engine.started] == [("A",), ("B",)]
    engine.release(2)
    await _turns()
    assert [skus for _, skus, _ in engine.started] == [("A",), ("B",), ("C",)]
    engine.release_all()
    assert [_calls(await lookup) for lookup in (first, second, third)] == [{1}, {2}, {3}]


async def test_a_failed_call_fails_every_lookup_that_went_with_it() -> None:
    engine = Engine(failure=BackendRejected("pricing", "no such store", code="UNKNOWN_STORE"))
    shared = SharedPriceReads(engine.prices)
    lookups = [asyncio.create_task(shared([sku], "9999")) for sku in ("A", "B")]
    await _turns()
    engine.release_all()
    for lookup in lookups:
        with pytest.raises(BackendRejected, match="no such store"):
            await lookup


async def test_a_call_answered_in_part_fails_only_the_lookups_of_what_was_not_answered() -> None:
    found = {"A": _price("A", 1)}
    engine = Engine(failure=PartialAnswer("pricing", "1 of 2 calls failed", found, ["B"]))
    shared = SharedPriceReads(engine.prices)
    answered = asyncio.create_task(shared(["A"], None))
    short = asyncio.create_task(shared(["A", "B"], None))
    await _turns()
    engine.release_all()

    assert set(await answered) == {"A"}
    with pytest.raises(PartialAnswer) as raised:
        await short
    assert set(raised.value.found) == {"A"}
    assert raised.value.unanswered == ("B",)


async def test_unknown_skus_are_absent_from_the_answer() -> None:
    engine = Engine(unknown=frozenset({"X"}))
    shared = SharedPriceReads(engine.prices)
    lookup = asyncio.create_task(shared(["A", "X"], None))
    await _turns()
    engine.release_all()
    assert set(await lookup) == {"A"}


async def test_a_lookup_given_up_on_leaves_the_others_their_answer() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices)
    given_up = asyncio.create_task(shared(["A"], None))
    kept = asyncio.create_task(shared(["B"], None))
    await _turns()
    given_up.cancel()
    engine.release_all()
    assert set(await kept) == {"B"}
    with pytest.raises(asyncio.CancelledError):
        await given_up
    # and the zone goes on: the next lookup is answered by a call of its own
    after = asyncio.create_task(shared(["C"], None))
    await _turns()
    engine.release_all()
    assert _calls(await after) == {2}


async def test_closing_cancels_the_calls_on_their_way_and_their_lookups() -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices)
    lookup = asyncio.create_task(shared(["A"], None))
    await _turns()
    await shared.aclose()
    with pytest.raises(asyncio.CancelledError):
        await lookup


def test_a_zone_needs_a_call() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        SharedPriceReads(Engine().prices, calls_per_zone=0)


Step = tuple[str, int, int]  # ("ask", zone, sku set) or ("release", call, _)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.integers(0, 2), st.integers(1, 7)),
        st.tuples(st.just("release"), st.integers(1, 12), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(1, 3))
def test_every_lookup_is_answered_by_a_call_that_started_after_it_asked(
    plan: list[Step], calls_per_zone: int
) -> None:
    asyncio.run(_run_plan(plan, calls_per_zone))


async def _run_plan(plan: list[Step], calls_per_zone: int) -> None:
    engine = Engine()
    shared = SharedPriceReads(engine.prices, calls_per_zone=calls_per_zone)
    zones: list[str | None] = [None, "0001", "0002"]
    asked: list[tuple[asyncio.Task[Mapping[str, Price]], list[str], str | None, int]] = []
    for action, first, second in plan:
        if action == "ask":
            skus = [sku for bit, sku in enumerate("ABC") if second & (1 << bit)]
            zone = zones[first]
            # Calls started so far: the answer must come from a later one.
            asked.append((asyncio.create_task(shared(skus, zone)), skus, zone, len(engine.started)))
        else:
            engine.release(first)
        await _turns()
    while any(not task.done() for task, *_ in asked):
        engine.release_all()
        await _turns()

    for task, skus, zone, started_before in asked:
        answer = task.result()
        assert list(answer) == skus
        (call,) = _calls(answer)
        number, sent, sent_zone = engine.started[call - 1]
        assert number > started_before
        assert sent_zone == zone
        assert set(skus) <= set(sent)
    assert all(most <= calls_per_zone for most in engine.most_out.values())
    assert shared.calls == len(engine.started) <= len(asked)
