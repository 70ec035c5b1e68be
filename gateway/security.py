"""Who is asking: the sales channel (``X-Api-Key``) and, optionally, the customer (a bearer JWT).

Channels and their scopes come from configuration, never from code. Customer tokens are signed
with a shared secret (HS256, the demo and single-tenant set-up) or verified with the public key of
an identity provider (RS256/ES256, verify only). ``ChannelAuthMiddleware`` turns both into
``request.state.channel`` and ``request.state.customer_id`` for everything behind it, and answers
HTTP 401 with a GraphQL error body when either is wrong.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import jwt
from jwt.types import Options
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.config import AuthConfig, ChannelConfig, SecurityConfig
from gateway.limits import DEFAULT_LIMITS, DocumentLimits
from gateway.ratelimit import Rate

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
MINIMUM_SECRET_BYTES: Final = 32
CLAIMS_REQUIRED: Final = ("exp", "iat", "sub")

INVALID_API_KEY: Final = "INVALID_API_KEY"
UNAUTHENTICATED: Final = "UNAUTHENTICATED"
DEFAULT_RATE: Final = Rate(per_second=500.0, burst=1000)
WEBSOCKET_UNAUTHORIZED: Final = 4401  # graphql-transport-ws's code for a refused connection


# --------------------------------------------------------------------------- channels


@dataclass(frozen=True, slots=True)
class Channel:
    """A sales channel (web, pos, partner, ...) and the scopes its API key grants."""

    name: str
    scopes: frozenset[str]
    limits: DocumentLimits = DEFAULT_LIMITS
    persisted_only: bool = False
    rate: Rate = DEFAULT_RATE

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class ChannelKeys:
    """The configured API keys and the channel each one identifies."""

    def __init__(
        self, channels: Mapping[str, ChannelConfig], security: SecurityConfig | None = None
    ) -> None:
        security = security or SecurityConfig()
        self._channels = [
            (key.encode(), _channel(config, security)) for key, config in channels.items()
        ]

    def identify(self, api_key: str | None) -> Channel | None:
        """The channel of ``api_key``; None when it is missing or unknown. Every configured key
        is compared in constant time, so timing reveals neither a key nor a prefix of one."""
        if not api_key:
            return None
        offered = api_key.encode()
        found: Channel | None = None
        for key, channel in self._channels:
            if hmac.compare_digest(key, offered):
                found = channel
        return found


def _channel(config: ChannelConfig, security: SecurityConfig) -> Channel:
    limits = DocumentLimits(
        max_tokens=security.max_tokens,
        max_document_length=security.max_document_length,
        max_string_length=security.max_string_length,
        max_depth=security.max_depth,
        max_aliases=security.max_aliases,
        max_directives=security.max_directives,
        max_field_repeats=security.max_field_repeats,
        max_cost=config.max_cost,
        introspection=config.introspection,
    )
    rate = Rate(config.requests_per_second, config.burst)
    return Channel(config.name, frozenset(config.scopes), limits, config.persisted_only, rate)


# --------------------------------------------------------------------------- customer tokens


class InvalidToken(Exception):
    """A bearer token that must not be trusted. ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenSigningUnavailable(Exception):
    """Issuing was asked of a gateway configured only to verify tokens (public key, no secret)."""


class CustomerTokens:
    """Issues and verifies customer JWTs as ``auth`` configures them.

    With an HMAC algorithm (HS256 by default) the secret both signs and verifies. With a public-key
    algorithm (RS256, ES256, ...) ``jwt_public_key`` verifies tokens issued elsewhere and ``issue``
    raises ``TokenSigningUnavailable``. ``clock`` gives the time in Unix seconds. Raises ValueError
    at construction when the configuration cannot work.
    """

    def __init__(
        self,
        auth: AuthConfig,
        clock: Callable[[], float] = time.time,
        leeway_seconds: float = 30.0,
    ) -> None:
        self._auth = auth
        self._clock = clock
        self._leeway = leeway_seconds
        self._signing_key, self._verifying_key = _keys(auth)

    @property
    def can_issue(self) -> bool:
        return self._signing_key is not None

    def issue(self, customer_id: str, ttl_seconds: int | None = None) -> str:
        """A token naming ``customer_id`` as its subject, valid for ``ttl_seconds`` (the
        configured ``token_ttl_seconds`` when None). Raises ValueError for an empty id or a
        lifetime that is not positive."""
        if self._signing_key is None:
            raise TokenSigningUnavailable(
                f"auth.algorithm {self._auth.algorithm} verifies with a public key; "
                "tokens are issued by the identity provider"
            )
        if not customer_id:
            raise ValueError("a customer token needs a customer id")
        ttl = self._auth.token_ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            raise ValueError(f"a token's lifetime must be positive, not {ttl} s")
        now = int(self._clock())
        claims = {
            "sub": customer_id,
            "iat": now,
            "exp": now + ttl,
            "iss": self._auth.issuer,
            "aud": self._auth.audience,
        }
        return jwt.encode(claims, self._signing_key, algorithm=self._auth.algorithm)

    def verify(self, token: str) -> str:
        """The customer id (``sub``) of a valid token. Checks the signature, issuer, audience,
        issue and expiry times. Raises InvalidToken saying what is wrong."""
        claims = self._decode(token)
        self._check_times(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token subject must be a customer id")
        return subject

    def _decode(self, token: str) -> dict[str, object]:
        # PyJWT reads the wall clock itself; times are checked against our clock instead.
        options: Options = {
            "require": list(CLAIMS_REQUIRED),
            "verify_exp": False,
            "verify_iat": False,
        }
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self._auth.algorithm],
                audience=self._auth.audience,
                issuer=self._auth.issuer,
                options=options,
            )
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("token signature is invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("token is not meant for this gateway (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("token was not issued by a trusted issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim!r} claim") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise InvalidToken(f"token must be signed with {self._auth.algorithm}") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("token is malformed") from exc
        return claims

    def _check_times(self, claims: Mapping[str, object]) -> None:
        expires, issued = _time_claim(claims, "exp"), _time_claim(claims, "iat")
        now = self._clock()
        if expires <= now - self._leeway:
            raise InvalidToken("token has expired")
        if issued > now + self._leeway:
            raise InvalidToken("token is issued in the future")


def _keys(auth: AuthConfig) -> tuple[str | None, str]:
    """(signing key or None, verifying key) for ``auth``, or ValueError saying what is missing."""
    if auth.algorithm in HMAC_ALGORITHMS:
        if auth.jwt_secret is None:
            raise ValueError(
                f"auth.algorithm {auth.algorithm} needs auth.jwt_secret or GATEWAY_JWT_SECRET "
                "(or set algorithm to RS256/ES256 to verify with auth.jwt_public_key)"
            )
        secret = auth.jwt_secret.get_secret_value()
        if len(secret.encode()) < MINIMUM_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MINIMUM_SECRET_BYTES} bytes long")
        return secret, secret
    if auth.jwt_public_key is None:
        raise ValueError(f"auth.algorithm {auth.algorithm} needs auth.jwt_public_key")
    if auth.algorithm not in jwt.algorithms.get_default_algorithms():
        raise ValueError(
            f"auth.algorithm {auth.algorithm} is not available "
            "(public-key algorithms need the cryptography package: pyjwt[crypto])"
        )
    return None, auth.jwt_public_key


def _time_claim(claims: Mapping[str, object], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"token claim {name!r} must be a number of seconds")
    return float(value)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without a header. Raises
    InvalidToken for another scheme or an empty token."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken("authorization must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise InvalidToken("bearer token is empty")
    return token


def unauthenticated_body(message: str, code: str) -> dict[str, object]:
    """A GraphQL response body carrying one error with ``extensions.code``."""
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}


# --------------------------------------------------------------------------- operators

OPERATOR_HEADER: Final = "x-operator-key"


def is_operator(headers: Mapping[str, str], operator_key: str | None) -> bool:
    """Whether a request carries the operator key (``X-Operator-Key``, or a bearer token as a
    Prometheus scrape sends it), compared in constant time. Never true without a key set."""
    if not operator_key:
        return False
    offered = headers.get(OPERATOR_HEADER)
    if offered is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        offered = token.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(offered.encode(), operator_key.encode())


def operator_only() -> Response:
    """The answer to a request for an operator endpoint without the operator key."""
    return JSONResponse(
        {"error": "this endpoint needs the operator key (X-Operator-Key)"},
        status_code=401,
        headers={"Cache-Control": "no-store", "WWW-Authenticate": "Bearer"},
    )


# --------------------------------------------------------------------------- middleware


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request's credentials were refused: a message and an ``extensions.code``."""

    message: str
    code: str


def _credentials_in(headers: Mapping[str, str]) -> bool:
    return "x-api-key" in headers or "authorization" in headers


class ChannelAuthMiddleware:
    """Requires a known ``X-Api-Key`` (and a valid bearer token when one is sent) on the
    protected paths, and puts ``channel`` and ``customer_id`` (None when anonymous) into the
    request state. A browser's GET for GraphiQL's page passes without a key; the page's own
    requests then need one. WebSocket connections without a valid key are closed with 4401."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ChannelKeys,
        tokens: CustomerTokens,
        protected_paths: tuple[str, ...] = ("/graphql",),
    ) -> None:
        self.app = app
        self.keys = keys
        self.tokens = tokens
        self.protected_paths = protected_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.protected_paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["type"] == "http" and _asks_for_graphiql(scope, headers):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" and not _credentials_in(headers):
            # A browser cannot set headers on a WebSocket: the key (and a customer's token)
            # then come in connection_init's payload, checked by resolvers/websocket.py.
            state = {**scope.get("state", {}), "identify": self.identify}
            await self.app({**scope, "state": state}, receive, send)
            return
        identity = self.identify(headers)
        if isinstance(identity, Refusal):
            await _refuse(identity, scope, receive, send)
            return
        channel, customer_id = identity
        state = {**scope.get("state", {}), "channel": channel, "customer_id": customer_id}
        await self.app({**scope, "state": state}, receive, send)

    def identify(self, headers: Mapping[str, str]) -> tuple[Channel, str | None] | Refusal:
        """The channel and customer that ``headers`` (lower-case names) name, or why not."""
        return self._identify(headers)

    def _identify(self, headers: Mapping[str, str]) -> tuple[Channel, str | None] | Refusal:
        channel = self.keys.identify(headers.get("x-api-key"))
        if channel is None:
            missing = "x-api-key" not in headers
            message = "an X-Api-Key header is required" if missing else "unknown API key"
            return Refusal(message, INVALID_API_KEY)
        try:
            token = bearer_token(headers.get("authorization"))
            customer_id = None if token is None else self.tokens.verify(token)
        except InvalidToken as exc:
            return Refusal(exc.reason, UNAUTHENTICATED)
        return channel, customer_id


def _asks_for_graphiql(scope: Scope, headers: Headers) -> bool:
    """Whether this is a browser loading GraphiQL's page (a GET for HTML without a ``query``
    parameter): it runs nothing, and a browser cannot send a key with it."""
    if scope["method"] != "GET" or "text/html" not in headers.get("accept", ""):
        return False
    return "query" not in QueryParams(scope.get("query_string", b""))


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # Accept first: a close before the handshake reaches clients as a bare HTTP 403.
        websocket = WebSocket(scope, receive, send)
        await websocket.accept(subprotocol=(scope.get("subprotocols") or [None])[0])
        await websocket.close(WEBSOCKET_UNAUTHORIZED, refusal.message)
        return
    body = json.dumps(unauthenticated_body(refusal.message, refusal.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if refusal.code == UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
