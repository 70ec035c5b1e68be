from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest

from legacy.demo import DemoEstate, generate
from legacy.launcher import HTTP_SYSTEMS, RunningEstate
from tests.support import POSTGRES_ADMIN_URL, missing_service, start_systems, write_systems


@pytest.fixture(scope="session")
def truth() -> DemoEstate:
    """The tiny demo estate every test seeds its simulators from (seed 42)."""
    return generate(42, "tiny")


def _admin(statement: str) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases (all dropped at the end of the session); each call
    returns a new one's asyncpg SQLAlchemy URL."""
    import asyncpg

    made: list[str] = []
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")

    def make() -> str:
        name = f"cg_test_{uuid.uuid4().hex[:10]}"
        try:
            _admin(f'CREATE DATABASE "{name}"')
        except (OSError, asyncpg.PostgresError) as exc:
            missing_service(
                f"PostgreSQL ({exc.__class__.__name__})",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            )
        made.append(name)
        return f"{base}/{name}"

    yield make
    for name in made:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_databases: Callable[[], str]) -> str:
    """A fresh PostgreSQL database for this test session (its asyncpg SQLAlchemy URL)."""
    return pg_databases()


@pytest.fixture(scope="session")
def estate(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    """The whole tiny estate, seeded and running (ERP on SQLite), shared by the session.
    Tests that change knobs must reset them (``reset_estate``)."""
    data_dir = tmp_path_factory.mktemp("estate")
    write_systems(truth, data_dir, ("pim", "pricing", "promotions", "loyalty", "erp"))
    running = start_systems(data_dir, HTTP_SYSTEMS)
    yield running
    running.stop()
