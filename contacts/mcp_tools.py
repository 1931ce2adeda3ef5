"""MCP tools for contacts, consent, opt-outs and frequency caps (issue 4)."""

from __future__ import annotations

from typing import Any

from compliance.models import OptOutReason
from compliance.optouts import opt_outs_list
from contacts.models import ConsentPurpose
from contacts.optouts import contact_opt_out
from contacts.selectors import audiences_list, contact_get, contacts_search
from contacts.services import LANGUAGES, contacts_upsert, segment_create, segment_preview
from gateways.frequency import frequency_caps_get
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    BOOL,
    INT,
    NINT,
    NSTR,
    OBJ,
    STR,
    base_version_token,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

AUDIENCE_REFS = {
    "type": "array",
    "items": {"oneOf": [{"type": "integer"}, {"type": "string", "minLength": 1, "maxLength": 100}]},
    "maxItems": 50,
}

PHONE = {"type": "string", "minLength": 3, "maxLength": 32, "description": "E.164 (+85291234567) or a local HK number"}

CONTACT_MINIMAL = object_schema(
    {
        "contact_id": INT,
        "phone": STR,
        "country": STR,
        "language": STR,
        "has_consent": BOOL,
        "opted_out": BOOL,
        "sendable": BOOL,
    },
    ["contact_id", "phone", "sendable", "opted_out"],
)

OPT_OUT = object_schema(
    {
        "opt_out_id": INT,
        "phone": STR,
        "contact_id": NINT,
        "reason": {"type": "string", "enum": list(OptOutReason.values)},
        "source": STR,
        "message_text": STR,
        "language": STR,
        "occurred_at": STR,
        "recorded_at": STR,
        "sync_state": STR,
        "active": BOOL,
        "lifted_at": NSTR,
    },
    ["opt_out_id", "phone", "reason", "active", "occurred_at"],
)


SEARCH_CRITERIA = ("phone", "crm_key", "tag", "audience_id", "opted_out", "has_consent", "sent_within_days")


@register_tool(
    "sms_marketing.contacts.search",
    permission="contacts.view_contact",
    input_schema=object_schema(
        {
            "phone": PHONE,
            "crm_key": {"type": "string", "maxLength": 100},
            "tag": {"type": "string", "maxLength": 50},
            "audience_id": INT,
            "opted_out": BOOL,
            "has_consent": BOOL,
            "sent_within_days": {"type": "integer", "minimum": 1, "maximum": 365},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        }
    )
    # At least one criterion (the selector refuses a bare limit with its own coded error).
    # (Each branch names its property so that strict validators, ajv's strictRequired, accept it.)
    | {"anyOf": [{"required": [c], "properties": {c: {}}} for c in SEARCH_CRITERIA]},
    output_schema=object_schema(
        {
            "contacts": {"type": "array", "items": CONTACT_MINIMAL},
            "count": INT,
            "truncated": BOOL,
            "phones_masked": BOOL,
            "note": STR,
        },
        ["contacts", "count", "phones_masked"],
    ),
)
def contacts_search_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return contacts_search(actor=actor, **args)


@register_tool(
    "sms_marketing.contacts.get",
    permission="contacts.view_contact",
    input_schema=object_schema({"contact_id": INT}, ["contact_id"]),
    output_schema=object_schema(
        {
            "contact_id": INT,
            "phone": STR,
            "phones_masked": BOOL,
            "country": STR,
            "language": STR,
            "name": STR,
            "tags": {"type": "array", "items": STR},
            "source": STR,
            "crm_key": STR,
            "created_at": STR,
            "updated_at": STR,
            "has_consent": BOOL,
            "opted_out": BOOL,
            "sendable": BOOL,
            "consent_evidence": {"type": "array", "items": OBJ},
            "consent_evidence_withheld": {
                "type": "boolean",
                "description": "True when the caller lacks contacts.view_consentevidence: the records are not shown.",
            },
            "opt_outs": {"type": "array", "items": OPT_OUT},
            "send_history": {"type": "array", "items": OBJ},
            "version": INT,
            "base_version_token": STR,
            "note": STR,
        },
        ["contact_id", "phone", "opted_out", "sendable", "consent_evidence", "opt_outs", "base_version_token"],
    ),
)
def contacts_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return contact_get(actor=actor, contact_id=args["contact_id"])


CONSENT = object_schema(
    {
        "purpose": {"type": "string", "enum": list(ConsentPurpose.values), "default": "marketing"},
        "channel": {"type": "string", "default": "sms", "maxLength": 20},
        "wording": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "The notice shown"},
        "source": {"type": "string", "minLength": 1, "maxLength": 200, "description": "web_form, pos, crm, ..."},
        "obtained_at": {"type": "string", "description": "ISO 8601 with time zone"},
        "proof_reference": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    ["wording", "source", "obtained_at", "proof_reference"],
)


@register_tool(
    "sms_marketing.contacts.upsert",
    permission="contacts.change_contact",
    input_schema=write_input(
        {
            "phone": {**PHONE, "description": "To create a contact (or to confirm the phone of contact_id)."},
            "contact_id": {**INT, "description": "To update: from contacts.get, with base_version_token."},
            "base_version_token": base_version_token("From contacts.get; required with contact_id."),
            "source": {"type": "string", "minLength": 1, "maxLength": 100},
            "language": {"type": "string", "enum": list(LANGUAGES)},
            "name": {"type": "string", "maxLength": 100},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 50},
            "crm_key": {"type": "string", "maxLength": 100},
            "consent": CONSENT,
            "lift_opt_out": {
                "type": "boolean",
                "default": False,
                "description": (
                    "Lift a STOP-type opt-out: only with new marketing consent obtained after it. "
                    "Governed as opt_outs.update (its approval policy, and contacts.import's, apply)."
                ),
            },
            "audiences": {
                "description": (
                    "Audience membership: a list of audience ids or names to add the contact to, or "
                    "{add: [...], remove: [...]}. Segments select members of audiences: a contact in no "
                    "audience is in no segment. Ids and names from sms_marketing.audiences.list."
                ),
                "oneOf": [
                    AUDIENCE_REFS,
                    {
                        "type": "object",
                        "properties": {"add": AUDIENCE_REFS, "remove": AUDIENCE_REFS},
                        "additionalProperties": False,
                    },
                ],
            },
        },
        ["source"],
    ),
    output_schema=governed_output(),
)
def contacts_upsert_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    fields = dict(args)
    key = fields.pop("idempotency_key")
    return contacts_upsert(actor=actor, idempotency_key=key, **fields)


@register_tool(
    "sms_marketing.opt_outs.list",
    permission="compliance.view_optout",
    input_schema=object_schema(
        {
            "reason": {"type": "string", "enum": list(OptOutReason.values)},
            "phone": PHONE,
            "include_lifted": {"type": "boolean", "default": False},
            "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
        }
    ),
    output_schema=object_schema(
        {
            "opt_outs": {"type": "array", "items": OPT_OUT},
            "count": INT,
            "active_by_reason": {"type": "object", "additionalProperties": INT},
            "active_phones": INT,
            "note": STR,
        },
        ["opt_outs", "count", "active_by_reason"],
    ),
)
def opt_outs_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return opt_outs_list(actor=actor, **args)


@register_tool(
    "sms_marketing.contacts.opt_out",
    permission="compliance.add_optout",
    input_schema=write_input(
        {
            "contact_id": INT,
            "phone": PHONE,
            "reason": {"type": "string", "enum": list(OptOutReason.values), "description": "Default: api"},
            "source": {"type": "string", "maxLength": 100},
            "message_text": {"type": "string", "maxLength": 2000, "description": "The STOP message, if any"},
            "language": {"type": "string", "maxLength": 10},
            "note": {"type": "string", "maxLength": 500},
        },
    ),
    output_schema=governed_output(
        object_schema(
            {
                "opt_out_id": INT,
                "contact_id": NINT,
                "reason": STR,
                "created": BOOL,
                "already_opted_out": BOOL,
                "effective_at": STR,
                "suppressed": BOOL,
            },
            ["opt_out_id", "suppressed", "effective_at"],
        )
    ),
)
def contacts_opt_out_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    fields = dict(args)
    key = fields.pop("idempotency_key")
    return contact_opt_out(actor=actor, idempotency_key=key, **fields)


@register_tool(
    "sms_marketing.frequency_caps.get",
    permission="smsplatform.view_platformconfig",
    input_schema=object_schema({}),
    output_schema=object_schema(
        {
            "caps": OBJ,
            "windows": {"type": "array", "items": OBJ},
            "per_campaign": OBJ,
            "applies_to": STR,
            "note": STR,
        },
        ["caps", "windows"],
    ),
)
def frequency_caps_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return frequency_caps_get()


# --- audiences and segments -----------------------------------------------------------------------

AUDIENCE = object_schema(
    {
        "audience_id": INT,
        "name": STR,
        "description": STR,
        "source": STR,
        "region": STR,
        "sync_source": STR,
        "purchase_behaviour": STR,
        "members": INT,
        "sendable": INT,
        "consent": {"type": "object", "additionalProperties": INT},
    },
    ["audience_id", "name", "source", "members", "sendable", "consent"],
)


@register_tool(
    "sms_marketing.audiences.list",
    permission="contacts.view_audience",
    input_schema=object_schema({}),
    output_schema=object_schema(
        {"audiences": {"type": "array", "items": AUDIENCE}, "count": INT, "note": STR}, ["audiences", "count"]
    ),
)
def audiences_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return audiences_list(actor=actor)


COUNTS = {"type": "object", "additionalProperties": INT}
SEGMENT_COUNTS = {
    "criteria": OBJ,
    "audience_ids": {"type": "array", "items": INT},
    "matched": INT,
    "distinct_phones": INT,
    "sendable": INT,
    "excluded": INT,
    "exclusions": COUNTS,
    "exclusion_order": {"type": "array", "items": STR},
    "frequency_capped_by_window": OBJ,
    "by_country": {"type": "array", "items": OBJ},
    "estimated_cost": {"type": "object", "additionalProperties": STR},
    "cost_basis": STR,
}


@register_tool(
    "sms_marketing.segments.preview",
    permission="contacts.view_segment",
    input_schema=object_schema(
        {
            "criteria": {
                "type": "object",
                "description": (
                    "The criteria language: {'all': [...]} / {'any': [...]} of conditions audiences, tags "
                    "{any,all,none}, language, country, order_status, payment_status, pickup, offer, "
                    "days_since_last_purchase {min,max}, appointment_within_days, repurchase_due_within_days, "
                    "consent_purpose. Example: {'all': [{'country': ['HK']}, {'tags': {'any': ['vip']}}]}"
                ),
            }
        },
        ["criteria"],
    ),
    output_schema=object_schema(
        {"segment_preview_id": STR, "expires_at": STR, **SEGMENT_COUNTS, "note": STR},
        ["segment_preview_id", "matched", "sendable", "exclusions", "by_country", "estimated_cost"],
    ),
)
def segments_preview_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return segment_preview(actor=actor, criteria=args["criteria"])


@register_tool(
    "sms_marketing.segments.create",
    permission="contacts.add_segment",
    input_schema=write_input(
        {
            "segment_preview_id": {"type": "string", "description": "From segments.preview; nothing else widens it."},
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
        },
        ["segment_preview_id", "name"],
    ),
    output_schema=governed_output(),
)
def segments_create_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    fields = dict(args)
    key = fields.pop("idempotency_key")
    return segment_create(actor=actor, idempotency_key=key, **fields)
