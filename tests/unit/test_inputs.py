"""Input objects built directly are the ones strawberry's own conversion builds, for every input
type of the graph and any value graphql-core can hand over; types with parts only strawberry
handles keep its conversion."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.relay import GlobalID
from strawberry.types.arguments import InputContext, convert_argument
from strawberry.types.base import StrawberryObjectDefinition

from resolvers.inputs import InputBuilder, build_inputs_directly
from resolvers.schema import build_schema

SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "String": st.text(max_size=8),
    "ID": st.text(max_size=8),
    "Int": st.integers(-(2**31), 2**31 - 1),
    "Float": st.floats(allow_nan=False),
    "Boolean": st.booleans(),
    "Decimal": st.decimals(allow_nan=False, allow_infinity=False),
    "DateTime": st.datetimes(),
}


def coerced(type_: GraphQLInputType) -> st.SearchStrategy[Any]:
    """Values of ``type_`` as graphql-core hands them to resolvers (coerced, by GraphQL name)."""
    if isinstance(type_, GraphQLNonNull):
        return _value(type_.of_type)
    return st.none() | _value(type_)


def _value(type_: GraphQLInputType) -> st.SearchStrategy[Any]:
    if isinstance(type_, GraphQLScalarType):
        return SCALARS[type_.name]
    if isinstance(type_, GraphQLEnumType):
        return st.sampled_from([value.value for value in type_.values.values()])
    if isinstance(type_, GraphQLList):
        return st.lists(coerced(type_.of_type), max_size=3)
    assert isinstance(type_, GraphQLInputObjectType), type_
    return st.fixed_dictionaries(
        {name: coerced(f.type) for name, f in type_.fields.items() if _required(f.type)},
        optional={
            name: coerced(f.type) for name, f in type_.fields.items() if not _required(f.type)
        },
    )


def _required(type_: GraphQLInputType) -> bool:
    """Whether coercion always gives the field: non-null ones are sent or take their default."""
    return isinstance(type_, GraphQLNonNull)


def gateway_inputs() -> Iterator[tuple[str, StrawberryObjectDefinition]]:
    schema = build_schema()
    for name, type_ in schema.schema_converter.type_map.items():
        definition = type_.definition
        if isinstance(definition, StrawberryObjectDefinition) and definition.is_input:
            yield name, definition


INPUTS = dict(gateway_inputs())


def strawberry_built(definition: StrawberryObjectDefinition, value: Mapping[str, Any]) -> Any:
    """``value`` converted by strawberry's general path (every direct builder set aside)."""
    schema = build_schema()
    hooks = {each: each.from_input for each in INPUTS.values()}
    try:
        for each in hooks:
            each.from_input = None
        return convert_argument(
            value, definition.origin, schema.schema_converter.scalar_registry, schema.config
        )
    finally:
        for each, hook in hooks.items():
            each.from_input = hook


def test_every_input_of_the_graph_is_built_directly() -> None:
    assert {"GeoPointInput", "PlaceOrderInput", "OrderLineInput", "CartInput"} <= set(INPUTS)
    assert all(isinstance(d.from_input, InputBuilder) for d in INPUTS.values())


@pytest.mark.parametrize("name", sorted(INPUTS))
@settings(max_examples=60)
@given(data=st.data())
def test_built_directly_as_strawberry_builds_it(name: str, data: st.DataObject) -> None:
    schema = build_schema()
    graphql_type = schema._schema.type_map[name]
    assert isinstance(graphql_type, GraphQLInputObjectType)
    value = data.draw(_value(graphql_type))
    definition = INPUTS[name]
    context = InputContext(None, schema.config, schema.schema_converter.scalar_registry, ())
    assert definition.from_input is not None
    direct = definition.from_input(definition.origin, value, context)
    assert direct == strawberry_built(definition, value)
    assert type(direct) is definition.origin


@strawberry.input
class Tagged:
    label: str
    tags: list[str] = strawberry.field(default_factory=list)


@strawberry.input
class WithGlobalId:
    node: GlobalID


@strawberry.input
class WithMaybe:
    note: strawberry.Maybe[str]


@strawberry.input
class Holder:
    inner: WithGlobalId | None = None
    label: str = "none"


@strawberry.type
class Query:
    @strawberry.field
    def tagged(self, value: Tagged) -> str:
        value.tags.append("touched")  # a resolver that changes what it was given
        return f"{value.label}:{','.join(value.tags)}"

    @strawberry.field
    def held(self, value: Holder) -> str:
        return "-" if value.inner is None else value.inner.node.node_id

    @strawberry.field
    def maybe(self, value: WithMaybe) -> str:
        return "unset" if value.note is None else f"some {value.note.value}"


def own_schema() -> strawberry.Schema:
    schema = strawberry.Schema(query=Query)
    build_inputs_directly(schema)
    return schema


def test_types_with_parts_only_strawberry_handles_keep_its_conversion() -> None:
    own_schema()
    assert isinstance(Tagged.__strawberry_definition__.from_input, InputBuilder)  # type: ignore[attr-defined]
    assert WithGlobalId.__strawberry_definition__.from_input is None  # type: ignore[attr-defined]
    assert WithMaybe.__strawberry_definition__.from_input is None  # type: ignore[attr-defined]
    # It holds one that only strawberry builds: left to strawberry as a whole.
    assert Holder.__strawberry_definition__.from_input is None  # type: ignore[attr-defined]


def test_answers_are_strawberrys_and_defaults_do_not_leak_between_requests() -> None:
    schema = own_schema()
    node = GlobalID("Shelf", "7")
    for _ in range(2):  # the second request gets the default list untouched by the first
        result = schema.execute_sync('{ tagged(value: {label: "a"}) }')
        assert result.errors is None
        assert result.data == {"tagged": "a:touched"}
    result = schema.execute_sync(
        "query ($v: Holder!) { held(value: $v) }",
        variable_values={"v": {"inner": {"node": str(node)}}},
    )
    assert result.errors is None
    assert result.data == {"held": "7"}
    result = schema.execute_sync('{ maybe(value: {note: "x"}) }')
    assert result.errors is None
    assert result.data == {"maybe": "some x"}
    bad = schema.execute_sync('{ held(value: {inner: {node: "not a global id"}}) }')
    assert bad.errors is not None
    assert "GlobalID" in bad.errors[0].message
