from __future__ import annotations

from collections.abc import Iterator

import pytest

from legacy.launcher import RunningEstate
from tests.support import ServedGateway, reset_estate, serve_gateway


@pytest.fixture(scope="session")
def gateway(estate: RunningEstate, pg_database: str) -> Iterator[ServedGateway]:
    """The gateway over real HTTP, in front of the whole running tiny estate, with its own
    database on PostgreSQL."""
    served = serve_gateway(estate, pg_database)
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def _fresh_estate(estate: RunningEstate) -> None:
    reset_estate(estate)
