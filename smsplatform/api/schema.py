"""The OpenAPI document states every response the API really gives (a drf-spectacular
post-processing hook), so a client or a fuzzer never meets an undocumented status code."""

from __future__ import annotations

from typing import Any

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
    }
)
PUBLIC_OPERATIONS = frozenset({"health"})


def error_responses(result: dict[str, Any], generator: Any, request: Any, public: Any) -> dict[str, Any]:
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
