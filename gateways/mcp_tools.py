"""MCP tools of the gateways app."""

from __future__ import annotations

from typing import Any

from gateways.quotas import quotas_get
from gateways.selectors import gateways_list, sender_ids_list
from gateways.services import sender_id_apply
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    BOOL,
    INT,
    NSTR,
    OBJ,
    REASON,
    STR,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

COUNTRY = {"type": "string", "pattern": "^[A-Z]{2}$"}

GATEWAY_SCHEMA = object_schema(
    {
        "code": STR,
        "name": STR,
        "provider": {"type": "string", "enum": ["simulator", "smpp", "kannel", "twilio"]},
        "enabled": BOOL,
        "countries": {"type": "array", "items": STR},
        "rates": {
            "type": "array",
            "items": object_schema(
                {"country": STR, "price_per_segment": STR, "currency": STR}, ["country", "price_per_segment"]
            ),
        },
        "receipts_supported": BOOL,
        "max_rate_per_second": INT,
        "window_size": INT,
        "encodings": {"type": "array", "items": STR},
        "fallback": NSTR,
        "priority": INT,
        "credentials": OBJ,
        "bind": {
            "oneOf": [
                {"type": "null"},
                object_schema(
                    {
                        "state": {"type": "string", "enum": ["bound", "down", "no_worker"]},
                        "workers": INT,
                        "since": NSTR,
                        "last_error": STR,
                        "failing_over_to": NSTR,
                        "note": STR,
                    },
                    ["state", "workers"],
                ),
            ]
        },
    },
    ["code", "provider", "enabled", "countries", "rates", "receipts_supported", "fallback"],
)


@register_tool(
    "sms_marketing.gateways.list",
    permission="gateways.view_gateway",
    input_schema=object_schema({"include_disabled": {"type": "boolean", "default": True}}),
    output_schema=object_schema(
        {"gateways": {"type": "array", "items": GATEWAY_SCHEMA}, "count": INT, "note": STR},
        ["gateways", "count"],
    ),
)
def gateways_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    gateways = gateways_list(include_disabled=args.get("include_disabled", True))
    return {
        "gateways": gateways,
        "count": len(gateways),
        "note": (
            "Check the destination country, the rate and receipt support before sending; a country no enabled "
            "gateway covers cannot be sent to. Credentials are shown only as configured or not. An SMPP gateway's "
            "bind is 'bound', 'down' (retrying; failing over when it has a fallback) or 'no_worker' (nothing is sent)."
        ),
    }


USABLE = {
    "type": "object",
    "additionalProperties": object_schema({"usable": BOOL, "reason": STR}, ["usable", "reason"]),
}


@register_tool(
    "sms_marketing.sender_ids.list",
    permission="gateways.view_senderid",
    input_schema=object_schema({"country": {**COUNTRY, "description": "Also say whether each ID is usable here."}}),
    output_schema=object_schema(
        {
            "sender_ids": {
                "type": "array",
                "items": object_schema(
                    {
                        "value": STR,
                        "kind": STR,
                        "brand": STR,
                        "status": STR,
                        "ssrs_status": STR,
                        "regions": {"type": "array", "items": STR},
                        "ssrs_registered_regions": {"type": "array", "items": STR},
                        "restrictions": STR,
                        "usable": USABLE,
                        "registered_at": NSTR,
                        "expires_at": NSTR,
                    },
                    ["value", "kind", "status", "regions", "usable"],
                ),
            },
            "count": INT,
            "note": STR,
        },
        ["sender_ids", "count"],
    ),
)
def sender_ids_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    items = sender_ids_list(country=args.get("country"))
    return {
        "sender_ids": items,
        "count": len(items),
        "note": "Only IDs marked usable for a region may be used for live sends there; pending IDs never.",
    }


@register_tool(
    "sms_marketing.quotas.get",
    permission="gateways.view_account",
    input_schema=object_schema({}),
    output_schema=object_schema(
        {
            "currency": STR,
            "balance": STR,
            "reserved_amount": STR,
            "available_amount": STR,
            "monthly_quota_segments": INT,
            "period_start": STR,
            "used_segments": INT,
            "reserved_segments": INT,
            "available_segments": INT,
            "country_rates": OBJ,
            "segment_billing": OBJ,
            "rate_limits": OBJ,
            "charge_rule": STR,
            "note": STR,
        },
        ["currency", "balance", "available_amount", "available_segments", "country_rates", "charge_rule"],
    ),
)
def quotas_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return quotas_get()


DOCUMENT = object_schema(
    {
        "name": {"type": "string", "description": "e.g. business_registration, authorisation_letter"},
        "status": {"type": "string", "enum": ["provided", "missing", "verified"]},
        "reference": STR,
    },
    ["name", "status"],
)


@register_tool(
    "sms_marketing.sender_id.apply",
    permission="gateways.add_senderidapplication",
    input_schema=write_input(
        {
            "sender_id": {"type": "string", "maxLength": 16, "description": "e.g. #SHOPHK (SSRS) or SHOPHK"},
            "brand": {"type": "string", "maxLength": 100},
            "company_name": {"type": "string", "maxLength": 200},
            "company_registration_no": {"type": "string", "maxLength": 50, "description": "HK: 8-digit BR number"},
            "purpose": {"type": "string", "minLength": 10, "maxLength": 2000},
            "regions": {"type": "array", "items": COUNTRY, "minItems": 1},
            "documents": {"type": "array", "items": DOCUMENT},
            "reason": {**REASON, "minLength": 5},
            "reference": {"type": "string", "description": "An existing application to update (new version)."},
        },
        [
            "sender_id",
            "brand",
            "company_name",
            "company_registration_no",
            "purpose",
            "regions",
            "documents",
            "reason",
        ],
    ),
    output_schema=governed_output(),
)
def sender_id_apply_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    fields = dict(args)
    key = fields.pop("idempotency_key")
    return sender_id_apply(actor=actor, idempotency_key=key, **fields)
