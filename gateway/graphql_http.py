"""GraphQL over HTTP (the GraphQL Foundation's spec): media types and status codes.

A client that accepts ``application/graphql-response+json`` gets it, and with it 400 for a
request that fails before execution (parse, validation, variables: no ``data``). A client that
accepts only ``application/json`` gets the legacy answer: 200 for those too. Either way a
document refused by a limit (gateway/limits.py) or by the persisted operations' manifest
(gateway/persisted.py) is answered with 400. A POST must say
``application/json``: the types a browser sends cross-site without a preflight (form posts,
``text/plain``) are refused with 415, so no page can make a visitor's browser run an operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.limits import DOCUMENT_REFUSALS
from gateway.persisted import PERSISTED_REFUSALS

GRAPHQL_RESPONSE: Final = "application/graphql-response+json"
JSON: Final = "application/json"
REQUEST_TYPES: Final = frozenset({JSON})
REFUSALS: Final = DOCUMENT_REFUSALS | PERSISTED_REFUSALS  # 400 whatever the media type
# What an HTTP error of the view is called in extensions.code.
HTTP_ERROR_CODES: Final = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def response_media_type(accept: str | None) -> str:
    """The media type to answer a client sending ``accept`` with: the GraphQL one when it is
    preferred at least as much as plain JSON, plain JSON otherwise (and without a header)."""
    preference = {GRAPHQL_RESPONSE: 0.0, JSON: 0.0}
    for item in (accept or "").split(","):
        media, _, parameters = item.strip().partition(";")
        media = media.strip().lower()
        if media in preference:
            preference[media] = max(preference[media], _quality(parameters))
    graphql, json = preference[GRAPHQL_RESPONSE], preference[JSON]
    return GRAPHQL_RESPONSE if graphql > 0 and graphql >= json else JSON


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def is_request_error(body: Mapping[str, object]) -> bool:
    """Whether ``body`` answers a request that failed before execution: errors, no data, and
    no error at a path (a field's error always has one)."""
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or body.get("data") is not None:
        return False
    return all(isinstance(error, Mapping) and "path" not in error for error in errors)


def http_status(body: Mapping[str, object], media_type: str) -> int:
    """The status of a GraphQL response ``body`` sent as ``media_type``."""
    if not is_request_error(body):
        return 200
    if media_type == GRAPHQL_RESPONSE or _codes(body) & REFUSALS:
        return 400
    return 200


def _codes(body: Mapping[str, object]) -> set[object]:
    errors = body.get("errors")
    assert isinstance(errors, list)
    return {(error.get("extensions") or {}).get("code") for error in errors}


def refused_content_type(content_type: str | None) -> bool:
    """Whether a POST with this ``Content-Type`` must be refused (415)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media not in REQUEST_TYPES


def error_body(message: str, code: str) -> dict[str, object]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}
