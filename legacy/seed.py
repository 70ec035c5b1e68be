"""Seed the demo estate: generate the ground truth and let each system write its share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from legacy.demo import SCALES, DemoEstate, generate
from legacy.erp import load as load_erp
from legacy.launcher import default_erp_url
from legacy.loyalty import write_data as write_loyalty
from legacy.pim import write_data as write_pim
from legacy.pricing import write_data as write_pricing
from legacy.promotions import write_data as write_promotions

MANIFEST = "estate.json"


def seed(
    data_dir: Path,
    seed: int = 42,
    scale: str = "default",
    erp_url: str | None = None,
    progress: bool = True,
) -> DemoEstate:
    """Write the whole estate for ``seed`` and ``scale`` under ``data_dir`` (and the ERP
    database at ``erp_url``, by default a SQLite file in ``data_dir``). Replaces what was there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = erp_url or default_erp_url(data_dir)
    steps = tqdm(total=6, desc="seed", unit="step", disable=not progress)
    steps.set_postfix_str("generating")
    estate = generate(seed, SCALES[scale])
    steps.update()
    for name, write in _WRITERS:
        steps.set_postfix_str(name)
        write(estate, data_dir / name)
        steps.update()
    steps.set_postfix_str("erp")
    rows = tqdm(
        total=estate.stock_row_estimate(),
        desc="erp stock",
        unit="row",
        disable=not progress,
        leave=False,
    )

    def advance(count: int) -> None:
        rows.update(count)

    asyncio.run(load_erp(estate, url, advance))
    rows.close()
    steps.update()
    steps.close()
    (data_dir / MANIFEST).write_text(json.dumps(_manifest(estate, url), indent=2) + "\n")
    return estate


def is_seeded(data_dir: Path) -> bool:
    return (data_dir / MANIFEST).is_file()


_WRITERS: list[tuple[str, Callable[[DemoEstate, Path], None]]] = [
    ("pim", write_pim),
    ("pricing", write_pricing),
    ("promotions", write_promotions),
    ("loyalty", write_loyalty),
]


def _manifest(estate: DemoEstate, erp_url: str) -> dict[str, object]:
    return {
        "seed": estate.seed,
        "scale": estate.scale.name,
        "products": len(estate.products),
        "skus": sum(1 for _ in estate.skus),
        "stores": sum(1 for location in estate.locations if location.kind == "STORE"),
        "distribution_centers": sum(1 for location in estate.locations if location.kind == "DC"),
        "customers": len(estate.customers),
        "promotions": len(estate.promotions),
        "erp_url": erp_url,
    }
