"""graphql-transport-ws with the same gates as HTTP: each operation a client subscribes takes a
token from its channel's and customer's rate limit, and a query or mutation waits for one of
the admission slots HTTP requests take (a subscription, which may last for hours, does not).
Persisted operations are resolved as over HTTP (a ``persisted_only`` channel runs nothing
else). The document limits and scopes hold already: they are the schema's."""

from __future__ import annotations

from graphql import GraphQLError, GraphQLSyntaxError, OperationType, get_operation_ast
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
    SubscribeMessagePayload,
)

from gateway.admission import OVERLOADED, AdmissionLimit
from gateway.context import Context
from gateway.limits import too_many_tokens
from gateway.persisted import PersistedOperations, PersistedRefusal
from gateway.ratelimit import RATE_LIMITED, TokenTaker
from gateway.security import Channel, Refusal

_parse = _get_parse_cache(512)  # the cache DocumentGuard parses with


FORBIDDEN_CLOSE = 4403  # graphql-transport-ws: connection_init refused


class GatedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """A connection opened without a key names its channel in the payload, as
        ``{"X-Api-Key": ..., "Authorization": "Bearer ..."}``; a missing or unknown key, or a
        bad token, closes it with 4403."""
        identity = self.context.identity
        if identity.pending and not self.connection_init_received:
            found = _identify(self.context.request.state, message.get("payload"))
            if found is None:
                await self.websocket.close(code=FORBIDDEN_CLOSE, reason="Forbidden")
                return
            identity.channel, identity.customer_id = found
            identity.pending = False
            takers = getattr(self.context.request.state, "take_token_for", None)
            if takers is not None:
                self.context.request.state.take_token = takers(*found)
        await super().handle_connection_init(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """The document of a persisted operation's id, or a refusal (as over HTTP)."""
        persisted = getattr(self.view, "persisted", None)
        if not self.connection_acknowledged or not isinstance(persisted, PersistedOperations):
            await super().handle_subscribe(message)
            return
        payload = message["payload"]
        try:
            query = persisted.resolve(
                payload.get("query"), payload.get("extensions"), self.context.channel.persisted_only
            )
        except PersistedRefusal as refusal:
            error = _refusal(refusal.message, refusal.code)
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        resolved: SubscribeMessagePayload = {**payload, "query": query or ""}
        await super().handle_subscribe({**message, "payload": resolved})

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        state = self.context.request.state
        take: TokenTaker | None = getattr(state, "take_token", None)
        wait = 0.0 if take is None else await take()
        if wait > 0:
            await operation.send_initial_errors([_refusal("too many requests", RATE_LIMITED)])
            return
        admission: AdmissionLimit | None = getattr(state, "admission", None)
        if admission is None or _is_subscription(operation, self.context):
            await super().run_operation(operation)
            return
        async with admission.slot() as admitted:
            if not admitted:
                await operation.send_initial_errors(
                    [_refusal("the gateway is overloaded", OVERLOADED)]
                )
                return
            await super().run_operation(operation)


def _is_subscription(operation: Operation[Context, None], context: Context) -> bool:
    limits = context.channel.limits
    if len(operation.query) > limits.max_document_length:
        return False  # refused by the schema's limits, at once
    if too_many_tokens(operation.query, limits.max_tokens):
        return False
    try:
        document = _parse(
            operation.query,
            max_tokens=limits.max_tokens,
            max_source_length=limits.max_document_length,
        )
    except GraphQLSyntaxError:
        return False
    found = get_operation_ast(document, operation.operation_name)
    return found is not None and found.operation == OperationType.SUBSCRIPTION


def _refusal(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


def _identify(state: object, payload: object) -> tuple[Channel, str | None] | None:
    """The channel and customer a connection_init payload names (its keys read as header
    names, in any case), or None."""
    identify = getattr(state, "identify", None)
    if identify is None or not isinstance(payload, dict):
        return None
    headers = {str(k).lower(): v for k, v in payload.items() if isinstance(v, str)}
    found = identify(headers)
    return None if isinstance(found, Refusal) else found
