"""The schema: every domain's query fields in one graph."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import strawberry
from graphql import FieldNode, GraphQLError, MiddlewareManager, OperationDefinitionNode
from strawberry import relay
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gateway.context import Context
from gateway.readmodel.responses import SHAREABLE_ROOT_FIELDS
from resolvers.cart import CartQuery
from resolvers.catalog import CatalogQuery
from resolvers.customers import CustomerQuery
from resolvers.errors import PublicErrors
from resolvers.execution import LeafFastPathExecutionContext
from resolvers.inputs import build_inputs_directly
from resolvers.limits import DocumentGuard, log_request_errors
from resolvers.live import Subscription
from resolvers.offers import OfferMutation
from resolvers.orders import OrderMutation, OrderQuery
from resolvers.stores import StoreQuery


@strawberry.type
class Query(CatalogQuery, StoreQuery, CustomerQuery, CartQuery, OrderQuery):
    node: relay.Node | None = relay.node(description="Any Product, Variant or Store by its id.")


@strawberry.type
class Mutation(OfferMutation, OrderMutation):
    pass


class OperationMetrics(SchemaExtension):
    """Counts and times each operation by name and channel."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context.context
        if not isinstance(context, Context):
            return
        result = self.execution_context.result
        context.runtime.metrics.observe_graphql(
            operation=self.execution_context.operation_name or "anonymous",
            channel=context.channel.name,
            ok=result is not None and not result.errors,
            seconds=time.perf_counter() - started,
        )


class ShareableAnswers(SchemaExtension):
    """Marks the answer shareable (for the response cache) when the operation is a query whose
    root fields are all customer-independent; runs after validation, before execution."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.provenance.shareable = _shareable(self.execution_context)
        yield  # a resolver of data that no feed follows sets shareable to False meanwhile
        result = self.execution_context.result
        if isinstance(context, Context) and (result is None or result.errors or context.degraded):
            # A degraded answer (stale or missing values) is made again, not shared.
            context.provenance.shareable = False


def _shareable(execution: ExecutionContext) -> bool:
    document = execution.graphql_document
    if document is None or execution.operation_type is not OperationType.QUERY:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        return False
    roots = operations[0].selection_set.selections
    return all(isinstance(s, FieldNode) and s.name.value in SHAREABLE_ROOT_FIELDS for s in roots)


class RememberedNames(NameConverter):
    """Strawberry's names, each worked out once: it converts every argument's (and input
    field's) Python name to camel case again on every call of a resolver, hundreds of times
    for one listing."""

    @functools.cache  # noqa: B019 - one converter per schema, for the process's life
    def apply_naming_config(self, name: str) -> str:
        return super().apply_naming_config(name)


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_request_errors(errors)

    def _get_middleware_manager(self, extensions: list[SchemaExtension]) -> MiddlewareManager:
        # Strawberry builds a manager for every request, around the extensions that resolve
        # (a manager holds them, and they are made per request). When none does, one empty
        # manager, which holds nothing, serves every request.
        if _any_resolves(tuple(type(extension) for extension in extensions)):
            return super()._get_middleware_manager(extensions)
        return _NO_MIDDLEWARE


_NO_MIDDLEWARE = MiddlewareManager()


@functools.cache
def _any_resolves(kinds: tuple[type[SchemaExtension], ...]) -> bool:
    return any(kind._implements_resolve() for kind in kinds)


@functools.cache  # strawberry's relay node field can be bound to one schema only
def build_schema() -> strawberry.Schema:
    schema = GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            # Clients send the same few documents again and again: parse and validate once,
            # behind the channel's limits (tokens, depth, aliases, cost, strings).
            lambda: DocumentGuard(maxsize=512),
            PublicErrors,
            OperationMetrics,
            ShareableAnswers,
        ],
        execution_context_class=LeafFastPathExecutionContext,
        config=StrawberryConfig(name_converter=RememberedNames()),
    )
    build_inputs_directly(schema)
    return schema
