"""MCP tools of the templates app: templates, copy fit preview, short links."""

from __future__ import annotations

import re
from typing import Any

from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    BOOL,
    INT,
    NINT,
    NSTR,
    STR,
    STRS,
    base_version_token,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)
from templates.content_rules import CHARSETS, FIELD_TYPES
from templates.copy_fit import copy_fit_preview
from templates.models import Language, Purpose, VersionApproval
from templates.selectors import templates_list
from templates.services import short_link_create, template_save
from templates.short_links.preview import short_link_preview

FIELD_INPUT = object_schema(
    {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$", "description": "Used as {{name}} in body."},
        "type": {"type": "string", "enum": list(FIELD_TYPES)},
        "charset": {
            "type": "string",
            "enum": list(CHARSETS),
            "description": "What the values may contain (default by type: unicode for text/name, digits for "
            "number/otp_code, gsm otherwise). Decides the longest-variable scenario.",
        },
        "max_length": {"type": "integer", "minimum": 1, "maximum": 500, "description": "Longest value, characters."},
        "example": {"type": "string", "minLength": 1, "maxLength": 500},
    },
    ["name", "type", "max_length", "example"],
)
FIELD_OUTPUT = object_schema(
    {"name": STR, "type": STR, "charset": STR, "max_length": INT, "example": STR},
    ["name", "type", "charset", "max_length", "example"],
)
STATEMENTS = object_schema({"zh": NSTR, "en": NSTR}, ["zh", "en"])

VERSION_SUMMARY = object_schema(
    {
        "version": INT,
        "version_id": INT,
        "approval_status": {"type": "string", "enum": list(VersionApproval.values)},
        "action_request_id": NINT,
        "reason": STR,
        "created_at": STR,
        "created_by": NSTR,
    },
    ["version", "version_id", "approval_status"],
)

TEMPLATE_OUTPUT = object_schema(
    {
        "template_id": INT,
        "version": INT,
        "version_id": {"type": "integer", "description": "Campaigns pin this id."},
        "base_version_token": {"type": "string", "description": "Send it back with templates.save to update."},
        "name": STR,
        "purpose": {"type": "string", "enum": list(Purpose.values)},
        "language": {"type": "string", "enum": list(Language.values)},
        "body": STR,
        "brand": STR,
        "fields": {"type": "array", "items": FIELD_OUTPUT},
        "max_segments": INT,
        "characters": INT,
        "example_text": STR,
        "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
        "segments_example": INT,
        "segments_longest": INT,
        "opt_out_text": STATEMENTS,
        "required_wording": object_schema({"required": STRS, "missing": STRS}, ["required", "missing"]),
        "usable": {"type": "boolean", "description": "False when the current rules (config) are not met."},
        "approval_status": {"type": "string", "enum": list(VersionApproval.values)},
        "action_request_id": NINT,
        "reason": STR,
        "created_at": STR,
        "created_by": NSTR,
        "updated_at": STR,
        "pending_action_request_ids": {"type": "array", "items": INT},
        "versions": {"type": "array", "items": VERSION_SUMMARY},
    },
    ["template_id", "version", "version_id", "base_version_token", "name", "purpose", "body", "usable"],
)


@register_tool(
    "sms_marketing.templates.list",
    permission="sms_templates.view_template",
    input_schema=object_schema(
        {
            "template_id": {"type": "integer", "minimum": 1, "description": "One template, with its versions."},
            "purpose": {"type": "string", "enum": list(Purpose.values)},
            "language": {"type": "string", "enum": list(Language.values)},
            "name_contains": {"type": "string", "maxLength": 100},
            "include_versions": BOOL,
            "limit": {"type": "integer", "minimum": 1, "maximum": 200},
        }
    ),
    output_schema=object_schema(
        {
            "templates": {"type": "array", "items": TEMPLATE_OUTPUT},
            "count": INT,
            "total": INT,
            "pending_new_template_request_ids": {"type": "array", "items": INT},
            "note": STR,
        },
        ["templates", "count", "total"],
    ),
)
def templates_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return templates_list(**args)


@register_tool(
    "sms_marketing.templates.save",
    permission="sms_templates.add_template",
    input_schema=write_input(
        {
            "template_id": {
                "type": "integer",
                "minimum": 1,
                "description": "Omit to create a template; give it (with base_version_token) to save a new version.",
            },
            "base_version_token": base_version_token("From templates.list; required on update."),
            "name": {"type": "string", "maxLength": 200},
            "purpose": {"type": "string", "enum": list(Purpose.values)},
            "language": {"type": "string", "enum": list(Language.values)},
            "body": {
                "type": "string",
                "maxLength": 20000,
                "description": "Placeholders as {{field}}. Marketing: brand and the unsubscribe statement (zh + en).",
            },
            "brand": {"type": "string", "maxLength": 200, "description": "Brand identification; required in body."},
            "fields": {"type": "array", "items": FIELD_INPUT, "maxItems": 20},
            "max_segments": {"type": "integer", "minimum": 1, "maximum": 10},
        },
    ),
    output_schema=governed_output(
        object_schema(
            {
                "template_id": INT,
                "version": INT,
                "version_id": INT,
                "base_version_token": STR,
                "approval_status": {"type": "string", "enum": list(VersionApproval.values)},
            },
            ["template_id", "version", "version_id", "base_version_token", "approval_status"],
        )
    ),
)
def templates_save_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    content_keys = ("name", "purpose", "language", "body", "brand", "fields", "max_segments")
    return template_save(
        actor=actor,
        idempotency_key=args["idempotency_key"],
        template_id=args.get("template_id"),
        base_version_token=args.get("base_version_token"),
        content={k: args[k] for k in content_keys if k in args},
        reason=args.get("reason", ""),
    )


SCENARIO = object_schema(
    {
        "text": STR,
        "characters": INT,
        "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
        "units": {"type": "integer", "description": "Septets (GSM-7) or UTF-16 code units (UCS-2)."},
        "segments": INT,
        "characters_left": {"type": "integer", "description": "Units still free in the last segment."},
        "single_limit": INT,
        "part_limit": INT,
        "non_gsm_characters": {
            "type": "array",
            "items": object_schema({"char": STR, "code_point": STR, "count": INT}, ["char", "code_point"]),
        },
        "smart_encoding_applied": BOOL,
        "replacements": INT,
    },
    ["text", "characters", "encoding", "units", "segments", "characters_left"],
)
TRUNCATION = object_schema(
    {
        "limit": {"type": "string", "description": "template, or gateway <code> (<country>)"},
        "max_segments": INT,
        "fits": BOOL,
        "cut_text": {"type": "string", "description": "What would not be delivered."},
        "cut_characters": INT,
        "cuts_required_wording": {
            "type": "array",
            "items": STR,
            "description": "Required wording (brand, unsubscribe_zh, unsubscribe_en) the cut would remove.",
        },
    },
    ["limit", "max_segments", "fits", "cut_text", "cuts_required_wording"],
)
COST = object_schema(
    {
        "country": STR,
        "covered": {"type": "boolean", "description": "False: no enabled gateway covers it (never priced at 0)."},
        "note": STR,
        "gateway": STR,
        "currency": STR,
        "price_per_segment": STR,
        "segments_billed": INT,
        "cost_per_message": STR,
        "recipients": INT,
        "cost_total": STR,
        "example_cost_per_message": STR,
    },
    ["country", "covered"],
)
SHORT_SUMMARY = object_schema(
    {
        "characters": INT,
        "encoding": STR,
        "units": INT,
        "segments": INT,
        "characters_left": INT,
    },
    ["characters", "segments"],
)


@register_tool(
    "sms_marketing.copy.fit_preview",
    permission="sms_templates.fit_preview",
    input_schema=object_schema(
        {
            "text": {"type": "string", "maxLength": 20000, "description": "Free text (or give a template)."},
            "purpose": {"type": "string", "enum": list(Purpose.values), "description": "For text; default marketing."},
            "brand": {"type": "string", "maxLength": 200, "description": "For text: checked as required wording."},
            "template_id": {"type": "integer", "minimum": 1, "description": "Its current version."},
            "template_version_id": {"type": "integer", "minimum": 1, "description": "A pinned version."},
            "fields": {"type": "array", "items": FIELD_INPUT, "maxItems": 20, "description": "For text only."},
            "variables": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number"]},
                "description": (
                    "Values for the placeholders (default: each field's example). A url field (and {{link}} in "
                    "text) is counted as the short link it is sent as, whatever value is given."
                ),
            },
            "max_segments": {"type": "integer", "minimum": 1, "maximum": 10, "description": "Limit for text."},
            "smart_encoding": BOOL,
            "recipients": {"type": "integer", "minimum": 1, "maximum": 10_000_000, "description": "Per country."},
            "countries": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                "minItems": 1,
                "maxItems": 50,
            },
            "per_recipient_links": {"type": "boolean", "description": "Short links carry a recipient token."},
        }
    ),
    output_schema=object_schema(
        {
            "source": {"type": "string", "enum": ["text", "template"]},
            "template": {
                "anyOf": [
                    object_schema({"template_id": INT, "version": INT, "version_id": INT}, ["template_id"]),
                    {"type": "null"},
                ]
            },
            "given": SCENARIO,
            "longest": SCENARIO,
            "short_links": object_schema(
                {
                    "short_url_example": STR,
                    "short_url_characters": INT,
                    "per_recipient": BOOL,
                    "url_fields": STRS,
                    "url_values_replaced": {
                        "type": "array",
                        "items": object_schema(
                            {"field": STR, "given": STR, "given_characters": INT, "counted_as": STR},
                            ["field", "given", "counted_as"],
                        ),
                    },
                    "urls_in_text": {
                        "type": "array",
                        "items": object_schema(
                            {"url": STR, "characters": INT, "short_url_characters": INT},
                            ["url", "characters", "short_url_characters"],
                        ),
                    },
                    "longest_with_short_links": {"anyOf": [SHORT_SUMMARY, {"type": "null"}]},
                },
                ["short_url_example", "short_url_characters"],
            ),
            "truncation": {"type": "array", "items": TRUNCATION},
            "fits": BOOL,
            "costs": {"type": "array", "items": COST},
            "required_wording_missing": STRS,
            "assumptions": STRS,
        },
        ["given", "longest", "short_links", "truncation", "fits", "costs"],
    ),
)
def copy_fit_preview_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return copy_fit_preview(**args)


LINK_PROPS: dict[str, Any] = {
    "original_url": STR,
    "target_url": {"type": "string", "description": "Where the short link will redirect (UTM included)."},
    "landing_host": STR,
    "utm": {"type": "object", "additionalProperties": STR},
    "expires_at": STR,
    "tracking": BOOL,
    "per_recipient": BOOL,
    "campaign_id": NINT,
    "sensitive": {"type": "boolean", "description": "Payment/finance landing page: create follows approval."},
    "sensitive_reasons": STRS,
    "short_domain": STR,
    "warnings": STRS,
}


def with_required_utm(schema: dict[str, Any]) -> dict[str, Any]:
    """short_links.preview's input schema with the UTM keys the configuration requires now: each
    one in utm or already in the URL's query (the preview refuses others with utm_missing)."""
    required = platform_config_get()["config"]["short_links"]["required_utm"]
    if not required:
        return schema
    rules = [
        {
            "anyOf": [
                {
                    "required": ["utm"],
                    "properties": {"utm": {"type": "object", "required": [key], "properties": {key: STR}}},
                },
                {"properties": {"url": {"type": "string", "pattern": f"[?&]{re.escape(key)}="}}},
            ]
        }
        for key in required
    ]
    return {**schema, "allOf": rules}


@register_tool(
    "sms_marketing.short_links.preview",
    permission="sms_templates.preview_shortlink",
    input_schema=object_schema(
        {
            "url": {"type": "string", "maxLength": 10000, "description": "The landing page, https://..."},
            "utm": {
                "type": "object",
                "additionalProperties": STR,
                "description": "UTM parameters to add (utm_source, utm_medium, utm_campaign, utm_term, utm_content).",
            },
            "expires_at": {"type": "string", "description": "ISO 8601; or give expiry_days."},
            "expiry_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            "tracking": {"type": "boolean", "description": "Record clicks (default: the tracking policy)."},
            "per_recipient": {"type": "boolean", "description": "One URL per recipient, for unique clicks."},
            "campaign_id": {"type": "integer", "minimum": 1},
        },
        ["url"],
    ),
    refine_input=with_required_utm,
    output_schema=object_schema(
        {
            **LINK_PROPS,
            "code": STR,
            "short_url": STR,
            "short_url_characters": INT,
            "per_recipient_url_example": NSTR,
            "per_recipient_url_characters": NINT,
            "characters_saved": INT,
            "needs_approval_hint": NSTR,
            "short_link_preview_id": {"type": "string", "description": "Pass it to short_links.create."},
            "preview_expires_at": STR,
        },
        ["short_url", "short_url_characters", "target_url", "expires_at", "short_link_preview_id"],
    ),
)
def short_links_preview_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return short_link_preview(actor=actor, **args)


@register_tool(
    "sms_marketing.short_links.create",
    permission="sms_templates.add_shortlink",
    input_schema=write_input(
        {
            "short_link_preview_id": {"type": "string", "maxLength": 100, "description": "From short_links.preview."},
        },
        ["short_link_preview_id"],
    ),
    output_schema=governed_output(
        object_schema(
            {
                **{k: LINK_PROPS[k] for k in ("target_url", "landing_host", "utm", "expires_at", "campaign_id")},
                "short_link_id": INT,
                "code": STR,
                "short_url": STR,
                "tracking": BOOL,
                "per_recipient": BOOL,
                "sensitive": BOOL,
                "owner": STR,
                "created_at": STR,
            },
            ["short_link_id", "code", "short_url", "target_url", "expires_at"],
        )
    ),
)
def short_links_create_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return short_link_create(
        actor=actor,
        short_link_preview_id=args["short_link_preview_id"],
        idempotency_key=args["idempotency_key"],
        reason=args.get("reason", ""),
    )
