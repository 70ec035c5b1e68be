"""Shared test helpers: seeding and starting parts of the simulated estate, database URLs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from legacy.demo import DemoEstate
from legacy.launcher import EstateConfig, RunningEstate, default_erp_url, start_estate
from legacy.sim import Knobs

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_ADMIN_URL = os.environ.get(
    "POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")


def missing_service(what: str, how: str) -> None:
    """Fail in CI (where every service must be up), skip elsewhere with what to start."""
    message = f"{what} is not reachable; start it with: {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def write_systems(truth: DemoEstate, data_dir: Path, systems: Iterable[str]) -> None:
    """Write the data files of ``systems`` (pim, pricing, promotions, loyalty, erp) for ``truth``.
    The ERP goes to a SQLite file in ``data_dir``."""
    import importlib

    data_dir.mkdir(parents=True, exist_ok=True)
    for system in systems:
        module = importlib.import_module(f"legacy.{system}")
        if system == "erp":
            asyncio.run(module.load(truth, default_erp_url(data_dir), None))
        elif system != "oms":
            module.write_data(truth, data_dir / system)


def start_systems(
    data_dir: Path,
    systems: tuple[str, ...],
    knobs: Knobs | None = None,
    erp_url: str | None = None,
) -> RunningEstate:
    """Start ``systems`` over HTTP with all knobs at zero (or ``knobs``)."""
    return start_estate(
        EstateConfig(
            data_dir=data_dir,
            systems=systems,
            knobs={system: knobs or Knobs() for system in systems},
            erp_url=erp_url,
        )
    )


def reset_estate(estate: RunningEstate) -> None:
    """Put every simulator's counters and knobs back to their start."""
    with httpx.Client(timeout=5) as client:
        for url in estate.urls.values():
            client.post(f"{url}/_sim/reset").raise_for_status()
