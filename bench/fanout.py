"""The fan-out benchmark: live stock for many kiosks and tills over two gateway instances.

Starts the ``default`` estate (seeded once into the data dir), a PostgreSQL database and a Redis
of this run's own, and two ``commerce-gateway serve`` processes. ``--subscribers`` WebSocket
clients (half on each instance) each subscribe to ``stockChanged`` for ``--skus-per-subscriber``
SKUs of one store, with initial values. Then stock moves in the ERP at ``--rate`` movements per
second for ``--seconds`` (one unit booked at the store per movement, each to a SKU of the pool
in turn), so every movement gives its SKU a new on-hand count and the moment the ERP accepted
it is known. Each event a subscriber receives is matched with the movement that produced its
count:

- delivery latency, from the ERP's acceptance to the subscriber's receipt: p50, p99, max;
- events lost: subscribers whose last value of a SKU is not the ERP's final count (counts in
  between may be coalesced while a subscriber lags, by design; the last one never is);
- gateway memory per connection (the processes' RSS after connecting, less before) and gateway
  CPU per delivered event.

Writes the section ``fanout`` of docs/benchmarks.md.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--rate 100] [--seconds 30] ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.read_listing import process_cpu_seconds
from bench.read_model import deployment, unthrottled
from bench.report import exit_on_sigterm, setting, wrapped, write_section
from tests.e2e.gateways import GatewayFleet, gateway_config, write_toml

SUBSCRIPTION = """subscription($skus: [String!]!, $stores: [ID!]!) {
  stockChanged(skus: $skus, storeIds: $stores, initial: true) { sku onHand } }"""


@dataclass(frozen=True, slots=True)
class Options:
    subscribers: int
    skus_per_subscriber: int
    pool: int
    rate: float
    seconds: float
    latency_ms: float
    data_dir: Path
    output: Path
    command: str


@dataclass(slots=True)
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    lost: int = 0
    connected: int = 0
    events: int = 0
    movements: int = 0
    memory_per_connection_kib: float = 0.0
    cpu_ms_per_event: float = 0.0
    unmatched: int = 0


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--skus-per-subscriber", type=int, default=5)
    parser.add_argument("--pool", type=int, default=1000, help="SKUs of the store moved")
    parser.add_argument("--rate", type=float, default=100.0, help="movements per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-read-model"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    shown = ".venv/bin/python" if ".venv" in sys.executable else "python"
    return Options(
        args.subscribers,
        args.skus_per_subscriber,
        args.pool,
        args.rate,
        args.seconds,
        args.latency_ms,
        args.data_dir,
        args.output,
        shlex.join([shown, "-m", "bench.fanout", *argv]),
    )


class Subscriber:
    """One kiosk: its socket and the (time, count) of every value it received, per SKU."""

    def __init__(self, websocket: ClientConnection, skus: list[str]) -> None:
        self.websocket = websocket
        self.skus = skus
        self.seen: dict[str, list[tuple[float, int]]] = {sku: [] for sku in skus}

    async def receive(self) -> None:
        async for raw in self.websocket:
            message = json.loads(raw)
            if message.get("type") != "next":
                continue
            change = message["payload"]["data"]["stockChanged"]
            self.seen[change["sku"]].append((time.perf_counter(), int(change["onHand"])))


async def _subscribe(url: str, store: str, skus: list[str]) -> Subscriber:
    websocket = await connect(
        url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"X-Api-Key": "demo-kiosk"},
        max_queue=None,
    )
    await websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
    await websocket.recv()
    variables = {"skus": skus, "stores": [store]}
    payload = {"query": SUBSCRIPTION, "variables": variables}
    await websocket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return Subscriber(websocket, skus)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(
    fleet: GatewayFleet, erp: str, store: str, pool: list[str], options: Options
) -> Results:
    results = Results()
    pids = [member.pid for member in fleet.members if member.pid]
    memory_before = sum(_rss_kib(pid) for pid in pids)
    rng = random.Random(7)
    subscribers = []
    for number in range(options.subscribers):
        url = fleet.urls[number % len(fleet.urls)]
        skus = rng.sample(pool, options.skus_per_subscriber)
        subscribers.append(await _subscribe(url, store, skus))
    receivers = [asyncio.create_task(s.receive()) for s in subscribers]
    await asyncio.sleep(3)  # the initial values
    results.connected = len(subscribers)
    results.memory_per_connection_kib = (sum(_rss_kib(pid) for pid in pids) - memory_before) / max(
        1, len(subscribers)
    )
    start = {s: {sku: seen[-1][1] for sku, seen in s.seen.items() if seen} for s in subscribers}
    accepted: dict[tuple[str, int], float] = {}
    counts: dict[str, int] = {}
    cpu_before = sum(process_cpu_seconds(pid) or 0.0 for pid in pids)
    events_before = sum(len(v) for s in subscribers for v in s.seen.values())
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        await _move(client, erp, store, pool, options, accepted, counts, start, subscribers)
        await asyncio.sleep(3)  # the last movements' delivery
    cpu = sum(process_cpu_seconds(pid) or 0.0 for pid in pids) - cpu_before
    results.movements = len(accepted)
    for subscriber in subscribers:
        for sku, seen in subscriber.seen.items():
            for moment, count in seen:
                when = accepted.get((sku, count))
                if when is not None and moment >= when:
                    results.latencies_ms.append((moment - when) * 1000)
            if sku in counts and (not seen or seen[-1][1] != counts[sku]):
                results.lost += 1
    results.events = sum(len(v) for s in subscribers for v in s.seen.values()) - events_before
    results.cpu_ms_per_event = cpu * 1000 / max(1, results.events)
    for subscriber in subscribers:
        await subscriber.websocket.close()
    for task in receivers:
        task.cancel()
    return results


async def _move(
    client: httpx.AsyncClient,
    erp: str,
    store: str,
    pool: list[str],
    options: Options,
    accepted: dict[tuple[str, int], float],
    counts: dict[str, int],
    start: dict[Subscriber, dict[str, int]],
    subscribers: list[Subscriber],
) -> None:
    """One unit booked per movement, at ``rate`` per second, the SKUs in turn."""
    for subscriber in subscribers:
        for sku, count in start[subscriber].items():
            counts.setdefault(sku, count)
    interval = 1 / options.rate
    began = time.perf_counter()
    for number, sku in zip(
        range(int(options.rate * options.seconds)), itertools.cycle(pool), strict=False
    ):
        await asyncio.sleep(max(0.0, began + number * interval - time.perf_counter()))
        movement = [{"store": store, "sku": sku, "delta": "1"}]
        response = await client.post(f"{erp}/movements", json=movement)
        response.raise_for_status()
        counts[sku] = counts.get(sku, 0) + 1
        accepted[(sku, counts[sku])] = time.perf_counter()


def _percentile(values: Sequence[float], rank: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(rank / 100 * len(ordered)) - 1))]


def render(results: Results, options: Options, when: datetime) -> str:
    latencies = results.latencies_ms
    intro = (
        f"{options.subscribers} WebSocket subscribers (simulated kiosks and tills, half on each "
        f"of two gateway processes over one PostgreSQL and one Redis), each subscribed to "
        f"`stockChanged` for {options.skus_per_subscriber} of {options.pool} SKUs at one store. "
        f"The ERP books one unit at {options.rate:g} movements per second for "
        f"{options.seconds:g} s; every movement gives its SKU a new count, matched with what "
        "each subscriber receives. The ERP's feed is read every 0.25 s; the load generator and "
        "every subscriber run in one process on the same cores."
    )
    rows = [
        "| subscribers connected | movements | events delivered | p50 ms | p99 ms | max ms "
        "| subscribers' final values wrong | gateway memory per connection "
        "| gateway CPU per event |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {results.connected} | {results.movements} | {results.events} "
        f"| {_percentile(latencies, 50):.0f} | {_percentile(latencies, 99):.0f} "
        f"| {max(latencies, default=float('nan')):.0f} | {results.lost} "
        f"| {results.memory_per_connection_kib:.0f} KiB | {results.cpu_ms_per_event:.2f} ms |",
    ]
    p99 = _percentile(latencies, 99)
    verdict = [
        f"- Target p99 ≤ 1000 ms: {'met' if p99 <= 1000 else 'not met'} ({p99:.0f} ms).",
        f"- Target 0 lost for subscribers that keep up: {'met' if results.lost == 0 else 'not met'}"
        f" ({results.lost} final values wrong).",
    ]
    return "\n".join(
        [
            "<!-- fanout:start -->",
            "## Subscriptions: fan-out of live stock",
            "",
            wrapped(intro),
            "",
            *rows,
            "",
            *map(wrapped, verdict),
            "",
            *map(wrapped, setting(options.command, when, os.getloadavg(), "at the end")),
            "<!-- fanout:end -->",
            "",
        ]
    )


def benchmark(options: Options) -> Results:
    with deployment(options.latency_ms, options.data_dir) as (estate, database, redis, truth):
        store = next(
            loc
            for loc in truth.locations
            if loc.kind == "STORE" and "CARRY_OUT" in loc.capabilities
        )
        ranged = [v.sku for p in truth.products if truth.ranged(p, store) for v in p.variants]
        config = unthrottled(gateway_config(estate, stock_sync_interval=0.25))
        path = write_toml(config, options.data_dir / "bench-fanout.toml")
        environment = {"REDIS_URL": redis}
        fleet = GatewayFleet(path, database, options.data_dir / "gateways", environment=environment)
        try:
            fleet.start(2)
            pool = ranged[: options.pool]
            return asyncio.run(run(fleet, estate.urls["erp"], store.code, pool, options))
        finally:
            fleet.stop()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    results = benchmark(options)
    section = render(results, options, datetime.now(UTC))
    write_section(options.output, "fanout", section)
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
