"""The /mcp endpoint: streamable HTTP, stateless, POST only, Bearer tokens."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from mcp_server.views import MCPServerStreamableHttpView
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from smsplatform.api.errors import body_error
from smsplatform.api.parsers import BoundedJSONParser, too_deep_error
from smsplatform.auth import BearerTokenAuthentication
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.server import mcp_server


def _jsonrpc_error(
    code: int, message: str, status: int, request_id: Any = None, data: dict[str, Any] | None = None
) -> JsonResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return JsonResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, status=status)


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

    # JSON-RPC, not REST: described by the MCP tool reference (docs/MCP_TOOLS.md), not the OpenAPI schema.
    @extend_schema(exclude=True)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            body = request.data
        except exceptions.ParseError:
            return _jsonrpc_error(-32700, "Parse error: the body is not valid JSON.", 400)
        except (ApplicationError, RequestDataTooBig, RecursionError) as exc:
            # Too large (413) or nested too deep (400): the body is never handed on. The
            # JSON-RPC error carries our error shape in ``data``.
            error = exc if isinstance(exc, ApplicationError) else body_error(exc) or too_deep_error()
            return _jsonrpc_error(-32700, f"Parse error: {error.message}", error.http_status, data=error.as_dict())
        if not isinstance(body, (dict, list)) or not body:
            return _jsonrpc_error(-32600, "Invalid Request: expected a JSON-RPC object.", 400)
        messages = body if isinstance(body, list) else [body]
        for message in messages:
            if (
                not isinstance(message, dict)
                or message.get("jsonrpc") != "2.0"
                or ("method" not in message and ("result" not in message and "error" not in message))
            ):
                request_id = message.get("id") if isinstance(message, dict) else None
                return _jsonrpc_error(
                    -32600,
                    "Invalid Request: not a JSON-RPC 2.0 message.",
                    400,
                    request_id,
                )
        return self.mcp_server.handle_django_request(request)
