"""`commerce-gateway seed` and `commerce-gateway legacy`, run as a user runs them."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "gateway.cli"]
SYSTEMS = ("pim", "pricing", "loyalty", "oms", "erp")


def _seed(data_dir: Path, seed: int = 42) -> str:
    command = [*CLI, "seed", "--scale", "tiny", "--seed", str(seed), "--quiet"]
    result = subprocess.run(
        [*command, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("estate")
    _seed(data_dir)
    return data_dir


def test_seeding_twice_with_one_seed_writes_identical_files(seeded: Path, tmp_path: Path) -> None:
    output = _seed(tmp_path)

    assert "SKUs" in output
    for system in ("pim", "pricing", "promotions", "loyalty"):
        comparison = filecmp.dircmp(seeded / system, tmp_path / system)
        assert comparison.left_list == comparison.right_list
        _, mismatch, errors = filecmp.cmpfiles(
            seeded / system, tmp_path / system, comparison.common_files, shallow=False
        )
        assert (mismatch, errors) == ([], []), system


def test_legacy_prints_every_system_serves_it_and_stops_on_ctrl_c(seeded: Path) -> None:
    process = subprocess.Popen(
        [*CLI, "legacy", "--data-dir", str(seeded), "--knob", "pricing.latency_ms=30"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        urls = _read_urls(process)
        with httpx.Client(timeout=5) as client:
            stats = {name: client.get(f"{urls[name]}/_sim/stats").json() for name in SYSTEMS}
            knobs = client.get(f"{urls['pricing']}/_sim/knobs").json()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()

    assert {name: body["system"] for name, body in stats.items()} == {n: n for n in SYSTEMS}
    assert knobs["latency_ms"] == 30
    assert process.returncode == 0
    for url in urls.values():
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/_sim/stats", timeout=1)


def _read_urls(process: subprocess.Popen[str]) -> dict[str, str]:
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while len(urls) < len(SYSTEMS) + 2 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        name, _, where = line.strip().partition(" ")
        urls[name] = where.strip()
    assert set(urls) == {*SYSTEMS, "erp-sql", "promotions"}
    return {name: urls[name] for name in SYSTEMS}


def test_serve_demo_answers_graphql_and_ctrl_c_stops_everything(seeded: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--demo", "--data-dir", str(seeded), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = _read_until(process, "gateway")
        urls = dict(line.split(maxsplit=1) for line in lines)
        response = _post_when_up(f"http://127.0.0.1:{port}/graphql")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()

    assert response.status_code == 200
    assert response.json()["data"]["products"]["totalCount"] == 60
    assert process.returncode == 0
    assert (seeded / "gateway.sqlite").exists()  # its ledger lives beside the estate it mirrors
    for name in SYSTEMS:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{urls[name]}/_sim/stats", timeout=1)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _read_until(process: subprocess.Popen[str], name: str) -> list[str]:
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith(name):
            return lines
    raise AssertionError(f"no {name} line in {lines}")


def _post_when_up(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.post(
                url,
                json={"query": "{ products(first: 1) { totalCount } }"},
                headers={"X-Api-Key": "demo-kiosk"},
                timeout=10,
            )
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
