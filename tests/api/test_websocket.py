"""GraphQL over WebSocket (graphql-transport-ws) against a served gateway: the same document
limits, scopes, rate limits and admission as HTTP, the Origin allow-list, and the timeout for
a connection that never says connection_init."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.config import Settings
from gateway.persisted import operation_id
from legacy.launcher import RunningEstate
from tests.support import DEMO_CONFIG, LISTING, MARIENPLATZ, ServedGateway, serve_gateway

ALLOWED_ORIGIN = "https://shop.example.com"


@pytest.fixture(scope="module")
def gateway(estate: RunningEstate, pg_databases: Callable[[], str]) -> Iterator[ServedGateway]:
    """The demo gateway with a 1 s connection_init timeout, one admission slot waited for at
    most 0.2 s, the shop's origin allowed, the partner limited to a burst of 3 and the kiosk
    running persisted operations only."""
    demo = Settings(gateway_config=DEMO_CONFIG).config()
    security = demo.security.model_copy(
        update={
            "connection_init_timeout": 1.0,
            "websocket_origins": (ALLOWED_ORIGIN,),
            "rate_limit_prefix": f"test:ws:{uuid.uuid4().hex}",
        }
    )
    changes = {
        "partner": {"requests_per_second": 0.1, "burst": 3},
        "kiosk": {"persisted_only": True},
    }
    channels = {
        key: channel.model_copy(update=changes.get(channel.name, {}))
        for key, channel in demo.channels.items()
    }
    limits = demo.limits.model_copy(update={"max_in_flight": 1, "max_wait": 0.2})
    served = serve_gateway(
        estate,
        pg_databases(),
        config={"security": security, "channels": channels, "limits": limits},
    )
    yield served
    served.stop()


@asynccontextmanager
async def session(
    gateway: ServedGateway, key: str = "demo-web", origin: str | None = None
) -> AsyncIterator[ClientConnection]:
    """A graphql-transport-ws connection, initialised."""
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"X-Api-Key": key},
        origin=origin,  # type: ignore[arg-type]
    ) as socket:
        await socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        yield socket


async def run(  # type: ignore[no-untyped-def]
    socket: ClientConnection,
    query: str | None,
    variables: dict[str, object] | None = None,
    extensions: dict[str, object] | None = None,
):
    """The first answer to one operation: ``next`` or ``error`` message."""
    operation = uuid.uuid4().hex
    payload = {"query": query, "variables": variables or {}, "extensions": extensions or {}}
    await socket.send(json.dumps({"id": operation, "type": "subscribe", "payload": payload}))
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 30))
        if message.get("id") == operation and message["type"] in ("next", "error"):
            return message


async def test_a_query_runs_over_the_websocket(gateway: ServedGateway) -> None:
    async with session(gateway) as socket:
        answer = await run(socket, LISTING, {"first": 2, "near": MARIENPLATZ})

    assert answer["type"] == "next"
    assert len(answer["payload"]["data"]["products"]["edges"]) == 2


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ " + "products { " * 13 + "}" * 14, "QUERY_TOO_DEEP"),
        ("{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }", "TOO_MANY_ALIASES"),
        (
            "{ products(first: 100) { edges { node { variants { "
            "availability(first: 100) { available } } } } } }",
            "QUERY_TOO_COSTLY",
        ),
        ('{ order(id: "a\\u0000") { id } }', "BAD_USER_INPUT"),
    ],
)
async def test_the_document_limits_hold_over_the_websocket(
    gateway: ServedGateway, document: str, code: str
) -> None:
    async with session(gateway) as socket:
        answer = await run(socket, document)

    assert answer["type"] == "error"
    assert [error["extensions"]["code"] for error in answer["payload"]] == [code]


async def test_the_scopes_hold_over_the_websocket(gateway: ServedGateway) -> None:
    async with session(gateway, key="demo-web") as socket:
        answer = await run(socket, '{ customer(cardNumber: "LC0001") { id } }')

    assert answer["payload"]["data"] == {"customer": None}
    assert answer["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_each_operation_takes_a_token_from_the_channels_rate_limit(
    gateway: ServedGateway,
) -> None:
    async with session(gateway, key="demo-partner") as socket:
        answers = [await run(socket, "{ __typename }") for _ in range(4)]

    assert [answer["type"] for answer in answers] == ["next", "next", "next", "error"]
    assert answers[3]["payload"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_a_websocket_query_waits_for_an_admission_slot_like_http(
    gateway: ServedGateway, estate: RunningEstate
) -> None:
    # given the one admission slot held by a slow HTTP listing (the PIM answers in 1.5 s)
    async with httpx.AsyncClient(timeout=30) as client, session(gateway) as socket:
        knobs = await client.post(f"{estate.urls['pim']}/_sim/knobs", json={"latency_ms": 1500})
        knobs.raise_for_status()
        slow = asyncio.create_task(
            client.post(
                f"{gateway.url}/graphql",
                json={"query": "{ products(first: 1) { totalCount } }"},
                headers={"X-Api-Key": "demo-mobile"},
            )
        )
        await asyncio.sleep(0.3)
        # when
        answer = await run(socket, "{ __typename }")
        held = await slow
    # then
    assert answer["type"] == "error"
    assert answer["payload"][0]["extensions"]["code"] == "OVERLOADED"
    assert held.status_code == 200


async def test_a_connection_that_never_initialises_is_closed(gateway: ServedGateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    started = time.monotonic()
    async with connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"X-Api-Key": "demo-web"},
    ) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4408
    assert time.monotonic() - started < 5


async def test_only_an_allowed_origin_may_open_a_connection(gateway: ServedGateway) -> None:
    async with session(gateway, origin=ALLOWED_ORIGIN) as socket:
        allowed = await run(socket, "{ __typename }")
    with pytest.raises(InvalidStatus) as refused:
        async with session(gateway, origin="https://evil.example.net"):
            pass

    assert allowed["type"] == "next"
    assert refused.value.response.status_code == 403


async def test_a_persisted_only_channel_runs_only_persisted_operations_here_too(
    gateway: ServedGateway,
) -> None:
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": operation_id(LISTING)}}
    variables = {"first": 1, "near": MARIENPLATZ}

    async with session(gateway, key="demo-kiosk") as socket:
        by_id = await run(socket, None, variables, extensions=persisted)
        free_form = await run(socket, "{ __typename }")

    assert by_id["type"] == "next"
    assert len(by_id["payload"]["data"]["products"]["edges"]) == 1
    assert free_form["type"] == "error"
    assert free_form["payload"][0]["extensions"] == {"code": "PERSISTED_QUERY_REQUIRED"}
