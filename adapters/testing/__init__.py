"""The adapter conformance suite: one pytest contract per port of ``adapters.ports``.

Any implementation of a port (ours, a test fake, or a retailer's own adapter) passes the
contract of its port. Subclass the contract in a test module, give the subclass a ``Test``
name and provide two fixtures, the implementation and a ``ConformanceSample`` of keys known to
exist::

    class TestMyPim(CatalogueContract):
        @pytest.fixture
        def sample(self) -> ConformanceSample:
            return ConformanceSample(product_codes=("P000001",), skus=("100000010",))

        @pytest_asyncio.fixture
        async def catalogue(self) -> AsyncIterator[CataloguePort]:
            adapter = MyPimCatalogue("http://pim.test:8080")
            yield adapter
            await adapter.aclose()

The contracts need pytest-asyncio; they mark their tests themselves, so they run in its strict
and auto modes alike. docs/adapters.md explains each promise and how to run the suite.
"""

import pytest

# Assertions in these modules report their operands only when pytest rewrites them, and it
# rewrites only test modules unless told before the helpers are imported.
pytest.register_assert_rewrite(
    "adapters.testing.checks",
    "adapters.testing.catalogue",
    "adapters.testing.prices",
    "adapters.testing.promotions",
    "adapters.testing.inventory",
    "adapters.testing.loyalty",
    "adapters.testing.orders",
)

from adapters.testing.catalogue import CatalogueContract  # noqa: E402
from adapters.testing.inventory import InventoryContract  # noqa: E402
from adapters.testing.loyalty import LoyaltyContract  # noqa: E402
from adapters.testing.orders import OrderIntakeContract, conformance_order  # noqa: E402
from adapters.testing.prices import PricesContract  # noqa: E402
from adapters.testing.promotions import PromotionsContract  # noqa: E402
from adapters.testing.sample import ConformanceSample  # noqa: E402

__all__ = [
    "CatalogueContract",
    "ConformanceSample",
    "InventoryContract",
    "LoyaltyContract",
    "OrderIntakeContract",
    "PricesContract",
    "PromotionsContract",
    "conformance_order",
]
