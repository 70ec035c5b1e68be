"""The simulators' latency knob: an answer leaves ``latency`` after its request arrived, the
system's own work included, so a benchmark's backends are as slow as it says and no slower."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from legacy.sim import HeldAnswers, Knobs, SimulatedFailure, Simulator
from tests.support import serve_on_thread

LATENCY = 0.3  # seconds; large against the scheduling noise of a busy machine
SLACK = 0.15  # how much later than due an answer may come on such a machine


def system(simulator: Simulator) -> Starlette:
    """A stand-in legacy system whose work takes ``?work=`` seconds after the simulator call."""

    async def work(request: Request) -> JSONResponse:
        try:
            await simulator.call("Work")
        except SimulatedFailure:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        await asyncio.sleep(float(request.query_params.get("work", "0")))
        return JSONResponse({"done": True})

    return Starlette(
        routes=[Route("/work", work), *simulator.routes()],
        middleware=[Middleware(HeldAnswers)],
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    simulator = Simulator("stand-in", Knobs(latency_ms=LATENCY * 1000))
    url, server, thread = serve_on_thread(system(simulator))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def timed(url: str, work: float) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.get(f"{url}/work", params={"work": work}, timeout=10)
    return response, time.perf_counter() - started


def test_an_answer_takes_the_latency(url: str) -> None:
    # when a request needs no work
    response, elapsed = timed(url, 0)
    # then the answer comes after the latency, not before
    assert response.json() == {"done": True}
    assert elapsed >= LATENCY


def test_work_shorter_than_the_latency_is_inside_it(url: str) -> None:
    # when the system works two thirds of the latency on the request
    response, elapsed = timed(url, LATENCY * 2 / 3)
    # then the answer still comes at the latency, not at the latency plus the work
    assert response.json() == {"done": True}
    assert LATENCY <= elapsed < LATENCY * 5 / 3


def test_work_longer_than_the_latency_sets_the_time(url: str) -> None:
    # when the work takes longer than the latency
    response, elapsed = timed(url, LATENCY * 2)
    # then the answer comes when the work is done, with no latency added on top
    assert response.json() == {"done": True}
    assert LATENCY * 2 <= elapsed < LATENCY * 3 - SLACK


def test_a_failure_also_comes_after_the_latency(url: str) -> None:
    # given the system is down
    httpx.post(f"{url}/_sim/knobs", json={"outage": True}, timeout=10).raise_for_status()
    try:
        # when it is asked
        response, elapsed = timed(url, 0)
    finally:
        httpx.post(f"{url}/_sim/knobs", json={"outage": False}, timeout=10).raise_for_status()
    # then the error, too, takes the latency
    assert response.status_code == 503
    assert elapsed >= LATENCY


def test_the_control_plane_answers_at_once(url: str) -> None:
    # when the knobs are read (no simulator call)
    started = time.perf_counter()
    knobs = httpx.get(f"{url}/_sim/knobs", timeout=10).json()
    # then no latency is added to the simulation's own controls
    assert knobs["latency_ms"] == LATENCY * 1000
    assert time.perf_counter() - started < LATENCY
