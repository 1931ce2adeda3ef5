"""MCP tools for automation flows (issue 17): automations.list and automations.update_state."""

from __future__ import annotations

from typing import Any

from campaigns.automations.flow_models import FlowState
from campaigns.automations.flow_services import CHANGE, OPERATIONS, VIEW, flow_update_state
from campaigns.automations.models import EventType
from campaigns.automations.selectors import flows_list
from campaigns.automations.spec import EXIT_MATCHES
from campaigns.services.writes import write_args
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    INT,
    OBJ,
    STR,
    base_version_token,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

EVENT_TYPES = {"type": "array", "items": {"type": "string", "enum": list(EventType.values)}, "minItems": 1}
CHANGES: dict[str, Any] = {
    "trigger_event_types": EVENT_TYPES,
    "exit_conditions": {
        "type": "array",
        "items": object_schema(
            {"event_type": {"type": "string", "enum": list(EventType.values)}, "match": {"enum": list(EXIT_MATCHES)}},
            ["event_type"],
        ),
    },
    "template_version_id": {"type": "integer", "minimum": 1, "description": "An approved version (templates.list)."},
    "variables": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": 'Template field -> "event.<field>", "payload.<key>", "contact.name" or a literal.',
    },
    "sender_id": {"type": "string", "minLength": 1, "maxLength": 16},
    "gateway": {"type": "string", "description": "Gateway code (gateways.list)."},
    "opt_out_exclusion": {"type": "boolean", "description": "Must be true to activate."},
    "max_per_period": {"type": "integer", "minimum": 1, "maximum": 1000},
    "period_hours": {"type": "integer", "minimum": 1, "maximum": 8784},
    "once_per_order": {"type": "boolean"},
    "monthly_budget": {"type": ["string", "number"], "description": "Monthly cost cap; the cost check needs it."},
}


@register_tool(
    "sms_marketing.automations.list",
    permission=VIEW,
    input_schema=object_schema(
        {
            "state": {"type": "string", "enum": list(FlowState.values)},
            "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        }
    ),
    output_schema=object_schema(
        {"flows": {"type": "array", "items": OBJ}, "count": INT, "note": STR},
        ["flows", "count"],
    ),
)
def automations_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return flows_list(**args)


@register_tool(
    "sms_marketing.automations.update_state",
    permission=CHANGE,
    input_schema=write_input(
        {
            "flow_id": {"type": "integer", "minimum": 1, "description": "From sms_marketing.automations.list."},
            "operation": {"type": "string", "enum": list(OPERATIONS)},
            "base_version_token": base_version_token("base_version_token from automations.list"),
            "changes": {**object_schema(CHANGES), "description": "Only the fields named here change."},
            "confirm": {
                "type": "boolean",
                "description": "Explicit confirmation; counts only for holders of automations.confirm_flow.",
            },
        },
        ["flow_id", "operation", "base_version_token"],
    ),
    output_schema=governed_output(),
)
def automations_update_state_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    w = write_args(actor, args)
    return flow_update_state(
        actor=w.actor,
        flow_id=w.fields["flow_id"],
        operation=w.fields["operation"],
        base_version_token=w.base_version_token,
        changes=w.fields.get("changes"),
        confirm=w.confirm,
        idempotency_key=w.idempotency_key,
        reason=w.reason,
    )
