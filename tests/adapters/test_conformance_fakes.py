"""Every contract of the conformance suite over the fake of its port, loaded from the ground
truth; then what the fakes add for later tests (demo mapping, failures, change feeds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time
from decimal import Decimal

import pytest

from adapters.ports import (
    BackendRejected,
    BackendUnavailable,
    Location,
    LocationKind,
    Money,
    OpeningHours,
    StockLevel,
)
from adapters.testing import (
    CatalogueContract,
    ConformanceSample,
    InventoryContract,
    LoyaltyContract,
    OrderIntakeContract,
    PricesContract,
    PromotionsContract,
    conformance_order,
)
from legacy.demo import DemoEstate
from tests.fakes import (
    FakeCatalogue,
    FakeEstate,
    FakeInventory,
    FakeLoyalty,
    FakeOrderIntake,
    FakePrices,
    FakePromotions,
    catalogue_from_demo,
    inventory_from_demo,
    loyalty_from_demo,
    prices_from_demo,
    promotions_from_demo,
    sample_from_demo,
)


@pytest.fixture(scope="module")
def sample(truth: DemoEstate) -> ConformanceSample:
    return sample_from_demo(truth)


class TestFakeCatalogue(CatalogueContract):
    @pytest.fixture
    async def catalogue(self, truth: DemoEstate) -> AsyncIterator[FakeCatalogue]:
        fake = catalogue_from_demo(truth)
        yield fake
        await fake.aclose()


class TestFakePrices(PricesContract):
    @pytest.fixture
    async def prices(self, truth: DemoEstate) -> AsyncIterator[FakePrices]:
        fake = prices_from_demo(truth)
        yield fake
        await fake.aclose()


class TestFakePromotions(PromotionsContract):
    @pytest.fixture
    async def promotions(self, truth: DemoEstate) -> AsyncIterator[FakePromotions]:
        fake = promotions_from_demo(truth)
        yield fake
        await fake.aclose()


class TestFakeInventory(InventoryContract):
    @pytest.fixture
    async def inventory(self, truth: DemoEstate) -> AsyncIterator[FakeInventory]:
        fake = inventory_from_demo(truth)
        yield fake
        await fake.aclose()


class TestFakeLoyalty(LoyaltyContract):
    @pytest.fixture
    async def loyalty(self, truth: DemoEstate) -> AsyncIterator[FakeLoyalty]:
        fake = loyalty_from_demo(truth)
        yield fake
        await fake.aclose()


class TestFakeOrderIntake(OrderIntakeContract):
    @pytest.fixture
    async def order_intake(self) -> AsyncIterator[FakeOrderIntake]:
        fake = FakeOrderIntake()
        yield fake
        await fake.aclose()

    @pytest.fixture
    def order_events(self, order_intake: FakeOrderIntake) -> FakeOrderIntake:
        return order_intake


# --------------------------------------------------------------------------- the demo mapping


def test_sample_names_keys_for_every_port(sample: ConformanceSample) -> None:
    assert len(sample.skus) == 6
    assert len(sample.product_codes) == 3
    assert sample.location_ids == ("0001", "0003", "9001")  # BASE, CITY, a DC
    assert sample.customer_ids == ("C0001", "C0002", "C0501", "C1000")
    assert sample.card_numbers == ("LC0001", "LC0002", "LC0501", "LC1000")
    assert sample.coupon_codes == ("WELCOME10", "SOCKS5")


async def test_catalogue_holds_each_product_in_english(truth: DemoEstate) -> None:
    demo = truth.products[0]
    catalogue = catalogue_from_demo(truth)
    product = (await catalogue.products([demo.code]))[demo.code]
    assert (product.name, product.brand, product.description) == (
        demo.name_en,
        demo.brand,
        demo.description_en,
    )
    assert product.categories[0] == demo.category
    assert product.categories[-1] == demo.category.split("/")[0]
    assert [variant.sku for variant in product.variants] == [v.sku for v in demo.variants]
    assert [a.value for a in product.variants[0].attributes] == [
        demo.variants[0].size,
        demo.variants[0].color_en,
    ]


async def test_prices_follow_the_zone_of_the_store(truth: DemoEstate) -> None:
    prices = prices_from_demo(truth)
    for location in truth.locations:
        overrides = truth.zone_overrides.get(location.price_zone, {})
        found = await prices.prices([variant.sku for variant in truth.skus], location.code)
        for variant in truth.skus:
            expected = overrides.get(variant.sku, variant.base_price)
            assert found[variant.sku].current == Money(expected, "EUR")
            assert found[variant.sku].zone == location.price_zone


async def test_inventory_clamps_negative_stock_and_maps_locations(truth: DemoEstate) -> None:
    rows = list(truth.stock_rows())
    negative = next(row for row in rows if row.on_hand < 0)
    inventory = inventory_from_demo(truth)
    levels = (await inventory.stock_levels([negative.sku]))[negative.sku]
    assert StockLevel(negative.sku, negative.location_code, 0, negative.updated_at) in levels
    assert sum(len(found) for found in (await inventory.stock_levels(_skus(truth))).values()) == (
        len(rows)
    )
    dc = (await inventory.locations())[-1]
    assert dc == Location(
        id="9002",
        name="DC Eching",
        kind=LocationKind.DISTRIBUTION_CENTER,
        point=dc.point,
        postal_code="85386",
        capabilities=frozenset({"SHIP"}),
        daily_capacity=5000,
        opening_hours=tuple(OpeningHours(day, time(6), time(22)) for day in range(1, 7)),
    )


async def test_loyalty_and_promotions_hold_the_whole_truth(truth: DemoEstate) -> None:
    loyalty, promotions = loyalty_from_demo(truth), promotions_from_demo(truth)
    accounts = await loyalty.accounts([customer.id for customer in truth.customers])
    assert {key: account.points for key, account in accounts.items()} == {
        customer.id: customer.points for customer in truth.customers
    }
    history = await loyalty.history("C0001")
    assert [entry.id for entry in history] == [e.entry_id for e in truth.customers[0].history][::-1]
    current = await promotions.promotions()
    assert [rule.id for rule in current.rules] == [item.id for item in truth.promotions]
    assert {coupon.code for coupon in current.coupons} == {
        item.coupon_code for item in truth.promotions if item.coupon_code
    }


# --------------------------------------------------------------------------- fake behaviour


async def test_fail_with_fails_every_operation_and_counts_it(truth: DemoEstate) -> None:
    estate = FakeEstate.from_demo(truth)
    estate.inventory.fail_with = BackendUnavailable("erp", "down")
    with pytest.raises(BackendUnavailable):
        await estate.inventory.stock_levels(["100000010"])
    with pytest.raises(BackendUnavailable):
        await estate.inventory.locations()
    estate.inventory.fail_with = None
    assert len(await estate.inventory.locations()) == len(truth.locations)
    assert estate.inventory.calls == {"stock_levels": 1, "locations": 2}


async def test_changes_feed_what_the_fakes_are_told(truth: DemoEstate) -> None:
    estate = FakeEstate.from_demo(truth)
    sku, moment = truth.products[0].variants[0].sku, datetime(2026, 7, 1, tzinfo=UTC)
    stock_cursor = (await estate.inventory.stock_changes(None, limit=100_000)).cursor
    price_cursor = (await estate.prices.changes(None)).cursor
    estate.inventory.set_stock(StockLevel(sku, "0001", -3, moment))
    base = (await estate.prices.prices([sku]))[sku]
    estate.prices.set_price(replace(base, current=Money(Decimal("1.00"), "EUR"), as_of=moment))
    estate.promotions.publish([])
    after = await estate.inventory.stock_changes(stock_cursor)
    assert after.levels == (StockLevel(sku, "0001", 0, moment),)
    assert [change.key for change in (await estate.prices.changes(price_cursor)).changes] == [sku]
    assert (await estate.prices.prices([sku]))[sku].current == Money(Decimal("1.00"), "EUR")
    assert (await estate.promotions.promotions()).version == "2"


async def test_unknown_store_and_bad_cursor_are_rejected(truth: DemoEstate) -> None:
    estate = FakeEstate.from_demo(truth)
    with pytest.raises(BackendRejected) as unknown_store:
        await estate.prices.prices(["100000010"], store_id="7777")
    with pytest.raises(BackendRejected) as bad_cursor:
        await estate.catalogue.changes("not-a-cursor")
    assert (unknown_store.value.code, bad_cursor.value.code) == ("UNKNOWN_STORE", "INVALID_CURSOR")


async def test_order_intake_keeps_each_order_once(sample: ConformanceSample) -> None:
    intake = FakeOrderIntake()
    order = conformance_order(sample)
    first = await intake.submit(order)
    again = await intake.submit(order)
    assert again == first
    assert first.oms_order_number == "OMS-0000001"
    assert intake.orders == {order.order_id: order}
    assert intake.calls == {"submit": 2}


def _skus(truth: DemoEstate) -> list[str]:
    return [variant.sku for variant in truth.skus]
