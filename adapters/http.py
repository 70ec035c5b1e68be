"""The HTTP client every REST and SOAP adapter uses: httpx's calling conventions over aiohttp.

The adapters speak httpx's dialect (``get``, ``post``, ``request`` with ``params``, ``json``,
``content`` and an ``httpx.Timeout``; an answer's ``status_code``, ``headers``, ``json()``; and
the exception classes they map to backend errors); the bytes go through aiohttp, which keeps
idle connections in a queue per host and parses answers in C. ``bench.http_client`` measures
the CPU per request with 16 in flight over a pool of 32: httpx's own transport (httpcore on
AnyIO) costs about 1.3 ms, since on every request its pool asks each idle connection whether
its socket has become readable (a system call, after AnyIO has built the socket's attribute
table) and its locks go through AnyIO (encode/httpx#3215); httpx's client over an aiohttp
transport about 0.27 ms, most of it httpx building requests, headers, cookies and responses;
``BackendClient``, which sends straight through aiohttp, a fraction of that.

``BackendClient`` raises for aiohttp's failures the httpx exception an httpcore transport
raises for the same event, because the adapters' retries depend on telling them apart: a
refused connection is a ``ConnectError``, a server that closed an idle keep-alive connection
as the request went out is a ``RemoteProtocolError`` (both retried where the call is safe to
repeat), and only time running out is a ``TimeoutException``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import httpx
import yarl
from multidict import CIMultiDictProxy

# Idle connections are dropped before servers commonly drop them (uvicorn and Apache: 5 s).
KEEPALIVE_EXPIRY: Final = 4.0
MAX_KNOWN_URLS: Final = 1024  # parsed URLs kept per client (an adapter calls a few paths)
_CHARSET: Final = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


def backend_client(
    *,
    timeout: float,
    max_connections: int,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
) -> BackendClient:
    """The client for one backend: at most ``max_connections`` open at once, ``timeout``
    seconds for each phase of a request unless a call says otherwise."""
    return BackendClient(
        base_url=base_url, headers=headers, timeout=timeout, max_connections=max_connections
    )


@dataclass(frozen=True, slots=True)
class SentRequest:
    """What an answer answers: its method and URL (``url.path`` for messages)."""

    method: str
    url: yarl.URL


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read whole, with the attributes of ``httpx.Response`` the adapters use.
    Header names are case-insensitive."""

    status_code: int
    reason_phrase: str
    headers: CIMultiDictProxy[str]
    content: bytes
    request: SentRequest
    http_version: str = "HTTP/1.1"

    @property
    def text(self) -> str:
        charset = _CHARSET.search(self.headers.get("Content-Type", ""))
        return self.content.decode(charset.group(1) if charset else "utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` (``json.JSONDecodeError``) when it is not."""
        return json.loads(self.content)


class BackendClient:
    """``httpx.AsyncClient``'s calling conventions, as far as the adapters use them (``get``,
    ``post``, ``request`` with ``params``, ``json``, ``content``, ``headers`` and a
    ``timeout``; a base URL and headers of the client's own) and httpx's exceptions, over an
    aiohttp session opened on the first request (it belongs to the running event loop).

    Redirects are returned, not followed; no cookies are kept; gzip and deflate bodies are
    decoded. An answer is read whole before it is returned."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str] | None,
        timeout: float,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._base = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._timeout = _client_timeout(httpx.Timeout(timeout))
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    async def get(self, url: str, **options: Any) -> Answer:
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Any) -> Answer:
        return await self.request("POST", url, **options)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,  # noqa: ASYNC109 - httpx's convention, per call
    ) -> Answer:
        """Send one request; raises the ``httpx.TransportError`` an httpx client would raise
        for the same failure (``_httpx_error``)."""
        session = self._session or self._open()
        target = self._url(url)
        sent = {**self._headers, **headers} if headers else self._headers
        body: bytes | str | None = content
        if json is not None:
            body = _json_body(json)
            sent = {**sent, "Content-Type": "application/json"}
        try:
            async with session.request(
                method,
                target,
                params=params,
                data=body,
                headers=sent,
                allow_redirects=False,
                timeout=self._timeout if timeout is None else _client_timeout(timeout),
            ) as answer:
                read = await answer.read()
                return Answer(
                    answer.status,
                    answer.reason or "",
                    answer.headers,
                    read,
                    SentRequest(method, answer.url),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _url(self, url: str) -> yarl.URL:
        """``url`` joined to the base URL as httpx joins it, parsed once per distinct URL."""
        found = self._urls.get(url)
        if found is None:
            joined = url if "://" in url else f"{self._base}/{url.lstrip('/')}"
            found = yarl.URL(joined)
            if len(self._urls) < MAX_KNOWN_URLS:
                self._urls[url] = found
        return found

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_expiry
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session


def _client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """httpx's phases in aiohttp's terms: waiting for a pooled connection, connecting, reading."""
    return aiohttp.ClientTimeout(
        connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
    )


def _json_body(value: Any) -> bytes:
    """JSON as httpx sends it: compact, UTF-8, no NaN."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _httpx_error(exc: BaseException) -> httpx.TransportError:
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
    return kind(f"{exc.__class__.__name__}: {exc}")
