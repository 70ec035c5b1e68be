"""The contract of ``PricesPort``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import pytest

from adapters.ports import Price, PricesPort
from adapters.testing.checks import (
    assert_aware,
    assert_exact_type,
    assert_followable,
    assert_hashable,
    assert_money,
    assert_text,
    check_concurrent,
    check_duplicates,
    check_empty,
    check_large_batch,
    check_unknown_absent,
    lookup_known,
    walk_feed,
)
from adapters.testing.sample import ConformanceSample, require

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PricesContract:
    """What every ``PricesPort`` must do. Subclass it as ``Test...`` and provide two fixtures:
    ``prices`` (the implementation, closed after the test) and ``sample`` (a
    ``ConformanceSample`` with ``skus`` and ``location_ids``)."""

    pytestmark = pytest.mark.asyncio

    async def test_is_a_prices_port(self, prices: PricesPort) -> None:
        assert isinstance(prices, PricesPort)

    async def test_prices_answer_known_skus_in_the_base_zone(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        found = await lookup_known(prices.prices, skus, "prices")
        for sku, price in found.items():
            assert_price(price, f"prices[{sku!r}]")
            assert price.sku == sku, f"prices[{sku!r}] is the price of {price.sku!r}"

    async def test_prices_answer_known_skus_in_each_store(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        for store in require(sample.location_ids, "location_ids", "PricesContract"):
            in_store = partial(prices.prices, store_id=store)
            found = await lookup_known(in_store, skus, f"prices in store {store!r}")
            for sku, price in found.items():
                assert_price(price, f"prices[{sku!r}] in store {store!r}")
                assert price.sku == sku, f"prices[{sku!r}] is the price of {price.sku!r}"

    async def test_prices_leave_unknown_skus_out(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], len(skus) + 2)
        await check_unknown_absent(prices.prices, skus, unknown, "prices")
        store = partial(prices.prices, store_id=_stores(sample)[0])
        await check_unknown_absent(store, skus, unknown, "prices in a store")

    async def test_prices_handle_duplicates_and_nothing(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        await check_duplicates(prices.prices, _skus(sample), "prices")
        await check_empty(prices.prices, "prices")

    async def test_prices_in_a_large_batch_equal_prices_asked_alone(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        skus = _skus(sample)
        unknown = sample.unknown_keys(skus[0], 250)
        await check_large_batch(prices.prices, skus, unknown, "prices", _without_as_of)
        store = partial(prices.prices, store_id=_stores(sample)[-1])
        await check_large_batch(store, skus, unknown, "prices in a store", _without_as_of)

    async def test_prices_answer_concurrent_lookups(
        self, prices: PricesPort, sample: ConformanceSample
    ) -> None:
        await check_concurrent(prices.prices, _skus(sample), "prices", _without_as_of)

    async def test_changes_move_forward_from_the_start(self, prices: PricesPort) -> None:
        changes = await walk_feed(prices.changes, "price changes")
        if len(changes) >= 2:
            middle = len(changes) // 2
            after = await prices.changes(changes[middle - 1].cursor)
            assert after.changes[0] == changes[middle], "reading from an entry's cursor"

    async def test_changes_can_be_followed(self, prices: PricesPort) -> None:
        await assert_followable(prices.changes, prices.prices, "price changes")

    async def test_aclose_can_be_called(self, prices: PricesPort) -> None:
        await prices.aclose()


def assert_price(price: object, what: str) -> None:
    """A ``Price`` in ``Decimal`` money, never negative, in one currency."""
    assert_exact_type(price, Price, what)
    assert isinstance(price, Price)
    assert_hashable(price, what)
    assert_money(price.current, f"{what} current")
    assert price.current.amount >= 0, f"{what}: negative price {price.current}"
    if price.compare_at is not None:
        assert_money(price.compare_at, f"{what} compare_at")
        assert price.compare_at.currency == price.current.currency, f"{what}: two currencies"
    assert_text(price.zone, f"{what} zone")
    assert_aware(price.as_of, f"{what} as_of")


def _without_as_of(price: Price) -> Price:
    # ``as_of`` may be the moment the price was read, so two reads may differ only there.
    return replace(price, as_of=_EPOCH)


def _skus(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.skus, "skus", "PricesContract")


def _stores(sample: ConformanceSample) -> Sequence[str]:
    return require(sample.location_ids, "location_ids", "PricesContract")
