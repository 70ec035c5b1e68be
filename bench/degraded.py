"""Listings while the pricing engine fails half its calls: what the shopper still sees.

Seeds the ``default`` estate into a data dir of its own, starts the simulators at a fixed
latency, a PostgreSQL database and a Redis of this run's own, and one gateway process
(``commerce-gateway serve``) over them. The pricing engine's ``error_rate`` knob is then set
to 0.5 (every call, ``GetPrices`` and ``GetPriceChanges`` alike, fails with probability 0.5)
and ``--requests`` listings of 24 products (pages 1 to ``--pages``, in turn) are sent at
concurrency 4, while a price manager changes ``--reprice`` prices a second (so the read
model keeps losing entries and must ask the failing engine again). Two phases, each from a
fresh process: the read model off (every listing asks the engine: retries alone) and the
read model on (the default).

Per phase: the share of listings that show every product of the page (the PIM's own page,
read directly, is the reference), the share of variant prices shown (current, or last known
and flagged stale), of those current, calls to the engine per listing and the share of them
that were retries (the budget's doing), and the listings' p50/p99.

Writes the section ``degraded`` of docs/benchmarks.md.

    .venv/bin/python -m bench.degraded [--requests 600] [--latency-ms 20] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families
from strawberry.relay.utils import to_base64

from adapters.pim_rest import RestPimCatalogue
from bench.read_model import HEADERS, deployment, unthrottled
from bench.report import exit_on_sigterm, markers, setting, wrapped, write_section
from legacy.demo import DemoEstate
from legacy.launcher import RunningEstate
from tests.e2e.gateways import (
    GatewayFleet,
    gateway_config,
    write_toml,
)
from tests.support import OPERATOR

PAGE: Final = 24
CONCURRENCY: Final = 4
LISTING: Final = (
    "query($after: String) { products(first: 24, after: $after) { edges { node { code "
    "variants { sku price { current { amount } stale } } } } } }"
)
PHASES: Final = (
    ("read model off (retries only)", {"enabled": False}),
    ("read model on (default)", {}),
)


@dataclass(frozen=True, slots=True)
class Options:
    requests: int
    pages: int
    latency_ms: float
    reprice: float
    data_dir: Path
    output: Path
    command: str


@dataclass(slots=True)
class Phase:
    name: str
    listings: int = 0
    complete: int = 0  # listings that showed every product of the page
    failed: int = 0  # listings with no data at all
    prices: int = 0
    shown: int = 0
    current: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    engine_calls: float = 0.0
    retries: float = 0.0
    refused: float = 0.0


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.degraded", description=__doc__)
    parser.add_argument("--requests", type=int, default=600, help="listings per phase")
    parser.add_argument("--pages", type=int, default=5, help="distinct pages asked for")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--reprice", type=float, default=5.0, help="price changes a second")
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-degraded"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    if args.requests < 1 or args.pages < 1 or args.reprice < 0:
        parser.error("--requests and --pages must be positive, --reprice not negative")
    command = shlex.join([".venv/bin/python", "-m", "bench.degraded", *argv])
    return Options(
        args.requests, args.pages, args.latency_ms, args.reprice, args.data_dir,
        args.output, command,
    )  # fmt: skip


def _cursor(page: int) -> str | None:
    return None if page == 0 else to_base64("offset", page * PAGE - 1)


async def reference_pages(estate: RunningEstate, pages: int) -> list[list[str]]:
    """Each page's product codes as the PIM itself lists them."""
    pim = RestPimCatalogue(estate.urls["pim"])
    try:
        return [
            [p.code for p in (await pim.list_products(page * PAGE, PAGE)).items]
            for page in range(pages)
        ]
    finally:
        await pim.aclose()


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _engine_counts(client: httpx.AsyncClient, url: str) -> tuple[float, float, float]:
    text = (await client.get(f"{url}/metrics", headers=OPERATOR)).text
    return (
        _metric(text, "gateway_backend_requests_total", backend="pricing", operation="prices"),
        _metric(text, "gateway_backend_retries_total", backend="pricing"),
        _metric(text, "gateway_backend_retries_refused_total", backend="pricing"),
    )


async def _reprice(
    client: httpx.AsyncClient, estate: RunningEstate, truth: DemoEstate, rate: float
) -> None:
    """A price manager at work: ``rate`` changes a second, to random SKUs of the first pages."""
    skus = [v.sku for p in truth.products[: PAGE * 5] for v in p.variants]
    pick = random.Random(7)
    while rate > 0:
        body = {"sku": pick.choice(skus), "price": f"{pick.randint(100, 9999) / 100:.2f}"}
        with contextlib.suppress(httpx.HTTPError):
            await client.post(f"{estate.urls['pricing']}/_sim/prices", json=body)
        await asyncio.sleep(1 / rate)


async def measure(
    url: str, estate: RunningEstate, truth: DemoEstate, options: Options, phase: Phase
) -> None:
    expected = await reference_pages(estate, options.pages)
    async with httpx.AsyncClient(timeout=30) as client:
        before = await _engine_counts(client, url)
        knobs = f"{estate.urls['pricing']}/_sim/knobs"
        (await client.post(knobs, json={"error_rate": 0.5})).raise_for_status()
        pages = itertools.cycle(range(options.pages))
        left = iter(range(options.requests))
        repricing = asyncio.create_task(_reprice(client, estate, truth, options.reprice))

        async def worker() -> None:
            for _ in left:
                page = next(pages)
                body = {"query": LISTING, "variables": {"after": _cursor(page)}}
                started = time.perf_counter()
                answer = (await client.post(f"{url}/graphql", json=body, headers=HEADERS)).json()
                phase.latencies_ms.append((time.perf_counter() - started) * 1000)
                _count(phase, answer, expected[page])

        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        finally:
            repricing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repricing
            await client.post(knobs, json={"error_rate": 0.0})
        after = await _engine_counts(client, url)
    phase.engine_calls, phase.retries, phase.refused = (
        b - a for a, b in zip(before, after, strict=True)
    )


def _count(phase: Phase, answer: dict[str, Any], expected: list[str]) -> None:
    phase.listings += 1
    data = answer.get("data") or {}
    products = data.get("products")
    if products is None:
        phase.failed += 1
        return
    nodes = [edge["node"] for edge in products["edges"]]
    phase.complete += [node["code"] for node in nodes] == expected
    for node in nodes:
        for variant in node["variants"]:
            price = variant["price"]
            phase.prices += 1
            phase.shown += price is not None
            phase.current += price is not None and not price["stale"]


def benchmark(options: Options) -> list[Phase]:
    phases = []
    with deployment(options.latency_ms, options.data_dir) as (
        estate,
        database_url,
        redis_url,
        truth,
    ):
        for index, (name, read_model) in enumerate(PHASES):
            config = unthrottled(gateway_config(estate, read_model=read_model))
            path = write_toml(config, options.data_dir / f"bench-degraded-{index}.toml")
            fleet = GatewayFleet(
                path, database_url, options.data_dir / "gateways",
                environment={"REDIS_URL": redis_url},
            )  # fmt: skip
            try:
                (member,) = fleet.start(1)
                print(name, file=sys.stderr, flush=True)
                phase = Phase(name)
                asyncio.run(measure(member.url, estate, truth, options, phase))
                phases.append(phase)
            finally:
                fleet.stop()
    return phases


def _share(part: float, whole: float) -> str:
    return "n/a" if whole == 0 else f"{100 * part / whole:.1f} %"


def _percentile(values: Sequence[float], rank: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(rank * len(ordered)) - 1))]


def render(phases: Sequence[Phase], options: Options, when: datetime) -> str:
    start, end = markers("degraded")
    lines = [
        start,
        "## Listings with the pricing engine failing half its calls",
        "",
        wrapped(
            f"One gateway process; {options.requests} listings of {PAGE} products (pages 1 "
            f"to {options.pages} in turn) at concurrency {CONCURRENCY}; every simulator at "
            f"{options.latency_ms:g} ms; the pricing engine's error_rate 0.5 for all its "
            f"calls; {options.reprice:g} price changes a second meanwhile. Targets: every "
            "product shown in 100 % of listings, ≥ 95 % of prices shown (current, or last "
            "known and flagged stale)."
        ),
        "",
        "| phase | listings | every product shown | no data | prices shown | prices current "
        "| engine calls/listing | of them retries | retries refused | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        lines.append(
            f"| {phase.name} | {phase.listings} | {_share(phase.complete, phase.listings)} "
            f"| {phase.failed} | {_share(phase.shown, phase.prices)} "
            f"| {_share(phase.current, phase.prices)} "
            f"| {phase.engine_calls / max(1, phase.listings):.2f} "
            f"| {_share(phase.retries, phase.engine_calls)} | {phase.refused:.0f} "
            f"| {_percentile(phase.latencies_ms, 0.5):.1f} "
            f"| {_percentile(phase.latencies_ms, 0.99):.1f} |"
        )
    lines += ["", *setting(options.command, when, os.getloadavg(), "at the end"), end]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    phases = benchmark(options)
    section = render(phases, options, datetime.now(UTC))
    write_section(options.output, "degraded", section)
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
