"""RestLoyalty against the simulated loyalty/CRM platform, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.loyalty_rest import RestLoyalty
from adapters.ports import (
    BackendRejected,
    BackendTimedOut,
    BackendUnavailable,
    InsufficientPoints,
    LoyaltyAccount,
    LoyaltyEntry,
    LoyaltyReceipt,
)
from legacy.demo import DemoCustomer, DemoEstate
from legacy.launcher import RunningEstate
from tests.support import start_systems, write_systems


@pytest.fixture(scope="module")
def estate(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    data_dir: Path = tmp_path_factory.mktemp("loyalty")
    write_systems(truth, data_dir, ["loyalty"])
    running = start_systems(data_dir, ("loyalty",))
    yield running
    running.stop()


@pytest.fixture
def url(estate: RunningEstate) -> str:
    """The platform's base URL, with counters, knobs and the rate limit reset."""
    base = estate.urls["loyalty"]
    httpx.post(f"{base}/_sim/reset", timeout=5).raise_for_status()
    return base


@pytest.fixture
async def loyalty(url: str, estate: RunningEstate) -> AsyncIterator[RestLoyalty]:
    adapter = RestLoyalty(url, estate.api_key)
    yield adapter
    await adapter.aclose()


async def control(url: str, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await (client.post(path, json=body) if body else client.get(path))
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def account(customer: DemoCustomer, points: int | None = None) -> LoyaltyAccount:
    balance = customer.points if points is None else points
    return LoyaltyAccount(customer.id, customer.card_number, balance, customer.tier)


def customer(truth: DemoEstate, customer_id: str) -> DemoCustomer:
    return next(c for c in truth.customers if c.id == customer_id)


async def test_accounts_are_fetched_in_chunks_of_fifty_and_match_the_truth(
    loyalty: RestLoyalty, url: str, truth: DemoEstate
) -> None:
    # given 120 known customers, one repeated, and one unknown id
    known = truth.customers[:120]
    ids = [c.id for c in known] + [known[0].id, "C9999"]

    # when
    accounts = await loyalty.accounts(ids)

    # then every known account is exact, the unknown is absent, and it took three calls
    assert accounts == {c.id: account(c) for c in known}
    assert (await control(url, "/_sim/stats"))["calls"] == {"GetMembers": 3}


async def test_accounts_by_card_are_looked_up_one_by_one(
    loyalty: RestLoyalty, url: str, truth: DemoEstate
) -> None:
    # given three cards, one of them unknown
    known = truth.customers[10:12]

    # when
    accounts = await loyalty.accounts_by_card([c.card_number for c in known] + ["LC9999"])

    # then
    assert accounts == {c.card_number: account(c) for c in known}
    assert (await control(url, "/_sim/stats"))["calls"] == {"GetMemberByCard": 3}


async def test_history_is_newest_first_with_timestamps_from_epoch_milliseconds(
    loyalty: RestLoyalty, truth: DemoEstate
) -> None:
    # given a customer with several movements
    member = customer(truth, "C0010")
    expected = [
        LoyaltyEntry(e.entry_id, e.at, e.points, e.reason, e.reference)
        for e in reversed(member.history)
    ]

    # when
    history = await loyalty.history(member.id)
    newest_two = await loyalty.history(member.id, limit=2)
    unknown = await loyalty.history("C9999")

    # then
    assert len(expected) == 7
    assert history == expected
    assert all(entry.at.utcoffset() is not None for entry in history)
    assert newest_two == expected[:2]
    assert unknown == []


async def test_earn_repeated_with_the_same_request_id_books_once(
    loyalty: RestLoyalty, url: str, truth: DemoEstate
) -> None:
    # given
    member = customer(truth, "C0900")

    # when the same request is sent three times, the last with a different body
    first = await loyalty.earn(member.id, 250, "earn-C0900-1", "ORDER O-1")
    second = await loyalty.earn(member.id, 250, "earn-C0900-1", "ORDER O-1")
    third = await loyalty.earn(member.id, 999, "earn-C0900-1", "something else")

    # then every answer is the first receipt, and the points moved once
    balance = member.points + 250
    assert first == LoyaltyReceipt("earn-C0900-1", member.id, 250, balance, first.entry_id)
    assert second == first
    assert third == first
    assert await loyalty.accounts([member.id]) == {member.id: account(member, balance)}
    newest = (await loyalty.history(member.id, limit=1))[0]
    assert (newest.id, newest.points, newest.reason) == (first.entry_id, 250, "ORDER O-1")
    assert newest.reference == "earn-C0900-1"
    assert (await control(url, "/_sim/stats"))["calls"]["EarnPoints"] == 3


async def test_redeem_beyond_the_balance_raises_insufficient_points(
    loyalty: RestLoyalty, truth: DemoEstate
) -> None:
    # given
    member = customer(truth, "C0950")

    # when one point too many is asked for
    with pytest.raises(InsufficientPoints) as refused:
        await loyalty.redeem(member.id, member.points + 1, "redeem-C0950-1", "ORDER O-2")

    # then the balance is reported and nothing moved; the whole balance can still be redeemed
    assert refused.value.balance == member.points
    assert refused.value.code == "INSUFFICIENT_POINTS"
    receipt = await loyalty.redeem(member.id, member.points, "redeem-C0950-2", "ORDER O-3")
    assert (receipt.points, receipt.balance) == (-member.points, 0)
    assert await loyalty.accounts([member.id]) == {member.id: account(member, 0)}


async def test_earn_for_an_unknown_customer_is_rejected(loyalty: RestLoyalty) -> None:
    with pytest.raises(BackendRejected) as refused:
        await loyalty.earn("C9999", 10, "earn-C9999-1", "ORDER O-4")

    assert refused.value.code == "UNKNOWN_CUSTOMER"


async def test_a_call_without_the_api_key_is_refused_with_401(
    url: str, estate: RunningEstate
) -> None:
    # when the API is called raw without a key, and through an adapter with a wrong key
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await client.get("/v2/members", params={"ids": "C0001"})
    wrong_key = RestLoyalty(url, "not-the-key")
    try:
        with pytest.raises(BackendRejected) as refused:
            await wrong_key.accounts(["C0001"])
    finally:
        await wrong_key.aclose()

    # then
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert refused.value.code == "UNAUTHORIZED"


async def test_a_batch_over_the_cap_is_refused_with_400(url: str, estate: RunningEstate) -> None:
    ids = ",".join(f"C{number:04d}" for number in range(1, 52))
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await client.get(
            "/v2/members", params={"ids": ids}, headers={"X-Loyalty-Api-Key": estate.api_key}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "TOO_MANY_IDS"


async def test_rate_limited_calls_are_retried_after_retry_after(
    loyalty: RestLoyalty, url: str, truth: DemoEstate
) -> None:
    # given a limit of two requests per second with a burst of two
    await control(url, "/_sim/ratelimit", {"per_second": 2, "burst": 2})
    known = truth.customers[200:320]

    # when three chunks are requested at once
    accounts = await loyalty.accounts([c.id for c in known])

    # then the platform refused at least one, and each chunk still reached it exactly once
    assert accounts == {c.id: account(c) for c in known}
    rejected = (await control(url, "/_sim/ratelimit"))["rejected"]
    assert isinstance(rejected, int)
    assert rejected >= 1
    assert (await control(url, "/_sim/stats"))["calls"] == {"GetMembers": 3}


async def test_rate_limited_beyond_the_retries_raises_backend_unavailable(
    url: str, estate: RunningEstate
) -> None:
    # given a single token that comes back only after 100 seconds, and no retries
    await control(url, "/_sim/ratelimit", {"per_second": 0.01, "burst": 1})
    adapter = RestLoyalty(url, estate.api_key, max_retries=0)
    try:
        await adapter.accounts(["C0001"])

        # when the next call finds the bucket empty
        with pytest.raises(BackendUnavailable) as refused:
            await adapter.accounts(["C0002"])
    finally:
        await adapter.aclose()

    # then
    assert "429" in str(refused.value)


async def test_an_outage_raises_backend_unavailable_and_earn_retries_with_the_same_request(
    url: str, estate: RunningEstate, truth: DemoEstate
) -> None:
    # given the platform is down
    member = customer(truth, "C0800")
    await control(url, "/_sim/knobs", {"outage": True})
    adapter = RestLoyalty(url, estate.api_key, max_retries=2)
    try:
        # when reads and an earn are attempted
        with pytest.raises(BackendUnavailable):
            await adapter.accounts([member.id])
        with pytest.raises(BackendUnavailable):
            await adapter.earn(member.id, 40, "earn-C0800-1", "ORDER O-5")
        calls = (await control(url, "/_sim/stats"))["calls"]

        # then the read was tried once, the earn three times; after the outage it books once
        assert calls == {"GetMembers": 1, "EarnPoints": 3}
        await control(url, "/_sim/knobs", {"outage": False})
        receipt = await adapter.earn(member.id, 40, "earn-C0800-1", "ORDER O-5")
        assert receipt.balance == member.points + 40
    finally:
        await adapter.aclose()


async def test_a_slow_platform_raises_backend_timed_out(url: str, estate: RunningEstate) -> None:
    # given every call takes half a second
    await control(url, "/_sim/knobs", {"latency_ms": 500})
    adapter = RestLoyalty(url, estate.api_key, timeout=0.1)
    try:
        # when / then
        with pytest.raises(BackendTimedOut):
            await adapter.accounts(["C0001"])
    finally:
        await adapter.aclose()
