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

Fields with a resolver take a shorter path too. For each call strawberry's wrapper converts the
arguments graphql-core coerced into Python values, builds its ``Info``, works out which of
self, parent, root and info the resolver takes, and chains the field's extensions. A listing
asks ``availability(near: $near, first: 5)`` and ``price`` of every variant: the same
arguments dozens of times in one execution. For a field whose strawberry definition is plain (a
resolver, no field extensions, no exception handler that could apply, strawberry's own
wrapper in place) the arguments are coerced and converted once per field node and execution,
and the resolver is called directly; what it returns is completed by graphql-core as always,
and its errors are graphql-core's. Resolvers therefore share the converted values of one node
within an execution: they read their arguments, never change them.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
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
from graphql.execution.executor import to_nodes
from graphql.execution.values import get_argument_values
from graphql.language import FieldNode
from graphql.pyutils import Path
from graphql.type import GraphQLField, GraphQLSchema
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.arguments import convert_arguments
from strawberry.types.field import StrawberryField

NOT_PLAIN: Final = None


class _Leaf(NamedTuple):
    read: Callable[[Any], Any]
    type: GraphQLLeafType
    non_null: bool


class _Object(NamedTuple):
    """How to answer an object whose selected fields are all plain: per response key, a leaf,
    a plain object field (its resolver, its type's plan, whether it is non-null), or the type
    name."""

    is_type_of: Callable[[Any, GraphQLResolveInfo[Any]], Any] | None
    fields: tuple[tuple[str, _Leaf | _Nested | str], ...]


class _Nested(NamedTuple):
    read: Callable[[Any], Any]
    plan: _Object
    non_null: bool


class _Resolver(NamedTuple):
    """How to call a plain resolver field: its definitions, and what the resolver takes."""

    definition: GraphQLField
    field: StrawberryField
    resolver: Callable[..., Any]  # the field's StrawberryResolver
    make_info: Callable[..., Any]  # strawberry's Info class
    convert: Callable[[dict[str, Any], Any], dict[str, Any]]  # raw arguments, Info -> kwargs
    takes_self: bool
    source_names: tuple[str, ...]  # the parent and root parameters
    info_name: str | None

    def call(self, source: Any, info: GraphQLResolveInfo[Any], kwargs: dict[str, Any]) -> Any:
        args = (source,) if self.takes_self else ()
        if self.source_names or self.info_name is not None:
            kwargs = dict(kwargs)
            for name in self.source_names:
                kwargs[name] = source
            if self.info_name is not None:
                kwargs[self.info_name] = self.make_info(_raw_info=info, _field=self.field)
        return self.resolver(*args, **kwargs)


class LeafFastPathExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with plain leaf fields and plain objects answered
    directly, and plain resolvers called with their arguments converted once."""

    # Per (object type, field name): how to answer it directly, or None when it is not plain.
    # Types belong to the one schema the process builds, so the table stays small.
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], _Leaf | _Resolver | None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per (object type, selection): its plan, or None when not plain. Keyed like
        # graphql-core's own memo of collected subfields: by the identity of the field
        # details list, kept alive with the plan. One execution's, as the selections are.
        self._object_plans: dict[
            tuple[GraphQLObjectType, int], tuple[FieldDetailsList, _Object | None]
        ] = {}
        # Per (field node, field definition): the resolver's converted arguments. The nodes
        # belong to this execution's document, which outlives it.
        self._arguments: dict[tuple[int, int], dict[str, Any]] = {}

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
            leaf = self._plans[key] = _plan(self.schema, parent_type, name)
        if type(leaf) is _Leaf:
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
        return _Nested(_reader(field), nested, is_non_null_type(field.type))

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        details = field_details_list[0]
        key = (parent_type, details.node.name.value)
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._plans[key] = _plan(self.schema, parent_type, details.node.name.value)
        if plan is not None and not _wrapped(self):
            if type(plan) is _Leaf:
                answer = _answer(plan, source)
                if answer is not _GENERAL:
                    return answer
            elif details.fragment_variable_values is None:
                assert type(plan) is _Resolver
                return self._execute_resolver(
                    plan, parent_type, source, field_details_list, path, position_context
                )
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    def _execute_resolver(
        self,
        plan: _Resolver,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``execute_field``, with the arguments converted once per node."""
        return_type = plan.definition.type
        info = self.build_resolve_info(
            plan.definition, to_nodes(field_details_list), parent_type, path
        )
        try:
            kwargs = self._converted(plan, field_details_list[0].node, info)
            result = plan.call(source, info, kwargs)
            if self.is_awaitable(result):
                return self.complete_awaitable_value(
                    return_type, field_details_list, info, path, result, position_context
                )
            completed = self.complete_value(
                return_type, field_details_list, info, path, result, position_context
            )
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, field_details_list, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed

    async def _await_completed(
        self,
        completed: Any,
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    def _converted(
        self, plan: _Resolver, node: FieldNode, info: GraphQLResolveInfo[Any]
    ) -> dict[str, Any]:
        key = (id(node), id(plan.definition))
        kwargs = self._arguments.get(key)
        if kwargs is None:
            definition = plan.definition
            raw = (
                get_argument_values(
                    definition, node, self.variable_values, None, self.hide_suggestions
                )
                if definition.args or node.arguments
                else {}
            )
            strawberry_info = plan.make_info(_raw_info=info, _field=plan.field)
            kwargs = self._arguments[key] = plan.convert(raw, strawberry_info)
        return kwargs


_GENERAL: Final = object()  # "take the general path": it will produce the error, if any


def _wrapped(context: StrawberryGraphQLCoreExecutionContext) -> bool:
    """Whether middleware wraps the resolvers (strawberry passes an empty manager without it)."""
    manager = context.middleware_manager
    return manager is not None and bool(manager.middlewares)


def _plan(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, name: str
) -> _Leaf | _Resolver | None:
    field = parent_type.fields.get(name)  # introspection fields are not here: general path
    if field is None:
        return NOT_PLAIN
    if not getattr(field.resolve, "_is_default", False):
        return _plan_resolver(schema, field)
    if field.args:
        return NOT_PLAIN
    nullable = get_nullable_type(field.type)
    if not is_leaf_type(nullable):
        return NOT_PLAIN
    return _Leaf(_reader(field), nullable, is_non_null_type(field.type))


def _reader(definition: GraphQLField) -> Callable[[Any], Any]:
    """How a basic field is read off its source: the attribute itself when strawberry would
    read it with ``getattr`` (its default resolver), else through strawberry's resolver."""
    field = definition.extensions.get("strawberry-definition")
    if (
        isinstance(field, StrawberryField)
        and field.base_resolver is None
        and type(field).get_result is StrawberryField.get_result
        and field.default_resolver is getattr
    ):
        return attrgetter(field.python_name)
    resolve = definition.resolve
    assert resolve is not None
    return lambda source: resolve(source, None)


# strawberry's wrappers of a field's resolver (``GraphQLCoreConverter.from_resolver``)
_STRAWBERRY_RESOLVERS: Final = frozenset({"_resolver", "_async_resolver"})


def _plan_resolver(schema: GraphQLSchema, definition: GraphQLField) -> _Resolver | None:
    field = definition.extensions.get("strawberry-definition")
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    resolve = definition.resolve
    if (
        not isinstance(field, StrawberryField)
        or strawberry_schema is None
        or resolve is None
        or getattr(resolve, "__name__", None) not in _STRAWBERRY_RESOLVERS
        or field.base_resolver is None
        or field.extensions
        or field.is_subscription
        or type(field).get_result is not StrawberryField.get_result
    ):
        return NOT_PLAIN
    converter = strawberry_schema.schema_converter
    handlers = getattr(converter, "_get_field_exception_handlers", None)
    if handlers is None or handlers(field):
        return NOT_PLAIN
    config, scalars, arguments = converter.config, converter.scalar_registry, field.arguments

    def convert(raw: dict[str, Any], info: Any) -> dict[str, Any]:
        return convert_arguments(raw, arguments, scalar_registry=scalars, config=config, info=info)

    resolver = field.base_resolver
    sources = (resolver.parent_parameter, resolver.root_parameter)
    return _Resolver(
        definition=definition,
        field=field,
        resolver=resolver,
        make_info=config.info_class,
        convert=convert,
        takes_self=resolver.self_parameter is not None,
        source_names=tuple(parameter.name for parameter in sources if parameter is not None),
        info_name=None if resolver.info_parameter is None else resolver.info_parameter.name,
    )


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
    value = _read(nested.read, source, nested.non_null)
    if value is None or value is _GENERAL:
        return value
    return _answer_object(nested.plan, value, info)


def _read(read: Callable[[Any], Any], source: Any, non_null: bool) -> Any:
    """The field's value read off ``source``: None for an allowed null, ``_GENERAL`` when the
    read fails or gives what only the general path reports (an error, a forbidden null)."""
    try:
        value = read(source)
    except Exception:
        return _GENERAL
    if value is None or value is Undefined:
        return _GENERAL if non_null else None
    if isinstance(value, Exception):
        return _GENERAL
    return value


def _answer(leaf: _Leaf, source: Any) -> Any:
    value = _read(leaf.read, source, leaf.non_null)
    if value is None or value is _GENERAL:
        return value
    try:
        coerced = leaf.type.coerce_output_value(value)
    except Exception:
        return _GENERAL
    if coerced is None or coerced is Undefined:
        return _GENERAL
    return coerced
