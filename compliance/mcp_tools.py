"""MCP tools of the compliance app."""

from __future__ import annotations

from typing import Any

from compliance.models import ActionType, RequestState
from compliance.roles import CAPABILITIES, Role
from compliance.selectors import (
    action_request_status,
    approval_policies_list,
    owners_list,
)
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import BOOL, ERROR_SCHEMA, INT, NINT, NOBJ, NSTR, STR, object_schema, register_tool

POLICY_SCHEMA = object_schema(
    {
        "id": INT,
        "action": {"type": "string", "enum": list(ActionType.values)},
        "action_label": STR,
        "condition": STR,
        "threshold_count": NINT,
        "threshold_amount": NSTR,
        "currency": STR,
        "channels": {"type": "array", "items": STR},
        "approver_role": STR,
        "request_ttl_hours": NINT,
        "enabled": BOOL,
        "rule": STR,
        "description": STR,
    },
    ["id", "action", "condition", "approver_role", "enabled", "rule"],
)


@register_tool(
    "sms_marketing.approval_policies.list",
    permission="compliance.view_approvalpolicy",
    input_schema=object_schema(
        {
            "action": {
                "type": "string",
                "enum": list(ActionType.values),
                "description": "Only this action.",
            }
        }
    ),
    output_schema=object_schema(
        {
            "policies": {"type": "array", "items": POLICY_SCHEMA},
            "count": INT,
            "note": STR,
        },
        ["policies", "count"],
    ),
)
def approval_policies_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    policies = approval_policies_list(action=args.get("action"))
    return {
        "policies": policies,
        "count": len(policies),
        "note": (
            "A write that meets an enabled policy is held as an action request (status pending_approval); "
            "it is never sent directly. Actions with no matching policy execute at once."
        ),
    }


OWNER_SCHEMA = object_schema(
    {
        "username": STR,
        "display_name": STR,
        "roles": {
            "type": "array",
            "items": object_schema(
                {
                    "role": STR,
                    "label_en": STR,
                    "label_zh": STR,
                },
                ["role"],
            ),
        },
        "capabilities": {
            "type": "array",
            "items": {"type": "string", "enum": sorted(CAPABILITIES)},
        },
    },
    ["username", "roles", "capabilities"],
)


@register_tool(
    "sms_marketing.owners.list",
    permission="compliance.view_owners",
    input_schema=object_schema({"role": {"type": "string", "enum": [r.value for r in Role]}}),
    output_schema=object_schema(
        {
            "owners": {"type": "array", "items": OWNER_SCHEMA},
            "count": INT,
            "note": STR,
        },
        ["owners", "count"],
    ),
)
def owners_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    owners = owners_list(role=args.get("role"))
    return {
        "owners": owners,
        "count": len(owners),
        "note": (
            "Assign sends, resends, OTP or Sender ID applications only to owners whose capabilities allow it; "
            "the platform refuses assignments to accounts without the permission."
        ),
    }


@register_tool(
    "sms_marketing.action_request.status",
    permission="compliance.view_actionrequest",
    input_schema=object_schema(
        {
            "action_request_id": {
                "type": "integer",
                "minimum": 1,
                "description": "From a pending_approval answer.",
            }
        },
        ["action_request_id"],
    ),
    output_schema=object_schema(
        {
            "action_request_id": INT,
            "action": STR,
            "state": {"type": "string", "enum": list(RequestState.values)},
            "state_label": STR,
            "is_final": BOOL,
            "summary": STR,
            "requested_by": STR,
            "channel": STR,
            "required_role": STR,
            "created_at": STR,
            "expires_at": STR,
            "decided_by": NSTR,
            "decided_at": NSTR,
            "decision_reason": NSTR,
            "executed_at": NSTR,
            "result": NOBJ,
            "error": {"anyOf": [ERROR_SCHEMA, {"type": "null"}]},
            "note": STR,
        },
        ["action_request_id", "action", "state", "is_final"],
    ),
)
def action_request_status_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return action_request_status(actor=actor, action_request_id=args["action_request_id"])
