"""The contract of ``LoyaltyPort``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from adapters.ports import (
    InsufficientPoints,
    LoyaltyAccount,
    LoyaltyEntry,
    LoyaltyPort,
    LoyaltyReceipt,
)
from adapters.testing.checks import (
    assert_aware,
    assert_exact_type,
    assert_text,
    check_concurrent,
    check_duplicates,
    check_empty,
    check_large_batch,
    check_unknown_absent,
    lookup_known,
)
from adapters.testing.sample import ConformanceSample, require

REASON = "CONFORMANCE"


class LoyaltyContract:
    """What every ``LoyaltyPort`` must do. Subclass it as ``Test...`` and provide two fixtures:
    ``loyalty`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``customer_ids`` and ``card_numbers``). Earn and redeem tests move
    points on the first sample customer with fresh request ids and put the balance back."""

    pytestmark = pytest.mark.asyncio

    async def test_is_a_loyalty_port(self, loyalty: LoyaltyPort) -> None:
        assert isinstance(loyalty, LoyaltyPort)

    async def test_accounts_answer_known_customers(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customers = _customers(sample)
        found = await lookup_known(loyalty.accounts, customers, "accounts")
        for customer, account in found.items():
            assert_account(account, f"accounts[{customer!r}]")
            assert account.customer_id == customer, f"accounts[{customer!r}] is another's"

    async def test_accounts_leave_unknown_customers_out(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customers = _customers(sample)
        unknown = sample.unknown_keys(customers[0], len(customers) + 2)
        await check_unknown_absent(loyalty.accounts, customers, unknown, "accounts")
        await check_duplicates(loyalty.accounts, customers, "accounts")
        await check_empty(loyalty.accounts, "accounts")

    async def test_accounts_in_a_large_batch_equal_accounts_asked_alone(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customers = _customers(sample)
        unknown = sample.unknown_keys(customers[0], 250)
        await check_large_batch(loyalty.accounts, customers, unknown, "accounts")
        await check_concurrent(loyalty.accounts, customers, "accounts")

    async def test_accounts_by_card_answer_the_card_holder(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        cards = _cards(sample)
        found = await lookup_known(loyalty.accounts_by_card, cards, "accounts_by_card")
        holders = await loyalty.accounts([account.customer_id for account in found.values()])
        for card, account in found.items():
            assert_account(account, f"accounts_by_card[{card!r}]")
            assert account.card_number == card, f"accounts_by_card[{card!r}] is another card"
            assert holders[account.customer_id] == account, f"{card!r}: differs from accounts()"

    async def test_accounts_by_card_leave_unknown_cards_out(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        cards = _cards(sample)
        unknown = sample.unknown_keys(cards[0], len(cards) + 2)
        await check_unknown_absent(loyalty.accounts_by_card, cards, unknown, "accounts_by_card")
        await check_duplicates(loyalty.accounts_by_card, cards, "accounts_by_card")
        await check_empty(loyalty.accounts_by_card, "accounts_by_card")

    async def test_history_is_newest_first_within_the_limit(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        for customer in _customers(sample):
            entries = await loyalty.history(customer)
            assert_history(entries, 50, f"history({customer!r})")
            newest = await loyalty.history(customer, limit=1)
            assert list(newest) == list(entries[:1]), f"history({customer!r}, limit=1)"

    async def test_history_of_an_unknown_customer_is_empty(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        unknown = sample.unknown_keys(_customers(sample)[0], 1)[0]
        assert list(await loyalty.history(unknown)) == []

    async def test_earn_adds_points_once_per_request_id(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customer = _customers(sample)[0]
        before = await _balance(loyalty, customer)
        request = _request_id()
        receipt = await loyalty.earn(customer, 25, request, REASON)
        assert_receipt(receipt, request, customer, 25, before + 25)
        assert await loyalty.earn(customer, 25, request, REASON) == receipt, "repeat differs"
        assert await _balance(loyalty, customer) == before + 25, "a repeat earned again"
        entries = {entry.id: entry for entry in await loyalty.history(customer)}
        assert entries[receipt.entry_id].points == 25, "the history misses the earn"
        await loyalty.redeem(customer, 25, _request_id(), REASON)

    async def test_concurrent_repeats_of_an_earn_add_points_once(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customer = _customers(sample)[0]
        before = await _balance(loyalty, customer)
        request = _request_id()
        receipts = await asyncio.gather(
            *(loyalty.earn(customer, 10, request, REASON) for _ in range(4))
        )
        assert len(set(receipts)) == 1, "concurrent repeats gave different receipts"
        assert await _balance(loyalty, customer) == before + 10, "a repeat earned again"
        await loyalty.redeem(customer, 10, _request_id(), REASON)

    async def test_redeem_takes_points_once_per_request_id(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customer = _customers(sample)[0]
        before = await _balance(loyalty, customer)
        await loyalty.earn(customer, 30, _request_id(), REASON)
        request = _request_id()
        receipt = await loyalty.redeem(customer, 30, request, REASON)
        assert_receipt(receipt, request, customer, 30, before)
        assert await loyalty.redeem(customer, 30, request, REASON) == receipt, "repeat differs"
        assert await _balance(loyalty, customer) == before, "a repeat redeemed again"
        entries = {entry.id: entry for entry in await loyalty.history(customer)}
        assert entries[receipt.entry_id].points == -30, "the history misses the redemption"

    async def test_repeated_redeem_answers_even_when_the_balance_is_spent(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customer = _customers(sample)[0]
        before = await _balance(loyalty, customer)
        await loyalty.earn(customer, 40, _request_id(), REASON)
        request = _request_id()
        receipt = await loyalty.redeem(customer, before + 40, request, REASON)
        assert_receipt(receipt, request, customer, before + 40, 0)
        again = await loyalty.redeem(customer, before + 40, request, REASON)
        assert again == receipt, "a repeat of a redemption was not answered with its receipt"
        if before:
            await loyalty.earn(customer, before, _request_id(), REASON)
        assert await _balance(loyalty, customer) == before

    async def test_redeem_over_the_balance_raises_insufficient_points(
        self, loyalty: LoyaltyPort, sample: ConformanceSample
    ) -> None:
        customer = _customers(sample)[0]
        before = await _balance(loyalty, customer)
        with pytest.raises(InsufficientPoints) as raised:
            await loyalty.redeem(customer, before + 1, _request_id(), REASON)
        assert raised.value.balance == before, "InsufficientPoints.balance is not the balance"
        assert await _balance(loyalty, customer) == before, "a refused redemption moved points"

    async def test_aclose_can_be_called(self, loyalty: LoyaltyPort) -> None:
        await loyalty.aclose()


def assert_account(account: object, what: str) -> None:
    assert_exact_type(account, LoyaltyAccount, what)
    assert isinstance(account, LoyaltyAccount)
    assert_text(account.customer_id, f"{what} customer_id")
    assert_text(account.card_number, f"{what} card_number")
    assert_text(account.tier, f"{what} tier")
    assert type(account.points) is int, f"{what}: points {account.points!r} is not an int"
    assert account.points >= 0, f"{what}: negative balance {account.points}"


def assert_history(entries: object, limit: int, what: str) -> None:
    """At most ``limit`` entries with distinct ids, newest first."""
    assert isinstance(entries, Sequence), f"{what}: not a sequence"
    assert len(entries) <= limit, f"{what}: more than {limit} entries"
    for entry in entries:
        assert_exact_type(entry, LoyaltyEntry, f"{what} entry")
        assert_text(entry.id, f"{what} entry id")
        assert_aware(entry.at, f"{what} entry at")
        assert type(entry.points) is int, f"{what}: points {entry.points!r} is not an int"
    ids = [entry.id for entry in entries]
    assert len(set(ids)) == len(ids), f"{what}: an entry is listed twice"
    moments = [entry.at for entry in entries]
    assert moments == sorted(moments, reverse=True), f"{what}: not newest first"


def assert_receipt(receipt: object, request: str, customer: str, points: int, balance: int) -> None:
    """The receipt of one movement of ``points`` (either sign) leaving ``balance``."""
    assert_exact_type(receipt, LoyaltyReceipt, "receipt")
    assert isinstance(receipt, LoyaltyReceipt)
    assert receipt.request_id == request, f"receipt of request {receipt.request_id!r}"
    assert receipt.customer_id == customer, f"receipt of customer {receipt.customer_id!r}"
    assert abs(receipt.points) == points, f"receipt moved {receipt.points} points"
    assert receipt.balance == balance, f"receipt balance {receipt.balance}, expected {balance}"
    assert_text(receipt.entry_id, "receipt entry_id")


async def _balance(loyalty: LoyaltyPort, customer: str) -> int:
    return (await loyalty.accounts([customer]))[customer].points


def _request_id() -> str:
    # Fresh ids keep runs against a long-lived system from replaying earlier runs.
    return f"conformance-{uuid.uuid4().hex}"


def _customers(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.customer_ids, "customer_ids", "LoyaltyContract")


def _cards(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.card_numbers, "card_numbers", "LoyaltyContract")
