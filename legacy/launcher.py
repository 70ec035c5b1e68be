"""Start the simulated legacy estate as separate processes, one per HTTP system.

Each process gets a listening socket bound here and handed over by file descriptor, so a port
of 0 picks a free port with no race between choosing it and serving on it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from legacy.sim import DEFAULT_LOYALTY_API_KEY, Knobs

HTTP_SYSTEMS = ("pim", "pricing", "loyalty", "oms", "erp")
"""The systems served over HTTP. The ERP's server is its control plane (stats, knobs, stock
movements); its data is read over SQL. The promotions tool is a folder, not a server."""


def default_erp_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir.resolve() / 'erp.sqlite'}"


@dataclass(frozen=True, slots=True)
class EstateConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=dict)
    knobs: Mapping[str, Knobs] = field(default_factory=dict)
    erp_url: str | None = None
    api_key: str = DEFAULT_LOYALTY_API_KEY
    systems: tuple[str, ...] = HTTP_SYSTEMS


@dataclass(slots=True)
class RunningEstate:
    urls: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    data_dir: Path
    erp_url: str
    api_key: str

    @property
    def promotions_dir(self) -> Path:
        return self.data_dir / "promotions"

    def describe(self) -> list[str]:
        lines = [f"{name:<11} {url}" for name, url in self.urls.items()]
        lines.append(f"{'erp-sql':<11} {self.erp_url}")
        lines.append(f"{'promotions':<11} {self.promotions_dir.resolve().as_uri()}")
        return lines

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process this estate started, by pid: SIGTERM, then SIGKILL."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_estate(config: EstateConfig, ready_timeout: float = 30.0) -> RunningEstate:
    """Start the systems of ``config`` and return once every one answers ``/_sim/stats``."""
    erp_url = config.erp_url or default_erp_url(config.data_dir)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    estate = RunningEstate(urls, processes, config.data_dir, erp_url, config.api_key)
    try:
        for system in config.systems:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((config.host, config.ports.get(system, 0)))
            listener.listen(1024)
            port = listener.getsockname()[1]
            urls[system] = f"http://{config.host}:{port}"
            processes[system] = _spawn(system, listener, config, erp_url)
            listener.close()
        _wait_ready(estate, ready_timeout)
    except BaseException:
        estate.stop()
        raise
    return estate


def _spawn(
    system: str, listener: socket.socket, config: EstateConfig, erp_url: str
) -> subprocess.Popen[bytes]:
    descriptor = listener.fileno()
    os.set_inheritable(descriptor, True)
    knobs = config.knobs.get(system)
    command = [
        sys.executable, "-m", "legacy", "serve", system,
        "--fd", str(descriptor),
        "--data-dir", str(config.data_dir),
        "--erp-url", erp_url,
        "--api-key", config.api_key,
    ]  # fmt: skip
    if knobs is not None:
        command += ["--knobs", json.dumps(asdict(knobs))]
    # Its own process group: Ctrl-C reaches only the launcher, which stops the systems itself
    # (SIGTERM, see RunningEstate.stop), so they shut down once, quietly, in order.
    return subprocess.Popen(command, pass_fds=(descriptor,), process_group=0)


def _wait_ready(estate: RunningEstate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(estate.urls)
    with httpx.Client(timeout=1.0) as client:
        while pending:
            for system, url in list(pending.items()):
                process = estate.processes[system]
                if process.poll() is not None:
                    raise RuntimeError(f"{system} exited with code {process.returncode}")
                try:
                    if client.get(f"{url}/_sim/stats").status_code == 200:
                        del pending[system]
                except httpx.TransportError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.05)
