"""The GraphQL endpoint over HTTP as gateway/graphql_http.py describes it: negotiated media
type, 4xx for requests that fail before execution, 405 for a mutation sent with GET, 415 for
the content types a browser sends cross-site without asking, errors as GraphQL bodies, and
persisted operations by id (only those, on a channel set ``persisted_only``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from gateway.context import Context
from gateway.graphql_http import (
    GRAPHQL_RESPONSE,
    HTTP_ERROR_CODES,
    error_body,
    http_status,
    is_request_error,
    refused_content_type,
    response_media_type,
)
from gateway.persisted import PersistedOperations, PersistedRefusal


class GraphQLOverHTTP(GraphQL[Context, None]):
    """``persisted`` is the manifest of persisted operations (gateway/persisted.py)."""

    def __init__(
        self,
        schema: BaseSchema,
        persisted: PersistedOperations | None = None,
        **options: Any,  # strawberry's GraphQL view's
    ) -> None:
        super().__init__(schema, **options)
        self.persisted = persisted or PersistedOperations()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = self._error_response(request, exc)
        await response(scope, receive, send)

    def encode_json(self, data: object) -> bytes:
        # A listing's answer is tens of kilobytes: orjson writes it in a tenth of the time.
        return orjson.dumps(data)

    def parse_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # Only for a browser (strawberry also answers */* with it) and never for a GET that
        # names a persisted operation by id instead of sending a query.
        return (
            "text/html" in request.headers.get("accept", "")
            and "extensions" not in request.query_params
            and super().should_render_graphql_ide(request)
        )

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST" and refused_content_type(request.content_type):
            raise HTTPException(415, "a GraphQL POST must be sent as application/json")
        return await super().parse_http_body(request)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            query = self.persisted.resolve(
                request_data.query, request_data.extensions, context.channel.persisted_only
            )
        except PersistedRefusal as refusal:
            error = GraphQLError(refusal.message, extensions={"code": refusal.code})
            return ExecutionResult(data=None, errors=[error])
        request_data = dataclasses.replace(request_data, query=query)
        try:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        except HTTPException as exc:
            if request_adapter.method == "GET" and isinstance(
                exc.__cause__, InvalidOperationTypeError
            ):
                raise HTTPException(405, "a mutation must be sent with POST") from exc
            raise

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        response = await super().get_sub_response(request)
        response.media_type = response_media_type(request.headers.get("accept"))
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or GRAPHQL_RESPONSE
        status = sub_response.status_code or 200
        body: object = response_data
        if isinstance(response_data, dict):
            status = sub_response.status_code or http_status(response_data, media_type)
            if media_type == GRAPHQL_RESPONSE and is_request_error(response_data):
                # Nothing was executed, so the spec's response has no data entry at all.
                body = {key: value for key, value in response_data.items() if key != "data"}
        response = Response(self.encode_json(body), status_code=status, media_type=media_type)
        response.headers.raw.extend(sub_response.headers.raw)
        response.headers["vary"] = "Accept"
        response.background = sub_response.background
        return response

    def _error_response(self, request: Request, exc: HTTPException) -> Response:
        code = HTTP_ERROR_CODES.get(exc.status_code, "BAD_REQUEST")
        headers = {"allow": "POST"} if exc.status_code == 405 else {}
        return Response(
            self.encode_json(error_body(exc.reason, code)),
            status_code=exc.status_code,
            media_type=response_media_type(request.headers.get("accept")),
            headers=headers,
        )
