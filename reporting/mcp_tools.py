"""MCP tools of the reports (issue 18): campaign_reports.get, link_clicks.list, conversion_attribution.get."""

from __future__ import annotations

from typing import Any

from reporting.models import NotificationKind, SnapshotSource
from reporting.notifications import PERMISSION as NOTIFY_PERMISSION
from reporting.notifications import review_notification_send
from reporting.selectors import (
    VIEW_REPORT,
    conversion_attribution_get,
    link_clicks_list,
    report_get,
)
from reporting.snapshots import MAX_EVIDENCE_BYTES, performance_snapshot_record
from reporting.snapshots import PERMISSION as SNAPSHOT_PERMISSION
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import (
    ARR,
    BOOL,
    INT,
    NINT,
    NSTR,
    OBJ,
    STR,
    STRS,
    base_version_token,
    governed_output,
    object_schema,
    register_tool,
    write_input,
)

CAMPAIGN_ID = {"type": "integer", "minimum": 1, "description": "From sms_marketing.campaigns.list."}
REPORT_CAMPAIGN_ID = {
    "type": "integer",
    "minimum": 1,
    "description": "The campaign to report (from sms_marketing.campaigns.list); exactly one of campaign_id and "
    "flow_id.",
}
REPORT_FLOW_ID = {
    "type": "integer",
    "minimum": 1,
    "description": "The automation flow to report (from sms_marketing.automations.list); exactly one of "
    "campaign_id and flow_id. Needs automations.view_flow too.",
}
DATE_FROM = {"type": "string", "maxLength": 40, "description": "ISO date or date-time (UTC when no offset)."}
DATE_TO = {"type": "string", "maxLength": 40, "description": "ISO date (inclusive) or date-time (exclusive)."}
GRANULARITY = {"type": "string", "enum": ["hour", "day"], "description": "Trend buckets (UTC)."}


@register_tool(
    "sms_marketing.campaign_reports.get",
    permission=VIEW_REPORT,
    input_schema=object_schema(
        {
            "campaign_id": REPORT_CAMPAIGN_ID,
            "flow_id": REPORT_FLOW_ID,
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
        [],
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
            "snapshots": ARR,
        },
        ["scope", "messages", "clicks", "opt_outs", "cost", "cost_rule", "attribution", "data_latency"],
    ),
)
def campaign_reports_get_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return report_get(actor=actor, **args)


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


DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
# No minimum here: the service refuses impossible values with its own code on every interface.
COUNT = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
AMOUNT = {
    "anyOf": [
        {"type": "string", "maxLength": 40},
        {"type": "number"},
        {"type": "null"},
    ],
    "description": 'An amount in the snapshot\'s currency, e.g. "1234.50".',
}
METRICS = object_schema(
    {
        "sent": COUNT,
        "delivered": COUNT,
        "failed": COUNT,
        "clicks": COUNT,
        "unique_clicks": COUNT,
        "opt_outs": COUNT,
        "conversions": COUNT,
        "cost": AMOUNT,
        "revenue": AMOUNT,
    }
)
SUBJECT = object_schema(
    {"campaign_id": {"type": "integer", "minimum": 1}, "flow_id": {"type": "integer", "minimum": 1}}
)
EVIDENCE = object_schema(
    {
        "file_base64": {
            "type": "string",
            "description": f"The exported file, base64 (at most {MAX_EVIDENCE_BYTES} bytes decoded).",
        },
        "file_name": {"type": "string", "maxLength": 200},
        "url": {"type": "string", "maxLength": 1000, "description": "A link to the evidence (never fetched)."},
        "sha256": {
            "type": "string",
            "pattern": "^[0-9a-fA-F]{64}$",
            "description": "Required with a url (stored as stated, unverified); checked against a file.",
        },
    }
)
ATTRIBUTION = object_schema(
    {
        "model": STR,
        "click_window_hours": {"type": "integer", "minimum": 0, "maximum": 8760},
        "delivery_window_hours": {"type": "integer", "minimum": 0, "maximum": 8760},
        "coupon_codes": BOOL,
        "refunds_deducted": BOOL,
        "note": {"type": "string", "maxLength": 500},
    }
)
SNAPSHOT_OUT = object_schema(
    {
        "snapshot_id": INT,
        "key": STR,
        "version": INT,
        "is_current": BOOL,
        "subject": OBJ,
        "source": OBJ,
        "date_from": STR,
        "date_to": STR,
        "gateway": NSTR,
        "attribution": OBJ,
        "metrics": OBJ,
        "currency": STR,
        "gateway_performance": OBJ,
        "evidence": OBJ,
        "note": STR,
        "recorded_by": STR,
        "recorded_at": STR,
        "channel": STR,
        "action_request_id": NINT,
        "superseded_at": NSTR,
    },
    ["snapshot_id", "key", "version", "subject", "source", "date_from", "date_to", "metrics", "evidence"],
)


@register_tool(
    "sms_marketing.performance_snapshot.record",
    permission=SNAPSHOT_PERMISSION,
    input_schema=write_input(
        {
            "subject": SUBJECT,
            "source_kind": {"type": "string", "enum": list(SnapshotSource.values)},
            "source_name": {"type": "string", "minLength": 1, "maxLength": 100},
            "date_from": DATE,
            "date_to": DATE,
            "gateway": {"type": "string", "maxLength": 64, "description": "Gateway code; leave out for all gateways."},
            "attribution": ATTRIBUTION,
            "metrics": METRICS,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "gateway_performance": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Named gateway figures (delivery_rate 0-1, median_latency_seconds, ...).",
            },
            "evidence": EVIDENCE,
            "note": {"type": "string", "maxLength": 2000},
            "base_version_token": base_version_token(
                "Only to overwrite: the current snapshot's token (from a snapshot_exists error or an earlier record)."
            ),
        },
        ["subject", "source_kind", "source_name", "date_from", "date_to", "metrics", "evidence"],
    ),
    output_schema=governed_output(
        object_schema(
            {"snapshot": SNAPSHOT_OUT, "overwrote_version": NINT, "base_version_token": STR, "note": STR},
            ["snapshot", "base_version_token"],
        )
    ),
)
def performance_snapshot_record_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in args.items() if k not in ("idempotency_key", "reason")}
    return performance_snapshot_record(
        actor=actor, data=data, idempotency_key=args["idempotency_key"], reason=args.get("reason", "")
    )


NOTIFICATION_OUT = object_schema(
    {
        "notification_id": INT,
        "kind": STR,
        "origin": STR,
        "subject": OBJ,
        "title": STR,
        "recipients": STRS,
        "external_recipients": STRS,
        "email_queued": BOOL,
        "outbox_id": NINT,
        "created_at": STR,
    },
    ["notification_id", "kind", "subject", "recipients", "email_queued"],
)


@register_tool(
    "sms_marketing.review_notification.send",
    permission=NOTIFY_PERMISSION,
    input_schema=write_input(
        {
            "kind": {"type": "string", "enum": list(NotificationKind.values)},
            "subject": object_schema(
                {
                    "campaign_id": {"type": "integer", "minimum": 1},
                    "flow_id": {"type": "integer", "minimum": 1},
                    "action_request_id": {"type": "integer", "minimum": 1},
                }
            ),
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "body": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4000,
                "description": "A summary: no phone numbers, no lists of people.",
            },
            "recipients": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 254},
                "maxItems": 200,
                "description": "Usernames (owners.list) or e-mail addresses; leave out to notify everyone responsible.",
            },
        },
        ["kind", "subject", "title", "body"],
    ),
    output_schema=governed_output(NOTIFICATION_OUT),
)
def review_notification_send_tool(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    return review_notification_send(
        actor=actor,
        kind=args["kind"],
        subject=args["subject"],
        title=args["title"],
        body=args["body"],
        recipients=args.get("recipients"),
        idempotency_key=args["idempotency_key"],
        reason=args.get("reason", ""),
    )
