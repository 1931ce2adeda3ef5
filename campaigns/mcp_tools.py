"""MCP tools for campaigns, cost preview, sending, batches, delivery status and retries (issue 6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from campaigns.models import CampaignState
from campaigns.retries import retry_preview
from campaigns.selectors import campaign_get, campaigns_list, cost_preview, delivery_status_get, send_batches_list
from campaigns.services import (
    campaign_cancel_schedule,
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
    campaign_update,
    failed_messages_resend,
)
from campaigns.services.writes import WriteArgs, write_args
from gateways.models import MessageState
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    ARR,
    BOOL,
    INT,
    NINT,
    NOBJ,
    NSTR,
    OBJ,
    REASON,
    STR,
    Handler,
    base_version_token,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

CAMPAIGN_ID = {"type": "integer", "minimum": 1, "description": "From sms_marketing.campaigns.list."}
TOKEN = base_version_token("base_version_token from campaigns.get")
APPROVAL = object_schema(
    {
        "approved": BOOL,
        "approved_version": NINT,
        "approved_at": NSTR,
        "approved_by": {**NINT, "description": "User id of the approver (or the confirming approver)."},
        "approved_by_username": {**NSTR, "description": "That user's username."},
        "pending_requests": ARR,
    },
    ["approved", "approved_by", "approved_by_username", "pending_requests"],
)

CONTENT_PROPS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "segment_id": {"type": "integer", "description": "From sms_marketing.segments.create."},
    "template_version_id": {"type": ["integer", "null"], "description": "Pin a template version, or give text."},
    "text": {"type": ["string", "null"], "maxLength": 5000, "description": "Free copy; {{link}} places the link."},
    "brand": {"type": "string", "maxLength": 60, "description": "Brand named in free copy (required wording)."},
    "language": {"type": "string", "enum": ["en", "zh-hant", "bilingual"]},
    "max_segments": {"type": ["integer", "null"], "minimum": 1, "maximum": 10},
    "variables": {"type": "object", "additionalProperties": {"type": "string"}},
    "short_link_id": {"type": ["integer", "null"], "description": "From sms_marketing.short_links.create."},
    "sender_id": {"type": "string", "minLength": 1, "maxLength": 16},
    "gateway": {"type": ["string", "null"], "description": "Gateway code; empty: preferred per country."},
    "tracking": BOOL,
    "send_goal": {"type": "string", "maxLength": 300},
    "budget": {"type": ["string", "number", "null"], "description": "Maximum cost; schedules above it are refused."},
}
SCHEDULE_PROPS: dict[str, Any] = {
    "send_at": {"type": "string", "description": "ISO 8601; without an offset the time_zone applies."},
    "time_zone": {"type": "string", "description": "IANA zone, default the platform's (Asia/Hong_Kong)."},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
    "batch_interval_seconds": {"type": "integer", "minimum": 0, "maximum": 86_400},
    "notify": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 20},
}


def governed_tool(
    name: str,
    *,
    permission: str,
    properties: dict[str, Any],
    required: list[str],
    destructive: bool = False,
) -> Callable[[Callable[[WriteArgs], dict[str, Any]]], Handler]:
    """Register a governed campaign write: its input is the registry's write envelope around
    ``properties``, its output the governed answer, and the handler receives the arguments
    split by ``write_args`` (key, reason, base_version_token and confirm taken off)."""
    input_schema = write_input(properties, required)

    def decorator(write: Callable[[WriteArgs], dict[str, Any]]) -> Handler:
        def handler(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
            return write(write_args(actor, args))

        handler.__name__ = handler.__qualname__ = write.__name__
        handler.__doc__ = write.__doc__
        return register_tool(
            name,
            permission=permission,
            input_schema=input_schema,
            output_schema=governed_output(),
            destructive=destructive,
        )(handler)

    return decorator


@register_tool(
    "sms_marketing.campaigns.list",
    permission="campaigns.view_campaign",
    input_schema=object_schema(
        {
            "state": {"type": "string", "enum": list(CampaignState.values)},
            "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        }
    ),
    output_schema=object_schema(
        {"campaigns": {"type": "array", "items": OBJ}, "count": INT, "states": OBJ, "note": STR},
        ["campaigns", "count"],
    ),
)
def campaigns_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return campaigns_list(actor=actor, **args)


@register_tool(
    "sms_marketing.campaigns.get",
    permission="campaigns.view_campaign",
    input_schema=object_schema({"campaign_id": CAMPAIGN_ID}, ["campaign_id"]),
    output_schema=object_schema(
        {
            "campaign_id": INT,
            "name": STR,
            "state": STR,
            "version": INT,
            "base_version_token": STR,
            "segment": OBJ,
            "message": OBJ,
            "short_link": NSTR,
            "sender_id": STR,
            "gateway": NSTR,
            "send_at": NSTR,
            "content": OBJ,
            "template_version_id": NINT,
            "schedule": OBJ,
            "review": OBJ,
            "approval": APPROVAL,
            "estimate": OBJ,
            "estimate_detail": OBJ,
            "sending": NOBJ,
            "report": NSTR,
            "short_link_detail": NOBJ,
            "owner": STR,
            "batches": INT,
            "versions": ARR,
            "updated_at": STR,
            "note": STR,
        },
        ["campaign_id", "state", "base_version_token"],
    ),
)
def campaigns_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return campaign_get(actor=actor, campaign_id=args["campaign_id"])


@governed_tool(
    "sms_marketing.campaigns.create_draft",
    permission="campaigns.add_campaign",
    properties={**CONTENT_PROPS, **SCHEDULE_PROPS},
    required=["name", "segment_id", "sender_id"],
)
def campaigns_create_draft_tool(w: WriteArgs) -> dict[str, Any]:
    return campaign_create_draft(actor=w.actor, data=w.fields, idempotency_key=w.idempotency_key, reason=w.reason)


@governed_tool(
    "sms_marketing.campaigns.update",
    permission="campaigns.change_campaign",
    properties={
        "campaign_id": CAMPAIGN_ID,
        "base_version_token": TOKEN,
        "changes": {
            **object_schema({**CONTENT_PROPS, **SCHEDULE_PROPS, "review_notes": {"type": "string"}}),
            "minProperties": 1,
            "description": "Only the fields named here change.",
        },
    },
    required=["campaign_id", "base_version_token", "changes"],
)
def campaigns_update_tool(w: WriteArgs) -> dict[str, Any]:
    return campaign_update(
        actor=w.actor,
        campaign_id=w.fields["campaign_id"],
        base_version_token=w.base_version_token,
        changes=w.fields["changes"],
        idempotency_key=w.idempotency_key,
        reason=w.reason,
    )


@register_tool(
    "sms_marketing.cost_preview",
    permission="campaigns.view_campaign",
    input_schema=object_schema({"campaign_id": CAMPAIGN_ID}, ["campaign_id"]),
    output_schema=object_schema(
        {
            "campaign_id": INT,
            "version": INT,
            "message": OBJ,
            "exclusion_order": ARR,
            "frequency_capped_by_window": OBJ,
            "matched": INT,
            "sendable": INT,
            "unsendable": INT,
            "exclusions": OBJ,
            "by_country": ARR,
            "estimated_cost": OBJ,
            "short_link_effect": NOBJ,
            "budget": OBJ,
            "quota": OBJ,
            "notices": ARR,
            "estimate_note": STR,
            "note": STR,
        },
        ["campaign_id", "sendable", "unsendable", "exclusions", "estimated_cost", "quota", "estimate_note"],
    ),
)
def cost_preview_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return cost_preview(actor=actor, campaign_id=args["campaign_id"])


CONFIRM = {
    "type": "boolean",
    "description": "Explicit confirmation; only counts for holders of campaigns.confirm_campaign.",
}


@governed_tool(
    "sms_marketing.campaigns.schedule",
    permission="campaigns.schedule_campaign",
    properties={"campaign_id": CAMPAIGN_ID, "base_version_token": TOKEN, **SCHEDULE_PROPS, "confirm": CONFIRM},
    required=["campaign_id", "base_version_token"],
)
def campaigns_schedule_tool(w: WriteArgs) -> dict[str, Any]:
    return campaign_schedule(
        actor=w.actor,
        campaign_id=w.fields["campaign_id"],
        base_version_token=w.base_version_token,
        schedule={k: w.fields[k] for k in SCHEDULE_PROPS if k in w.fields},
        confirm=w.confirm,
        idempotency_key=w.idempotency_key,
        reason=w.reason,
    )


@governed_tool(
    "sms_marketing.campaigns.cancel_schedule",
    permission="campaigns.schedule_campaign",
    properties={"campaign_id": CAMPAIGN_ID, "reason": {**REASON, "minLength": 1}},
    required=["campaign_id", "reason"],
    destructive=True,
)
def campaigns_cancel_tool(w: WriteArgs) -> dict[str, Any]:
    return campaign_cancel_schedule(
        actor=w.actor, campaign_id=w.fields["campaign_id"], reason=w.reason, idempotency_key=w.idempotency_key
    )


@governed_tool(
    "sms_marketing.campaigns.send_approved",
    permission="campaigns.send_campaign",
    properties={"campaign_id": CAMPAIGN_ID, "base_version_token": TOKEN, "confirm": CONFIRM},
    required=["campaign_id", "base_version_token"],
)
def campaigns_send_tool(w: WriteArgs) -> dict[str, Any]:
    return campaign_send_approved(
        actor=w.actor,
        campaign_id=w.fields["campaign_id"],
        base_version_token=w.base_version_token,
        confirm=w.confirm,
        idempotency_key=w.idempotency_key,
        reason=w.reason,
    )


@register_tool(
    "sms_marketing.send_batches.list",
    permission="campaigns.view_sendbatch",
    input_schema=object_schema({"campaign_id": CAMPAIGN_ID}, ["campaign_id"]),
    output_schema=object_schema(
        {
            "campaign_id": INT,
            "campaign_state": STR,
            "batches": ARR,
            "count": INT,
            "message_states": OBJ,
            "batch_states": OBJ,
            "charged_total": STR,
            "currency": STR,
            "charged_definition": STR,
            "charge_rule": STR,
            "note": STR,
        },
        ["campaign_id", "batches", "message_states", "batch_states", "charged_total", "currency", "charge_rule"],
    ),
)
def send_batches_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return send_batches_list(actor=actor, campaign_id=args["campaign_id"])


@register_tool(
    "sms_marketing.delivery_status.get",
    permission="campaigns.view_sendbatch",
    input_schema=object_schema(
        {
            "message_id": {"type": "integer", "minimum": 1, "description": "One message; give it alone."},
            "phone": {
                "type": "string",
                "minLength": 3,
                "maxLength": 32,
                "description": "The recipient's messages (may be narrowed by campaign_id, batch_id, state).",
            },
            "campaign_id": {**CAMPAIGN_ID, "description": "A campaign's messages, newest first, a page at a time."},
            "batch_id": {"type": "integer", "minimum": 1, "description": "A batch's messages (send_batches.list)."},
            "state": {
                "type": "string",
                "enum": list(MessageState.values),
                "description": "Only messages in this state, e.g. failed.",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Page size, default 20."},
            "before_id": {
                "type": "integer",
                "minimum": 1,
                "description": "The next page: the previous answer's next_before_id.",
            },
        }
    )
    # One message by message_id (alone), or a list by phone, campaign_id or batch_id: never both kinds,
    # never neither (the selector refuses those too, naming the field).
    | {
        # Each branch declares the properties it requires (strict validators such as ajv insist).
        "oneOf": [
            {"required": ["message_id"], "properties": {"message_id": {}}},
            {"anyOf": [{"required": [f], "properties": {f: {}}} for f in ("phone", "campaign_id", "batch_id")]},
        ]
    },
    output_schema=object_schema(
        {
            "messages": ARR,
            "count": INT,
            "next_before_id": NINT,
            "phones_masked": BOOL,
            "charge_rule": STR,
            "note": STR,
        },
        ["messages", "count", "phones_masked", "charge_rule"],
    ),
)
def delivery_status_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return delivery_status_get(actor=actor, **args)


@register_tool(
    "sms_marketing.failed_messages.retry_preview",
    permission="campaigns.resend_messages",
    input_schema=object_schema(
        {"campaign_id": CAMPAIGN_ID, "batch_id": {"type": "integer", "minimum": 1}}, ["campaign_id"]
    ),
    output_schema=object_schema(
        {
            "retry_preview_id": STR,
            "expires_at": STR,
            "campaign_id": INT,
            "batch_id": NINT,
            "failed": INT,
            "eligible": INT,
            "excluded": OBJ,
            "by_country": ARR,
            "estimated_cost": OBJ,
            "expected": OBJ,
            "note": STR,
        },
        ["retry_preview_id", "eligible", "excluded", "estimated_cost"],
    ),
)
def retry_preview_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return retry_preview(actor=actor, campaign_id=args["campaign_id"], batch_id=args.get("batch_id"))


@governed_tool(
    "sms_marketing.failed_messages.resend",
    permission="campaigns.resend_messages",
    properties={"retry_preview_id": {"type": "string", "minLength": 1, "maxLength": 64}},
    required=["retry_preview_id"],
)
def resend_tool(w: WriteArgs) -> dict[str, Any]:
    return failed_messages_resend(
        actor=w.actor,
        retry_preview_id=w.fields["retry_preview_id"],
        idempotency_key=w.idempotency_key,
        reason=w.reason,
    )
