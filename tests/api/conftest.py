from __future__ import annotations

from collections.abc import Iterator

import pytest

from legacy.launcher import RunningEstate
from tests.support import ServedGateway, reset_estate, serve_gateway


@pytest.fixture(scope="session")
def gateway(estate: RunningEstate) -> Iterator[ServedGateway]:
    """The gateway over real HTTP, in front of the whole running tiny estate."""
    served = serve_gateway(estate)
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def _fresh_estate(estate: RunningEstate) -> None:
    reset_estate(estate)
