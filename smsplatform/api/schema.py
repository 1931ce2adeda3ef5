"""OpenAPI declarations the REST views of every app share (documentation only, no behaviour).

The views answer with what the selectors and services return, so drf-spectacular cannot guess
their shapes: each view names its responses with these helpers (the error shape, the governed
write's 200/202 answer, a list with its count).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class ApiErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)
    hint = serializers.CharField(allow_null=True)
    details = serializers.DictField(required=False)


class ApiErrorOutput(serializers.Serializer):
    error = ApiErrorDetail()


class GovernedWriteOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["executed", "pending_approval"])
    action = serializers.CharField()
    result = serializers.DictField(required=False, help_text="When executed: what the service returned.")
    action_request_id = serializers.IntegerField(required=False, help_text="When held for approval.")
    required_role = serializers.CharField(required=False)
    policy = serializers.CharField(required=False)
    expires_at = serializers.DateTimeField(required=False)
    hint = serializers.CharField(required=False)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """400 (validation), 401 (no or bad token), 403 (permission) and the view's own codes."""
    return {code: OpenApiResponse(ApiErrorOutput) for code in (400, 401, 403, *codes)}


def read_responses(output: Any = OpenApiTypes.OBJECT, *codes: int, description: str = "") -> dict[int, Any]:
    """A read: 200 with ``output`` (a serializer, or a JSON object described in words)."""
    return {200: OpenApiResponse(output, description=description), **error_responses(*codes)}


def governed_responses(*codes: int) -> dict[int, Any]:
    """A governed write: 200 when executed, 202 when held for approval as an action request."""
    return {
        200: OpenApiResponse(GovernedWriteOutput, description="Executed"),
        202: OpenApiResponse(GovernedWriteOutput, description="Held for approval (pending_approval)"),
        **error_responses(*codes),
    }


def list_output(name: str, key: str, help_text: str = "") -> Any:
    """``{<key>: [...], "count": n}``, the shape of every list read."""
    return inline_serializer(
        name=name,
        fields={
            key: serializers.ListField(child=serializers.DictField(), help_text=help_text),
            "count": serializers.IntegerField(),
        },
    )


# --- every response the API really gives, added by a post-processing hook ------------------------

ERROR_COMPONENT = "ApiErrorOutput"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True},
                "hint": {"type": "string", "nullable": True},
                "details": {"type": "object", "additionalProperties": {}},
            },
            "required": ["code", "message", "field", "hint"],
        }
    },
    "required": ["error"],
}

# What every operation may answer (the exception handler, smsplatform/api/errors.py).
EVERY_OPERATION = {
    "400": "Bad input: the error names the field (also a body nested too deep).",
    "401": "No or an unknown Bearer token.",
    "403": "The token's account lacks the permission.",
    "404": "No such object, or one the account may not see.",
    "500": "Something failed on the server; nothing is half-written (the error shape, no details).",
}
# What a request with a body may also answer.
WITH_BODY = {
    "409": "Conflict: stale version token, idempotency key reused or still running, request not pending.",
    "413": "The body is larger than the server takes (request_too_large).",
}
# Writes that go through the approval engine answer 202 when a policy holds them.
GOVERNED_OPERATIONS = frozenset(
    {
        "campaigns_create_draft",
        "campaigns_update",
        "campaigns_schedule",
        "campaigns_cancel_schedule",
        "campaigns_send_approved",
        "failed_messages_resend",
        "contacts_upsert",
        "segments_create",
        "contacts_import",
        "sender_id_apply",
        "config_update",
        "templates_create",
        "templates_save_version",
        "short_links_create",
        "performance_snapshot_record",
        "review_notification_send",
    }
)
PUBLIC_OPERATIONS = frozenset({"health"})


def every_response_documented(result: dict[str, Any], generator: Any, request: Any, public: Any) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            codes = dict(EVERY_OPERATION)
            if method != "get":
                codes.update(WITH_BODY)
            if operation.get("operationId") in PUBLIC_OPERATIONS:
                codes.pop("401"), codes.pop("403")
            for code, description in codes.items():
                responses.setdefault(code, {"description": description, "content": error})
            if operation.get("operationId") in GOVERNED_OPERATIONS and "202" not in responses:
                responses["202"] = {
                    "description": "Held for approval (status pending_approval, action_request_id).",
                    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": {}}}},
                }
    return result
