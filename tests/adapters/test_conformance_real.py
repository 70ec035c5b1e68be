"""Every real adapter passes the conformance suite of its port, against its running simulator
(the whole tiny estate: real HTTP, real SOAP/XML, real CSV files, real SQL on SQLite; the OMS
over an ERP of its own, since its shipments book stock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
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
from tests.support import reset_estate, start_systems, write_systems


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


class SimulatedOrderEvents:
    """Ships and cancels orders through the OMS simulator's own endpoints."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def ship(self, order_id: str) -> None:
        await self._post(f"/api/orders/{order_id}/ship")

    async def cancel(self, order_id: str) -> None:
        await self._post(f"/api/orders/{order_id}/cancel")

    async def _post(self, path: str) -> None:
        async with httpx.AsyncClient(base_url=self._url, timeout=10) as client:
            (await client.post(path)).raise_for_status()


@pytest.fixture(scope="module")
def oms_estate(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An OMS of its own over an ERP of its own: its shipments book stock that the shared
    estate's tests must not see."""
    data_dir = tmp_path_factory.mktemp("oms-conformance")
    write_systems(truth, data_dir, ("erp",))
    running = start_systems(data_dir, ("oms",))
    yield running.urls["oms"]
    running.stop()


class TestRestOmsOrderIntake(OrderIntakeContract):
    @pytest.fixture
    async def order_intake(self, oms_estate: str) -> AsyncIterator[RestOmsOrderIntake]:
        adapter = RestOmsOrderIntake(oms_estate)
        yield adapter
        await adapter.aclose()

    @pytest.fixture
    def order_events(self, oms_estate: str) -> SimulatedOrderEvents:
        return SimulatedOrderEvents(oms_estate)
