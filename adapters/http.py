"""The HTTP client every REST and SOAP adapter uses: httpx's interface over aiohttp's pool.

The adapters speak httpx (requests, responses, timeouts and the exception classes they map to
backend errors); the bytes go through aiohttp. httpx's own transport, httpcore on AnyIO, spends
about 1.3 ms of CPU per request with 16 in flight over a pool of 32 (``bench.http_client``): on
every request its pool asks each idle connection whether its socket has become readable (a
system call, after AnyIO has built the socket's attribute table), and its locks go through
AnyIO (encode/httpx#3215). aiohttp keeps idle connections in a queue per host and parses
answers in C: about 0.3 ms for the same request, through the same ``httpx.AsyncClient``.

``AiohttpTransport`` maps aiohttp's failures to the httpx exception an httpcore transport raises
for the same event, because the adapters' retries depend on telling them apart: a refused
connection is a ``ConnectError``, a server that closed an idle keep-alive connection as the
request went out is a ``RemoteProtocolError`` (both retried where the call is safe to repeat),
and only time running out is a ``TimeoutException``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aiohttp
import httpx

# Idle connections are dropped before servers commonly drop them (uvicorn and Apache: 5 s).
KEEPALIVE_EXPIRY: Final = 4.0


def backend_client(
    *,
    timeout: float,
    max_connections: int,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for one backend: at most ``max_connections`` open at once,
    ``timeout`` seconds for each phase of a request. ``transport`` replaces the aiohttp one
    (tests use it to put something in between)."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout),
        transport=transport or AiohttpTransport(max_connections=max_connections),
        trust_env=False,
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections and HTTP/1.1 framing are aiohttp's.

    The session is opened on the first request (it belongs to the running event loop) and
    closed by ``aclose``. Redirects, cookies and content decoding stay httpx's business:
    aiohttp follows nothing, keeps no cookies and hands the body over as it came. Each answer is
    read whole before it is returned; the adapters read every answer whole anyway.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float = KEEPALIVE_EXPIRY):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                content = await answer.read()
                reason = answer.reason or ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc, request) from exc
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason.encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_expiry
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        return self._session


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception an httpcore transport raises for what ``exc`` says happened."""
    kind: type[httpx.TransportError]
    match exc:
        case aiohttp.ConnectionTimeoutError():
            kind = httpx.ConnectTimeout
        case aiohttp.ServerTimeoutError() | TimeoutError():
            kind = httpx.ReadTimeout
        case aiohttp.ClientConnectorError():
            kind = httpx.ConnectError
        case (
            aiohttp.ServerDisconnectedError()
            | aiohttp.ClientPayloadError()
            | aiohttp.ClientResponseError()
        ):
            kind = httpx.RemoteProtocolError
        case aiohttp.ClientConnectionError():
            kind = httpx.ReadError
        case aiohttp.InvalidURL():
            kind = httpx.UnsupportedProtocol
        case _:
            kind = httpx.TransportError
    return kind(f"{exc.__class__.__name__}: {exc}", request=request)
