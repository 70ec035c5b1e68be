"""The read model's benchmarks: the warm listing, and how fast a change is seen everywhere.

Seeds the ``default`` estate into a data dir of its own, starts the simulators at a fixed
latency, a PostgreSQL database and a Redis of this run's own, and gateway processes over them
(``commerce-gateway serve``, as a deployment runs them). Then:

1. The listing (the ``LISTING`` query, 24 products) at concurrency 1 and 16 against one
   process with the read model off (every read asks the legacy systems, as before it), with
   the read model only (no response cache), and with the response cache; then the response
   cache with two processes, the load spread over both; then one process and two with each
   held to 0.4 of a core by a cgroup CPU quota (``bench/quota.py``; Linux, as root), so that
   the two are compared on equal cores on a machine whose cores the load generator shares.
   Per phase: p50, p99, req/s, PIM and pricing calls per query and gateway CPU ms per query.
2. Staleness: ``--changes`` changes spread over the PIM (a rename), the pricing engine (a new
   price), the ERP (a stock movement) and the promotions folder (a file replaced), one at a
   time, with two processes; each instance is asked every few milliseconds until it shows the
   change; the time from the legacy system's acceptance to visible on each instance.

Writes the sections ``read_model`` and ``staleness`` of docs/benchmarks.md.

    .venv/bin/python -m bench.read_model [--latency-ms 20] [--changes 200] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from adapters.http import BackendClient, backend_client
from bench.quota import held_to
from bench.read_listing import LISTING_BODY, Calls, Tally, process_cpu_seconds
from bench.report import exit_on_sigterm, setting, wrapped, write_section
from legacy.demo import DemoEstate, generate
from legacy.launcher import EstateConfig, RunningEstate, start_estate
from legacy.promotions import PROMOTIONS_FILE, promotion_row, publish
from legacy.seed import MANIFEST, seed
from legacy.sim import Knobs
from tests.e2e.gateways import (
    GatewayFleet,
    TomlTable,
    book_stock,
    fresh_database,
    gateway_config,
    private_redis,
    write_toml,
)
from tests.support import POSTGRES_ADMIN_URL

SYSTEMS: Final = ("pim", "pricing", "loyalty", "oms", "erp")
HEADERS: Final = {"X-Api-Key": "demo-web"}
PROBE: Final = (
    "query($sku: String!, $store: ID!) { product(sku: $sku) { name variants { sku "
    "price { current { amount } } availability(storeIds: [$store]) { onHand } "
    "promotions { id title } } } }"
)
POLL_SECONDS: Final = 0.005
GIVE_UP: Final = 10.0  # seconds: a change not seen by then counts as this


@dataclass(frozen=True, slots=True)
class Options:
    latency_ms: float
    requests: tuple[int, int]
    time_cap: float
    changes: int
    data_dir: Path
    output: Path
    command: str


@dataclass(frozen=True, slots=True)
class Level:
    concurrency: int
    tally: Tally
    seconds: float
    calls: Calls
    cpu_ms: float | None


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    processes: int
    levels: tuple[Level, ...]


@dataclass(slots=True)
class Staleness:
    by_system: dict[str, list[float]] = field(default_factory=dict)  # ms, per instance seen

    def add(self, system: str, delays_ms: Sequence[float]) -> None:
        self.by_system.setdefault(system, []).extend(delays_ms)


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.read_model", description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--requests", type=int, nargs=2, default=(300, 3000))
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per level")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-read-model"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    shown = ".venv/bin/python" if ".venv" in sys.executable else "python"
    return Options(
        latency_ms=args.latency_ms,
        requests=(args.requests[0], args.requests[1]),
        time_cap=args.time_cap,
        changes=args.changes,
        data_dir=args.data_dir,
        output=args.output,
        command=shlex.join([shown, "-m", "bench.read_model", *argv]),
    )


# --------------------------------------------------------------------------- the listing


async def _listing(client: BackendClient, url: str, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(f"{url}/graphql", json=LISTING_BODY)
        failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
        if failure is None and b'"errors"' in response.content[:12]:
            failure = "GraphQL errors"
    except httpx.HTTPError as exc:
        failure = type(exc).__name__
    if failure is None:
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    else:
        tally.failures[failure] += 1


async def _level(urls: Sequence[str], concurrency: int, requests: int, cap: float) -> Tally:
    """``requests`` listings from ``concurrency`` workers, worker i on ``urls[i % n]``."""
    tally = Tally()
    issued = itertools.count()
    deadline = time.perf_counter() + cap

    async def worker(client: BackendClient, url: str) -> None:
        while next(issued) < requests and time.perf_counter() < deadline:
            await _listing(client, url, tally)

    # The gateway's own backend client (aiohttp): a small part of httpx's CPU per request,
    # which matters when the load generator shares the cores with what it measures.
    async with backend_client(timeout=60, max_connections=concurrency, headers=HEADERS) as client:
        await asyncio.gather(*(worker(client, urls[i % len(urls)]) for i in range(concurrency)))
    return tally


async def _calls(control: httpx.AsyncClient, estate: RunningEstate) -> Calls:
    async def served(system: str) -> float:
        stats = (await control.get(f"{estate.urls[system]}/_sim/stats")).json()["calls"]
        feeds = ("getChanges", "GetPriceChanges")
        return float(sum(n for name, n in stats.items() if name not in feeds))

    return Calls(await served("pim"), await served("pricing"), 0.0)


def _cpu(fleet: GatewayFleet) -> float:
    return sum(process_cpu_seconds(m.pid) or 0.0 for m in fleet.members if m.running and m.pid)


async def measure(fleet: GatewayFleet, estate: RunningEstate, options: Options) -> list[Level]:
    levels = []
    async with httpx.AsyncClient(timeout=10, trust_env=False) as control:
        await _level(fleet.urls, 2, 20, options.time_cap)  # warm: every instance, every page
        for concurrency, requests in zip((1, 16), options.requests, strict=True):
            calls, cpu, started = await _calls(control, estate), _cpu(fleet), time.perf_counter()
            tally = await _level(fleet.urls, concurrency, requests, options.time_cap)
            seconds = time.perf_counter() - started
            spent = (await _calls(control, estate)).per_query(calls, tally.requests)
            cpu_ms = (_cpu(fleet) - cpu) * 1000 / max(1, tally.requests)
            level = Level(concurrency, tally, seconds, spent, cpu_ms)
            print(_row("", 0, level), file=sys.stderr, flush=True)
            levels.append(level)
    return levels


# --------------------------------------------------------------------------- staleness


async def _probe(client: httpx.AsyncClient, url: str, sku: str, store: str) -> dict[str, Any]:
    response = await client.post(
        f"{url}/graphql", json={"query": PROBE, "variables": {"sku": sku, "store": store}}
    )
    product: dict[str, Any] = response.json()["data"]["product"]
    variant = next(v for v in product["variants"] if v["sku"] == sku)
    return {
        "name": product["name"],
        "price": variant["price"]["current"]["amount"],
        "on_hand": sum(s["onHand"] for s in variant["availability"]),
        "titles": sorted(p["title"] for p in variant["promotions"]),
    }


async def _seen_after(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    sku: str,
    store: str,
    shows: Callable[[dict[str, Any]], bool],
    accepted: float,
) -> list[float]:
    """Milliseconds from ``accepted`` until each instance shows the change."""

    async def one(url: str) -> float:
        while time.perf_counter() - accepted < GIVE_UP:
            if shows(await _probe(client, url, sku, store)):
                return (time.perf_counter() - accepted) * 1000
            await asyncio.sleep(POLL_SECONDS)
        return GIVE_UP * 1000

    return list(await asyncio.gather(*(one(url) for url in urls)))


Change = Callable[
    [httpx.AsyncClient, int], Awaitable[tuple[float, Callable[[dict[str, Any]], bool]]]
]


def changes(estate: RunningEstate, truth: DemoEstate, sku: str, store: str) -> dict[str, Change]:
    """One way to change ``sku`` (or its product) per legacy system; each returns when the
    system accepted it, and what the answer shows once the change is visible."""
    product = next(p for p in truth.products if any(v.sku == sku for v in p.variants))
    promotion = next(p for p in truth.promotions if sku in p.skus and not p.coupon_code)

    async def rename(client: httpx.AsyncClient, n: int) -> tuple[float, Callable[..., bool]]:
        name = f"Renamed {n}"
        await client.post(f"{estate.urls['pim']}/_sim/products/{product.code}", json={"name": name})
        return time.perf_counter(), lambda seen: seen["name"] == name

    async def reprice(client: httpx.AsyncClient, n: int) -> tuple[float, Callable[..., bool]]:
        price = f"{10 + n % 50}.{n % 100:02d}"
        body = {"sku": sku, "price": price}
        (await client.post(f"{estate.urls['pricing']}/_sim/prices", json=body)).raise_for_status()
        return time.perf_counter(), lambda seen: seen["price"] == price

    async def move(client: httpx.AsyncClient, n: int) -> tuple[float, Callable[..., bool]]:
        units = 100 + n
        await book_stock(client, estate, {(store, sku): units})
        return time.perf_counter(), lambda seen: seen["on_hand"] == units

    async def swap(client: httpx.AsyncClient, n: int) -> tuple[float, Callable[..., bool]]:
        title = f"Offer {n}"
        rows = [
            promotion_row(replace(p, title=title) if p.id == promotion.id else p)
            for p in truth.promotions
        ]
        publish(estate.promotions_dir, PROMOTIONS_FILE, rows)
        return time.perf_counter(), lambda seen: title in seen["titles"]

    return {"pim": rename, "pricing": reprice, "erp": move, "promotions": swap}


async def measure_staleness(
    fleet: GatewayFleet, estate: RunningEstate, truth: DemoEstate, count: int
) -> Staleness:
    store = next(loc.code for loc in truth.locations if loc.kind == "STORE")
    sku = next(
        v.sku
        for p in truth.products
        for v in p.variants
        if truth.ranged(p, next(loc for loc in truth.locations if loc.code == store))
        and any(
            v.sku in promotion.skus and not promotion.coupon_code for promotion in truth.promotions
        )
    )
    result = Staleness()
    kinds = changes(estate, truth, sku, store)
    async with httpx.AsyncClient(headers=HEADERS, timeout=30, trust_env=False) as client:
        for url in fleet.urls:
            await _probe(client, url, sku, store)
        for n, (system, change) in zip(range(count), itertools.cycle(kinds.items()), strict=False):
            accepted, shows = await change(client, n)
            result.add(system, await _seen_after(client, fleet.urls, sku, store, shows, accepted))
    publish(estate.promotions_dir, PROMOTIONS_FILE, [promotion_row(p) for p in truth.promotions])
    return result


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def deployment(
    latency_ms: float, data_dir: Path
) -> Iterator[tuple[RunningEstate, str, str, DemoEstate]]:
    """The ``default`` estate (seeded into ``data_dir`` once) at ``latency_ms``, a database and
    a Redis, all stopped (and dropped) on the way out."""
    if not (data_dir / MANIFEST).is_file():
        seed(data_dir, 42, "default", progress=False)
    truth = generate(42, "default")
    knobs = {system: Knobs(latency_ms=latency_ms) for system in SYSTEMS}
    estate = start_estate(EstateConfig(data_dir=data_dir, knobs=knobs))
    try:
        with (
            fresh_database(POSTGRES_ADMIN_URL, "cg_bench_rm") as database,
            private_redis(data_dir / "redis") as redis,
        ):
            yield estate, database.url, redis.url, truth
    finally:
        estate.stop()


HELD: Final = 0.4  # of a core, per gateway process, in the phases that hold them
HELD_NAME: Final = f"read model and response cache, each process held to {HELD:g} of a core"
PHASES: Final[tuple[tuple[str, int, TomlTable, float | None], ...]] = (
    ("read model off (every read asks the legacy systems)", 1, {"enabled": False}, None),
    ("read model, no response cache", 1, {"response_cache_megabytes": 0}, None),
    ("read model and response cache", 1, {}, None),
    ("read model and response cache", 2, {}, None),
    (HELD_NAME, 1, {}, HELD),
    (HELD_NAME, 2, {}, HELD),
)
NAME: Final = "commerce-bench"  # of the cgroups made for the held phases
STALENESS_AFTER: Final = 3  # the two processes, unheld


def benchmark(options: Options) -> tuple[list[Phase], Staleness]:
    phases = []
    with deployment(options.latency_ms, options.data_dir) as (
        estate,
        database_url,
        redis_url,
        truth,
    ):
        staleness = Staleness()
        for index, (name, processes, read_model, held) in enumerate(PHASES):
            config = unthrottled(
                gateway_config(estate, stock_sync_interval=0.25, read_model=read_model)
            )
            path = write_toml(config, options.data_dir / f"bench-read-{index}.toml")
            fleet = GatewayFleet(
                path,
                database_url,
                options.data_dir / "gateways",
                environment={"REDIS_URL": redis_url},
            )
            try:
                fleet.start(processes)
                print(f"{name}, {processes} process(es)", file=sys.stderr, flush=True)
                pids = [member.pid for member in fleet.members if member.pid]
                holder = contextlib.nullcontext(True) if held is None else held_to(pids, held, NAME)
                with holder as holding:
                    if held is not None and not holding:
                        print("  skipped: no writable cgroup CPU controller", file=sys.stderr)
                        continue
                    levels = asyncio.run(measure(fleet, estate, options))
                phases.append(Phase(name, processes, tuple(levels)))
                if index == STALENESS_AFTER:
                    staleness = asyncio.run(
                        measure_staleness(fleet, estate, truth, options.changes)
                    )
            finally:
                fleet.stop()
    return phases, staleness


def unthrottled(config: TomlTable) -> TomlTable:
    """``config`` with the channels' rate limits far above what the benchmark sends: they are
    shared by all instances (500 requests/s a channel by default) and would cap what is
    measured here."""
    channels = config["channels"]
    assert isinstance(channels, Mapping)
    raised = {
        key: {**channel, "requests_per_second": 1e6, "burst": 1_000_000}
        for key, channel in channels.items()
        if isinstance(channel, Mapping)
    }
    return {**config, "channels": raised}


# --------------------------------------------------------------------------- the report

HEAD: Final = (
    "| phase | processes | concurrency | requests | errors | p50 ms | p99 ms | req/s "
    "| PIM calls/query | pricing calls/query | gateway CPU ms/query |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(name: str, processes: int, level: Level) -> str:
    tally = level.tally
    per_second = tally.requests / level.seconds if level.seconds else 0.0
    cpu = "n/a" if level.cpu_ms is None else f"{level.cpu_ms:.1f}"
    return (
        f"| {name} | {processes} | {level.concurrency} | {tally.requests} | {tally.errors} "
        f"| {_percentile(tally.latencies_ms, 50):.1f} | {_percentile(tally.latencies_ms, 99):.1f} "
        f"| {per_second:.1f} | {level.calls.pim:.2f} | {level.calls.pricing:.2f} | {cpu} |"
    )


def _percentile(values: Sequence[float], rank: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(rank / 100 * len(ordered)) - 1))]


def _rate(phase: Phase) -> float:
    level = phase.levels[1]
    return level.tally.requests / level.seconds if level.seconds else 0.0


def _p50(phase: Phase) -> float:
    return _percentile(phase.levels[0].tally.latencies_ms, 50)


def render_listing(phases: Sequence[Phase], options: Options, when: datetime) -> str:
    off, model, hits, two, *held = phases
    rows = [_row(p.name, p.processes, level) for p in phases for level in p.levels]
    verdict = [
        f"- (a) read model only: p50 at c=1 {_p50(model):.1f} ms (target ≤ 20), "
        f"{_rate(model) / max(_rate(off), 1e-9):.1f}x the req/s at c=16 of the read model off "
        "(target ≥ 2x).",
        f"- (b) response-cache hits: p50 at c=1 {_p50(hits):.1f} ms (target ≤ 3), "
        f"{_rate(hits):.0f} req/s at c=16 (target ≥ 800).",
        f"- Two processes on hits: {_rate(two) / max(_rate(hits), 1e-9):.2f}x one process "
        "(target ≥ 1.8x). One process and the load generator already take both cores, so this "
        "measures the machine.",
        (
            f"- Two processes on hits, each held to {HELD:g} of a core: "
            f"{_rate(held[1]) / max(_rate(held[0]), 1e-9):.2f}x one process held the same "
            "(target ≥ 1.8x): whether instances hold each other back, on equal cores."
            if len(held) == 2
            else "- Held processes: not measured (no writable cgroup CPU controller)."
        ),
    ]
    intro = (
        "The web listing (`LISTING` in `tests/support.py`, 24 products with price, "
        "availability and total) against `commerce-gateway serve` processes over one "
        "PostgreSQL and one Redis, the `default` estate with every legacy system at "
        f"{options.latency_ms:g} ms. Each phase is warmed first (every instance, 20 listings), so "
        "the read-model phases are warm. Calls per query count the PIM's and the pricing "
        "engine's calls less their change feeds; gateway CPU is the gateway processes' CPU "
        "time per query. The load generator shares the machine's cores. The channels' rate "
        "limits are raised far above what is sent, so that they do not cap what is measured."
    )
    return "\n".join(
        [
            "<!-- read_model:start -->",
            "## Read model: the warm listing",
            "",
            wrapped(intro),
            "",
            HEAD,
            *rows,
            "",
            *map(wrapped, verdict),
            "",
            *map(wrapped, _setting(options, when)),
            "<!-- read_model:end -->",
            "",
        ]
    )


def render_staleness(staleness: Staleness, options: Options, when: datetime) -> str:
    rows = []
    every: list[float] = []
    for system, delays in staleness.by_system.items():
        every += delays
        rows.append(_staleness_row(system, delays))
    rows.append(_staleness_row("all", every))
    intro = (
        f"{options.changes} changes, one at a time, spread evenly over the PIM (a product "
        "rename), the pricing engine (a new base price), the ERP (a stock movement booked at a "
        "store) and the promotions folder (`promotions.csv` replaced with one title changed), "
        "with two gateway processes over one Redis. After each change both instances are asked "
        f"every {POLL_SECONDS * 1000:g} ms for the product until they show it; the delay runs "
        "from the moment the legacy system accepted the change (its answer, or the file's "
        "rename) to the first answer showing it, per instance. Feeds are read every 0.25 s."
    )
    return "\n".join(
        [
            "<!-- staleness:start -->",
            "## Read model: staleness after a change",
            "",
            wrapped(intro),
            "",
            "| system | observations | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            wrapped(f"- Target: p99 ≤ 1000 ms over all: {_verdict(every)}."),
            "",
            *map(wrapped, _setting(options, when)),
            "<!-- staleness:end -->",
            "",
        ]
    )


def _staleness_row(system: str, delays: Sequence[float]) -> str:
    return (
        f"| {system} | {len(delays)} | {_percentile(delays, 50):.0f} "
        f"| {_percentile(delays, 99):.0f} | {max(delays, default=float('nan')):.0f} |"
    )


def _verdict(delays: Sequence[float]) -> str:
    p99 = _percentile(delays, 99)
    return f"{'met' if p99 <= 1000 else 'not met'} (p99 {p99:.0f} ms)"


def _setting(options: Options, when: datetime) -> list[str]:
    return setting(options.command, when, os.getloadavg(), "at the end")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    phases, staleness = benchmark(options)
    when = datetime.now(UTC)
    listing, stale = (
        render_listing(phases, options, when),
        render_staleness(staleness, options, when),
    )
    write_section(options.output, "read_model", listing)
    write_section(options.output, "staleness", stale)
    print(listing + stale, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
