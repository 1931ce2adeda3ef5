"""The MCP server on django-mcp-server: stateless, tools from our registry.

We keep django-mcp-server's Django <-> streamable-HTTP bridge and replace the
FastMCP tool handlers with two that read the registry, so that names are the
catalogue's dotted names, schemas are ours, permissions are checked per tool
and every failure is a structured tool error, never raw exception text.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from mcp import types
from mcp_server.djangomcp import DjangoMCP, django_request_ctx

import smsplatform
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.idempotency import committed_response
from smsplatform.mcp.registry import ToolSpec, get_tool, registered_tools
from smsplatform.operations.metrics import tool_observe

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "SMS marketing platform (Hong Kong first). Read sms_marketing.config.get before any write and follow it. "
    "Every write takes an idempotency_key; updates take the base_version_token from the matching get tool; "
    "writes that take a preview id accept only that id. A write may answer status 'pending_approval' with an "
    "action_request_id: an approver decides it in the admin; follow it with sms_marketing.action_request.status. "
    "Errors carry code, message, field and hint."
)


def error_result(error: ApplicationError) -> types.CallToolResult:
    """A tool error as MCP clients read one: isError with the error as JSON text.

    No structuredContent: clients validate structuredContent against the tool's outputSchema
    (the TypeScript SDK, and the Inspector and desktop agents built on it, answer -32602
    otherwise), and an outputSchema describes the success answer only."""
    body = {"error": error.as_dict()}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, ensure_ascii=False, cls=DjangoJSONEncoder))],
        isError=True,
    )


def success_result(result: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False, cls=DjangoJSONEncoder))],
        structuredContent=result,
        isError=False,
    )


def committed_error(spec: ToolSpec, actor: Actor, arguments: Any, since: Any) -> ApplicationError | None:
    """For a write that failed after its transaction committed, the error that says so.

    A write commits inside its service; an on-commit step, or serialising or checking the answer,
    can still fail afterwards. Answering "rolled back" then would invite a second write under a
    new key. The idempotency record commits with the work, so it tells the two cases apart."""
    if spec.read_only or not isinstance(arguments, dict):
        return None
    key = arguments.get("idempotency_key")
    try:
        stored = committed_response(actor=actor, key=key, since=since)
    except Exception:  # the lookup must not hide the original failure
        logger.exception("MCP tool %s: could not check whether the write committed", spec.name)
        return None
    if stored is None:
        return None
    hint = (
        f"Do not repeat it under a new key. Call {spec.name} again with the same idempotency_key: it returns "
        "the stored result and does nothing twice."
    )
    if stored.get("status") == "pending_approval" and stored.get("action_request_id"):
        hint += f" It is held for approval: follow action_request_id {stored['action_request_id']} with "
        hint += "sms_marketing.action_request.status."
    return ApplicationError(
        ErrorCode.WRITE_COMMITTED,
        "The write was committed, but the tool failed after the commit, so its answer is missing.",
        field="idempotency_key",
        hint=hint,
        details={"committed": True, "idempotency_key": key, "result": stored},
    )


def run_tool(name: str, arguments: Any, request: Any) -> types.CallToolResult:
    """Sync part of a tool call: runs in the request's thread, with the ORM."""
    spec = get_tool(name)
    if spec is None:
        return error_result(
            ApplicationError(
                ErrorCode.UNKNOWN_TOOL,
                f"There is no tool named {name!r}.",
                field="name",
                hint="Call tools/list for the available tools.",
            )
        )
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:  # the view refuses these first; belt and braces
        return error_result(ApplicationError(ErrorCode.AUTHENTICATION_REQUIRED, "Authentication required."))
    actor = Actor.for_request(request, Channel.MCP)
    started = timezone.now()
    clock = time.perf_counter()
    try:
        if not actor.has_perm(spec.permission):
            raise permission_denied(spec.permission)
        arguments = spec.validate_input(arguments if arguments is not None else {})
        result = spec.handler(actor, arguments)
        # We return a finished CallToolResult, so the SDK does not validate the output again:
        # the output schema is checked here with a compiled validator.
        problem = spec.output_problem(result)
        if problem is not None:
            logger.error("MCP tool %s returned output outside its schema: %s", name, problem)
            raise RuntimeError("output schema violation")
        tool_observe(name, "ok", time.perf_counter() - clock)
        return success_result(result)
    except ApplicationError as exc:
        tool_observe(name, str(exc.code), time.perf_counter() - clock)
        return error_result(committed_error(spec, actor, arguments, started) or exc)
    except Exception:
        tool_observe(name, "internal_error", time.perf_counter() - clock)
        logger.exception("MCP tool %s failed", name)
        return error_result(
            committed_error(spec, actor, arguments, started)
            or ApplicationError(
                ErrorCode.INTERNAL_ERROR,
                "The tool failed on our side; its transaction was rolled back.",
                hint="Retry with the same idempotency_key; report it if it persists.",
            )
        )


def list_tools() -> list[types.Tool]:
    return [spec.as_mcp_tool() for spec in registered_tools()]


class SmsMarketingMCP(DjangoMCP):
    def _setup_handlers(self) -> None:
        super()._setup_handlers()
        self._mcp_server.list_tools()(self._list_tools)
        self._mcp_server.call_tool(validate_input=False)(self._call_tool)

    async def _list_tools(self) -> list[types.Tool]:
        # Sync: a schema may state rules from the live configuration (a database read).
        return await sync_to_async(list_tools)()

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        request = django_request_ctx.get(None)
        return await sync_to_async(run_tool)(name, arguments, request)


mcp_server = SmsMarketingMCP(name="sms_marketing", instructions=INSTRUCTIONS, stateless=True)
# initialize answers serverInfo.version; FastMCP leaves it unset and the SDK reports its own.
mcp_server._mcp_server.version = smsplatform.__version__

__all__ = ["mcp_server", "run_tool"]
