"""Several ``commerce-gateway serve`` processes over one running estate and one PostgreSQL
database, as a deployment runs them: the end-to-end tests and ``bench.place_orders`` use it.

Each process is started with its own port and log file and the same TOML config (the demo
config's channels and auth, the estate as ``[backends]``, a short stock sync interval), and is
only ever stopped by its pid: SIGTERM and then SIGKILL, or SIGKILL at once to simulate a
crash. Also here: a fresh PostgreSQL database per run, and stock booked in
the ERP the way tills book it (``POST /movements``), to absolute quantities.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gateway.serve import demo_backends
from legacy.demo import DemoEstate
from legacy.erp import MAX_MOVEMENTS, item_no
from legacy.launcher import HTTP_SYSTEMS, RunningEstate
from tests.support import POSTGRES_ADMIN_URL, missing_service, start_systems, write_systems

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "demo.toml"
OPERATIONS = ROOT / "config" / "operations"
SERVE = (sys.executable, "-m", "gateway.cli", "serve")
START_TIMEOUT = 120.0  # seconds: migrations and the first stock load come before serving
STOP_TIMEOUT = 15.0
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

TomlValue = str | int | float | bool | Sequence[str]
TomlTable = Mapping[str, "TomlValue | TomlTable | None"]


# --------------------------------------------------------------------------- config


def gateway_config(
    estate: RunningEstate,
    *,
    stock_sync_interval: float = 0.5,
    max_in_flight: int | None = None,
    max_wait: float | None = None,
    read_model: TomlTable | None = None,
    orders: TomlTable | None = None,
    shutdown: TomlTable | None = None,
) -> TomlTable:
    """The demo config's channels, auth and security, ``estate`` as the backends
    (``demo_backends``), and the stock synced every ``stock_sync_interval`` seconds. The
    admission limits stay the defaults unless given."""
    demo = tomllib.loads(DEMO_CONFIG.read_text())
    backends = demo_backends(estate.urls, estate.erp_url, estate.promotions_dir, estate.api_key)
    dumped = backends.model_dump(mode="json")
    # model_dump masks secrets; the file must hold the key itself.
    dumped["loyalty"]["api_key"] = backends.loyalty.api_key.get_secret_value()
    dumped["promotions"]["folder"] = str(backends.promotions.folder.resolve())
    limits = {"max_in_flight": max_in_flight, "max_wait": max_wait}
    return {
        "channels": demo["channels"],
        "auth": demo["auth"],
        # The file is written elsewhere: the manifest's folder is named absolutely.
        "security": {**demo["security"], "persisted_operations": str(OPERATIONS)},
        "backends": dumped,
        "orders": {"stock_sync_interval": stock_sync_interval, **(orders or {})},
        "limits": {name: value for name, value in limits.items() if value is not None},
        "read_model": read_model or {},
        # Stopped processes drain briefly: a test stops and restarts many.
        "shutdown": shutdown or {"drain": 0.2},
    }


def write_toml(table: TomlTable, path: Path) -> Path:
    """Write ``table`` (strings, numbers, booleans, lists of strings, nested tables; None
    values are left out) as a TOML file; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_toml_lines(table, ())) + "\n")
    return path


def _toml_lines(table: TomlTable, prefix: tuple[str, ...]) -> list[str]:
    lines = [f"[{'.'.join(_toml_key(part) for part in prefix)}]"] if prefix else []
    nested = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            nested.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        lines += ["", *_toml_lines(value, (*prefix, key))]
    return lines


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(json.dumps(item) for item in value) + "]"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(slots=True)
class GatewayProcess:
    """One gateway process: its port, log file and (while it runs) the process."""

    index: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass(slots=True)
class GatewayFleet:
    """``commerce-gateway serve`` processes sharing one config file and one database."""

    config: Path
    database_url: str
    workdir: Path
    members: list[GatewayProcess] = field(default_factory=list)
    environment: Mapping[str, str] = field(default_factory=dict)  # e.g. REDIS_URL

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

    def start(self, count: int) -> list[GatewayProcess]:
        """Start ``count`` more processes at once and return when every one serves."""
        first = len(self.members)
        started = [
            GatewayProcess(index, free_port(), self.workdir / f"gateway-{index}.log")
            for index in range(first, first + count)
        ]
        self.members += started
        for member in started:
            self._spawn(member)
        for member in started:
            self._wait_serving(member)
        return started

    def kill(self, index: int) -> None:
        """SIGKILL process ``index``, as a crash would end it, and reap it."""
        process = self.members[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def terminate(self, index: int) -> None:
        """SIGTERM process ``index`` (as an orchestrator stops it) without waiting."""
        process = self.members[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def restart(self, index: int) -> None:
        """Start process ``index`` again on its port (stopping it first if it still runs)."""
        member = self.members[index]
        _stop(member.process)
        self._spawn(member)
        self._wait_serving(member)

    def ensure_running(self) -> None:
        """Start again every process that has stopped."""
        for member in self.members:
            if not member.running:
                self.restart(member.index)

    def stop(self) -> None:
        """SIGTERM every process this fleet started, then SIGKILL those still running."""
        for member in self.members:
            if member.running and member.process is not None:
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            _stop(member.process)

    def _spawn(self, member: GatewayProcess) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "GATEWAY_CONFIG": str(self.config),
            "PORT": str(member.port),
            "HOST": "127.0.0.1",
            **self.environment,
        }
        member.log.parent.mkdir(parents=True, exist_ok=True)
        with member.log.open("ab") as log:
            # Its own process group: a Ctrl-C at the terminal reaches only the runner, which
            # then stops the gateways itself, by pid.
            member.process = subprocess.Popen(
                list(SERVE), cwd=ROOT, env=env, stdout=log, stderr=log, process_group=0
            )

    def _wait_serving(self, member: GatewayProcess) -> None:
        """Return once ``/healthz`` answers (the lifespan has migrated and loaded the stock)."""
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if not member.running:
                    raise RuntimeError(
                        f"gateway {member.index} exited; its log ends:\n{member.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{member.url}/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise TimeoutError(f"gateway {member.index} not serving after {START_TIMEOUT:g} s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_fleet(
    count: int,
    config: Path,
    database_url: str,
    workdir: Path,
    environment: Mapping[str, str] | None = None,
) -> Iterator[GatewayFleet]:
    """``count`` gateway processes, stopped on the way out whatever happened."""
    fleet = GatewayFleet(config, database_url, workdir, environment=dict(environment or {}))
    try:
        fleet.start(count)
        yield fleet
    finally:
        fleet.stop()


# --------------------------------------------------------------------------- database


@dataclass(frozen=True, slots=True)
class Database:
    """A PostgreSQL database created for one run: ``url`` for the gateway (SQLAlchemy with
    asyncpg), ``dsn`` for asyncpg itself."""

    name: str
    url: str
    dsn: str


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[Database]:
    """A new database on the server of ``admin_url``, dropped (connections and all) after.
    Raises OSError or asyncpg.PostgresError when the server cannot be reached."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    try:
        yield Database(name, dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def database_and_estate(
    stack: contextlib.ExitStack, truth: DemoEstate, root: Path, prefix: str
) -> tuple[Database, RunningEstate]:
    """A fresh database (the test is skipped, or fails in CI, without PostgreSQL) and the
    estate of ``truth`` running under ``root``, both undone by ``stack``."""
    try:
        database = stack.enter_context(fresh_database(POSTGRES_ADMIN_URL, prefix))
    except (OSError, asyncpg.PostgresError) as exc:
        missing_service(
            f"PostgreSQL ({exc.__class__.__name__})",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        )
    data_dir = root / "estate"
    write_systems(truth, data_dir, ("pim", "pricing", "promotions", "loyalty", "erp"))
    estate = start_systems(data_dir, HTTP_SYSTEMS)
    stack.callback(estate.stop)
    return database, estate


# --------------------------------------------------------------------------- ERP stock

StockTarget = Mapping[tuple[str, str], int]
"""Units on hand wanted in the ERP, by (location code, SKU)."""


async def erp_quantities(erp_url: str, skus: Sequence[str]) -> dict[tuple[str, str], Decimal]:
    """The ERP's QTY_ON_HAND of ``skus`` at every location that has a row, by (location, SKU):
    what the ERP holds, negative balances included."""
    engine = create_async_engine(erp_url, poolclass=NullPool)
    # Untyped columns: the quantity comes back as the driver reads it, without the lossy
    # float-to-Decimal conversion (and its warning) SQLAlchemy's Numeric does on SQLite.
    query = text(
        'SELECT "STORE_NO", "ITEM_NO", "QTY_ON_HAND" FROM "STOCK_LEVELS" WHERE "ITEM_NO" IN :items'
    ).bindparams(bindparam("items", [item_no(sku) for sku in skus], expanding=True))
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
    finally:
        await engine.dispose()
    return {
        (str(store).strip(), str(item).strip()): Decimal(str(quantity))
        for store, item, quantity in rows
    }


async def book_stock(
    client: httpx.AsyncClient, estate: RunningEstate, target: StockTarget
) -> dict[tuple[str, str], int]:
    """Book movements in the ERP so that each (location, SKU) of ``target`` holds exactly its
    quantity. Returns the deltas booked (positions already right are left out)."""
    current = await erp_quantities(estate.erp_url, sorted({sku for _, sku in target}))
    deltas = {key: wanted - current.get(key, Decimal(0)) for key, wanted in sorted(target.items())}
    movements = [
        {"store": store, "sku": sku, "delta": str(delta)}
        for (store, sku), delta in deltas.items()
        if delta != 0
    ]
    for start in range(0, len(movements), MAX_MOVEMENTS):
        chunk = movements[start : start + MAX_MOVEMENTS]
        response = await client.post(f"{estate.urls['erp']}/movements", json=chunk)
        response.raise_for_status()
    return {key: int(delta) for key, delta in deltas.items() if delta != 0}


async def only_at(erp_url: str, sku: str, wanted: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """The target that leaves ``sku`` at exactly ``wanted`` units per location and at zero at
    every other location the ERP has a row for."""
    current = await erp_quantities(erp_url, [sku])
    target = dict.fromkeys(current, 0)
    target.update({(location, sku): units for location, units in wanted.items()})
    return target


# --------------------------------------------------------------------------- Redis


@dataclass(slots=True)
class RedisServer:
    """A ``redis-server`` of a test's own on a free port, stopped and started by its pid."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--logfile", str(self.log)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    """A fresh Redis for one test module; raises FileNotFoundError without redis-server."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), workdir / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
