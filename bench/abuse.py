"""Abuse beside normal traffic: the web listing's latency with and without a stream of hostile
documents sent by a partner key at the same time, through one gateway process.

    .venv/bin/python -m bench.abuse [--listings 600] [--concurrency 8] [--abuse-rate 50]

The listing is the one of ``bench.read_listing``, at ``--concurrency``. The abuse cycles
through a 1 MB body, a document over the length limit, one over the token limit, one too
deep, one too costly and a NUL byte in a variable, ``--abuse-rate`` documents per second
from ``--abusers`` workers. First each abusive document is sent alone, to see what one
refusal costs the gateway; then the phases run calm, abused, calm, abused, ...; the
listings' p50 and p99 of the calm phases and of the abused phases are compared, and what
the abuse got back is counted by status and code. Traffic goes only to 127.0.0.1; every
phase is bounded in requests and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx

from bench.read_listing import (
    LISTING_BODY,
    PAGE_SIZE,
    ROOT,
    Gateway,
    Options,
    Tally,
    _exit_on_signal,
    _free_port,
    describe_estate,
    process_cpu_seconds,
    run_level,
    running_gateway,
    seed,
    wait_ready,
    warm_up,
)
from bench.report import wrapped, write_section
from tests.support import MARIENPLATZ

SECTION: Final = "abuse"
ABUSER_KEY: Final = "demo-partner"
ALIASES: Final = " ".join(f"a{i}: __typename" for i in range(60_000))
ABUSE: Final[tuple[tuple[str, bytes], ...]] = (
    ("1 MB body", json.dumps({"query": "{ " + ALIASES + " }"}).encode()),
    ("200 KB document", json.dumps({"query": "{ " + ALIASES[:200_000] + " }"}).encode()),
    ("7 KB of tokens", json.dumps({"query": "{ " + ALIASES[:7_000] + " }"}).encode()),
    ("deep", json.dumps({"query": "{ " + "products { " * 40 + "}" * 41}).encode()),
    (
        "costly",
        json.dumps(
            {
                "query": "{ products(first: 100) { edges { node { variants { "
                "availability(first: 100) { store { code } available } } } } } }"
            }
        ).encode(),
    ),
    (
        "NUL in a variable",
        json.dumps(
            {"query": "query($id: ID!) { order(id: $id) { id } }", "variables": {"id": "a\u0000"}}
        ).encode(),
    ),
)


@dataclass(frozen=True, slots=True)
class AbuseOptions:
    listings: int
    concurrency: int
    abusers: int
    abuse_rate: float
    rounds: int
    refusals: int
    time_cap: float
    latency_ms: float
    gateway: Options
    load: float  # the 1-minute load average at the start


@dataclass(slots=True)
class AbuseTally:
    """What the abusers got back: by kind of document, status and code; and their latency."""

    answers: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Phase:
    abused: bool
    listings: Tally
    abuse: AbuseTally
    seconds: float
    cpu_seconds: float | None


def parse_options(argv: Sequence[str]) -> AbuseOptions:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__)
    add = parser.add_argument
    add("--listings", type=int, default=600, help="listings per phase")
    add("--concurrency", type=int, default=8, help="concurrent listing workers")
    add("--abusers", type=int, default=2, help="concurrent abusive workers")
    add("--abuse-rate", type=float, default=50.0, help="abusive documents per second")
    add("--rounds", type=int, default=3, help="calm and abused phases, in turn, this often")
    add("--refusals", type=int, default=100, help="each abusive document alone, this often")
    add("--time-cap", type=float, default=60.0, help="seconds per phase at most")
    add("--latency-ms", type=float, default=20.0, help="latency of every legacy system")
    add("--data-dir", type=Path, default=Path("var/bench"))
    add("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else Path(python.name)
    gateway = Options(
        latency_ms=args.latency_ms,
        concurrency=(args.concurrency,),
        requests=(args.listings,),
        time_cap=args.time_cap,
        warmup=5,
        data_dir=ROOT / args.data_dir,
        erp_url=None,
        port=_free_port(),
        output=ROOT / args.output,
        command=shlex.join([str(shown), "-m", "bench.abuse", *argv]),
    )
    return AbuseOptions(
        listings=args.listings,
        concurrency=args.concurrency,
        abusers=args.abusers,
        abuse_rate=args.abuse_rate,
        rounds=args.rounds,
        refusals=args.refusals,
        time_cap=args.time_cap,
        latency_ms=args.latency_ms,
        gateway=gateway,
        load=os.getloadavg()[0],
    )


async def abuse(
    gateway: Gateway, workers: int, per_second: float, stop: asyncio.Event
) -> AbuseTally:
    """Send the abusive documents in turn from ``workers`` workers, ``per_second`` of them in
    all, until ``stop`` is set."""
    tally = AbuseTally()
    documents = itertools.cycle(ABUSE)
    headers = {"X-Api-Key": ABUSER_KEY, "Content-Type": "application/json"}
    sent = itertools.count()
    began = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            due = began + next(sent) / per_second
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            kind, body = next(documents)
            started = time.perf_counter()
            try:
                response = await client.post("/graphql", content=body, headers=headers)
            except httpx.HTTPError as exc:
                tally.answers[f"{kind}: {type(exc).__name__}"] += 1
                continue
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            code = response.json()["errors"][0]["extensions"]["code"]
            tally.answers[f"{kind}: {response.status_code} {code}"] += 1

    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(
        base_url=gateway.url, limits=limits, timeout=30.0, trust_env=False
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))
    return tally


@dataclass(frozen=True, slots=True)
class Refusal:
    """One kind of abusive document sent alone, one at a time: what it got back, the median
    latency at the client and the gateway's CPU time per request."""

    kind: str
    answer: str
    latency_ms: float
    cpu_ms: float | None


async def refusals(gateway: Gateway, count: int) -> list[Refusal]:
    headers = {"X-Api-Key": ABUSER_KEY, "Content-Type": "application/json"}
    found = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30.0, trust_env=False) as client:
        for kind, body in ABUSE:
            latencies, answers = [], Counter[str]()
            cpu_before = process_cpu_seconds(gateway.process.pid)
            for _ in range(count):
                started = time.perf_counter()
                response = await client.post("/graphql", content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                code = response.json()["errors"][0]["extensions"]["code"]
                answers[f"{response.status_code} {code}"] += 1
            cpu_after = process_cpu_seconds(gateway.process.pid)
            cpu = None
            if cpu_before is not None and cpu_after is not None:
                cpu = (cpu_after - cpu_before) * 1000 / count
            answer = ", ".join(sorted(answers))
            found.append(Refusal(kind, answer, statistics.median(latencies), cpu))
    return found


_POINTS = itertools.count(1)


def uncached_listing(_: int) -> dict[str, object]:
    """The listing near a point of its own: no two listings of the run ask the same question,
    so none is answered from the response cache and each one runs (on the warm read model)."""
    near = {**MARIENPLATZ, "lat": MARIENPLATZ["lat"] + next(_POINTS) * 1e-6}
    return {**LISTING_BODY, "variables": {"first": PAGE_SIZE, "near": near}}


async def phase(gateway: Gateway, options: AbuseOptions, abused: bool) -> Phase:
    stop = asyncio.Event()
    workers = options.abusers if abused else 0
    abusing = asyncio.create_task(abuse(gateway, workers, options.abuse_rate, stop))
    cpu_before = process_cpu_seconds(gateway.process.pid)
    started = time.perf_counter()
    listings = await run_level(
        gateway, options.concurrency, options.listings, options.time_cap, uncached_listing
    )
    seconds = time.perf_counter() - started
    cpu_after = process_cpu_seconds(gateway.process.pid)
    stop.set()
    tally = await abusing
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Phase(abused, listings, tally, seconds, cpu)


async def measure(gateway: Gateway, options: AbuseOptions) -> tuple[list[Refusal], list[Phase]]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as control:
        await wait_ready(control, gateway)
    await warm_up(gateway, options.gateway.warmup)
    alone = await refusals(gateway, options.refusals)
    phases = []
    for abused in [False, True] * options.rounds:
        done = await phase(gateway, options, abused)
        print(_line(done), file=sys.stderr, flush=True)
        phases.append(done)
    return alone, phases


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _latencies(phases: Sequence[Phase], abused: bool) -> list[float]:
    return [ms for p in phases if p.abused == abused for ms in p.listings.latencies_ms]


def _line(done: Phase) -> str:
    ms = done.listings.latencies_ms
    return (
        f"{'abused' if done.abused else 'calm  '}: {len(ms)} listings, "
        f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"{done.listings.errors} failed; {sum(done.abuse.answers.values())} abusive requests"
    )


def _mean_cpu(phases: Sequence[Phase], abused: bool) -> float:
    seconds = [p.cpu_seconds or 0.0 for p in phases if p.abused == abused]
    return statistics.mean(seconds) if seconds else 0.0


def _phase_row(number: int, done: Phase) -> str:
    ms = done.listings.latencies_ms
    cpu = "n/a" if done.cpu_seconds is None else f"{done.cpu_seconds:.1f}"
    return (
        f"| {number} {'abused' if done.abused else 'calm'} | {len(ms)} | {done.listings.errors} "
        f"| {sum(done.abuse.answers.values()):,} | {percentile(ms, 0.5):.1f} "
        f"| {percentile(ms, 0.99):.1f} | {cpu} |"
    )


def render(
    alone: Sequence[Refusal], phases: Sequence[Phase], options: AbuseOptions, when: datetime
) -> str:
    calm, abused = _latencies(phases, False), _latencies(phases, True)
    sent = Counter[str]()
    for done in phases:
        sent.update(done.abuse.answers)
    abusive = sum(sent.values())
    abused_seconds = sum(p.seconds for p in phases if p.abused)
    p99_change = (percentile(abused, 0.99) / percentile(calm, 0.99) - 1) * 100
    abuse_ms = [ms for p in phases for ms in p.abuse.latencies_ms]
    extra_cpu = _mean_cpu(phases, True) - _mean_cpu(phases, False)
    per_phase = abusive / max(1, sum(p.abused for p in phases))
    lines = [
        f"<!-- {SECTION}:start -->",
        "## Abuse beside the listing: limits before work",
        "",
        wrapped(
            "The web listing (24 products, 5 stores per variant), each near a point of its "
            "own so that none is answered from the response cache (the read model is warm), "
            f"from {options.concurrency} workers, {options.listings} per phase, in "
            f"{2 * options.rounds} phases: calm, abused, calm, abused, ... In the abused "
            f"phases {options.abusers} more workers "
            f"send together {options.abuse_rate:g} documents per second with the partner's "
            "key: a 1 MB body, a 200 KB document, 7 KB of tokens, a document 40 deep, one too "
            "costly and a NUL byte in a variable, in turn. One gateway process, every legacy "
            f"system at {options.latency_ms:g} ms, on "
            f"{describe_estate(options.gateway.data_dir)}."
        ),
        "",
        wrapped(
            f"First each abusive document alone, {options.refusals} times one after the "
            "other: what the gateway answers, in how long, and the gateway process's CPU time "
            "per request (from /proc, so uvicorn's reading of the request included)."
        ),
        "",
        "| abusive document | answer | latency ms (median) | gateway CPU ms per request |",
        "|---|---|---|---|",
        *(
            f"| {r.kind} | {r.answer} | {r.latency_ms:.1f} | "
            f"{'n/a' if r.cpu_ms is None else f'{r.cpu_ms:.2f}'} |"
            for r in alone
        ),
        "",
        "Then the listings, phase by phase:",
        "",
        "| phase | listings | failed | abusive requests | p50 ms | p99 ms | gateway CPU s |",
        "|---|---|---|---|---|---|---|",
        *(_phase_row(number, done) for number, done in enumerate(phases, 1)),
        "",
        "| all phases | listings | failed | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, values, failed in (
        ("calm", calm, sum(p.listings.errors for p in phases if not p.abused)),
        ("abused", abused, sum(p.listings.errors for p in phases if p.abused)),
    ):
        lines.append(
            f"| {name} | {len(values)} | {failed} | {percentile(values, 0.5):.1f} "
            f"| {percentile(values, 0.99):.1f} |"
        )
    lines += [
        "",
        wrapped(
            f"p99 with the abuse: {p99_change:+.1f} % (target: within 10 %). The abusers sent "
            f"{abusive:,} documents, {abusive / max(abused_seconds, 1e-9):,.0f} per second, "
            f"each refused in {statistics.median(abuse_ms):.1f} ms (median, at the client). "
            f"An abused phase cost the gateway {extra_cpu:.2f} s more CPU than a calm one, "
            f"{extra_cpu * 1000 / max(per_phase, 1):.2f} ms per abusive document."
        ),
        "",
        "| abusive document: answer | count |",
        "|---|---|",
        *(f"| {answer} | {count:,} |" for answer, count in sorted(sent.items())),
        "",
        wrapped(
            f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
            f"{platform.system()} {platform.release()}; CPython {platform.python_version()}; "
            f"load average {options.load:.1f} when it started (the machine was shared)."
        ),
        f"- Date: {when:%Y-%m-%d %H:%M} UTC.",
        f"- Command: `{options.gateway.command}`",
        f"<!-- {SECTION}:end -->",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    seed(options.gateway)
    with running_gateway(options.gateway) as gateway:
        alone, phases = asyncio.run(measure(gateway, options))
    section = render(alone, phases, options, datetime.now(UTC))
    write_section(options.gateway.output, SECTION, section)
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
