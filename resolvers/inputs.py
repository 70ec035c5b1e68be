"""Input objects built without strawberry's general conversion.

For every argument of every resolver call, strawberry turns the input value graphql-core
coerced (a dict keyed by GraphQL names) into the input class: for each field of each input
object it resolves the field's type again, works out its GraphQL name, and walks the optional,
list, scalar, enum and object cases, importing its relay types on the way. A listing does that
for the ``near`` point of every variant; an order for each of its lines.

The outcome depends only on the input type, so ``build_inputs_directly`` works it out once per
type and installs it as the type's ``from_input``, strawberry's hook for input types that build
their own value (``strawberry.pydantic`` uses it). It covers what our inputs are made of:
scalars, enums, lists, optional values and nested input objects. A type with anything else in
it (``Maybe``, a global id, a generic) keeps strawberry's conversion, so that validation and
errors stay strawberry's own. The values built are the same: fields the client left out and
that have no default are None, the others are the class's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any

import strawberry
from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

Convert = Callable[[Any], Any]


class NotPlain(Exception):
    """The type holds something only strawberry's conversion handles."""


class InputBuilder:
    """Builds one input class from its coerced value: ``from_input`` of its definition."""

    __slots__ = ("fields", "nulls")

    def __init__(self) -> None:
        self.fields: tuple[tuple[str, str, Convert], ...] = ()
        self.nulls: dict[str, None] = {}

    def __call__(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        return self.build(cls, value)

    def build(self, cls: type, value: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = dict(self.nulls)
        for graphql_name, python_name, convert in self.fields:
            if graphql_name in value:
                kwargs[python_name] = convert(value[graphql_name])
        return cls(**kwargs)


def build_inputs_directly(schema: strawberry.Schema) -> int:
    """Install a direct builder on every plain input type of ``schema``; how many."""
    planner = _Planner(schema)
    definitions = [
        type_.definition
        for type_ in schema.schema_converter.type_map.values()
        if isinstance(type_.definition, StrawberryObjectDefinition) and type_.definition.is_input
    ]
    for definition in definitions:
        planned = dict(planner.builders)
        try:
            planner.builder(definition)
        except NotPlain:
            # Also forget the types planned on the way that lean on this one.
            planner.builders = planned
    for definition, builder in planner.builders.items():
        definition.from_input = builder
    return len(planner.builders)


class _Planner:
    def __init__(self, schema: strawberry.Schema) -> None:
        self.registry = schema.schema_converter.scalar_registry
        self.names = schema.config.name_converter
        # Filled in before its fields are planned, so that a type nested in itself ends.
        self.builders: dict[StrawberryObjectDefinition, InputBuilder] = {}

    def builder(self, definition: StrawberryObjectDefinition) -> InputBuilder:
        known = self.builders.get(definition)
        if known is not None:
            return known
        if definition.from_input is not None or definition.is_graphql_generic:
            raise NotPlain(definition.name)
        builder = self.builders[definition] = InputBuilder()
        fields = []
        for field in definition.fields:
            convert = self.convert(field.resolve_type(type_definition=definition))
            fields.append((self.names.from_field(field), field.python_name, convert))
        builder.fields = tuple(fields)
        builder.nulls = {
            field.python_name: None
            for field in definition.fields
            if field.default_value is MISSING and field.default_factory is MISSING
        }
        return builder

    def convert(self, type_: StrawberryType | type) -> Convert:
        if isinstance(type_, StrawberryMaybe) or type_ is GlobalID:
            raise NotPlain(str(type_))
        if isinstance(type_, StrawberryOptional):
            inner = self.convert(type_.of_type)
            if inner is _same:
                return _same
            return lambda value: value if value is None or value is UNSET else inner(value)
        if isinstance(type_, StrawberryList):
            item = self.convert(type_.of_type)
            if item is _same:
                return _copied
            return lambda value: (
                value if value is None or value is UNSET else [item(x) for x in value]
            )
        if isinstance(type_, LazyType):
            return self.convert(type_.resolve_type())
        if (
            is_scalar(type_, self.registry)
            or isinstance(type_, StrawberryEnumDefinition)
            or has_enum_definition(type_)
        ):
            return _same  # graphql-core parsed it already
        if has_object_definition(type_) and type_.__strawberry_definition__.is_input:
            cls: type = type_
            nested = self.builder(type_.__strawberry_definition__)
            return lambda value: (
                value if value is None or value is UNSET else nested.build(cls, value)
            )
        raise NotPlain(str(type_))


def _same(value: Any) -> Any:
    return value


def _copied(value: Any) -> Any:
    # graphql-core gives every request that omits the value the same default list: copy it,
    # as strawberry does, so that no resolver's change reaches the next request.
    return value if value is None or value is UNSET else list(value)
