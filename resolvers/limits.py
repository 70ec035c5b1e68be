"""The document limits of gateway/limits.py, applied in the schema: the parser's token limit,
then one walk of the document before validation. They hold for HTTP and WebSocket alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import ValidationCache
from strawberry.extensions.parser_cache import _get_parse_cache

from gateway.context import Context
from gateway.limits import (
    DEFAULT_LIMITS,
    DOCUMENT_TOO_LARGE,
    GRAPHQL_PARSE_FAILED,
    TOO_MANY_TOKENS,
    DocumentLimits,
    LimitExceeded,
    bad_string,
    measure,
    too_many_tokens,
)

log = logging.getLogger("gateway.limits")


class DocumentGuard(ValidationCache):
    """Parsing and validation, both cached (as strawberry's ``ParserCache`` and
    ``ValidationCache``), behind the channel's document limits: the parser stops at the
    channel's token limit, and a document over another limit is refused with its code before
    the validator sees it."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._parse = _get_parse_cache(maxsize)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        limits = self._limits()
        if len(context.query or "") > limits.max_document_length:
            raise LimitExceeded(
                f"the document is longer than {limits.max_document_length} characters",
                DOCUMENT_TOO_LARGE,
            )
        if too_many_tokens(context.query or "", limits.max_tokens):
            raise LimitExceeded(
                f"the document has more than {limits.max_tokens} tokens", TOO_MANY_TOKENS
            )
        try:
            context.graphql_document = self._parse(
                context.query,
                max_tokens=limits.max_tokens,
                max_source_length=limits.max_document_length,
            )
        except GraphQLSyntaxError as error:
            # Raised, not left to strawberry, which would parse the document a second time.
            error.extensions = {"code": syntax_error_code(error, limits)}
            raise
        yield

    def on_validate(self) -> Iterator[None]:
        refusal = self._refusal()
        if refusal is None:
            yield from super().on_validate()
            return
        self.execution_context.pre_execution_errors = [refusal]
        yield

    def _refusal(self) -> GraphQLError | None:
        context = self.execution_context
        assert context.graphql_document is not None
        limits = self._limits()
        try:
            measure(context.graphql_document, context.schema._schema, limits, context.variables)
        except LimitExceeded as exc:
            return exc
        return bad_string(context.graphql_document, context.variables, limits.max_string_length)

    def _limits(self) -> DocumentLimits:
        context = self.execution_context.context
        return context.channel.limits if isinstance(context, Context) else DEFAULT_LIMITS


def syntax_error_code(error: GraphQLSyntaxError, limits: DocumentLimits) -> str:
    if f"more than {limits.max_tokens} tokens" in error.message:
        return TOO_MANY_TOKENS
    if f"more than {limits.max_document_length} code points" in error.message:
        return DOCUMENT_TOO_LARGE
    return GRAPHQL_PARSE_FAILED


def log_request_errors(errors: list[GraphQLError]) -> None:
    """One line per error the client caused: never its source text or a traceback. Errors
    that wrap an unexpected exception are logged, with their traceback, by PublicErrors."""
    for error in errors:
        if error.original_error is None or isinstance(error.original_error, GraphQLError):
            code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
            log.info("refused (%s): %s", code, error.message.splitlines()[0][:200])
