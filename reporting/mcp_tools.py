"""MCP tools of the reports (issue 18): campaign_reports.get, link_clicks.list, conversion_attribution.get."""

from __future__ import annotations

from typing import Any

from reporting.selectors import (
    VIEW_REPORT,
    campaign_report_get,
    conversion_attribution_get,
    link_clicks_list,
)
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import ARR, BOOL, INT, NINT, OBJ, STR, object_schema, register_tool

CAMPAIGN_ID = {"type": "integer", "minimum": 1, "description": "From sms_marketing.campaigns.list."}
DATE_FROM = {"type": "string", "maxLength": 40, "description": "ISO date or date-time (UTC when no offset)."}
DATE_TO = {"type": "string", "maxLength": 40, "description": "ISO date (inclusive) or date-time (exclusive)."}
GRANULARITY = {"type": "string", "enum": ["hour", "day"], "description": "Trend buckets (UTC)."}


@register_tool(
    "sms_marketing.campaign_reports.get",
    permission=VIEW_REPORT,
    input_schema=object_schema(
        {
            "campaign_id": CAMPAIGN_ID,
            "date_from": DATE_FROM,
            "date_to": DATE_TO,
            "gateways": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "maxItems": 20,
                "description": "Gateway codes to include (default all).",
            },
            "granularity": GRANULARITY,
        },
        ["campaign_id"],
    ),
    output_schema=object_schema(
        {
            "scope": OBJ,
            "messages": OBJ,
            "clicks": OBJ,
            "opt_outs": OBJ,
            "cost": OBJ,
            "cost_rule": STR,
            "conversions": OBJ,
            "roi": OBJ,
            "by_gateway_country": ARR,
            "trend": ARR,
            "attribution": OBJ,
            "data_latency": OBJ,
        },
        ["scope", "messages", "clicks", "opt_outs", "cost", "cost_rule", "attribution", "data_latency"],
    ),
)
def campaign_reports_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return campaign_report_get(actor=actor, **args)


@register_tool(
    "sms_marketing.link_clicks.list",
    permission=VIEW_REPORT,
    input_schema=object_schema(
        {
            "campaign_id": {**CAMPAIGN_ID, "description": "Every short link of the campaign."},
            "link_id": {"type": "integer", "minimum": 1, "description": "One campaign short link."},
            "date_from": DATE_FROM,
            "date_to": DATE_TO,
            "granularity": GRANULARITY,
            "person_level": {
                "type": "boolean",
                "description": "Click rows with masked phones; needs reporting.view_person_clicks.",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 200, "description": "Person-level page size."},
            "before_id": {"type": "integer", "minimum": 1, "description": "Next page: next_before_id."},
        }
    ),
    output_schema=object_schema(
        {
            "scope": OBJ,
            "links": ARR,
            "person_level": BOOL,
            "rules": OBJ,
            "attribution": OBJ,
            "data_latency": OBJ,
            "clicks": ARR,
            "phones_masked": BOOL,
            "next_before_id": NINT,
        },
        ["scope", "links", "person_level", "rules", "data_latency"],
    ),
)
def link_clicks_list_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return link_clicks_list(actor=actor, **args)


@register_tool(
    "sms_marketing.conversion_attribution.get",
    permission=VIEW_REPORT,
    input_schema=object_schema(
        {"campaign_id": CAMPAIGN_ID, "date_from": DATE_FROM, "date_to": DATE_TO}, ["campaign_id"]
    ),
    output_schema=object_schema(
        {
            "scope": OBJ,
            "orders": INT,
            "bookings": INT,
            "payments": INT,
            "revenue": OBJ,
            "refund_rule": STR,
            "cost": OBJ,
            "cost_rule": STR,
            "roi": OBJ,
            "by_rule": OBJ,
            "conversion_paths": ARR,
            "channel_conflicts": OBJ,
            "shared_with_other_campaigns": OBJ,
            "tracking_limits": OBJ,
            "attribution": OBJ,
            "data_latency": OBJ,
        },
        ["scope", "orders", "revenue", "refund_rule", "roi", "channel_conflicts", "tracking_limits", "attribution"],
    ),
)
def conversion_attribution_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return conversion_attribution_get(actor=actor, **args)
