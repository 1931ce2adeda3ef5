"""The /mcp endpoint: streamable HTTP, stateless, POST only, Bearer tokens."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.http.request import HttpRequest
from drf_spectacular.utils import extend_schema
from mcp_server.views import MCPServerStreamableHttpView
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from smsplatform.api.errors import body_error
from smsplatform.api.parsers import BoundedJSONParser, too_deep_error
from smsplatform.auth import BearerTokenAuthentication
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp import jsonrpc
from smsplatform.mcp.server import mcp_server, run_tool


class McpEndpointView(MCPServerStreamableHttpView):
    mcp_server = mcp_server
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser]
    # Stateless: POST only. GET (a server-to-client stream) and DELETE (ending a session)
    # are answered 405; an open GET stream per client would hold a worker for nothing.
    http_method_names = ["post", "options"]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # MCP clients send "Accept: text/event-stream" (GET) or both JSON and SSE; our
        # answers are JSON either way, so never refuse with 406.
        return super().perform_content_negotiation(request, force=True)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Before authentication: a page on another site gets 403 whatever credentials it carries.
        refusal = jsonrpc.origin_refusal(request)
        if refusal is not None:
            return refusal
        return super().dispatch(request, *args, **kwargs)

    # JSON-RPC, not REST: described by the MCP tool reference (docs/MCP_TOOLS.md), not the OpenAPI schema.
    @extend_schema(exclude=True)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            body = request.data
        except exceptions.ParseError:
            return jsonrpc.jsonrpc_error(jsonrpc.PARSE_ERROR, "Parse error: the body is not valid JSON.", 400)
        except (ApplicationError, RequestDataTooBig, RecursionError) as exc:
            # Too large (413) or nested too deep (400): the body is never handed on. The
            # JSON-RPC error carries our error shape in ``data``.
            error = exc if isinstance(exc, ApplicationError) else body_error(exc) or too_deep_error()
            return jsonrpc.jsonrpc_error(
                jsonrpc.PARSE_ERROR, f"Parse error: {error.message}", error.http_status, data=error.as_dict()
            )
        refusal = jsonrpc.message_refusal(body) or jsonrpc.protocol_version_refusal(
            request.headers.get(jsonrpc.PROTOCOL_VERSION_HEADER)
        )
        if refusal is not None:
            return refusal
        if isinstance(body, dict) and jsonrpc.is_tool_call(body):
            # The hot path, answered here without the library's per-request ASGI bridge (see
            # smsplatform/mcp/jsonrpc.py); the same run_tool the library's handler calls.
            params = jsonrpc.tool_call_params(body)
            if isinstance(params, HttpResponse):
                return params
            request_id, name, arguments = params
            return jsonrpc.tool_call_response(request_id, run_tool(name, arguments, request))
        return self.mcp_server.handle_django_request(request)
