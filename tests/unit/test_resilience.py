"""The guard around backend calls: retry budget, circuit breaker, deadline, partial answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ports import BackendRejected, BackendTimedOut, BackendUnavailable, PartialAnswer
from gateway.resilience import (
    BreakerState,
    CallPolicy,
    CircuitBreaker,
    CircuitOpen,
    Guard,
    RetryBudget,
    deadline,
    guard,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(
    calls=st.integers(min_value=0, max_value=500),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    floor=st.sampled_from([0.0, 1.0, 3.0]),
)
def test_the_budget_never_allows_more_retries_than_its_share_of_calls(
    calls: int, ratio: float, floor: float
) -> None:
    clock = Clock()
    budget = RetryBudget(ratio=ratio, floor=floor, window=10.0, clock=clock)
    for _ in range(calls):
        budget.deposit()
    retries = 0
    while budget.withdraw():
        retries += 1
        assert retries <= calls + 10_000  # it ends

    assert retries <= calls * ratio + floor * 10.0
    assert retries >= int(calls * ratio + floor * 10.0) - 1


def test_the_budget_forgets_calls_older_than_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, floor=0.0, window=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    clock.now += 11

    assert not budget.withdraw()


def test_the_breaker_opens_on_a_failure_ratio_and_probes_once_to_close() -> None:
    clock = Clock()
    policy = CallPolicy(min_calls=10, failure_ratio=0.8, open_for=5.0)
    breaker = CircuitBreaker(policy, clock)
    for _ in range(9):
        assert breaker.admit()
        breaker.record(False)
    assert breaker.state is BreakerState.CLOSED  # fewer calls than min_calls
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admit()

    clock.now += 5.0
    assert breaker.admit()  # the probe
    assert not breaker.admit()  # only one at a time
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit()


def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CallPolicy(min_calls=1, open_for=2.0), clock)
    breaker.record(False)
    clock.now += 2.0
    assert breaker.admit()
    breaker.record(False)

    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(2.0)


def test_half_the_calls_failing_does_not_open_the_default_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CallPolicy(), clock)
    for number in range(200):
        breaker.record(number % 2 == 0)

    assert breaker.state is BreakerState.CLOSED


class Flaky:
    """A batch port whose calls fail as scripted: an exception, or None for an answer."""

    def __init__(self, script: Sequence[BaseException | None]) -> None:
        self.script = list(script)
        self.asked: list[list[str]] = []

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> dict[str, int]:
        self.asked.append(list(skus))
        failure = self.script.pop(0) if self.script else None
        if isinstance(failure, PartialAnswer):
            raise PartialAnswer(
                "pricing", "half", {sku: len(sku) for sku in skus[:1]}, list(skus[1:])
            )
        if failure is not None:
            raise failure
        return {sku: len(sku) for sku in skus}

    async def earn(self, customer: str) -> str:
        failure = self.script.pop(0) if self.script else None
        if failure is not None:
            raise failure
        return customer

    async def aclose(self) -> None: ...


def _guarded(port: Flaky, **policy: Any) -> Any:
    settings = CallPolicy(backoff=0.0, **policy)
    return guard(port, Guard("pricing", settings))


async def test_a_read_is_retried_and_a_partial_answer_asks_only_for_the_rest() -> None:
    port = Flaky([PartialAnswer("pricing", "", {}, ()), None])
    prices = _guarded(port)

    found = await prices.prices(["a", "bb", "ccc"])

    assert found == {"a": 1, "bb": 2, "ccc": 3}
    assert port.asked == [["a", "bb", "ccc"], ["bb", "ccc"]]


async def test_what_was_answered_is_kept_when_the_retries_run_out() -> None:
    unavailable = BackendUnavailable("pricing", "down")
    port = Flaky([PartialAnswer("pricing", "", {}, ()), unavailable, unavailable])
    prices = _guarded(port, retries=2)

    with pytest.raises(PartialAnswer) as raised:
        await prices.prices(["a", "bb", "ccc"])

    assert raised.value.found == {"a": 1}
    assert raised.value.unanswered == ("bb", "ccc")


async def test_writes_and_refusals_are_not_retried() -> None:
    port = Flaky([BackendUnavailable("loyalty", "down"), BackendRejected("pricing", "no", "X")])
    guarded = _guarded(port)

    with pytest.raises(BackendUnavailable):
        await guarded.earn("C1")
    with pytest.raises(BackendRejected):
        await guarded.prices(["a"])

    assert port.asked == [["a"]]


async def test_no_retry_once_the_budget_is_spent() -> None:
    port = Flaky([BackendUnavailable("pricing", "down")] * 100)
    prices = _guarded(port, retries=3, retry_ratio=0.0, retry_floor=0.2, window=10.0)

    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            await prices.prices(["a"])

    # 5 calls, and the floor's 2 retries (0.2 per second over 10 s)
    assert len(port.asked) == 5 + 2


async def test_an_open_breaker_fails_at_once_without_calling() -> None:
    port = Flaky([BackendUnavailable("pricing", "down")] * 3)
    prices = _guarded(port, retries=0, min_calls=3, failure_ratio=1.0)
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            await prices.prices(["a"])

    with pytest.raises(CircuitOpen) as raised:
        await prices.prices(["a"])

    assert len(port.asked) == 3
    assert raised.value.retry_after > 0


class Slow:
    def __init__(self) -> None:
        self.started = 0

    async def prices(self, skus: Sequence[str], store_id: str | None = None) -> dict[str, int]:
        self.started += 1
        await asyncio.sleep(10)
        return {}

    async def aclose(self) -> None: ...


async def test_a_call_never_outlives_the_request_deadline() -> None:
    port = Slow()
    prices = guard(port, Guard("pricing", CallPolicy(timeout=30.0, backoff=0.0)))

    async with deadline(0.05):
        with pytest.raises(BackendTimedOut):
            await prices.prices(["a"])
        # no time left: the retry is not made
    assert port.started == 1


async def test_no_call_is_made_after_the_deadline() -> None:
    port = Slow()
    prices = guard(port, Guard("pricing", CallPolicy()))

    async with deadline(0.0):
        with pytest.raises(BackendTimedOut):
            await prices.prices(["a"])

    assert port.started == 0
