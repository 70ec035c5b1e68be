"""At most N GraphQL requests run at once; the others wait, and past max_wait get a 503."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admission import AdmissionLimit


def _app(max_in_flight: int, max_wait: float, running: list[int]) -> AdmissionLimit:
    async def slow(request: Request) -> JSONResponse:
        running.append(len(running) + 1)
        await asyncio.sleep(0.05)
        running.pop()
        return JSONResponse({"data": {}})

    routes = [Route("/graphql", slow, methods=["POST"]), Route("/healthz", slow)]
    return AdmissionLimit(Starlette(routes=routes), max_in_flight, max_wait)


async def _post_many(app: AdmissionLimit, count: int, path: str = "/graphql") -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        method = client.post if path == "/graphql" else client.get
        responses = await asyncio.gather(*(method(path) for _ in range(count)))
    return [response.status_code for response in responses]


async def test_requests_beyond_the_limit_wait_their_turn_and_all_succeed() -> None:
    running: list[int] = []
    peak: list[int] = []
    app = _app(max_in_flight=2, max_wait=5.0, running=running)

    async def watch() -> None:
        for _ in range(40):
            peak.append(len(running))
            await asyncio.sleep(0.005)

    statuses, _ = await asyncio.gather(_post_many(app, 6), watch())

    assert statuses == [200] * 6
    assert max(peak) == 2


async def test_a_request_that_waited_too_long_is_told_to_retry_later() -> None:
    app = _app(max_in_flight=1, max_wait=0.01, running=[])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        first, second = await asyncio.gather(client.post("/graphql"), client.post("/graphql"))

    refused = second if second.status_code == 503 else first
    assert sorted([first.status_code, second.status_code]) == [200, 503]
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"


async def test_other_paths_are_not_limited() -> None:
    running: list[int] = []

    statuses = await _post_many(_app(1, 0.01, running), 4, path="/healthz")

    assert statuses == [200] * 4
