"""Execution of plain leaf fields without the general machinery.

A listing answers thousands of fields, and most of them are leaves read straight off an object:
a SKU, a currency, a count. For each, graphql-core builds a resolve-info object, checks for
arguments, and walks the non-null, list, leaf and object cases of ``complete_value`` before it
coerces the value. For a field that strawberry resolves by reading an attribute (a "basic"
field: no resolver, no extensions, no arguments) and whose type is a scalar or enum, none of that
changes the outcome: the answer is the attribute, coerced by the type.

``LeafFastPathExecutionContext`` answers those fields directly and hands every other field,
and every case that would end in an error (a missing value for a non-null field, a value the
type cannot coerce, an exception), to the general path, which reads the attribute again and
reports the error exactly as it always has. The response is the same, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final, NamedTuple

from graphql import (
    GraphQLLeafType,
    GraphQLObjectType,
    Undefined,
    get_nullable_type,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

NOT_PLAIN: Final = None


class _Leaf(NamedTuple):
    resolve: Callable[..., Any]
    type: GraphQLLeafType
    non_null: bool


class LeafFastPathExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with plain leaf fields answered directly."""

    # Per (object type, field name): how to answer it directly, or None when it is not plain.
    # Types belong to the one schema the process builds, so the table stays small.
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], _Leaf | None]] = {}

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        key = (parent_type, node.name.value)
        try:
            leaf = self._plans[key]
        except KeyError:
            leaf = self._plans[key] = _plan(parent_type, node.name.value)
        if leaf is not None and not _wrapped(self):
            answer = _answer(leaf, source)
            if answer is not _GENERAL:
                return answer
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


_GENERAL: Final = object()  # "take the general path": it will produce the error, if any


def _wrapped(context: StrawberryGraphQLCoreExecutionContext) -> bool:
    """Whether middleware wraps the resolvers (strawberry passes an empty manager without it)."""
    manager = context.middleware_manager
    return manager is not None and bool(manager.middlewares)


def _plan(parent_type: GraphQLObjectType, name: str) -> _Leaf | None:
    field = parent_type.fields.get(name)  # introspection fields are not here: general path
    if field is None or field.args or not getattr(field.resolve, "_is_default", False):
        return NOT_PLAIN
    nullable = get_nullable_type(field.type)
    if not is_leaf_type(nullable):
        return NOT_PLAIN
    assert field.resolve is not None
    return _Leaf(field.resolve, nullable, is_non_null_type(field.type))


def _answer(leaf: _Leaf, source: Any) -> Any:
    try:
        value = leaf.resolve(source, None)
    except Exception:
        return _GENERAL
    if value is None or value is Undefined:
        return _GENERAL if leaf.non_null else None
    if isinstance(value, Exception):
        return _GENERAL
    try:
        coerced = leaf.type.coerce_output_value(value)
    except Exception:
        return _GENERAL
    if coerced is None or coerced is Undefined:
        return _GENERAL
    return coerced
