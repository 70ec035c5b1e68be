"""Every real adapter passes the conformance suite of its port, against its running simulator
(the whole tiny estate: real HTTP, real SOAP/XML, real CSV files, real SQL on SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.erp_sql import SqlErpInventory
from adapters.loyalty_rest import RestLoyalty
from adapters.oms_rest import RestOmsOrderIntake
from adapters.pim_rest import RestPimCatalogue
from adapters.pricing_soap import SoapPricing
from adapters.promotions_csv import CsvPromotions
from adapters.testing import (
    CatalogueContract,
    ConformanceSample,
    InventoryContract,
    LoyaltyContract,
    OrderIntakeContract,
    PricesContract,
    PromotionsContract,
)
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.fakes import sample_from_demo
from tests.support import reset_estate


@pytest.fixture(scope="module")
def sample(truth: DemoEstate) -> ConformanceSample:
    return sample_from_demo(truth)


@pytest.fixture(autouse=True)
def _fresh_knobs(estate: RunningEstate) -> None:
    reset_estate(estate)


class TestRestPimCatalogue(CatalogueContract):
    @pytest.fixture
    async def catalogue(self, estate: RunningEstate) -> AsyncIterator[RestPimCatalogue]:
        adapter = RestPimCatalogue(estate.urls["pim"])
        yield adapter
        await adapter.aclose()


class TestSoapPricing(PricesContract):
    @pytest.fixture
    async def prices(self, estate: RunningEstate) -> AsyncIterator[SoapPricing]:
        adapter = SoapPricing(estate.urls["pricing"])
        yield adapter
        await adapter.aclose()


class TestCsvPromotions(PromotionsContract):
    @pytest.fixture
    async def promotions(self, estate: RunningEstate) -> AsyncIterator[CsvPromotions]:
        adapter = CsvPromotions(estate.promotions_dir)
        yield adapter
        await adapter.aclose()


class TestSqlErpInventory(InventoryContract):
    @pytest.fixture
    async def inventory(self, estate: RunningEstate) -> AsyncIterator[SqlErpInventory]:
        adapter = SqlErpInventory.from_url(estate.erp_url)
        yield adapter
        await adapter.aclose()


class TestRestLoyalty(LoyaltyContract):
    @pytest.fixture
    async def loyalty(self, estate: RunningEstate) -> AsyncIterator[RestLoyalty]:
        adapter = RestLoyalty(estate.urls["loyalty"], estate.api_key)
        yield adapter
        await adapter.aclose()


class TestRestOmsOrderIntake(OrderIntakeContract):
    @pytest.fixture
    async def order_intake(self, estate: RunningEstate) -> AsyncIterator[RestOmsOrderIntake]:
        adapter = RestOmsOrderIntake(estate.urls["oms"])
        yield adapter
        await adapter.aclose()
