from __future__ import annotations

from pathlib import Path

import pytest

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The gateway's database on each of its engines: a fresh SQLite file, and the session's
    PostgreSQL database (shared: tests empty the tables they use)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/gateway.sqlite"
    url: str = request.getfixturevalue("pg_database")
    return url
