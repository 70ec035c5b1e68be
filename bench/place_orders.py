"""The order benchmark: ``placeOrder`` through one gateway process, then through two.

Seeds the demo estate (``--scale``, tiny by default) into a data dir of its own, starts its
simulators with every system at a fixed latency (the pricing engine is on the critical path of
every order), creates a fresh PostgreSQL database for the gateways (dropped at the end), and
books plenty of stock of many SKUs in the ERP. Then it places orders from this process at a
fixed concurrency, first against one ``commerce-gateway serve`` process and then against two
(the workers split between them), each phase bounded by ``--orders`` and ``--time-cap``.

It reports orders per second, p50/p99 latency, errors, what each order cost (CPU of the gateways
and of the simulators, PostgreSQL statement time and commits, pricing calls and the time the
gateways waited for them), and checks the ledger afterwards:
no position holds more than it may promise (oversell), and every position holds exactly what
the orders' allocations say. The results go to the ``place_orders`` section of
``docs/benchmarks.md``. With ``--profile`` it runs one phase against a gateway served in this
process instead, profiled with cProfile while the orders run (not while it starts), and prints
where the gateway's CPU time goes per order; nothing is written then.

    .venv/bin/python -m bench.place_orders [--orders 3000] [--concurrency 16] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import json
import math
import os
import platform
import pstats
import queue
import random
import re
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import httpx
import uvicorn

from adapters.http import BackendClient, backend_client
from bench.read_listing import process_cpu_seconds
from bench.report import wrapped, write_section
from gateway.http_protocol import ResponseInOneWrite
from legacy.demo import DemoEstate, generate
from legacy.launcher import EstateConfig, RunningEstate, start_estate
from legacy.seed import MANIFEST, seed
from legacy.sim import Knobs
from tests.e2e.gateways import (
    Database,
    GatewayFleet,
    book_stock,
    fresh_database,
    gateway_config,
    write_toml,
)
from tests.support import MARIENPLATZ, OPERATOR, POSTGRES_ADMIN_URL

ROOT: Final = Path(__file__).resolve().parents[1]
SECTION: Final = "place_orders"
SYSTEMS: Final = ("pim", "pricing", "loyalty", "oms", "erp")
STOCK_UNITS: Final = 1_000_000  # per stocked position: no order of the run can run out
REQUEST_TIMEOUT: Final = 60.0
# Targets on this machine (issue 16): with two processes, at the default concurrency of 16.
TARGET_PER_SECOND: Final = 200.0
TARGET_P99_MS: Final = 150.0
TARGET_GATEWAY_CPU_MS: Final = 4.0  # per order
TARGET_ROUND_TRIPS: Final = 8.0  # per order, placement and the outbox's delivery together
STATS_SETTLE: Final = 3.0  # seconds after a phase for PostgreSQL's statistics to come in
IDLE_SECONDS: Final = 5.0  # before a phase: the gateways' CPU with no orders

PLACE: Final = """mutation Place($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id status total { amount currency } allocations { sku quantity location { code } } }
    userErrors { code message } } }"""
BACKEND_SECONDS: Final = re.compile(
    r'^gateway_backend_request_duration_seconds_sum\{backend="(?P<backend>[^"]+)",'
    r'operation="[^"]+"\} (?P<value>\S+)$',
    re.MULTILINE,
)
ROUND_TRIPS: Final = re.compile(
    r'^gateway_database_round_trips_total\{kind="[^"]+"\} (?P<value>\S+)$', re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class Options:
    orders: int
    concurrency: int
    latency_ms: float
    time_cap: float
    warmup: int
    skus: int
    scale: str
    data_dir: Path
    output: Path
    profile: bool
    command: str


@dataclass(frozen=True, slots=True)
class Shop:
    """What the orders are made of: stocked SKUs, the store that sells and hands them over,
    and where shipped orders go."""

    skus: tuple[str, ...]
    store: str
    destination: Mapping[str, float]
    described: str


@dataclass(slots=True)
class Tally:
    """The answers of one phase: latency of each placed order, failures by reason, and the CPU
    seconds the load generator (this process) spent sending them."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0

    @property
    def placed(self) -> int:
        return len(self.latencies_ms)

    @property
    def errors(self) -> int:
        return self.failures.total()

    def percentile(self, rank: float) -> float:
        """The nearest-rank percentile of the placed orders' latency, in ms."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(rank / 100 * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Usage:
    """Cumulative counters: CPU seconds of the gateways and of the simulators, seconds
    PostgreSQL spent executing statements in the run's database and the transactions it
    committed there, connections opened to it (the benchmark's own included), calls the
    pricing engine served, backend seconds as the gateways timed them, by backend, and the
    round trips the gateways made to their database (statements, BEGIN, COMMIT, ROLLBACK)."""

    gateways: float
    simulators: float
    postgres: float
    transactions: float
    round_trips: float
    sessions: float
    pricing_calls: float
    backends: Mapping[str, float]

    def minus(self, before: Usage) -> Usage:
        names = set(self.backends) | set(before.backends)
        return Usage(
            self.gateways - before.gateways,
            self.simulators - before.simulators,
            self.postgres - before.postgres,
            self.transactions - before.transactions,
            self.round_trips - before.round_trips,
            self.sessions - before.sessions,
            self.pricing_calls - before.pricing_calls,
            {n: self.backends.get(n, 0.0) - before.backends.get(n, 0.0) for n in names},
        )


@dataclass(frozen=True, slots=True)
class Phase:
    """``idle``: CPU seconds per second the gateways spent with no order coming (following
    the feeds, polling the outbox), measured just before the orders."""

    processes: int
    tally: Tally
    seconds: float
    usage: Usage
    idle: float

    @property
    def per_second(self) -> float:
        return self.tally.placed / self.seconds if self.seconds > 0 else 0.0

    def per_order_ms(self, seconds: float) -> float:
        return seconds * 1000 / max(1, self.tally.placed + self.tally.errors)

    @property
    def above_idle_ms(self) -> float:
        """Gateway CPU per order beyond what the gateways spend idle over the same time."""
        return self.per_order_ms(max(0.0, self.usage.gateways - self.idle * self.seconds))


@dataclass(frozen=True, slots=True)
class Integrity:
    """The ledger after the run: positions holding more than they may promise, positions whose
    reservation differs from the orders' allocations, and what the orders hold."""

    overheld: int
    mismatched: int
    orders: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Bench:
    """What a run has started: the simulators, the gateways' database and the gateways."""

    estate: RunningEstate
    database: Database
    fleet: GatewayFleet


@dataclass(frozen=True, slots=True)
class Run:
    options: Options
    shop: Shop
    phases: list[Phase]
    integrity: Integrity
    load_before: tuple[float, float, float]


# --------------------------------------------------------------------------- command line


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.place_orders",
        description="Benchmark placeOrder through one and two gateway processes.",
    )
    add = parser.add_argument
    add("--orders", type=int, default=3000, help="orders per phase at most")
    add("--concurrency", type=int, default=16, help="orders in flight at once")
    add("--latency-ms", type=float, default=20.0, help="latency of every legacy system")
    add("--time-cap", type=float, default=60.0, help="seconds per phase at most")
    add("--warmup", type=int, default=20, help="orders through each new process first")
    add("--skus", type=int, default=200, help="SKUs to stock and order (at most)")
    add("--scale", choices=("tiny", "default"), default="tiny", help="demo estate size")
    add("--data-dir", type=Path, default=Path("var/bench-orders"), help="seeded once, reused")
    add("--output", type=Path, default=Path("docs/benchmarks.md"))
    add(
        "--profile",
        action="store_true",
        help="instead: one gateway in this process under cProfile; print where its CPU goes",
    )
    args = parser.parse_args(argv)
    if min(args.orders, args.concurrency, args.skus) < 1 or args.time_cap <= 0:
        parser.error("orders, concurrency, skus and time-cap must be positive")
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else python.name
    return Options(
        orders=args.orders,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        time_cap=args.time_cap,
        warmup=args.warmup,
        skus=args.skus,
        scale=args.scale,
        data_dir=ROOT / args.data_dir,
        output=ROOT / args.output,
        profile=args.profile,
        command=shlex.join([shown, "-m", "bench.place_orders", *argv]),
    )


# --------------------------------------------------------------------------- the estate


def seeded(options: Options) -> DemoEstate:
    """The estate of ``--scale`` in the data dir: seeded unless it already is (stock is set to
    absolute quantities later, so a reused estate starts the same). The OMS starts empty."""
    manifest = options.data_dir / MANIFEST
    if not manifest.is_file() or json.loads(manifest.read_text())["scale"] != options.scale:
        seed(options.data_dir, 42, options.scale, progress=False)
    (options.data_dir / "oms" / "received.jsonl").unlink(missing_ok=True)
    return generate(42, options.scale)


@contextlib.contextmanager
def running_estate(options: Options) -> Iterator[RunningEstate]:
    """The simulators at a fixed latency and no jitter (the OMS too), stopped on the way out."""
    knobs = {system: Knobs(latency_ms=options.latency_ms) for system in SYSTEMS}
    estate = start_estate(EstateConfig(data_dir=options.data_dir, knobs=knobs))
    try:
        yield estate
    finally:
        estate.stop()


def choose_shop(truth: DemoEstate, count: int) -> Shop:
    """SKUs of products ranged at the first cluster-A store, which serves tills and pickups;
    shipped orders go to Marienplatz, sourced from that store and the distribution centres."""
    store = next(loc for loc in truth.locations if loc.kind == "STORE" and loc.cluster == "A")
    skus = tuple(
        variant.sku
        for product in truth.products
        if truth.ranged(product, store)
        for variant in product.variants
    )[:count]
    described = (
        f"{len(skus)} SKUs stocked with {STOCK_UNITS:,} units each at store {store.code} "
        "and at both distribution centres"
    )
    return Shop(skus, store.code, MARIENPLATZ, described)


def stock_target(truth: DemoEstate, shop: Shop) -> dict[tuple[str, str], int]:
    dcs = [location.code for location in truth.locations if location.kind == "DC"]
    return {(where, sku): STOCK_UNITS for sku in shop.skus for where in (shop.store, *dcs)}


# --------------------------------------------------------------------------- orders


def order_input(rng: random.Random, shop: Shop, number: int) -> tuple[str, dict[str, object]]:
    """The channel key and input of order ``number``: in turn a till sale of one line, a
    mobile pickup and a web delivery of one to three lines, one or two units each."""
    lines = [
        {"sku": sku, "quantity": rng.randint(1, 2)}
        for sku in rng.sample(shop.skus, k=min(len(shop.skus), rng.randint(1, 3)))
    ]
    base: dict[str, object] = {"idempotencyKey": uuid.uuid4().hex, "lines": lines}
    match number % 3:
        case 0:
            till = {"lines": lines[:1], "fulfillment": "CARRY_OUT", "storeId": shop.store}
            return "demo-pos", {**base, **till}
        case 1:
            return "demo-mobile", {**base, "fulfillment": "PICKUP_IN_STORE", "storeId": shop.store}
        case _:
            shipped = {"fulfillment": "SHIP_TO_HOME", "destination": dict(shop.destination)}
            return "demo-web", {**base, **shipped}


async def place(client: BackendClient, url: str, key: str, order: dict[str, object]) -> str:
    """Place one order; the empty string when placed, else why not (the first reason)."""
    body = {"query": PLACE, "variables": {"input": order}}
    try:
        response = await client.post(f"{url}/graphql", json=body, headers={"X-Api-Key": key})
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    answer: dict[str, Any] = response.json()
    if answer.get("errors"):
        error = answer["errors"][0]
        return f"{error.get('extensions', {}).get('code')}: {error.get('message')}"
    payload = answer["data"]["placeOrder"]
    if payload["order"] is None:
        return ", ".join(error["code"] for error in payload["userErrors"]) or "no order"
    return ""


def http_client(concurrency: int) -> BackendClient:
    """The load generator's client: the gateway's own backend client, which spends a small part
    of httpx's CPU per request (bench.http_client) on the cores the gateways share."""
    return backend_client(timeout=REQUEST_TIMEOUT, max_connections=concurrency)


async def run_phase(
    urls: Sequence[str], shop: Shop, options: Options, rng: random.Random
) -> tuple[Tally, float]:
    """Up to ``--orders`` orders from ``--concurrency`` workers (worker i sends to process
    i mod n), none started after ``--time-cap`` seconds. Returns the tally and the duration."""
    tally = Tally()
    issued = itertools.count()
    deadline = time.perf_counter() + options.time_cap

    async def worker(client: BackendClient, url: str) -> None:
        while (number := next(issued)) < options.orders and time.perf_counter() < deadline:
            key, order = order_input(rng, shop, number)
            started = time.perf_counter()
            failure = await place(client, url, key, order)
            if failure:
                tally.failures[failure] += 1
            else:
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)

    started, cpu = time.perf_counter(), time.process_time()
    async with http_client(options.concurrency) as client:
        workers = range(options.concurrency)
        await asyncio.gather(*(worker(client, urls[i % len(urls)]) for i in workers))
    tally.client_cpu = time.process_time() - cpu
    return tally, time.perf_counter() - started


async def warm_up(url: str, shop: Shop, orders: int, rng: random.Random) -> None:
    """A few orders one by one through a new process, so that its connections are open and
    its caches filled before it is measured."""
    async with http_client(1) as client:
        for number in range(orders):
            key, order = order_input(rng, shop, number)
            failure = await place(client, url, key, order)
            if failure:
                raise RuntimeError(f"an order failed during the warm-up: {failure}")


# --------------------------------------------------------------------------- measuring


async def postgres_activity(database: Database) -> tuple[float, float, float]:
    """Seconds PostgreSQL has spent executing statements in ``database`` (lock waits
    included), transactions committed there and sessions opened on it, from its cumulative
    statistics (which backends report about once a second)."""
    connection = await asyncpg.connect(database.dsn, timeout=10)
    try:
        row = await connection.fetchrow(
            "SELECT active_time, xact_commit, sessions FROM pg_stat_database WHERE datname = $1",
            database.name,
        )
    finally:
        await connection.close()
    return (
        float(row["active_time"] or 0.0) / 1000,
        float(row["xact_commit"] or 0),
        float(row["sessions"] or 0),
    )


async def usage(control: httpx.AsyncClient, bench: Bench) -> Usage:
    backends: dict[str, float] = {}
    round_trips = 0.0
    running = [member for member in bench.fleet.members if member.running]
    for member in running:
        metrics = (await control.get(f"{member.url}/metrics", headers=OPERATOR)).text
        for match in BACKEND_SECONDS.finditer(metrics):
            name = match["backend"]
            backends[name] = backends.get(name, 0.0) + float(match["value"])
        round_trips += sum(float(match["value"]) for match in ROUND_TRIPS.finditer(metrics))
    pricing = (await control.get(f"{bench.estate.urls['pricing']}/_sim/stats")).json()
    active, transactions, sessions = await postgres_activity(bench.database)
    return Usage(
        sum(process_cpu_seconds(member.pid) or 0.0 for member in running if member.pid),
        sum(process_cpu_seconds(p.pid) or 0.0 for p in bench.estate.processes.values()),
        active,
        transactions,
        round_trips,
        sessions,
        float(pricing["total"]),
        backends,
    )


async def measure_phase(bench: Bench, shop: Shop, options: Options) -> Phase:
    rng = random.Random(len(bench.fleet.members))
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as control:
        resting = await usage(control, bench)
        await asyncio.sleep(IDLE_SECONDS)
        before = await usage(control, bench)
        idle = (before.gateways - resting.gateways) / IDLE_SECONDS
        tally, seconds = await run_phase(bench.fleet.urls, shop, options, rng)
        await asyncio.sleep(STATS_SETTLE)  # for PostgreSQL's statistics to come in
        spent = (await usage(control, bench)).minus(before)
    phase = Phase(len(bench.fleet.members), tally, seconds, spent, idle)
    print(_row(phase), file=sys.stderr, flush=True)
    return phase


async def check_ledger(database: Database) -> Integrity:
    """Oversell and agreement of the ledger with the orders, over every position."""
    connection = await asyncpg.connect(database.dsn, timeout=10)
    try:
        overheld = await connection.fetchval(
            "SELECT count(*) FROM inventory_positions"
            " WHERE reserved > 0 AND reserved > on_hand - safety_stock"
        )
        mismatched = await connection.fetchval(
            "WITH held AS (SELECT location_id, sku, SUM(quantity - released) AS units"
            " FROM order_allocations GROUP BY location_id, sku)"
            " SELECT count(*) FROM inventory_positions p FULL JOIN held h"
            " USING (location_id, sku) WHERE COALESCE(p.reserved, 0) <> COALESCE(h.units, 0)"
        )
        orders = await connection.fetchval("SELECT count(*) FROM orders")
        reserved = await connection.fetchval(
            "SELECT COALESCE(SUM(reserved), 0) FROM inventory_positions"
        )
    finally:
        await connection.close()
    return Integrity(int(overheld), int(mismatched), int(orders), int(reserved))


async def book(estate: RunningEstate, target: Mapping[tuple[str, str], int]) -> None:
    async with httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
        await book_stock(client, estate, target)


def benchmark(options: Options) -> Run:
    """Seed, start, stock, measure one process and then two, check the ledger; everything
    started is stopped (and the database dropped) on the way out."""
    load_before = os.getloadavg()
    truth = seeded(options)
    shop = choose_shop(truth, options.skus)
    with (
        running_estate(options) as estate,
        fresh_database(POSTGRES_ADMIN_URL, "cg_bench") as database,
    ):
        asyncio.run(book(estate, stock_target(truth, shop)))
        config = write_toml(gateway_config(estate), options.data_dir / "bench-gateway.toml")
        fleet = GatewayFleet(config, database.url, options.data_dir / "gateways")
        bench = Bench(estate, database, fleet)
        try:
            phases = [grow_and_measure(bench, shop, options) for _ in range(2)]
        finally:
            fleet.stop()
        integrity = asyncio.run(check_ledger(database))
    return Run(options, shop, phases, integrity, load_before)


def grow_and_measure(bench: Bench, shop: Shop, options: Options) -> Phase:
    """Start one more gateway process, warm it up, and measure the whole fleet."""
    (member,) = bench.fleet.start(1)
    print(f"gateway {member.index}: pid {member.pid} at {member.url}", file=sys.stderr)
    asyncio.run(warm_up(member.url, shop, options.warmup, random.Random(member.index)))
    if member.index == 0:
        print(TABLE_HEAD, file=sys.stderr, flush=True)
    return asyncio.run(measure_phase(bench, shop, options))


# --------------------------------------------------------------------------- profile

PROFILE_GROUPS: Final = (
    ("GraphQL (graphql-core, strawberry)", ("graphql/", "strawberry/")),
    ("database (SQLAlchemy, asyncpg)", ("sqlalchemy/", "asyncpg/")),
    ("HTTP client (httpx, httpcore, anyio)", ("httpx/", "httpcore/", "anyio/", "h11/")),
    ("HTTP server (uvicorn, starlette)", ("uvicorn/", "starlette/", "httptools/")),
    ("backend adapters (SOAP, JSON, rows)", ("/adapters/", "lxml", "json/")),
    ("promotions and cart pricing", ("/gateway/promotions/", "/gateway/cart.py")),
    ("sourcing", ("/gateway/sourcing/",)),
    ("orders, ledger, outbox", ("/gateway/orders/", "/gateway/ledger.py")),
    ("rest of the gateway and resolvers", ("/gateway/", "/resolvers/")),
    ("event loop and its socket calls", ("asyncio/", "selectors")),
    ("imports at run time", ("<frozen importlib", "_distutils_hack", "__editable__")),
)


@dataclass(frozen=True, slots=True)
class ThreadGateway:
    """A gateway served by uvicorn on a thread (and event loop) of its own in this process."""

    url: str
    loop: asyncio.AbstractEventLoop

    def call(self, function: Callable[[], object]) -> None:
        """Run ``function`` on the gateway's thread: cProfile profiles the thread enabling it."""

        async def run() -> None:
            function()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)


@contextlib.contextmanager
def served_in_thread(config: Path, database_url: str) -> Iterator[ThreadGateway]:
    """The gateway as ``commerce-gateway serve`` runs it (same app, same garbage-collector
    tuning), on a thread of this process, stopped on the way out."""
    from gateway.app import create_app
    from gateway.config import Settings

    app = create_app(Settings(gateway_config=config, database_url=database_url))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, http=ResponseInOneWrite)
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    loops: queue.Queue[asyncio.AbstractEventLoop] = queue.Queue()

    async def serve() -> None:
        loops.put(asyncio.get_running_loop())
        await server.serve(sockets=[listener])

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        loop = loops.get(timeout=30)
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process gateway did not start")
            time.sleep(0.05)
        yield ThreadGateway(f"http://127.0.0.1:{listener.getsockname()[1]}", loop)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def profile(options: Options) -> None:
    """One gateway in this process, profiled only while the orders run; prints per group of
    code the CPU (self time) each order cost, and the costliest functions."""
    truth = seeded(options)
    shop = choose_shop(truth, options.skus)
    profiler = cProfile.Profile()
    with (
        running_estate(options) as estate,
        fresh_database(POSTGRES_ADMIN_URL, "cg_bench") as database,
    ):
        asyncio.run(book(estate, stock_target(truth, shop)))
        config = write_toml(gateway_config(estate), options.data_dir / "bench-gateway.toml")
        with served_in_thread(config, database.url) as gateway:
            asyncio.run(warm_up(gateway.url, shop, options.warmup, random.Random(0)))
            gateway.call(profiler.enable)
            rng = random.Random(1)
            tally, seconds = asyncio.run(run_phase([gateway.url], shop, options, rng))
            gateway.call(profiler.disable)
    print_profile(pstats.Stats(profiler), tally, seconds)


def profile_groups(stats: pstats.Stats) -> Counter[str]:
    """Self time (seconds) by group of code, the first matching group winning; a built-in's
    time goes to the groups of its callers, in proportion."""
    spent: Counter[str] = Counter()
    entries: Mapping[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, self_time, _, callers) in entries.items():
        if filename != "~":
            spent[_group(filename)] += self_time
            continue
        for (caller, _, _), (_, _, time_from_caller, _) in callers.items():
            spent[_group(caller)] += time_from_caller
    return spent


def _group(filename: str) -> str:
    needles = ((name, any(n in filename for n in found)) for name, found in PROFILE_GROUPS)
    return next((name for name, matched in needles if matched), "other")


def print_profile(stats: pstats.Stats, tally: Tally, seconds: float) -> None:
    orders = max(1, tally.placed + tally.errors)
    print(
        f"\n{tally.placed} orders placed, {tally.errors} failed, in {seconds:.1f} s "
        f"({tally.placed / seconds:.1f}/s, p50 {tally.percentile(50):.1f} ms, "
        f"p99 {tally.percentile(99):.1f} ms; the load generator shares the process)."
    )
    print("Gateway CPU (self time) per order, by group of code:")
    spent = profile_groups(stats)
    for group, total in spent.most_common():
        print(f"  {total * 1000 / orders:7.2f} ms  {total / sum(spent.values()):6.1%}  {group}")
    stats.sort_stats("tottime").print_stats(25)


# --------------------------------------------------------------------------- the report

TABLE_HEAD: Final = (
    "| gateway processes | orders placed | errors | orders/s | p50 ms | p99 ms "
    "| gateway CPU ms/order | gateway CPU ms/order above idle | gateway idle CPU ms/s "
    "| simulators CPU ms/order | load generator CPU ms/order "
    "| PostgreSQL active ms/order "
    "| DB commits/order | DB round trips/order | DB connections opened/1000 orders "
    "| pricing calls/order | pricing ms/order |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(phase: Phase) -> str:
    spent, tally = phase.usage, phase.tally
    per_order = phase.per_order_ms
    sent = max(1, tally.placed + tally.errors)
    return (
        f"| {phase.processes} | {tally.placed} | {tally.errors} | {phase.per_second:.1f} "
        f"| {tally.percentile(50):.1f} | {tally.percentile(99):.1f} "
        f"| {per_order(spent.gateways):.1f} | {phase.above_idle_ms:.1f} "
        f"| {phase.idle * 1000:.0f} | {per_order(spent.simulators):.1f} "
        f"| {per_order(tally.client_cpu):.1f} "
        f"| {per_order(spent.postgres):.1f} | {spent.transactions / sent:.1f} "
        f"| {spent.round_trips / sent:.1f} "
        f"| {spent.sessions * 1000 / sent:.1f} "
        f"| {spent.pricing_calls / sent:.2f} "
        f"| {per_order(spent.backends.get('pricing', 0.0)):.1f} |"
    )


def render(run: Run, when: datetime) -> str:
    """The benchmark's section of docs/benchmarks.md, markers included."""
    options = run.options
    intro = (
        f"`placeOrder` over HTTP/1.1 keep-alive from a separate process, {options.concurrency} "
        f"orders in flight, in turn a till sale (`demo-pos`, CARRY_OUT, one line), a pickup "
        "(`demo-mobile`, PICKUP_IN_STORE) and a delivery (`demo-web`, SHIP_TO_HOME to "
        "Marienplatz) of one to three lines, one or two units each. The estate is the "
        f"`{options.scale}` scale with the ERP on SQLite, {run.shop.described}, every legacy "
        f"system at {options.latency_ms:g} ms latency and no jitter; the gateways share a fresh "
        f"PostgreSQL database and deliver the outbox to the OMS themselves. Each phase sends at "
        f"most {options.orders} orders and stops after {options.time_cap:g} s; the second adds a "
        "second gateway process and splits the workers between the two. Latency counts placed "
        "orders. Per order sent: CPU time of the gateway processes and of the simulators (from "
        "/proc) and of the load generator (this process, whose HTTP client is the gateway's "
        "own backend client; the gateways' also less what they spend idle, measured for "
        f"{IDLE_SECONDS:g} s before each phase), PostgreSQL's time executing statements in the "
        "gateways' database "
        "(`pg_stat_database.active_time`: wall time, so lock waits and waiting for a core on "
        "a busy machine count too) and the transactions committed "
        "there (the outbox's and the stock sync's included; each single statement run in "
        "autocommit mode, such as the idempotency key's claim and the stock read, counts as "
        "one), the round trips the gateways made to it (their own metric "
        "`gateway_database_round_trips_total`: statements, a batch of parameter sets counted "
        "once, and BEGIN, COMMIT and ROLLBACK outside autocommit mode; placement and the "
        "outbox's delivery together), the connections opened to that database (by the "
        "gateways' pools; the benchmark's own statistics read included), the pricing "
        "engine's calls, and the time the gateways waited for them (their own metrics)."
    )
    lines = [
        f"<!-- {SECTION}:start -->",
        "## Write: placing orders",
        "",
        wrapped(intro),
        "",
        TABLE_HEAD,
        *(_row(phase) for phase in run.phases),
        "",
        *map(wrapped, _verdict(run)),
        "",
        *map(wrapped, _setting(run, when)),
        f"<!-- {SECTION}:end -->",
    ]
    return "\n".join(lines) + "\n"


def _verdict(run: Run) -> list[str]:
    two = run.phases[-1]
    check = run.integrity
    throughput = _met(two.per_second >= TARGET_PER_SECOND)
    tail = _met(two.tally.percentile(99) <= TARGET_P99_MS)
    oversold = "met" if check.overheld == 0 and check.mismatched == 0 else "NOT MET"
    cpu_ms = two.per_order_ms(two.usage.gateways + two.usage.simulators + two.tally.client_cpu)
    gateway_ms = two.per_order_ms(two.usage.gateways)
    round_trips = two.usage.round_trips / max(1, two.tally.placed + two.tally.errors)
    cores = os.cpu_count() or 1
    return [
        f"- Targets with two processes: >= {TARGET_PER_SECOND:g} orders/s: {throughput} "
        f"({two.per_second:.1f}/s). p99 <= {TARGET_P99_MS:g} ms: {tail} "
        f"({two.tally.percentile(99):.1f} ms). Gateway CPU <= {TARGET_GATEWAY_CPU_MS:g} "
        f"ms/order: {_met(gateway_ms <= TARGET_GATEWAY_CPU_MS)} ({gateway_ms:.1f} ms). "
        f"<= {TARGET_ROUND_TRIPS:g} round trips to the database per order: "
        f"{_met(round_trips <= TARGET_ROUND_TRIPS)} ({round_trips:.1f}).",
        f"- Oversell: {oversold}. After the run {check.orders} orders hold {check.reserved} "
        f"units; {check.overheld} positions hold more than on hand less safety stock, and "
        f"{check.mismatched} positions differ from their orders' allocations.",
        f"- CPU per order with two processes, gateways, simulators and load generator: "
        f"{cpu_ms:.1f} ms (PostgreSQL's own not counted), so this machine's "
        f"{cores} cores place at most about {cores * 1000 / max(cpu_ms, 0.001):.0f} orders/s, "
        "whatever the concurrency or the number of processes.",
        *(_failures(phase) for phase in run.phases if phase.tally.errors),
        "- Where the gateway's CPU goes: `--profile` runs one phase against a gateway in the "
        "benchmark's own process under cProfile and prints it by group of code; a sampling "
        "profiler attached to a served gateway (bench/README.md) shows it without cProfile's "
        "distortion.",
    ]


def _met(held: bool) -> str:
    return "met" if held else "not met"


def _failures(phase: Phase) -> str:
    reasons = ", ".join(
        f"{count} x `{reason}`" for reason, count in phase.tally.failures.most_common(3)
    )
    return f"- Errors with {phase.processes} process(es): {reasons}."


def _setting(run: Run, when: datetime) -> list[str]:
    one, five, fifteen = run.load_before
    return [
        f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"{platform.system()} {platform.release()}; {platform.python_implementation()} "
        f"{platform.python_version()}; load average before the run {one:.1f} / {five:.1f} / "
        f"{fifteen:.1f}.",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC.",
        f"- Command: `{run.options.command}`",
    ]


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if options.profile:
        profile(options)
        return 0
    run = benchmark(options)
    section = render(run, datetime.now(UTC))
    write_section(options.output, SECTION, section)
    print(section, end="")
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turned into SystemExit so that the gateways and the estate are stopped on the way out.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
