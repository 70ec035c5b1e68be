"""The read benchmark: the web listing query through the gateway, at rising concurrency.

Seeds the ``default`` demo estate once into a data dir of its own, starts
``commerce-gateway serve --demo`` as one separate process group with every legacy system at a
fixed latency, and sends the listing query from this process at each concurrency level. For
each level it measures p50/p99 latency, requests per second and the backend calls per query
(from the simulators' and the gateway's own counters), and writes them with the physical floor
into its section of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.read_listing [--latency-ms 20] [--requests 200 800 1280] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx

from bench.report import wrapped, write_section
from legacy.launcher import default_erp_url
from tests.support import LISTING, MARIENPLATZ, OPERATOR

ROOT: Final = Path(__file__).resolve().parents[1]
SECTION: Final = "read_listing"
MANIFEST: Final = "estate.json"  # written by the seed
API_KEY: Final = "demo-web"
PAGE_SIZE: Final = 24
DEPENDENT_ROUNDS: Final = 2  # the PIM page, then its prices (stock is the gateway's own)
START_TIMEOUT: Final = 120.0  # seconds for the estate and the gateway to become ready
STOP_TIMEOUT: Final = 20.0
REQUEST_TIMEOUT: Final = 60.0

LISTING_BODY: Final = {"query": LISTING, "variables": {"first": PAGE_SIZE, "near": MARIENPLATZ}}
BACKEND_METRIC: Final = re.compile(
    r'^gateway_backend_requests_total\{backend="(?P<backend>[^"]+)",'
    r'operation="(?P<operation>[^"]+)"\} (?P<value>\S+)$',
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Options:
    """What one run measures, from the command line."""

    latency_ms: float
    concurrency: tuple[int, ...]
    requests: tuple[int, ...]
    time_cap: float
    warmup: int
    data_dir: Path
    erp_url: str | None
    port: int
    output: Path
    command: str


@dataclass(frozen=True, slots=True)
class Gateway:
    """The gateway process (leader of its own process group) and the addresses it printed."""

    process: subprocess.Popen[str]
    url: str
    systems: dict[str, str]
    log: Path


@dataclass(frozen=True, slots=True)
class Calls:
    """Backend calls: cumulative counters, or their difference per query."""

    pim: float
    pricing: float
    erp: float

    def per_query(self, before: Calls, queries: int) -> Calls:
        """The calls made since ``before``, divided by ``queries``."""
        count = max(1, queries)
        return Calls(
            (self.pim - before.pim) / count,
            (self.pricing - before.pricing) / count,
            (self.erp - before.erp) / count,
        )

    def same_as(self, other: Calls) -> bool:
        """The same calls per query to the PIM and the pricing engine. ERP queries are left
        out: a listing makes none; they are the ledger's sync, which runs by the clock."""
        pairs = ((self.pim, other.pim), (self.pricing, other.pricing))
        return all(math.isclose(a, b, abs_tol=0.005) for a, b in pairs)


@dataclass(slots=True)
class Tally:
    """What the workers of one level saw: the latency of each answer without errors, and how
    many failed, by reason."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return self.failures.total()

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors


@dataclass(frozen=True, slots=True)
class LevelResult:
    concurrency: int
    tally: Tally
    seconds: float
    calls: Calls
    cpu_ms: float | None  # the gateway process's CPU time per query (Linux only)

    @property
    def per_second(self) -> float:
        return self.tally.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, rank: float) -> float:
        """The nearest-rank percentile of the good answers' latency, in ms."""
        ordered = sorted(self.tally.latencies_ms)
        if not ordered:
            return math.nan
        index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
        return ordered[min(index, len(ordered) - 1)]


@dataclass(frozen=True, slots=True)
class Run:
    options: Options
    estate: str
    skus_per_query: int
    results: list[LevelResult]

    @property
    def floor_ms(self) -> float:
        return DEPENDENT_ROUNDS * self.options.latency_ms


# --------------------------------------------------------------------------- command line


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.read_listing",
        description="Benchmark the listing query through the gateway; write docs/benchmarks.md.",
    )
    add = parser.add_argument
    add("--latency-ms", type=float, default=20.0, help="latency of every legacy system")
    add("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="levels to run")
    add(
        "--requests",
        type=int,
        nargs="+",
        default=[200, 800, 1280],
        help="requests per level (one number for every level, or one per level)",
    )
    add("--time-cap", type=float, default=60.0, help="seconds per level at most")
    add("--warmup", type=int, default=5, help="requests before the first level")
    add("--data-dir", type=Path, default=Path("var/bench"), help="seeded once, then reused")
    add("--erp-url", help="ERP database (default: SQLite in the data dir)")
    add("--port", type=int, default=0, help="gateway port (default: a free one)")
    add("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    return _options(parser, args, argv)


def _options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]
) -> Options:
    requests = args.requests * len(args.concurrency) if len(args.requests) == 1 else args.requests
    if len(requests) != len(args.concurrency):
        parser.error("give one --requests value, or one per --concurrency level")
    if min(args.concurrency) < 1 or min(requests) < 1:
        parser.error("concurrency and requests must be positive")
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else python.name
    return Options(
        latency_ms=args.latency_ms,
        concurrency=tuple(args.concurrency),
        requests=tuple(requests),
        time_cap=args.time_cap,
        warmup=args.warmup,
        data_dir=ROOT / args.data_dir,
        erp_url=args.erp_url,
        port=args.port or _free_port(),
        output=ROOT / args.output,
        command=shlex.join([shown, "-m", "bench.read_listing", *argv]),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --------------------------------------------------------------------------- the estate


def seed(options: Options) -> None:
    """Seed the default estate into the data dir unless it already holds one on the same ERP."""
    wanted = options.erp_url or default_erp_url(options.data_dir)
    manifest = options.data_dir / MANIFEST
    command = [sys.executable, "-m", "gateway.cli", "seed", "--data-dir", str(options.data_dir)]
    command += ["--scale", "default", "--erp-url", wanted]
    if manifest.is_file():
        seeded = json.loads(manifest.read_text())
        if seeded.get("scale") == "default" and seeded.get("erp_url") == wanted:
            command.append("--if-absent")
    subprocess.run(command, cwd=ROOT, check=True)


def describe_estate(data_dir: Path) -> str:
    """What the seed manifest says the estate holds."""
    seeded = json.loads((data_dir / MANIFEST).read_text())
    return f"{seeded['products']:,} products, {seeded['skus']:,} SKUs, {seeded['stores']} stores"


def gateway_command(options: Options) -> list[str]:
    # No jitter: the OMS is slow and jittery by default, and the floor needs a fixed latency.
    command = [sys.executable, "-m", "gateway.cli", "serve", "--demo", "--host", "127.0.0.1"]
    command += ["--port", str(options.port), "--data-dir", str(options.data_dir)]
    command += ["--latency-ms", f"{options.latency_ms:g}", "--jitter-ms", "0"]
    if options.erp_url:
        command += ["--erp-url", options.erp_url]
    return command


@contextlib.contextmanager
def running_gateway(options: Options) -> Iterator[Gateway]:
    """The gateway and its estate as one separate process group, stopped on the way out. Their
    logs go to ``gateway.log`` in the data dir."""
    log = options.data_dir / "gateway.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            gateway_command(options),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
    try:
        yield _announced(process, log)
    finally:
        stop_group(process)


def require_erp_url_option() -> None:
    """Stop before seeding anything when ``serve --demo`` cannot be pointed at another ERP."""
    usage = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    if "--erp-url" not in usage.stdout:
        raise SystemExit("--erp-url: `commerce-gateway serve --demo` here has no --erp-url option")


def _announced(process: subprocess.Popen[str], log: Path) -> Gateway:
    """Read the "name url" lines the gateway prints until its own, keeping its stdout drained."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
    systems: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"the gateway exited with code {process.wait()}; see {log}")
        name, _, url = line.strip().partition(" ")
        if name == "gateway":
            return Gateway(process, url.strip().removesuffix("/graphql"), systems, log)
        systems[name] = url.strip()
    raise TimeoutError(f"the gateway did not announce itself within {START_TIMEOUT:g} s")


def _drain(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGINT to the gateway's process group (the gateway then stops its estate); SIGKILL to
    the group if it has not exited in time, and SIGTERM to anything of it left behind."""
    _signal_group(process, signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()
    _signal_group(process, signal.SIGTERM)


def _signal_group(process: subprocess.Popen[str], signum: signal.Signals) -> None:
    # The gateway leads its group (start_new_session), so the group id is its pid.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


async def wait_ready(control: httpx.AsyncClient, gateway: Gateway) -> None:
    """Return once /readyz says ready; raise if the gateway exits or the time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            code = gateway.process.returncode
            raise RuntimeError(f"the gateway exited with code {code}; see {gateway.log}")
        with contextlib.suppress(httpx.TransportError):
            response = await control.get(f"{gateway.url}/readyz")
            if response.status_code == 200 and response.json()["status"] == "ready":
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the gateway was not ready within {START_TIMEOUT:g} s")


# --------------------------------------------------------------------------- measuring


async def backend_calls(control: httpx.AsyncClient, gateway: Gateway) -> Calls:
    """The calls served so far: the PIM's and pricing's own counters, and the gateway's count
    of ERP queries (the ERP is read over SQL, so its simulator does not see them)."""
    pim, pricing, metrics = await asyncio.gather(
        control.get(f"{gateway.systems['pim']}/_sim/stats"),
        control.get(f"{gateway.systems['pricing']}/_sim/stats"),
        control.get(f"{gateway.url}/metrics", headers=OPERATOR),
    )
    erp = sum(
        float(match["value"])
        for match in BACKEND_METRIC.finditer(metrics.text)
        if match["backend"] == "erp"
    )
    return Calls(_served(pim), _served(pricing), erp)


def _served(stats: httpx.Response) -> float:
    stats.raise_for_status()
    calls: dict[str, int] = stats.json()["calls"]
    return float(sum(calls.values()))


def load_client(gateway: Gateway, concurrency: int) -> httpx.AsyncClient:
    """HTTP/1.1 keep-alive, one connection per concurrent worker, never through a proxy."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        base_url=gateway.url,
        headers={"X-Api-Key": API_KEY},
        limits=limits,
        timeout=REQUEST_TIMEOUT,
        trust_env=False,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """The listing's ``data``, or why there is none (the first error only)."""

    data: dict[str, Any] | None
    failure: str | None = None


async def listing(client: httpx.AsyncClient, body: Mapping[str, object] = LISTING_BODY) -> Answer:
    try:
        response = await client.post("/graphql", json=body)
    except httpx.HTTPError as exc:
        return Answer(None, type(exc).__name__)
    if response.status_code != 200:
        return Answer(None, f"HTTP {response.status_code}")
    body = response.json()
    if body.get("errors"):
        error = body["errors"][0]
        return Answer(None, f"{error.get('extensions', {}).get('code')}: {error.get('message')}")
    return Answer(body["data"])


async def warm_up(gateway: Gateway, requests: int) -> int:
    """Send ``requests`` listings one by one; return the SKUs one listing shows."""
    async with load_client(gateway, 1) as client:
        skus = 0
        for _ in range(max(1, requests)):
            answer = await listing(client)
            if answer.data is None:
                raise RuntimeError(f"the listing failed during the warm-up: {answer.failure}")
            skus = _skus(answer.data)
        return skus


def _skus(data: dict[str, Any]) -> int:
    return sum(len(edge["node"]["variants"]) for edge in data["products"]["edges"])


async def run_level(
    gateway: Gateway,
    concurrency: int,
    requests: int,
    cap: float,
    body: Callable[[int], Mapping[str, object]] = lambda _: LISTING_BODY,
) -> Tally:
    """``requests`` listings from ``concurrency`` workers, each starting no new request once
    ``cap`` seconds have passed; the ``n``th listing sends ``body(n)``."""
    tally = Tally()
    issued = itertools.count()
    deadline = time.perf_counter() + cap

    async def worker(client: httpx.AsyncClient) -> None:
        while (n := next(issued)) < requests and time.perf_counter() < deadline:
            started = time.perf_counter()
            answer = await listing(client, body(n))
            if answer.failure is not None:
                tally.failures[answer.failure] += 1
            else:
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)

    async with load_client(gateway, concurrency) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return tally


async def measure(gateway: Gateway, options: Options) -> Run:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as control:
        await wait_ready(control, gateway)
        print(
            f"gateway pid {gateway.process.pid} at {gateway.url}, log {gateway.log}",
            file=sys.stderr,
            flush=True,
        )
        skus = await warm_up(gateway, options.warmup)
        results = []
        print(TABLE_HEAD, file=sys.stderr, flush=True)
        for concurrency, requests in zip(options.concurrency, options.requests, strict=True):
            result = await measure_level(control, gateway, concurrency, requests, options.time_cap)
            print(_row(result), file=sys.stderr, flush=True)
            results.append(result)
    return Run(options, describe_estate(options.data_dir), skus, results)


async def measure_level(
    control: httpx.AsyncClient, gateway: Gateway, concurrency: int, requests: int, cap: float
) -> LevelResult:
    """One level, with the backend calls and the gateway's CPU time it cost."""
    calls_before = await backend_calls(control, gateway)
    cpu_before = process_cpu_seconds(gateway.process.pid)
    started = time.perf_counter()
    tally = await run_level(gateway, concurrency, requests, cap)
    seconds = time.perf_counter() - started
    cpu_after = process_cpu_seconds(gateway.process.pid)
    calls = (await backend_calls(control, gateway)).per_query(calls_before, tally.requests)
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and tally.requests:
        cpu_ms = (cpu_after - cpu_before) * 1000 / tally.requests
    return LevelResult(concurrency, tally, seconds, calls, cpu_ms)


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` so far; None without Linux's /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After the parenthesised command name: state is field 3, utime 14 and stime 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the report

TABLE_HEAD: Final = (
    "| concurrency | requests | errors | p50 ms | p99 ms | req/s "
    "| PIM calls/query | pricing calls/query | ERP queries/query (stock sync) "
    "| gateway CPU ms/query |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(result: LevelResult) -> str:
    calls = result.calls
    cpu = "n/a" if result.cpu_ms is None else f"{result.cpu_ms:.0f}"
    return (
        f"| {result.concurrency} | {result.tally.requests} | {result.tally.errors} "
        f"| {result.percentile(50):.1f} | {result.percentile(99):.1f} "
        f"| {result.per_second:.1f} | {calls.pim:.2f} | {calls.pricing:.2f} | {calls.erp:.2f} "
        f"| {cpu} |"
    )


def render(run: Run, when: datetime) -> str:
    """The benchmark's section of docs/benchmarks.md, markers included."""
    options = run.options
    erp = "PostgreSQL" if options.erp_url else "SQLite"
    intro = (
        f"The web listing (`LISTING` in `tests/support.py`): {PAGE_SIZE} products, "
        f"{run.skus_per_query} SKUs, each with its price, `availability(near: Marienplatz, "
        "first: 5)` and `totalAvailable`, sent with the key `demo-web` over HTTP/1.1 keep-alive "
        f"from a separate process. The estate is the `default` scale ({run.estate}) with the "
        f"ERP on {erp}, every legacy system (the OMS too) at {options.latency_ms:g} ms latency "
        f"and no jitter. Each level sends at most {_max_requests(options)} requests and stops "
        f"after {options.time_cap:g} s. Latency percentiles count the answers without errors; "
        "gateway CPU is the gateway process's CPU time (the simulators' not included) per query."
    )
    setting = [
        f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"{platform.system()} {platform.release()}; "
        f"{platform.python_implementation()} {platform.python_version()}.",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC.",
        f"- Command: `{options.command}`",
    ]
    lines = [
        f"<!-- {SECTION}:start -->",
        "## Read: the product listing",
        "",
        wrapped(intro),
        "",
        TABLE_HEAD,
        *(_row(result) for result in run.results),
        "",
        *map(wrapped, _verdict(run)),
        "",
        *map(wrapped, setting),
        f"<!-- {SECTION}:end -->",
    ]
    return "\n".join(lines) + "\n"


def _max_requests(options: Options) -> str:
    return " / ".join(str(requests) for requests in options.requests)


def _verdict(run: Run) -> list[str]:
    floor = run.floor_ms
    first = run.results[0]
    above = first.percentile(50) - floor
    same = all(result.calls.same_as(first.calls) for result in run.results)
    return [
        f"- Physical floor: {DEPENDENT_ROUNDS} dependent backend rounds x "
        f"{run.options.latency_ms:g} ms = **{floor:g} ms**: the PIM page, then the page's prices "
        "from the pricing engine. Stock comes from the gateway's own ledger (kept in step with "
        "the ERP's change feed in the background), read while the prices travel. Each system "
        "answers its latency after it was asked, its own work included.",
        f"- Target, p50 at concurrency {first.concurrency} within 15 ms of the floor: "
        f"{'met' if above <= 15 else 'not met'} (p50 - floor = {above:.1f} ms).",
        "- PIM and pricing calls per query under load equal those at concurrency "
        f"{first.concurrency}: {'yes' if same else 'no'}.",
        *(_failures(result) for result in run.results if result.tally.errors),
    ]


def _failures(result: LevelResult) -> str:
    reasons = ", ".join(
        f"{count} x `{reason}`" for reason, count in result.tally.failures.most_common(3)
    )
    return f"- Errors at concurrency {result.concurrency} (first error of each answer): {reasons}."


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if options.erp_url:
        require_erp_url_option()
    seed(options)
    with running_gateway(options) as gateway:
        run = asyncio.run(measure(gateway, options))
    section = render(run, datetime.now(UTC))
    write_section(options.output, SECTION, section)
    print(section, end="")
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turned into SystemExit so that the gateway's process group is stopped on the way out.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
