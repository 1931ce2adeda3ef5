"""The /mcp endpoint: streamable HTTP, stateless, POST only, Bearer tokens."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.http.request import HttpRequest
from mcp_server.views import MCPServerStreamableHttpView
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from smsplatform.auth import BearerTokenAuthentication
from smsplatform.mcp import jsonrpc
from smsplatform.mcp.server import mcp_server, run_tool


class McpEndpointView(MCPServerStreamableHttpView):
    mcp_server = mcp_server
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]
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

    def post(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            body = request.data
        except exceptions.ParseError:
            return jsonrpc.jsonrpc_error(jsonrpc.PARSE_ERROR, "Parse error: the body is not valid JSON.", 400)
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
