"""Limits that hold before a request costs anything: its body's size, then its document's.

``BodyLimit`` refuses a body over ``max_body_bytes`` with 413 as soon as it is known to be too
big (from ``Content-Length``, or while it arrives), so a large body is never read into memory
or decoded. A document of more than ``max_tokens`` tokens is refused before it is parsed
(``too_many_tokens`` counts them with one regular expression, several times faster than
graphql-core's lexer, whose own ``max_tokens`` stays as the backstop). ``measure`` then
walks the parsed document once, before validation (whose overlapping-fields rule is quadratic
in repeated fields), and stops at the first limit passed: depth, aliases, directives, the same
field repeated in one selection set, and cost. ``bad_string`` finds a string argument a backend
would choke on (control characters, too long), in the document or in the variables.

Cost is what the document asks the backends for: each field counts once per item of every list
it is inside, and a list's size is its ``first`` argument (or that argument's default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_TOO_LARGE: Final = "BODY_TOO_LARGE"
TOO_MANY_TOKENS: Final = "TOO_MANY_TOKENS"
DOCUMENT_TOO_LARGE: Final = "DOCUMENT_TOO_LARGE"
GRAPHQL_PARSE_FAILED: Final = "GRAPHQL_PARSE_FAILED"
QUERY_TOO_DEEP: Final = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES: Final = "TOO_MANY_ALIASES"
TOO_MANY_DIRECTIVES: Final = "TOO_MANY_DIRECTIVES"
FIELD_REPEATED: Final = "FIELD_REPEATED"
QUERY_TOO_COSTLY: Final = "QUERY_TOO_COSTLY"
INTROSPECTION_DISABLED: Final = "INTROSPECTION_DISABLED"
BAD_USER_INPUT: Final = "BAD_USER_INPUT"
# Every code a document can be refused with before it runs (each answered with HTTP 400).
DOCUMENT_REFUSALS: Final = frozenset(
    {
        TOO_MANY_TOKENS,
        DOCUMENT_TOO_LARGE,
        QUERY_TOO_DEEP,
        TOO_MANY_ALIASES,
        TOO_MANY_DIRECTIVES,
        FIELD_REPEATED,
        QUERY_TOO_COSTLY,
        INTROSPECTION_DISABLED,
        BAD_USER_INPUT,
    }
)
INTROSPECTION_FIELDS: Final = frozenset({"__schema", "__type"})
# C0 controls but tab, line feed and carriage return; DEL and C1; lone UTF-16 surrogates,
# which JSON can carry and UTF-8 (so PostgreSQL) cannot.
_UNSAFE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


# --------------------------------------------------------------------------- the body


class BodyLimit:
    """Answers 413 with ``BODY_TOO_LARGE`` for a body (or GET query string) over
    ``max_bytes`` on ``paths``; passes the rest on with their body already read."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/graphql",)):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_bytes or self._declared_too_big(scope):
            await refuse(send, 413, BODY_TOO_LARGE, self._message)
            return
        body = await self._read(receive)
        if body is None:
            await refuse(send, 413, BODY_TOO_LARGE, self._message)
            return
        await self.app(scope, _replay(body, receive), send)

    @property
    def _message(self) -> str:
        return f"the request is larger than {self.max_bytes} bytes"

    def _declared_too_big(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return not value.isdigit() or int(value) > self.max_bytes
        return False

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # the disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def refuse(
    send: Send, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> None:
    """Answer a GraphQL error body with ``extensions.code`` and ``status``."""
    body = b'{"errors":[{"message":%s,"extensions":{"code":"%s"}}]}' % (
        _json_string(message),
        code.encode(),
    )
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _json_string(text: str) -> bytes:
    return json.dumps(text).encode()


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one operation may be: the global limits of ``[security]`` and, per channel, its
    cost budget and whether introspection answers."""

    max_tokens: int = 500
    max_document_length: int = 8 * 1024
    max_string_length: int = 2000
    max_depth: int = 12
    max_aliases: int = 30
    max_directives: int = 20
    max_field_repeats: int = 5
    max_cost: int = 5000
    introspection: bool = True


DEFAULT_LIMITS: Final = DocumentLimits()


class LimitExceeded(GraphQLError):
    """A document refused by a limit; ``extensions.code`` says which."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


# One GraphQL token (a string, a name, a number, a punctuator) or a comment, which is not one.
# Block strings before strings, strings before comments: a '#' inside a string is text.
_TOKEN: Final = re.compile(
    r'"""(?:\\"""|[^"]|"(?!""))*"""'
    r'|"(?:\\.|[^"\\\n\r])*"'
    r"|#[^\n\r]*"
    r"|[_A-Za-z][_0-9A-Za-z]*"
    r"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
    r"|\.\.\."
    r"|[!$&()\[\]{}:=@|]"
)


def too_many_tokens(document: str, max_tokens: int) -> bool:
    """Whether ``document`` has more than ``max_tokens`` tokens, as graphql-core's lexer would
    count them (comments and insignificant commas and spaces not counted), reading no further
    than the token over the limit."""
    if len(document) <= max_tokens:
        return False  # every token takes a character at least
    count = 0
    for match in _TOKEN.finditer(document):
        if match.group()[0] != "#":
            count += 1
            if count > max_tokens:
                return True
    return False


@dataclass(slots=True)
class Measure:
    """What ``measure`` counted, up to the first limit passed."""

    cost: int = 0
    depth: int = 0
    aliases: int = 0
    directives: int = 0


def measure(
    document: DocumentNode,
    schema: GraphQLSchema,
    limits: DocumentLimits,
    variables: Mapping[str, object] | None = None,
) -> Measure:
    """Walk every operation of ``document`` (fragments expanded where they are spread) and
    return what it costs; raises LimitExceeded at the first limit passed, so the walk is
    bounded by the limits whatever the document. A document whose cost reads no variable (no
    page size given by one) is walked once per schema and limits: what it costs then is
    remembered (the same ``Measure``, not to be changed)."""
    key = (id(document), id(schema), limits)
    known = _MEASURED.get(key)
    if known is not None and known[0] is document and known[1] is schema:
        return known[2]
    walk = _Walk(document, schema, limits, variables or {})
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk.directives(len(definition.directives or ()))
            root = schema.get_root_type(definition.operation)
            walk.selections(definition.selection_set, root, depth=1, multiplier=1, path=())
    if not walk.read_variables:
        if len(_MEASURED) >= MEASURED_MEMORY:
            _MEASURED.clear()
        _MEASURED[key] = (document, schema, walk.measure)
    return walk.measure


# What documents whose cost reads no variable cost, per (document's and schema's identity,
# limits), kept with the document and schema so that their identities cannot be reused: parsed
# documents come from the parse cache, the same few again and again.
_MEASURED: dict[tuple[int, int, DocumentLimits], tuple[DocumentNode, GraphQLSchema, Measure]] = {}
MEASURED_MEMORY: Final = 1024


class _Walk:
    def __init__(
        self,
        document: DocumentNode,
        schema: GraphQLSchema,
        limits: DocumentLimits,
        variables: Mapping[str, object],
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.variables = variables
        self.defaults = _variable_defaults(document)
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.measure = Measure()
        self.read_variables = False  # whether what it costs depends on the variables

    def selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        depth: int,
        multiplier: int,
        path: tuple[str, ...],
    ) -> None:
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"the query is deeper than {self.limits.max_depth}", QUERY_TOO_DEEP)
        self.measure.depth = max(self.measure.depth, depth)
        seen: dict[str, int] = {}
        for node, inner in self._flatten(selection_set, parent, path):
            # Fields under one response name are compared pairwise by validation.
            key = (node.alias or node.name).value
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > self.limits.max_field_repeats:
                raise LimitExceeded(
                    f"{key!r} is selected more than {self.limits.max_field_repeats} times "
                    "in one place",
                    FIELD_REPEATED,
                )
            self.field(node, inner, depth, multiplier, path)

    def _flatten(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        path: tuple[str, ...],
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType | None]]:
        """The fields of a selection set with inline fragments and spreads expanded, each with
        the type it is selected on. A fragment already being expanded is not expanded again."""
        for selection in selection_set.selections:
            self.directives(len(selection.directives or ()))
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                on = selection.type_condition
                inner = parent if on is None else self.schema.get_type(on.name.value)
                yield from self._flatten(selection.selection_set, inner, path)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in path:
                    continue  # validation reports unknown and cyclic fragments
                self.directives(len(fragment.directives or ()))
                inner = self.schema.get_type(fragment.type_condition.name.value)
                yield from self._flatten(fragment.selection_set, inner, (*path, name))

    def field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType | None,
        depth: int,
        multiplier: int,
        path: tuple[str, ...],
    ) -> None:
        name = node.name.value
        if name in INTROSPECTION_FIELDS and not self.limits.introspection:
            raise LimitExceeded(
                "introspection is disabled for this channel", INTROSPECTION_DISABLED
            )
        if node.alias is not None:
            self.measure.aliases += 1
            if self.measure.aliases > self.limits.max_aliases:
                raise LimitExceeded(
                    f"the query has more than {self.limits.max_aliases} aliases", TOO_MANY_ALIASES
                )
        self.measure.cost += multiplier
        if self.measure.cost > self.limits.max_cost:
            raise LimitExceeded(
                f"the query costs more than this channel's budget of {self.limits.max_cost}",
                QUERY_TOO_COSTLY,
            )
        definition = _field(parent, name)
        if node.selection_set is not None:
            inner = None if definition is None else get_named_type(definition.type)
            size = self._page_size(node, definition)
            self.selections(node.selection_set, inner, depth + 1, multiplier * size, path)

    def directives(self, count: int) -> None:
        self.measure.directives += count
        if self.measure.directives > self.limits.max_directives:
            raise LimitExceeded(
                f"the query has more than {self.limits.max_directives} directives",
                TOO_MANY_DIRECTIVES,
            )

    def _page_size(self, node: FieldNode, definition: GraphQLField | None) -> int:
        if definition is None or "first" not in definition.args:
            return 1
        size: object = definition.args["first"].default_value
        for argument in node.arguments or ():
            if argument.name.value == "first":
                size = self._value(argument.value)
        return size if isinstance(size, int) and size > 0 else 1

    def _value(self, value: ValueNode) -> object:
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            self.read_variables = True
            name = value.name.value
            return self.variables.get(name, self.defaults.get(name))
        return None


def _field(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def _variable_defaults(document: DocumentNode) -> dict[str, object]:
    defaults: dict[str, object] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for variable in definition.variable_definitions or ():
                if isinstance(variable.default_value, IntValueNode):
                    defaults[variable.variable.name.value] = int(variable.default_value.value)
    return defaults


# --------------------------------------------------------------------------- strings


# Documents whose literals were found clean, per (document's identity, length limit); the
# document is kept with its entry so that its identity cannot be reused. Parsed documents come
# from the parse cache, so the same few come again and again; walking one again costs more than
# the rest of a small order's checks.
_CLEAN_LITERALS: dict[tuple[int, int], DocumentNode] = {}
CLEAN_LITERALS_MEMORY: Final = 1024


def bad_string(
    document: DocumentNode, variables: Mapping[str, object] | None, max_length: int
) -> GraphQLError | None:
    """The first string in ``document``'s literals or in ``variables`` that holds a control
    character or is longer than ``max_length``, as a ``BAD_USER_INPUT`` error naming it."""
    key = (id(document), max_length)
    if _CLEAN_LITERALS.get(key) is not document:
        for node in _string_literals(document):
            problem = _string_problem(node.value, max_length)
            if problem is not None:
                return GraphQLError(
                    f"a string argument {problem}",
                    nodes=[node],
                    extensions={"code": BAD_USER_INPUT},
                )
        if len(_CLEAN_LITERALS) >= CLEAN_LITERALS_MEMORY:
            _CLEAN_LITERALS.clear()
        _CLEAN_LITERALS[key] = document
    for where, text in _strings(variables or {}, "$"):
        problem = _string_problem(text, max_length)
        if problem is not None:
            return GraphQLError(
                f"variable {where} {problem}",
                extensions={"code": BAD_USER_INPUT, "variable": where},
            )
    return None


def _string_problem(text: str, max_length: int) -> str | None:
    if len(text) > max_length:
        return f"is longer than {max_length} characters"
    if _UNSAFE.search(text):
        return "contains a control character"
    return None


def _string_literals(document: DocumentNode) -> Iterator[StringValueNode]:
    """Every string literal of the document (arguments, directives, variable defaults)."""
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, StringValueNode):
            yield node
        elif isinstance(node, tuple | list):
            stack.extend(node)
        elif node is not None and hasattr(node, "keys"):
            stack.extend(
                getattr(node, key)
                for key in node.keys
                if key not in ("loc", "name", "alias", "type_condition")
            )


def _strings(value: object, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{where}{'' if where == '$' else '.'}{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")
