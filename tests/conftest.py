from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from legacy.demo import DemoEstate, generate
from legacy.launcher import HTTP_SYSTEMS, RunningEstate
from tests.support import POSTGRES_ADMIN_URL, missing_service, start_systems, write_systems


@pytest.fixture(scope="session")
def truth() -> DemoEstate:
    """The tiny demo estate every test seeds its simulators from (seed 42)."""
    return generate(42, "tiny")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards.
    Yields its asyncpg SQLAlchemy URL."""
    import asyncpg

    name = f"cg_test_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        missing_service(
            f"PostgreSQL ({exc.__class__.__name__})",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        )
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def estate(truth: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEstate]:
    """The whole tiny estate, seeded and running (ERP on SQLite), shared by the session.
    Tests that change knobs must reset them (``reset_estate``)."""
    data_dir = tmp_path_factory.mktemp("estate")
    write_systems(truth, data_dir, ("pim", "pricing", "promotions", "loyalty", "erp"))
    running = start_systems(data_dir, HTTP_SYSTEMS)
    yield running
    running.stop()
