from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Table, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The gateway's database on each of its engines: a fresh SQLite file, and the session's
    PostgreSQL database (shared: tests empty the tables they use)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/gateway.sqlite"
    url: str = request.getfixturevalue("pg_database")
    return url


@contextlib.asynccontextmanager
async def migrated(database_url: str, *emptied: Table) -> AsyncIterator[AsyncEngine]:
    """The gateway's database at ``database_url`` brought up to date, with ``emptied`` tables
    cleared first (the PostgreSQL database is shared by the session's tests)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        for table in emptied:
            await connection.execute(delete(table))
    try:
        yield engine
    finally:
        await engine.dispose()
