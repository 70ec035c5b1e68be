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
- final values wrong: (subscriber, SKU) pairs whose last value, once delivery has settled, is not
  what a query shows (counts in between may be coalesced while a subscriber lags, by design; the
  last one never is), and of those, how many never received their SKU's final count at all (lost);
- the truth is what the graph's ``availability`` shows, queried before the movements (every
  subscriber's initial values are checked against it) and after them (and checked against the
  ERP's count: a difference would be the feed's, not the subscriptions');
- SKUs the ERP holds at a negative or fractional balance are left out of the pool: the graph
  shows those floored (a negative one as 0), so a movement need not change what it shows, and
  its count could not be matched with the movement that made it;
- gateway memory per connection (the processes' RSS after connecting, less before) and gateway
  CPU per delivered event.

The details of every wrong value and of the slowest deliveries are printed to stderr.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from bench.read_listing import process_cpu_seconds
from bench.read_model import deployment, unthrottled
from bench.report import exit_on_sigterm, setting, wrapped, write_section
from legacy.erp import STOCK_LEVELS, store_no
from tests.e2e.gateways import GatewayFleet, gateway_config, write_toml

SUBSCRIPTION = """subscription($skus: [String!]!, $stores: [ID!]!) {
  stockChanged(skus: $skus, storeIds: $stores, initial: true) { sku onHand } }"""
STOCK = """query($sku: String!, $store: ID!) { product(sku: $sku) { variants {
  sku availability(storeIds: [$store]) { onHand } } } }"""
KIOSK = {"X-Api-Key": "demo-kiosk"}


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
    connected: int = 0
    initial_wrong: int = 0  # pairs whose initial value was missing or not what a query showed
    wrong: int = 0  # pairs whose last value is not what a query shows once delivery settled
    lost: int = 0  # of those, pairs that never received their SKU's final count
    feed_behind: int = 0  # SKUs whose count a query shows at the end is not the ERP's
    events: int = 0
    movements: int = 0
    moving_seconds: float = 0.0
    memory_per_connection_kib: float = 0.0
    cpu_ms_per_event: float = 0.0
    notes: list[str] = field(default_factory=list)


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

    def __init__(self, name: str, websocket: ClientConnection, skus: list[str]) -> None:
        self.name = name
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

    def last(self, sku: str) -> int | None:
        seen = self.seen[sku]
        return seen[-1][1] if seen else None


async def _subscribe(name: str, url: str, store: str, skus: list[str]) -> Subscriber:
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
    return Subscriber(name, websocket, skus)


async def _shown(
    client: httpx.AsyncClient, url: str, store: str, skus: list[str]
) -> dict[str, int]:
    """The on-hand count at ``store`` of each of ``skus``, as the graph shows it."""
    gate = asyncio.Semaphore(16)

    async def one(sku: str) -> int:
        async with gate:
            variables = {"sku": sku, "store": store}
            body = {"query": STOCK, "variables": variables}
            response = await client.post(f"{url}/graphql", json=body, headers=KIOSK)
        product = response.raise_for_status().json()["data"]["product"]
        (variant,) = [v for v in product["variants"] if v["sku"] == sku]
        return sum(int(level["onHand"]) for level in variant["availability"])

    return dict(zip(skus, await asyncio.gather(*map(one, skus)), strict=True))


async def _settle(
    done: Callable[[], bool], seconds: float, progress: Callable[[], int] | None = None
) -> None:
    """Until ``done``, or ``progress`` has not moved for 2 s, or ``seconds`` have passed."""
    last, still = None, 0
    for _ in range(round(seconds / 0.1)):
        if done() or still >= 20:
            return
        now = None if progress is None else progress()
        still = still + 1 if now is not None and now == last else 0
        last = now
        await asyncio.sleep(0.1)


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
        subscribers.append(await _subscribe(f"{number} on {url}", url, store, skus))
    receivers = [asyncio.create_task(s.receive()) for s in subscribers]
    await _settle(lambda: all(all(s.seen.values()) for s in subscribers), 30)  # initial values
    results.connected = len(subscribers)
    results.memory_per_connection_kib = (sum(_rss_kib(pid) for pid in pids) - memory_before) / max(
        1, len(subscribers)
    )
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        start = await _shown(client, fleet.urls[0], store, pool)
        results.initial_wrong = sum(
            1 for s in subscribers for sku in s.skus if s.last(sku) != start[sku]
        )
        cpu_before = sum(process_cpu_seconds(pid) or 0.0 for pid in pids)
        events_before = sum(len(v) for s in subscribers for v in s.seen.values())
        began = time.perf_counter()
        accepted, final = await _move(client, erp, store, pool, options, start)
        results.moving_seconds = time.perf_counter() - began
        results.movements = len(accepted)
        # Delivery has settled once every subscriber has its final counts, or nothing has come
        # for 2 s; the longest a subscriber that keeps up may wait is max_lag.
        await _settle(
            lambda: all(s.last(k) == final.get(k, start[k]) for s in subscribers for k in s.skus),
            10,
            lambda: sum(len(v) for s in subscribers for v in s.seen.values()),
        )
        cpu = sum(process_cpu_seconds(pid) or 0.0 for pid in pids) - cpu_before
        shown = await _shown(client, fleet.urls[-1], store, sorted(final))
    results.events = sum(len(v) for s in subscribers for v in s.seen.values()) - events_before
    results.cpu_ms_per_event = cpu * 1000 / max(1, results.events)
    _tally(results, subscribers, accepted, {**start, **shown}, final, began)
    for subscriber in subscribers:
        await subscriber.websocket.close()
    for task in receivers:
        task.cancel()
    return results


def _tally(
    results: Results,
    subscribers: list[Subscriber],
    accepted: Mapping[tuple[str, int], float],
    shown: Mapping[str, int],
    final: Mapping[str, int],
    began: float,
) -> None:
    """Latencies, wrong and lost final values (against what a query shows after the
    movements), and notes on the wrong and the slowest."""
    slowest: dict[tuple[Subscriber, str], float] = {}
    for subscriber in subscribers:
        for sku, seen in subscriber.seen.items():
            for moment, count in seen:
                when = accepted.get((sku, count))
                if when is not None:  # an event may come before the ERP's answer does
                    latency = max(0.0, moment - when) * 1000
                    results.latencies_ms.append(latency)
                    pair = (subscriber, sku)
                    slowest[pair] = max(latency, slowest.get(pair, 0.0))
            if subscriber.last(sku) != shown[sku]:
                results.wrong += 1
                results.notes.append(_note("wrong", subscriber, sku, shown[sku], accepted, began))
                if sku in final and all(count != final[sku] for _, count in seen):
                    results.lost += 1
    for sku, count in final.items():
        if shown[sku] != count:
            results.feed_behind += 1
            results.notes.append(f"feed: SKU {sku}, the ERP's count {count}, shown {shown[sku]}")
    for (subscriber, sku), latency in sorted(slowest.items(), key=lambda item: -item[1])[:3]:
        note = _note(f"{latency:.0f} ms", subscriber, sku, shown[sku], accepted, began)
        results.notes.append(note)


def _note(
    what: str,
    subscriber: Subscriber,
    sku: str,
    expected: int,
    accepted: Mapping[tuple[str, int], float],
    began: float,
) -> str:
    """One line: what the subscriber received of ``sku`` and when the ERP accepted each count
    (seconds since the movements began)."""
    received = [(round(moment - began, 2), count) for moment, count in subscriber.seen[sku]]
    booked = [(round(when - began, 2), count) for (s, count), when in accepted.items() if s == sku]
    return (
        f"{what}: subscriber {subscriber.name}, SKU {sku}, a query shows {expected}; "
        f"received {received}; the ERP accepted {booked}"
    )


async def _move(
    client: httpx.AsyncClient,
    erp: str,
    store: str,
    pool: list[str],
    options: Options,
    start: Mapping[str, int],
) -> tuple[dict[tuple[str, int], float], dict[str, int]]:
    """One unit booked per movement, at up to ``rate`` per second, the SKUs in turn, one at a
    time (concurrent bookings could commit out of their ``LAST_UPD`` order, which the ERP's
    feed does not follow). Returns when each (SKU, count) was accepted, and the final counts."""
    accepted: dict[tuple[str, int], float] = {}
    counts: dict[str, int] = {}
    interval = 1 / options.rate
    began = time.perf_counter()
    for number, sku in zip(
        range(int(options.rate * options.seconds)), itertools.cycle(pool), strict=False
    ):
        await asyncio.sleep(max(0.0, began + number * interval - time.perf_counter()))
        movement = [{"store": store, "sku": sku, "delta": "1"}]
        response = await client.post(f"{erp}/movements", json=movement)
        response.raise_for_status()
        counts[sku] = counts.get(sku, start[sku]) + 1
        accepted[(sku, counts[sku])] = time.perf_counter()
    return accepted, counts


def _percentile(values: Sequence[float], rank: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(rank / 100 * len(ordered)) - 1))]


def render(
    results: Results, options: Options, when: datetime, load_before: tuple[float, float, float]
) -> str:
    latencies = results.latencies_ms
    rate = results.movements / results.moving_seconds if results.moving_seconds else 0.0
    intro = (
        f"{options.subscribers} WebSocket subscribers (simulated kiosks and tills, half on each "
        f"of two gateway processes over one PostgreSQL and one Redis), each subscribed to "
        f"`stockChanged` for {options.skus_per_subscriber} of {options.pool} SKUs at one store, "
        f"with initial values. The ERP books one unit per movement, one movement at a time, at "
        f"up to {options.rate:g} per second ({results.movements} movements took "
        f"{results.moving_seconds:.0f} s: {rate:.0f} per second, each waiting for the ERP's "
        f"answer at {options.latency_ms:g} ms latency); every movement gives its SKU a new "
        "count, matched with what each subscriber receives. The truth is what a query of "
        "`availability` shows, before and after the movements. The ERP's feed is read every "
        "0.25 s; the load generator and every subscriber run in one process on the same cores."
    )
    p99 = _percentile(latencies, 99)
    rows = [
        "| subscribers connected | movements | events delivered | p50 ms | p99 ms | max ms "
        "| final values wrong | of which lost | gateway memory per connection "
        "| gateway CPU per event |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {results.connected} | {results.movements} | {results.events} "
        f"| {_percentile(latencies, 50):.0f} | {p99:.0f} "
        f"| {max(latencies, default=float('nan')):.0f} | {results.wrong} | {results.lost} "
        f"| {results.memory_per_connection_kib:.0f} KiB | {results.cpu_ms_per_event:.2f} ms |",
    ]
    correct = results.wrong == 0 and results.initial_wrong == 0
    verdict = [
        f"- Target p99 ≤ 1000 ms: {'met' if p99 <= 1000 else 'not met'} ({p99:.0f} ms).",
        f"- Target every subscriber ends on what a query shows: {'met' if correct else 'not met'} "
        f"({results.wrong} final values wrong, {results.lost} of them never received; "
        f"{results.initial_wrong} initial values missing or wrong).",
        f"- SKUs whose ERP count and what a query shows differ at the end: {results.feed_behind}.",
    ]
    one, five, fifteen = os.getloadavg()
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
            *map(wrapped, setting(options.command, when, load_before, "before the run")),
            f"- Load average at the end: {one:.1f} / {five:.1f} / {fifteen:.1f}.",
            "<!-- fanout:end -->",
            "",
        ]
    )


async def _erp_balances(erp_url: str, store: str) -> dict[str, Decimal]:
    """The ERP's own on-hand of each SKU at ``store``, negative and fractional ones as they are."""
    engine = create_async_engine(erp_url)
    query = select(STOCK_LEVELS.c.ITEM_NO, STOCK_LEVELS.c.QTY_ON_HAND).where(
        STOCK_LEVELS.c.STORE_NO.in_([store_no(store)])
    )
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
    finally:
        await engine.dispose()
    return {str(item).strip(): Decimal(quantity) for item, quantity in rows}


def _shown_as_is(balance: Decimal) -> bool:
    """Whether the graph shows ``balance`` unchanged (it floors fractions, and shows a negative
    balance as 0)."""
    return balance >= 0 and balance == balance.to_integral_value()


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
            balances = asyncio.run(_erp_balances(estate.erp_url, store.code))
            whole = [sku for sku in ranged if _shown_as_is(balances.get(sku, Decimal(0)))]
            pool = whole[: options.pool]
            return asyncio.run(run(fleet, estate.urls["erp"], store.code, pool, options))
        finally:
            fleet.stop()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    load_before = os.getloadavg()
    results = benchmark(options)
    for note in results.notes:
        print(note, file=sys.stderr)
    section = render(results, options, datetime.now(UTC), load_before)
    write_section(options.output, "fanout", section)
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
