"""MCP tools of the OTP app: sms_marketing.otp_templates.list and sms_marketing.otp.send."""

from __future__ import annotations

from typing import Any

from campaigns.otp.models import Locale
from campaigns.otp.selectors import VIEW_TEMPLATES, otp_templates_list
from campaigns.otp.services import SEND_PERMISSION, otp_send
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    BOOL,
    INT,
    NINT,
    NSTR,
    STR,
    STRS,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

LIMIT = object_schema({"count": INT, "window_seconds": INT}, ["count", "window_seconds"])
VERSION = object_schema(
    {
        "version_id": INT,
        "number": NINT,
        "approval_state": STR,
        "action_request_id": NINT,
        "body_en": STR,
        "body_zh_hant": STR,
        "code_length": INT,
        "alphabet": STR,
        "validity_minutes": INT,
        "max_checks": INT,
        "max_sends": INT,
        "limits": object_schema({"phone": LIMIT, "ip": LIMIT, "token": LIMIT, "country": LIMIT}),
        "gateway": NSTR,
        "fallback_gateway": NSTR,
        "allowed_countries": STRS,
        "sender_id": STR,
        "single_segment_required": BOOL,
    },
    ["version_id", "approval_state", "validity_minutes", "limits", "allowed_countries"],
)
TEMPLATE = object_schema(
    {
        "template_id": INT,
        "name": STR,
        "purpose": STR,
        "version": INT,
        "base_version_token": STR,
        "approval_state": {
            "type": "string",
            "enum": ["approved", "pending_approval", "rejected", "expired", "failed", "none"],
        },
        "usable": BOOL,
        "approved": {"anyOf": [VERSION, {"type": "null"}]},
        "requested": {"anyOf": [VERSION, {"type": "null"}]},
    },
    ["template_id", "name", "purpose", "version", "approval_state", "usable", "approved", "requested"],
)


@register_tool(
    "sms_marketing.otp_templates.list",
    permission=VIEW_TEMPLATES,
    input_schema=object_schema({}),
    output_schema=object_schema(
        {"templates": {"type": "array", "items": TEMPLATE}, "count": INT, "note": STR}, ["templates", "count"]
    ),
)
def otp_templates_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    items = otp_templates_list(actor=actor)
    return {
        "templates": items,
        "count": len(items),
        "note": (
            "Only a template with an approved version (usable: true) sends; its 'approved' block is what goes out. "
            "'requested' is a version awaiting (or refused) approval. Limits are per phone, IP, token and country."
        ),
    }


VERIFICATION = object_schema(
    {
        "verification_id": STR,
        "template_id": INT,
        "phone": {"type": "string", "description": "Masked."},
        "country": STR,
        "locale": STR,
        "status": {"type": "string", "enum": ["pending", "approved", "expired", "locked", "canceled"]},
        "expires_at": STR,
        "sends_used": INT,
        "sends_remaining": INT,
        "checks_used": INT,
        "checks_remaining": INT,
        "message_id": INT,
    },
    ["verification_id", "phone", "status", "expires_at", "sends_used", "sends_remaining", "checks_remaining"],
)


@register_tool(
    "sms_marketing.otp.send",
    permission=SEND_PERMISSION,
    input_schema=write_input(
        {
            "template_id": {
                "type": "integer",
                "minimum": 1,
                "description": "An approved template (otp_templates.list).",
            },
            "phone": {
                "type": "string",
                "minLength": 3,
                "maxLength": 32,
                "description": "E.164, or a Hong Kong number.",
            },
            "locale": {"type": "string", "enum": list(Locale.values), "default": Locale.EN},
            "client_ip": {
                "anyOf": [{"type": "string", "maxLength": 45}, {"type": "null"}],
                "description": "The end user's IP address, for the per-IP limit.",
            },
        },
        ["template_id", "phone"],
    ),
    output_schema=governed_output(VERIFICATION),
)
def otp_send_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return otp_send(
        actor=actor,
        template_id=args["template_id"],
        phone=args["phone"],
        locale=args.get("locale", Locale.EN),
        client_ip=args.get("client_ip"),
        idempotency_key=args["idempotency_key"],
        reason=args.get("reason", ""),
    )
