"""Readiness and channel security over ASGI: a small app made of the channel middleware, the
health routes and an endpoint that echoes who it was called by, in front of the fakes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from adapters.ports import BackendUnavailable
from gateway.backends import Backends
from gateway.config import GatewayConfig, Settings
from gateway.health import Readiness, health_routes, without_password
from gateway.security import ChannelAuthMiddleware, ChannelKeys, CustomerTokens
from legacy.demo import DemoEstate
from tests.fakes import FakeEstate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
NOW = 1_800_000_000.0
URLS = {
    "pim": "http://pim.test",
    "pricing": "http://pricing.test/soap",
    "promotions": "/srv/promotions",
    "erp": "postgresql://erp@db.test/erp",
    "loyalty": "http://loyalty.test",
    "oms": "http://oms.test",
}
OPERATOR_KEY = "operator-key-for-tests"
OPERATOR = {"X-Operator-Key": OPERATOR_KEY}
PROBES = {
    "pim": ("catalogue", "categories"),
    "pricing": ("prices", "prices"),
    "promotions": ("promotions", "promotions"),
    "erp": ("inventory", "locations"),
    "loyalty": ("loyalty", "accounts"),
    "oms": ("order_intake", "receipts"),
}


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_estate() -> None:
    """These tests run on fakes: the running estate the other API tests reset is not needed."""


@pytest.fixture
def config() -> GatewayConfig:
    return Settings(gateway_config=DEMO_CONFIG, gateway_jwt_secret=None).config()


@pytest.fixture
def tokens(config: GatewayConfig) -> CustomerTokens:
    return CustomerTokens(config.auth, clock=lambda: NOW)


@pytest.fixture
def fakes(truth: DemoEstate) -> FakeEstate:
    return FakeEstate.from_demo(truth)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(
    config: GatewayConfig, tokens: CustomerTokens, fakes: FakeEstate, clock: ManualClock
) -> Starlette:
    backends = Backends(
        catalogue=fakes.catalogue,
        prices=fakes.prices,
        promotions=fakes.promotions,
        inventory=fakes.inventory,
        loyalty=fakes.loyalty,
        orders=fakes.order_intake,
    )
    readiness = Readiness(backends, URLS, timeout=1.0, cache_seconds=1.0, clock=clock)
    routes = [
        Route("/graphql", whoami, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", whoami_socket),
        *health_routes(readiness, operator_key=OPERATOR_KEY),
    ]
    keys = ChannelKeys(config.channels)
    middleware = [Middleware(ChannelAuthMiddleware, keys=keys, tokens=tokens)]
    return Starlette(routes=routes, middleware=middleware)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=OPERATOR
    ) as client:
        yield client


async def whoami(request: Request) -> Response:
    """Stands in for the GraphQL endpoint: the GraphiQL page, or who is asking."""
    channel = getattr(request.state, "channel", None)
    if channel is None:
        return HTMLResponse("<title>GraphiQL</title>")
    return JSONResponse(
        {
            "channel": channel.name,
            "scopes": sorted(channel.scopes),
            "customerId": request.state.customer_id,
        }
    )


async def whoami_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"channel": websocket.state.channel.name})
    await websocket.close()


async def websocket_session(app: Starlette, headers: dict[str, str]) -> list[Message]:
    """What ``app`` sends to a graphql-transport-ws client that connects and then waits."""
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "subprotocols": ["graphql-transport-ws"],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway", 80),
    }
    await app(scope, receive, send)
    return sent


def probe_counts(fakes: FakeEstate) -> dict[str, int]:
    return {
        name: getattr(fakes, field).calls[operation] for name, (field, operation) in PROBES.items()
    }


def graphql_error(message: str, code: str) -> dict[str, object]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}


# --------------------------------------------------------------------------- health


async def test_liveness_answers_ok_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_without_the_operator_key_readiness_shows_only_its_status(
    client: httpx.AsyncClient, fakes: FakeEstate
) -> None:
    # given
    fakes.catalogue.fail_with = BackendUnavailable("pim", "connection refused to 10.0.0.7")
    # when
    anonymous = await client.get("/readyz", headers={"X-Operator-Key": ""})
    wrong = await client.get("/readyz", headers={"X-Operator-Key": "demo-web"})
    operator = await client.get("/readyz")
    # then
    assert anonymous.status_code == wrong.status_code == operator.status_code == 503
    assert anonymous.json() == wrong.json() == {"status": "unavailable"}
    assert operator.json()["backends"]["pim"]["error"].endswith("10.0.0.7")


async def test_ready_when_every_backend_answers_its_probe(
    client: httpx.AsyncClient, fakes: FakeEstate
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert list(body["backends"]) == ["pim", "pricing", "promotions", "erp", "loyalty", "oms"]
    for name, status in body["backends"].items():
        assert status == {
            "status": "up",
            "url": URLS[name],
            "latencyMs": status["latencyMs"],
            "error": None,
        }
        assert isinstance(status["latencyMs"], int)
    assert probe_counts(fakes) == dict.fromkeys(PROBES, 1)
    assert fakes.prices.calls.total() == 1


async def test_unavailable_with_503_while_a_required_backend_is_down(
    client: httpx.AsyncClient, fakes: FakeEstate
) -> None:
    # given
    fakes.catalogue.fail_with = BackendUnavailable("pim", "connection refused")
    # when
    response = await client.get("/readyz")
    # then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["backends"]["pim"]["status"] == "down"
    assert body["backends"]["pim"]["error"] == "BackendUnavailable: pim: connection refused"
    assert {name for name, status in body["backends"].items() if status["status"] == "up"} == {
        "pricing",
        "promotions",
        "erp",
        "loyalty",
        "oms",
    }


@pytest.mark.parametrize("down", ["oms", "loyalty"])
async def test_degraded_but_ready_while_only_an_optional_backend_is_down(
    client: httpx.AsyncClient, fakes: FakeEstate, down: str
) -> None:
    # given
    field, _ = PROBES[down]
    getattr(fakes, field).fail_with = BackendUnavailable(down, "503 Service Unavailable")
    # when
    response = await client.get("/readyz")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert [name for name, item in body["backends"].items() if item["status"] == "down"] == [down]


async def test_a_probe_answered_within_the_cache_period_is_reused(
    client: httpx.AsyncClient, fakes: FakeEstate, clock: ManualClock
) -> None:
    # given
    first = await client.get("/readyz")
    fakes.catalogue.fail_with = BackendUnavailable("pim", "connection refused")
    # when
    clock.now += 0.5
    cached = await client.get("/readyz")
    clock.now += 0.6
    fresh = await client.get("/readyz")
    # then
    assert first.json() == cached.json()
    assert cached.status_code == 200
    assert fresh.status_code == 503
    assert probe_counts(fakes) == dict.fromkeys(PROBES, 2)


async def test_a_backend_that_does_not_answer_in_time_is_down(fakes: FakeEstate) -> None:
    # given: no time at all, so that no probe, however fast, can finish
    backends = Backends(
        fakes.catalogue,
        fakes.prices,
        fakes.promotions,
        fakes.inventory,
        fakes.loyalty,
        fakes.order_intake,
    )
    readiness = Readiness(backends, URLS, timeout=0)
    # when
    report = await readiness.check()
    # then
    assert report.status == "unavailable"
    assert report.http_status == 503
    assert {status.error for status in report.backends} == {"no answer within 0 s"}


def test_a_password_in_a_backend_url_is_not_shown() -> None:
    assert without_password("postgresql+asyncpg://erp:s3cret@db:5432/erp") == (
        "postgresql+asyncpg://erp:***@db:5432/erp"
    )
    assert without_password("http://pim.test/api") == "http://pim.test/api"


# --------------------------------------------------------------------------- channel security


async def test_no_api_key_is_refused_with_a_graphql_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"})

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == graphql_error("an X-Api-Key header is required", "INVALID_API_KEY")


async def test_an_unknown_api_key_is_refused_with_a_graphql_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"X-Api-Key": "demo-everything"}
    )

    assert response.status_code == 401
    assert response.json() == graphql_error("unknown API key", "INVALID_API_KEY")


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer not-a-token", "token is malformed"),
        ("Basic dXNlcjpwYXNz", "authorization must use the Bearer scheme"),
    ],
)
async def test_a_bad_customer_token_is_refused_as_unauthenticated(
    client: httpx.AsyncClient, authorization: str, message: str
) -> None:
    headers = {"X-Api-Key": "demo-web", "Authorization": authorization}

    response = await client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)

    assert response.status_code == 401
    assert response.json() == graphql_error(message, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_expired_customer_token_is_refused_as_unauthenticated(
    client: httpx.AsyncClient, config: GatewayConfig
) -> None:
    # given: a token that expired an hour before the gateway's clock
    expired = CustomerTokens(config.auth, clock=lambda: NOW - 2 * 3600).issue("C0001")
    headers = {"X-Api-Key": "demo-web", "Authorization": f"Bearer {expired}"}
    # when
    response = await client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)
    # then
    assert response.status_code == 401
    assert response.json() == graphql_error("token has expired", "UNAUTHENTICATED")


async def test_a_browser_loads_the_graphiql_page_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})

    assert response.status_code == 200
    assert response.text == "<title>GraphiQL</title>"


async def test_a_browser_get_running_a_query_needs_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"Accept": "text/html"}
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"] == {"code": "INVALID_API_KEY"}


async def test_a_known_key_and_a_valid_token_reach_the_app_as_channel_and_customer(
    client: httpx.AsyncClient, tokens: CustomerTokens
) -> None:
    headers = {"X-Api-Key": "demo-csr", "Authorization": f"Bearer {tokens.issue('C0001')}"}

    response = await client.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)

    assert response.status_code == 200
    assert response.json() == {
        "channel": "csr",
        "scopes": ["catalog:read", "customer:lookup", "offers:issue", "orders:write", "sales:read"],
        "customerId": "C0001",
    }


@pytest.mark.parametrize(
    ("key", "channel"),
    [
        ("demo-web", "web"),
        ("demo-mobile", "mobile"),
        ("demo-kiosk", "kiosk"),
        ("demo-pos", "pos"),
        ("demo-csr", "csr"),
        ("demo-partner", "partner"),
    ],
)
async def test_each_demo_key_reaches_the_app_as_its_channel_without_a_customer(
    client: httpx.AsyncClient, key: str, channel: str
) -> None:
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"X-Api-Key": key}
    )

    assert response.status_code == 200
    assert response.json()["channel"] == channel
    assert response.json()["customerId"] is None


async def test_a_websocket_with_an_unknown_key_is_closed_with_4401(app: Starlette) -> None:
    # Without any key the connection names its channel in connection_init instead (see
    # tests/api/test_subscriptions.py); a wrong key on the upgrade is refused at once.
    sent = await websocket_session(app, {"X-Api-Key": "not-a-key"})

    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close"]
    assert sent[0]["subprotocol"] == "graphql-transport-ws"
    assert sent[1]["code"] == 4401


async def test_a_websocket_with_a_known_key_reaches_the_app_as_its_channel(app: Starlette) -> None:
    sent = await websocket_session(app, {"X-Api-Key": "demo-kiosk"})

    assert [message["type"] for message in sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert json.loads(sent[1]["text"]) == {"channel": "kiosk"}


async def test_a_draining_process_is_not_ready_and_still_live() -> None:
    # given a process with every backend up, told to stop
    from gateway.health import Draining

    draining = Draining()
    app = Starlette(routes=health_routes(operator_key=OPERATOR_KEY, draining=draining))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        draining.begin()

        # when a load balancer probes it
        ready = await client.get("/readyz")
        live = await client.get("/healthz")

    # then it is taken out without probing any backend, while it still answers
    assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
    assert live.status_code == 200
