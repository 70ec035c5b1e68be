"""How errors leave the graph: expected ones with a code, unexpected ones masked.

Errors raised on purpose (``GraphQLError`` with ``extensions.code``) and the parser's and
validator's errors reach the client as they are; every error gets a ``code``. A legacy system's
failure becomes ``BACKEND_UNAVAILABLE`` (or ``BACKEND_REJECTED``) naming only the system; anything
else becomes ``INTERNAL_SERVER_ERROR`` with no detail, and is logged with its traceback here.
Fields that degraded instead of failing (``gateway.degraded``) add one entry per backend.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import StreamExecutionResult

from adapters.ports import BackendError, BackendRejected

log = logging.getLogger("gateway.errors")


def public_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        code = (error.extensions or {}).get("code") or _default_code(error)
        return _with(error, error.message, {**(error.extensions or {}), "code": code})
    if isinstance(original, BackendRejected):
        log.warning("backend rejected: %s", original)
        return _with(error, f"{original.backend} refused the request", {"code": "BACKEND_REJECTED"})
    if isinstance(original, BackendError):
        log.warning("backend failed: %s", original)
        return _with(error, f"{original.backend} is unavailable", {"code": "BACKEND_UNAVAILABLE"})
    log.error("unexpected error at %s", error.path, exc_info=original)
    return _with(error, "Unexpected error.", {"code": "INTERNAL_SERVER_ERROR"})


def _default_code(error: GraphQLError) -> str:
    return "BAD_USER_INPUT" if error.path else "GRAPHQL_VALIDATION_FAILED"


def _with(error: GraphQLError, message: str, extensions: dict[str, object]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


class PublicErrors(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [public_error(error) for error in result.errors]
        degraded = getattr(self.execution_context.context, "degraded", None)
        if result is not None and degraded:
            # One entry per backend that failed, naming the fields it left stale or empty.
            result.errors = [*(result.errors or []), *degraded.errors()]

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """Each event of a subscription leaves the graph by the same rule."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [public_error(error) for error in errors]  # type: ignore[union-attr]
        yield
