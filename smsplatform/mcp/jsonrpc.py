"""The JSON-RPC and transport rules /mcp keeps in front of django-mcp-server.

django-mcp-server 0.5.7 (on mcp 1.30) hands every body to the SDK's streamable-HTTP transport,
which does not check the Origin header, answers an unknown method with -32602, drops a request
whose id is null or an object with 202, and answers a batch array with pydantic's validation
dump. The view refuses all of these here, before the library sees them, with a JSON-RPC error
(docs/UPSTREAM_NOTES.md has the note for upstream).

It also answers ``tools/call`` itself (``tool_call_response``): the library builds a new session
manager, task group and in-memory streams, and hops thread -> event loop -> thread, for every
request; a stateless tool call needs none of it and that bridge cost more than the tool did.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from mcp import types
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"


def _methods(union: Any) -> frozenset[str]:
    members = typing.get_args(union.model_fields["root"].annotation)
    return frozenset(member.model_fields["method"].default for member in members)


# Every method the protocol defines for a client to send; the library answers the ones we serve
# and -32601 for the others (resources, prompts, ...). Anything else never reaches it.
REQUEST_METHODS = _methods(types.ClientRequest)
NOTIFICATION_METHODS = _methods(types.ClientNotification)


def jsonrpc_response(payload: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(payload, ensure_ascii=False, cls=DjangoJSONEncoder),
        status=status,
        content_type="application/json",
    )


def jsonrpc_error(
    code: int, message: str, status: int, request_id: Any = None, data: dict[str, Any] | None = None
) -> HttpResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data  # our error shape, where there is one (a body too large or too deep)
    return jsonrpc_response({"jsonrpc": "2.0", "id": request_id, "error": error}, status)


def origin_refusal(request: HttpRequest) -> HttpResponse | None:
    """The MCP transport's DNS-rebinding rule: a browser page on another site must not reach us.

    No Origin (agents, SDK clients, curl) passes; so does a browser's Origin configured in
    MCP_ALLOWED_ORIGINS, or our own origin (scheme and Host) when that Host is one of the
    explicitly allowed hosts: under DNS rebinding the Host is the attacker's name, which an
    explicit ALLOWED_HOSTS refuses and a "*" would not. "null" (sandboxed frames, file: pages)
    is refused like any other."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origin = origin.rstrip("/").lower()
    if origin in {o.rstrip("/").lower() for o in settings.MCP_ALLOWED_ORIGINS}:
        return None
    host = request.META.get("HTTP_HOST", "").lower()
    explicit_hosts = [h for h in settings.ALLOWED_HOSTS if h != "*"]
    same_origin = host and origin == f"{request.scheme}://{host}"
    if same_origin and validate_host(split_domain_port(host)[0], explicit_hosts):
        return None
    return jsonrpc_error(
        INVALID_REQUEST,
        "Forbidden: this Origin may not call the MCP endpoint (set MCP_ALLOWED_ORIGINS to allow it).",
        403,
    )


def protocol_version_refusal(version: str | None) -> HttpResponse | None:
    if version is None or version in SUPPORTED_PROTOCOL_VERSIONS:
        return None
    return jsonrpc_error(
        INVALID_REQUEST,
        f"Bad Request: unsupported {PROTOCOL_VERSION_HEADER} {version[:40]!r}; "
        f"supported: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}.",
        400,
    )


def _valid_id(value: Any) -> bool:
    # JSON-RPC allows a string or a number; MCP narrows it to string or integer (never null).
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def message_refusal(body: Any) -> HttpResponse | None:
    """The error for a body that is not one well-formed JSON-RPC 2.0 message we can answer."""
    if isinstance(body, list):
        # Batches were removed from MCP in 2025-06-18; the SDK's transport dumps pydantic's
        # validation text for them. One message per POST.
        return jsonrpc_error(INVALID_REQUEST, "Invalid Request: batches are not supported; send one message.", 400)
    if not isinstance(body, dict) or not body:
        return jsonrpc_error(INVALID_REQUEST, "Invalid Request: expected a JSON-RPC object.", 400)
    request_id = body.get("id") if _valid_id(body.get("id")) else None
    if body.get("jsonrpc") != "2.0":
        return jsonrpc_error(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message.", 400, request_id)
    if "method" not in body:
        if ("result" in body) == ("error" in body) or not _valid_id(body.get("id")):
            return jsonrpc_error(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message.", 400, request_id)
        return None  # a response to a server request: the library accepts it with 202
    method = body["method"]
    if not isinstance(method, str):
        return jsonrpc_error(INVALID_REQUEST, "Invalid Request: method must be a string.", 400, request_id)
    if "id" in body and not _valid_id(body["id"]):
        # A notification has no id at all; a request's id is a string or an integer.
        return jsonrpc_error(
            INVALID_REQUEST, "Invalid Request: id must be a string or an integer (omit it for a notification).", 400
        )
    if "params" in body and not isinstance(body["params"], dict):
        return jsonrpc_error(INVALID_PARAMS, "Invalid params: params must be an object.", 400, request_id)
    if "id" not in body:
        return None  # a notification: answered 202 whatever its method, as JSON-RPC says
    if method not in REQUEST_METHODS:
        # JSON-RPC 2.0: -32601 for a method that does not exist (the SDK answers -32602).
        return jsonrpc_error(METHOD_NOT_FOUND, f"Method not found: {method[:100]}", 200, request_id)
    return None


def is_tool_call(body: Any) -> bool:
    return isinstance(body, dict) and body.get("method") == "tools/call" and "id" in body


def tool_call_params(body: dict[str, Any]) -> tuple[Any, str, Any] | HttpResponse:
    """(id, name, arguments) of a tools/call, or the -32602 answer when its params are malformed."""
    params = body.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    arguments = params.get("arguments") if isinstance(params, dict) else None
    if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
        return jsonrpc_error(
            INVALID_PARAMS,
            "Invalid params: tools/call takes params {name: string, arguments?: object}.",
            200,
            body["id"],
        )
    return body["id"], name, arguments


def tool_call_response(request_id: Any, result: types.CallToolResult) -> HttpResponse:
    return jsonrpc_response(
        {"jsonrpc": "2.0", "id": request_id, "result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
    )
