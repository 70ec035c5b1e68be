"""The adapters' HTTP client (httpx's conventions over aiohttp) against real sockets: what it
sends and returns, how it pools connections, and which httpx exception each kind of failure
becomes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from adapters.http import BackendClient, backend_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A TCP server on a free local port that answers with whatever its handler writes."""

    url: str
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    state = RawServer(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.open_now += 1
        state.most_open = max(state.most_open, state.open_now)
        try:
            await handler(reader, writer)
        finally:
            state.open_now -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def client_of(
    handler: Handler, *, seconds: float = 5.0, max_connections: int = 1
) -> AsyncIterator[tuple[RawServer, BackendClient]]:
    """A raw server with ``handler``, and a backend client pointed at it (closed on the way out)."""
    async with raw_server(handler) as server:
        client = backend_client(
            base_url=server.url, timeout=seconds, max_connections=max_connections
        )
        async with client:
            yield server, client


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP/1.1 request, head and body; None once the client has closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def keep_answering(body: bytes, *headers: str, log: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if log is not None:
                log.append(request)
            writer.write(answer("200 OK", body, *headers))
            await writer.drain()

    return handle


async def test_a_request_goes_out_and_its_answer_comes_back_whole() -> None:
    # Given a server that records what it is sent and answers a gzip body with a header
    log: list[bytes] = []
    body = gzip.compress(b'{"ok": true}')
    handler = keep_answering(body, "Content-Encoding: gzip", "X-Trace: abc", log=log)
    async with raw_server(handler) as server:
        client = backend_client(
            base_url=server.url, timeout=5.0, max_connections=4, headers={"X-Key": "k1"}
        )
        async with client:
            # When a JSON body is posted
            response = await client.post("/api/orders", json={"id": "O-1"})
    # Then the server saw the method, path, the client's headers and the body
    head, _, sent = log[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/orders HTTP/1.1\r\n")
    assert b"\r\nx-key: k1" in head.lower()
    assert b"\r\ncontent-type: application/json" in head.lower()
    assert sent == b'{"id":"O-1"}'
    # And the answer arrives with its status, its headers, and the body decoded
    assert response.status_code == 200
    assert response.headers["x-trace"] == "abc"
    assert response.json() == {"ok": True}
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"


async def test_connections_are_kept_alive_and_bounded() -> None:
    # Given a server that answers every request after a short pause
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer("200 OK", b"{}"))
            await writer.drain()

    async with client_of(slow, max_connections=3) as (server, client):
        # When ten requests go out at once, and then five more one after another
        await asyncio.gather(*(client.get("/") for _ in range(10)))
        for _ in range(5):
            await client.get("/")
    # Then no more than three connections were ever open, and the later requests reused them
    assert server.most_open == 3
    assert server.connections == 3


async def test_a_redirect_is_returned_not_followed() -> None:
    redirect = answer("302 Found", b"", "Location: /elsewhere")

    async def moved(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(redirect)
            await writer.drain()

    async with client_of(moved) as (server, client):
        response = await client.get("/old")
    assert response.status_code == 302
    assert response.headers["location"] == "/elsewhere"
    assert server.connections == 1


async def test_a_refused_connection_is_a_connect_error() -> None:
    # Given a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with backend_client(timeout=5.0, max_connections=1) as client:
        # When a request is sent there, then it fails to connect, and says so, not "timed out"
        with pytest.raises(httpx.ConnectError) as raised:
            await client.get(f"http://127.0.0.1:{port}/")
    assert not isinstance(raised.value, httpx.TimeoutException)


async def test_a_connection_closed_before_the_answer_is_a_protocol_error() -> None:
    # Given a server that reads the request and hangs up without a word, as a server closing
    # an idle keep-alive connection does when the request crosses its close
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with client_of(hang_up) as (_server, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await writer.drain()

    async with client_of(cut) as (_server, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


async def test_a_server_that_does_not_answer_in_time_is_a_read_timeout() -> None:
    # Given a server that takes the request and never answers
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client gives up and closes

    async with client_of(silent, seconds=0.2) as (_server, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        # When a request is sent with a 0.2 s timeout, then it times out reading
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/")
    # (a bound far above 0.2 s: the point is that the timeout applies, not how fast)
    assert loop.time() - started < 5.0


async def test_closing_the_client_closes_its_connections() -> None:
    log: list[bytes] = []
    async with raw_server(keep_answering(b"{}", log=log)) as server:
        client = backend_client(base_url=server.url, timeout=5.0, max_connections=2)
        await client.get("/")
        assert server.open_now == 1
        # When the client is closed, then the server sees its connection end
        await client.aclose()
        for _ in range(100):
            if server.open_now == 0:
                break
            await asyncio.sleep(0.01)
        assert server.open_now == 0
    assert len(log) == 1


def test_a_pool_needs_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        backend_client(timeout=1.0, max_connections=0)


async def test_paths_join_the_base_url_as_httpx_joins_them_and_params_are_encoded() -> None:
    # Given a client whose base URL has a path of its own
    log: list[bytes] = []
    async with raw_server(keep_answering(b"{}", log=log)) as server:
        client = backend_client(base_url=f"{server.url}/api/", timeout=5.0, max_connections=1)
        async with client:
            # When it asks for a path with and without a leading slash, with parameters
            first = await client.get("/v1/changes", params={"since": "a b", "limit": 50})
            second = await client.request("GET", "v1/members", params={"ids": "C1,C2"})

    # Then both paths sit under the base path, the parameters are in the query, and each
    # answer knows the request it answers
    lines = [request.split(b"\r\n", 1)[0] for request in log]
    assert lines[0].startswith(b"GET /api/v1/changes?since=a")
    assert b"limit=50" in lines[0]
    assert lines[1].startswith(b"GET /api/v1/members?ids=C1")
    assert (first.request.method, first.request.url.path) == ("GET", "/api/v1/changes")
    assert second.request.url.query["ids"] == "C1,C2"


async def test_the_text_follows_the_charset_and_a_body_that_is_not_json_is_a_value_error() -> None:
    body = "Preis: 9,99 €".encode("iso-8859-15")
    handler = keep_answering(body, "Content-Type: text/plain; charset=ISO-8859-15")
    async with client_of(handler) as (_server, client):
        answer = await client.get("/")

    assert answer.text == "Preis: 9,99 €"
    with pytest.raises(ValueError, match=r"can't decode"):
        answer.json()  # as httpx's: json.loads of the body's bytes


async def test_a_timeout_given_with_the_call_replaces_the_clients_own() -> None:
    # Given a server that never answers, and a client that would wait 30 s
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with client_of(silent, seconds=30.0) as (_server, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        # When one call says 0.2 s, then that call times out reading, long before 30 s
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/", content=b"<x/>", timeout=httpx.Timeout(0.2))
    assert loop.time() - started < 10.0
