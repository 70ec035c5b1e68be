from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from legacy.launcher import RunningEstate
from tests.support import ServedGateway, reset_estate, serve_gateway


@pytest.fixture(scope="session")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """The gateway over real HTTP, in front of the whole running tiny estate, with a database
    of its own on PostgreSQL (no other test writes to it)."""
    served = serve_gateway(estate, pg_databases())
    yield served
    served.stop()


@pytest.fixture
def cold_gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """A gateway of its own, started for one test: its read model has seen nothing yet."""
    served = serve_gateway(estate, pg_databases())
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def _fresh_estate(estate: RunningEstate) -> None:
    reset_estate(estate)
