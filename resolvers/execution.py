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

It does the same one level up: an object whose selected fields are all plain leaves or plain
objects of that kind (a stock line: its store's code, the units, the distance; a price: its
amount and currency) is answered in one pass over its fields, without graphql-core's per-field
paths, resolve infos and completion. Any field that would not answer plainly hands the whole
object back to the general path, which reads it again from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final, NamedTuple

from graphql import (
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
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


class _Object(NamedTuple):
    """How to answer an object whose selected fields are all plain: per response key, a leaf,
    a plain object field (its resolver, its type's plan, whether it is non-null), or the type
    name."""

    is_type_of: Callable[[Any, GraphQLResolveInfo[Any]], Any] | None
    fields: tuple[tuple[str, _Leaf | _Nested | str], ...]


class _Nested(NamedTuple):
    resolve: Callable[..., Any]
    plan: _Object
    non_null: bool


class LeafFastPathExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with plain leaf fields and plain objects answered
    directly."""

    # Per (object type, field name): how to answer it directly, or None when it is not plain.
    # Types belong to the one schema the process builds, so the table stays small.
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], _Leaf | None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per (object type, selection): its plan, or None when not plain. Keyed like
        # graphql-core's own memo of collected subfields: by the identity of the field
        # details list, kept alive with the plan. One execution's, as the selections are.
        self._object_plans: dict[
            tuple[GraphQLObjectType, int], tuple[FieldDetailsList, _Object | None]
        ] = {}

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._object_plan(return_type, field_details_list)
        if plan is not None and not _wrapped(self):
            answer = _answer_object(plan, result, info)
            if answer is not _GENERAL:
                return answer
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _object_plan(
        self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> _Object | None:
        key = (return_type, id(field_details_list))
        cached = self._object_plans.get(key)
        if cached is not None:
            return cached[1]
        plan = self._plan_object(return_type, field_details_list)
        self._object_plans[key] = (field_details_list, plan)
        return plan

    def _plan_object(
        self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> _Object | None:
        grouped, new_defer_usages, _ = self.collect_subfields(return_type, field_details_list)
        if new_defer_usages:
            return NOT_PLAIN
        fields: list[tuple[str, _Leaf | _Nested | str]] = []
        for response_key, details in grouped.items():
            if any(d.defer_usage or d.fragment_variable_values for d in details):
                return NOT_PLAIN
            name = details[0].node.name.value
            if name == "__typename":
                fields.append((response_key, return_type.name))
                continue
            answer = self._plan_field(return_type, name, details)
            if answer is None:
                return NOT_PLAIN
            fields.append((response_key, answer))
        return _Object(return_type.is_type_of, tuple(fields))

    def _plan_field(
        self, parent_type: GraphQLObjectType, name: str, details: FieldDetailsList
    ) -> _Leaf | _Nested | None:
        key = (parent_type, name)
        try:
            leaf = self._plans[key]
        except KeyError:
            leaf = self._plans[key] = _plan(parent_type, name)
        if leaf is not None:
            return leaf
        field = parent_type.fields.get(name)
        if field is None or field.args or not getattr(field.resolve, "_is_default", False):
            return NOT_PLAIN
        nullable: GraphQLOutputType = get_nullable_type(field.type)
        if not isinstance(nullable, GraphQLObjectType) or field.resolve is None:
            return NOT_PLAIN
        nested = self._object_plan(nullable, details)
        if nested is None:
            return NOT_PLAIN
        return _Nested(field.resolve, nested, is_non_null_type(field.type))

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


def _answer_object(plan: _Object, source: Any, info: GraphQLResolveInfo[Any]) -> Any:
    """``source`` answered by ``plan``, or ``_GENERAL`` when any part of it is not plain."""
    if plan.is_type_of is not None:
        try:
            if plan.is_type_of(source, info) is not True:
                return _GENERAL
        except Exception:
            return _GENERAL
    answer: dict[str, Any] = {}
    for response_key, how in plan.fields:
        if type(how) is _Leaf:
            value = _answer(how, source)
        elif type(how) is _Nested:
            value = _answer_nested(how, source, info)
        else:
            value = how  # the type's name
        if value is _GENERAL:
            return _GENERAL
        answer[response_key] = value
    return answer


def _answer_nested(nested: _Nested, source: Any, info: GraphQLResolveInfo[Any]) -> Any:
    value = _read(nested.resolve, source, nested.non_null)
    if value is None or value is _GENERAL:
        return value
    return _answer_object(nested.plan, value, info)


def _read(resolve: Callable[..., Any], source: Any, non_null: bool) -> Any:
    """The field's value read off ``source``: None for an allowed null, ``_GENERAL`` when the
    read fails or gives what only the general path reports (an error, a forbidden null)."""
    try:
        value = resolve(source, None)
    except Exception:
        return _GENERAL
    if value is None or value is Undefined:
        return _GENERAL if non_null else None
    if isinstance(value, Exception):
        return _GENERAL
    return value


def _answer(leaf: _Leaf, source: Any) -> Any:
    value = _read(leaf.resolve, source, leaf.non_null)
    if value is None or value is _GENERAL:
        return value
    try:
        coerced = leaf.type.coerce_output_value(value)
    except Exception:
        return _GENERAL
    if coerced is None or coerced is Undefined:
        return _GENERAL
    return coerced
