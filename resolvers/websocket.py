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
    SubscribeMessage,
    SubscribeMessagePayload,
)

from gateway.admission import OVERLOADED, AdmissionLimit
from gateway.context import Context
from gateway.persisted import PersistedOperations, PersistedRefusal
from gateway.ratelimit import RATE_LIMITED, TokenTaker

_parse = _get_parse_cache(512)  # the cache DocumentGuard parses with


class GatedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
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
