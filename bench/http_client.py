"""What one backend call costs the gateway in CPU: httpx with its own transport, httpx's client
over an aiohttp transport, and the adapters' client (``adapters.http.BackendClient``: aiohttp
with httpx's calling conventions).

A minimal HTTP/1.1 server in a process of its own answers every request at once with a small
JSON body; this process sends ``--requests`` GETs through one client with a pool of
``--connections``, ``--concurrency`` at a time, on uvloop as the served gateway runs, and
divides its own CPU time by the requests. The server's work is not counted: only the client's.
Results go to the ``http_client`` section of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.http_client [--requests 4000] [--concurrency 16] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
import httpx
import uvloop

from adapters.http import backend_client
from bench.report import wrapped, write_section

ROOT: Final = Path(__file__).resolve().parents[1]
SECTION: Final = "http_client"
WARM_UP: Final = 200
# The server: reads each request head and answers it; nothing else.
SERVER: Final = """
import asyncio, sys
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 11\\r\\n"
ANSWER = HEAD + b'\\r\\n{"ok":true}'
async def serve(reader, writer):
    try:
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Options:
    requests: int
    concurrency: int
    connections: int
    output: Path


@dataclass(frozen=True, slots=True)
class Measured:
    client: str
    cpu_us_per_request: float
    requests_per_second: float


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_client", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=4000, help="requests per client")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--connections", type=int, default=32, help="the client's pool size")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parsed = parser.parse_args(argv)
    if min(parsed.requests, parsed.concurrency, parsed.connections) < 1:
        parser.error("--requests, --concurrency and --connections must be at least 1")
    return Options(parsed.requests, parsed.concurrency, parsed.connections, parsed.output)


@contextmanager
def server() -> Iterator[str]:
    """The answering server, on a free local port, stopped on the way out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark's HTTP server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Client(Protocol):
    async def get(self, url: str) -> Any: ...

    async def aclose(self) -> None: ...


async def measure(url: str, client: Client, options: Options) -> tuple[float, float]:
    """CPU microseconds of this process per request, and requests per second."""
    slots = asyncio.Semaphore(options.concurrency)

    async def one() -> None:
        async with slots:
            (await client.get(f"{url}/prices")).json()

    try:
        await asyncio.gather(*(one() for _ in range(WARM_UP)))
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(options.requests)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    return cpu * 1e6 / options.requests, options.requests / wall


class _AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's client over aiohttp's pool: the adapters' client before ``BackendClient``."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector)
        body = await request.aread()
        async with self._session.request(
            request.method, str(request.url), headers=request.headers.multi_items(), data=body
        ) as answer:
            content = await answer.read()
        return httpx.Response(
            answer.status, headers=list(answer.raw_headers), content=content, request=request
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def clients(options: Options) -> dict[str, Callable[[], Client]]:
    pool = options.connections
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return {
        "httpx's own (httpcore on AnyIO)": lambda: httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(limits=limits), timeout=5.0
        ),
        "httpx over an aiohttp transport": lambda: httpx.AsyncClient(
            transport=_AiohttpTransport(pool), timeout=5.0
        ),
        "adapters.http.BackendClient (aiohttp)": lambda: backend_client(
            timeout=5.0, max_connections=pool
        ),
    }


def run(options: Options) -> list[Measured]:
    results = []
    with server() as url:
        for name, make in clients(options).items():
            cpu, rate = uvloop.run(measure(url, make(), options))
            results.append(Measured(name, cpu, rate))
            print(f"{name}: {cpu:.0f} us CPU per request, {rate:.0f} requests/s", file=sys.stderr)
    return results


def render(results: Sequence[Measured], options: Options, when: datetime) -> str:
    intro = (
        f"CPU time of the client process per request: {options.requests} GETs with a small "
        f"JSON answer through one client, {options.concurrency} in flight over a "
        f"pool of {options.connections} connections, on uvloop, against a minimal HTTP/1.1 "
        "server in another process that answers at once (its work is not counted)."
    )
    rows = [
        f"| {m.client} | {m.cpu_us_per_request:.0f} | {m.requests_per_second:.0f} |"
        for m in results
    ]
    setting = [
        f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, {platform.system()} "
        f"{platform.release()}; CPython {platform.python_version()}.",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC.",
        "- Command: `.venv/bin/python -m bench.http_client"
        + "".join(f" {arg}" for arg in sys.argv[1:])
        + "`",
    ]
    lines = [
        f"<!-- {SECTION}:start -->",
        "## Backend calls: the HTTP client",
        "",
        wrapped(intro),
        "",
        "| client | CPU µs/request | requests/s |",
        "|---|---:|---:|",
        *rows,
        "",
        *map(wrapped, setting),
        f"<!-- {SECTION}:end -->",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    section = render(run(options), options, datetime.now(UTC))
    write_section(options.output, SECTION, section)
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
