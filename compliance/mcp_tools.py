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
from smsplatform.mcp.registry import ERROR_SCHEMA, NSTR, object_schema, register_tool

POLICY_SCHEMA = object_schema(
    {
        "id": {"type": "integer"},
        "action": {"type": "string", "enum": list(ActionType.values)},
        "action_label": {"type": "string"},
        "condition": {"type": "string"},
        "threshold_count": {"type": ["integer", "null"]},
        "threshold_amount": NSTR,
        "currency": {"type": "string"},
        "channels": {"type": "array", "items": {"type": "string"}},
        "approver_role": {"type": "string"},
        "request_ttl_hours": {"type": ["integer", "null"]},
        "enabled": {"type": "boolean"},
        "rule": {"type": "string"},
        "description": {"type": "string"},
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
            "count": {"type": "integer"},
            "note": {"type": "string"},
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
        "username": {"type": "string"},
        "display_name": {"type": "string"},
        "roles": {
            "type": "array",
            "items": object_schema(
                {
                    "role": {"type": "string"},
                    "label_en": {"type": "string"},
                    "label_zh": {"type": "string"},
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
            "count": {"type": "integer"},
            "note": {"type": "string"},
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
            "action_request_id": {"type": "integer"},
            "action": {"type": "string"},
            "state": {"type": "string", "enum": list(RequestState.values)},
            "state_label": {"type": "string"},
            "is_final": {"type": "boolean"},
            "summary": {"type": "string"},
            "requested_by": {"type": "string"},
            "channel": {"type": "string"},
            "required_role": {"type": "string"},
            "created_at": {"type": "string"},
            "expires_at": {"type": "string"},
            "decided_by": NSTR,
            "decided_at": NSTR,
            "decision_reason": NSTR,
            "executed_at": NSTR,
            "result": {"type": ["object", "null"]},
            "error": {"anyOf": [ERROR_SCHEMA, {"type": "null"}]},
            "note": {"type": "string"},
        },
        ["action_request_id", "action", "state", "is_final"],
    ),
)
def action_request_status_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return action_request_status(actor=actor, action_request_id=args["action_request_id"])
