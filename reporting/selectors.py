"""Reads of the reports: campaign_reports.get, link_clicks.list, conversion_attribution.get.

Every figure comes from the aggregates (reporting.models, kept current by
reporting.aggregates), and every answer states its date range, gateways, attribution rules,
cost rule and data latency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import CharField, Count, Q, QuerySet, Sum, Value
from django.db.models.functions import MD5, Cast, Concat, Substr
from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.automations.flow_models import Flow
from campaigns.content import recipient_token_salt
from campaigns.models import Campaign
from compliance.optouts import FULL_PHONE_PERMISSION
from gateways.charges import CHARGE_RULE
from gateways.models import FINAL_MESSAGE_STATES, Gateway, MessageState, OutboundMessage
from reporting.aggregates import FLOW_CHUNK_IDS, data_latency, flow_data_latency
from reporting.attribution import attribution_rules, tracking_limits
from reporting.models import (
    ConversionKind,
    ReportClickBucket,
    ReportConversion,
    ReportFlowMessageBucket,
    ReportMessageBucket,
    ReportOptOut,
)
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.phones import phone_mask
from templates.models import DeviceClass, LinkClick, ShortLink
from templates.short_links.codes import RECIPIENT_TOKEN_LENGTH

VIEW_REPORT = "reporting.view_campaign_report"
VIEW_FLOW = "automations.view_flow"
VIEW_PERSON_CLICKS = "reporting.view_person_clicks"
GRANULARITIES = ("hour", "day")
PENDING = tuple(s for s in MessageState.values if s not in FINAL_MESSAGE_STATES)
COST_RULE = (
    "Billed cost: the price of every message a gateway accepted (gateways.charges: "
    + CHARGE_RULE
    + ") Estimated cost: the price the dispatch computed for every message of the campaign, sent or not. "
    "ROI uses the billed cost plus the estimate of messages still queued (billed when known, else estimated): "
    "ROI = (revenue net of refunds - cost) / cost, in the campaign's cost currency."
)
FLOW_COST_RULE = (
    "Billed cost: the price of every message a gateway accepted (gateways.charges: "
    + CHARGE_RULE
    + ") Estimated cost: the price the flow's tick computed for every message it queued, sent or not. "
    "for_roi: billed plus the estimate of messages still queued (no ROI: flow conversions are not attributed)."
)
BUCKET_RULE = (
    "Messages are counted in the hour of their latest state: the receipt's time for delivered, failed and "
    "expired, the submit time while a receipt is pending, the creation time while queued. Hours are UTC; a "
    "day is a UTC day."
)


def _dt(value: Any, field: str, *, end: bool = False) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed: datetime = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time.min)
        if end:
            parsed += timedelta(days=1)
    else:
        text = str(value)
        try:
            if len(text) == 10:
                parsed = datetime.combine(date.fromisoformat(text), time.min)
                if end:
                    parsed += timedelta(days=1)
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"{field} must be an ISO date (2026-12-01) or date-time.",
                field=field,
                hint="A date alone means the whole day (UTC).",
            ) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


def _range(date_from: Any, date_to: Any) -> tuple[datetime | None, datetime | None]:
    start, end = _dt(date_from, "date_from"), _dt(date_to, "date_to", end=True)
    if start and end and end <= start:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "date_to must be after date_from.",
            field="date_to",
            hint="Both are inclusive dates, or date-times (date_to exclusive).",
        )
    return start, end


def _in_range(qs: QuerySet[Any], start: datetime | None, end: datetime | None, field: str = "hour") -> QuerySet[Any]:
    if start:
        qs = qs.filter(**{f"{field}__gte": start.replace(minute=0, second=0, microsecond=0)})
    if end:
        qs = qs.filter(**{f"{field}__lt": end})
    return qs


def _campaign(actor: Actor, campaign_id: Any) -> Campaign:
    if not actor.has_perm(VIEW_REPORT):
        raise permission_denied(VIEW_REPORT)
    return campaign_access(actor=actor, campaign_id=campaign_id)


def _money(value: Any) -> str:
    return str((Decimal(value or 0)).quantize(Decimal("0.01")))


def _gateways(codes: list[str] | None) -> tuple[list[int] | None, list[str]]:
    if not codes:
        return None, []
    found = dict(Gateway.objects.filter(code__in=codes).values_list("code", "pk"))
    missing = sorted(set(codes) - set(found))
    if missing:
        raise ApplicationError(
            ErrorCode.NOT_FOUND,
            f"Unknown gateway {missing[0]}.",
            field="gateways",
            hint="See sms_marketing.gateways.list.",
        )
    return list(found.values()), sorted(found)


def _bucket_key(hour: datetime, granularity: str) -> str:
    if granularity == "day":
        return hour.date().isoformat()
    return hour.isoformat()


def _scope(
    campaign: Campaign,
    start: datetime | None,
    end: datetime | None,
    gateway_ids: list[int] | None,
    gateway_codes: list[str],
    granularity: str,
) -> dict[str, Any]:
    return {
        "campaign_id": campaign.pk,
        "campaign_name": campaign.name,
        "date_from": start.isoformat() if start else None,
        "date_to": end.isoformat() if end else None,
        "date_range_note": "No date given: the whole campaign." if not (start or end) else "date_to is exclusive.",
        "gateways": gateway_codes or "all",
        "granularity": granularity,
        "bucket_rule": BUCKET_RULE,
    }


def _cost(
    campaign_id: int, start: datetime | None, end: datetime | None, gateway_ids: list[int] | None
) -> dict[str, Any]:
    qs = _in_range(ReportMessageBucket.objects.filter(campaign_id=campaign_id), start, end)
    if gateway_ids is not None:
        qs = qs.filter(gateway_id__in=gateway_ids)
    rows = list(
        qs.values("currency").annotate(
            est=Sum("cost_estimated"),
            billed=Sum("cost_billed"),
            queued_est=Sum("cost_estimated", filter=Q(state=MessageState.QUEUED)),
        )
    )
    by_currency = {
        r["currency"]: {
            "estimated": _money(r["est"]),
            "billed": _money(r["billed"]),
            "for_roi": _money((r["billed"] or 0) + (r["queued_est"] or 0)),
        }
        for r in rows
    }
    return by_currency


def _roi(net: Decimal, cost: Decimal) -> str | None:
    if cost <= 0:
        return None
    return str(((net - cost) / cost).quantize(Decimal("0.0001")))


def _conversions(campaign_id: int, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    qs = _in_range(ReportConversion.objects.filter(campaign_id=campaign_id, claimed=True), start, end)
    out: dict[str, Any] = {"orders": 0, "payments": 0, "bookings": 0, "by_currency": {}}
    names = {ConversionKind.ORDER: "orders", ConversionKind.PAYMENT: "payments", ConversionKind.BOOKING: "bookings"}
    for r in qs.values("kind", "currency").annotate(n=Count("id"), amount=Sum("amount"), refunded=Sum("refunded")):
        out[names[r["kind"]]] += r["n"]
        if r["currency"]:
            cur = out["by_currency"].setdefault(r["currency"], {"revenue": Decimal(0), "refunded": Decimal(0)})
            cur["revenue"] += r["amount"] or 0
            cur["refunded"] += r["refunded"] or 0
    out["by_currency"] = {
        c: {
            "revenue": _money(v["revenue"]),
            "refunded": _money(v["refunded"]),
            "net_revenue": _money(v["revenue"] - v["refunded"]),
        }
        for c, v in out["by_currency"].items()
    }
    out["total"] = out["orders"] + out["payments"] + out["bookings"]
    return out


def _rois(cost: dict[str, Any], conversions: dict[str, Any]) -> dict[str, Any]:
    rois = {}
    for currency, c in cost.items():
        net = Decimal(conversions["by_currency"].get(currency, {}).get("net_revenue", "0"))
        rois[currency] = _roi(net, Decimal(c["for_roi"]))
    return rois


MessageFigures = tuple[
    dict[str, int], dict[str, dict[str, int]], list[dict[str, Any]], dict[str, Any], dict[str, dict[str, int]]
]


def _message_figures(qs: QuerySet[Any], granularity: str) -> MessageFigures:
    """States, failure reasons, the gateway x country split, cost and the delivered trend of a
    query on message buckets (ReportMessageBucket or ReportFlowMessageBucket)."""
    # One pass over the buckets, rolled up across batches by the database; the rest in Python
    # over a few hundred rows (hours x gateways x countries x states x reasons).
    rows = list(
        qs.values("hour", "gateway_id", "country", "state", "error_code", "currency")
        .annotate(n=Sum("messages"), billed=Sum("cost_billed"), est=Sum("cost_estimated"))
        .order_by()
    )
    states: dict[str, int] = defaultdict(int)
    reasons: dict[str, dict[str, int]] = {"failed": defaultdict(int), "expired": defaultdict(int)}
    names = dict(Gateway.objects.values_list("pk", "code"))
    cells: dict[tuple[int, str, str], dict[str, Any]] = {}
    trend: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cost_sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in rows:
        state, n = r["state"], int(r["n"] or 0)
        states[state] += n
        if state in reasons:
            reasons[state][r["error_code"] or "unspecified"] += n
        cell = cells.setdefault(
            (r["gateway_id"], r["country"], r["currency"]),
            {
                "gateway": names.get(r["gateway_id"], str(r["gateway_id"])),
                "country": r["country"],
                "messages": 0,
                "delivered": 0,
                "failed": 0,
                "undelivered": 0,
                "pending": 0,
                "billed": Decimal(0),
                "currency": r["currency"],
            },
        )
        cell["messages"] += n
        key = {MessageState.DELIVERED: "delivered", MessageState.FAILED: "failed", MessageState.EXPIRED: "undelivered"}
        cell[key.get(state, "pending")] += n
        cell["billed"] += r["billed"] or 0
        if state == MessageState.DELIVERED:
            trend[_bucket_key(r["hour"], granularity)]["delivered"] += n
        money = cost_sums[r["currency"]]
        money["est"] += r["est"] or 0
        money["billed"] += r["billed"] or 0
        if state == MessageState.QUEUED:
            money["queued"] += r["est"] or 0
    split = [
        {**{k: v for k, v in cell.items() if k != "billed"}, "cost_billed": _money(cell["billed"])}
        for _, cell in sorted(cells.items(), key=lambda kv: (kv[1]["gateway"], kv[1]["country"]))
    ]
    cost = {
        currency: {
            "estimated": _money(m["est"]),
            "billed": _money(m["billed"]),
            "for_roi": _money(m["billed"] + m["queued"]),
        }
        for currency, m in cost_sums.items()
    }
    return states, reasons, split, cost, trend


@dataclass(frozen=True)
class _Scope:
    """A report's date range, gateways and granularity, checked: what a campaign's and a flow's
    reports both take."""

    start: datetime | None
    end: datetime | None
    gateway_ids: list[int] | None
    gateway_codes: list[str]
    granularity: str

    @classmethod
    def read(cls, date_from: Any, date_to: Any, gateways: list[str] | None, granularity: str) -> _Scope:
        if granularity not in GRANULARITIES:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "granularity must be hour or day.",
                field="granularity",
                hint="Default hour.",
            )
        start, end = _range(date_from, date_to)
        gateway_ids, gateway_codes = _gateways(gateways)
        return cls(start, end, gateway_ids, gateway_codes, granularity)

    def rows(self, qs: QuerySet[Any]) -> QuerySet[Any]:
        """The rows (by their hour and gateway) in range and on the gateways."""
        qs = _in_range(qs, self.start, self.end)
        if self.gateway_ids is not None:
            qs = qs.filter(gateway_id__in=self.gateway_ids)
        return qs

    def message_figures(self, buckets: QuerySet[Any]) -> MessageFigures:
        """The message buckets in scope, summed (see _message_figures)."""
        return _message_figures(self.rows(buckets), self.granularity)


def campaign_report_get(
    *,
    actor: Actor,
    campaign_id: Any,
    date_from: Any = None,
    date_to: Any = None,
    gateways: list[str] | None = None,
    granularity: str = "hour",
) -> dict[str, Any]:
    campaign = _campaign(actor, campaign_id)
    scope = _Scope.read(date_from, date_to, gateways, granularity)
    start, end, gateway_ids, gateway_codes = scope.start, scope.end, scope.gateway_ids, scope.gateway_codes
    states, reasons, split, cost, trend = scope.message_figures(
        ReportMessageBucket.objects.filter(campaign_id=campaign.pk)
    )
    clicks_qs = _in_range(ReportClickBucket.objects.filter(campaign_id=campaign.pk), start, end)
    human = clicks_qs.exclude(device_class=DeviceClass.BOT)
    click_totals = human.aggregate(n=Sum("clicks"), u=Sum("unique_clicks"))
    bot = clicks_qs.filter(device_class=DeviceClass.BOT).aggregate(n=Sum("clicks"))["n"] or 0
    for r in human.values("hour").annotate(n=Sum("clicks")).order_by():
        trend[_bucket_key(r["hour"], granularity)]["clicks"] += r["n"]
    conv_qs = _in_range(ReportConversion.objects.filter(campaign_id=campaign.pk, claimed=True), start, end)
    for r in conv_qs.values("hour").annotate(n=Count("id")).order_by():
        trend[_bucket_key(r["hour"], granularity)]["conversions"] += r["n"]
    opt_qs = scope.rows(ReportOptOut.objects.filter(campaign_id=campaign.pk))
    opt_outs = opt_qs.count()
    delivered = states.get(MessageState.DELIVERED, 0)
    unique = int(click_totals["u"] or 0)
    conversions = _conversions(campaign.pk, start, end)
    from smsplatform.config_service import platform_config_data

    window = int(platform_config_data()["reporting"]["opt_out_window_hours"])
    return {
        "scope": _scope(campaign, start, end, gateway_ids, gateway_codes, granularity),
        "messages": {
            "total": sum(states.values()),
            "delivered": delivered,
            "failed": states.get(MessageState.FAILED, 0),
            "undelivered": states.get(MessageState.EXPIRED, 0),
            "pending_receipts": sum(states.get(s, 0) for s in PENDING),
            "by_state": dict(states),
            "failed_by_reason": dict(reasons["failed"]),
            "undelivered_by_reason": dict(reasons["expired"]),
        },
        "clicks": {
            "total": int(click_totals["n"] or 0),
            "unique": unique,
            "click_rate": (f"{unique / delivered:.4f}" if delivered else None),
            "click_rate_rule": "unique human clicks / delivered messages",
            "scanner_and_bot_clicks": int(bot),
        },
        "opt_outs": {
            "attributed": opt_outs,
            "rule": f"A STOP reply within {window} h after a message of this campaign to the same phone "
            "(reporting.opt_out_window_hours); the latest such message gets it.",
        },
        "cost": cost,
        "cost_rule": COST_RULE,
        "conversions": conversions,
        "roi": _rois(cost, conversions),
        "by_gateway_country": split,
        "trend": [
            {"bucket": k, **{m: v.get(m, 0) for m in ("delivered", "clicks", "conversions")}}
            for k, v in sorted(trend.items())
        ],
        "attribution": attribution_rules(),
        "data_latency": data_latency(campaign.pk),
        "snapshots": _snapshots_beside(
            campaign.pk, start, end, delivered, states, click_totals, opt_outs, cost, conversions
        ),
    }


# --- automation flows --------------------------------------------------------------------------

FLOW_LIMITS = {
    "clicks": "Not tracked: automation flows send their template's text as is and create no short link "
    "(short links and click tracking belong to campaigns), so a flow has no click figures.",
    "conversions": "Not attributed: conversion attribution (reporting.attribution) credits campaign "
    "messages only; a flow's messages never become a touch, so a flow has no conversion, revenue or ROI "
    "figures yet.",
    "snapshots": "Performance snapshots recorded for flows are not compared here.",
}


def _flow(actor: Actor, flow_id: Any) -> Flow:
    for permission in (VIEW_REPORT, VIEW_FLOW):
        if not actor.has_perm(permission):
            raise permission_denied(permission)
    flow = Flow.objects.filter(pk=flow_id).first() if isinstance(flow_id, int) else None
    if flow is None:
        raise ApplicationError(
            ErrorCode.NOT_FOUND,
            f"No flow {flow_id}.",
            field="flow_id",
            hint="See sms_marketing.automations.list.",
        )
    return flow


def flow_report_get(
    *,
    actor: Actor,
    flow_id: Any,
    date_from: Any = None,
    date_to: Any = None,
    gateways: list[str] | None = None,
    granularity: str = "hour",
) -> dict[str, Any]:
    """An automation flow's report from the flow message aggregates (ReportFlowMessageBucket)."""
    flow = _flow(actor, flow_id)
    scope = _Scope.read(date_from, date_to, gateways, granularity)
    start, end, gateway_codes = scope.start, scope.end, scope.gateway_codes
    states, reasons, split, cost, trend = scope.message_figures(ReportFlowMessageBucket.objects.filter(flow_id=flow.pk))
    opt_qs = scope.rows(ReportOptOut.objects.filter(flow_id=flow.pk))
    opt_outs = opt_qs.count()
    for r in opt_qs.values("hour").annotate(n=Count("id")).order_by():
        trend[_bucket_key(r["hour"], granularity)]["opt_outs"] += r["n"]
    from smsplatform.config_service import platform_config_data

    window = int(platform_config_data()["reporting"]["opt_out_window_hours"])
    return {
        "scope": {
            "flow_id": flow.pk,
            "flow_name": flow.name,
            "flow_state": flow.state,
            "purpose": flow.purpose,
            "date_from": start.isoformat() if start else None,
            "date_to": end.isoformat() if end else None,
            "date_range_note": "No date given: the whole flow." if not (start or end) else "date_to is exclusive.",
            "gateways": gateway_codes or "all",
            "granularity": granularity,
            "bucket_rule": BUCKET_RULE,
            "messages_rule": "The flow's messages: outbound messages without a send batch whose reference is "
            f"automation:{flow.pk}:<enrolment>:<step>, aggregated per block of {FLOW_CHUNK_IDS} message ids.",
            "limits": FLOW_LIMITS,
        },
        "messages": {
            "total": sum(states.values()),
            "delivered": states.get(MessageState.DELIVERED, 0),
            "failed": states.get(MessageState.FAILED, 0),
            "undelivered": states.get(MessageState.EXPIRED, 0),
            "pending_receipts": sum(states.get(s, 0) for s in PENDING),
            "by_state": dict(states),
            "failed_by_reason": dict(reasons["failed"]),
            "undelivered_by_reason": dict(reasons["expired"]),
        },
        "clicks": {"tracked": False, "note": FLOW_LIMITS["clicks"]},
        "opt_outs": {
            "attributed": opt_outs,
            "rule": f"A STOP reply within {window} h after a message of this flow to the same phone "
            "(reporting.opt_out_window_hours); the latest campaign or flow message before it gets it.",
        },
        "cost": cost,
        "cost_rule": FLOW_COST_RULE,
        "conversions": {"attributed": False, "note": FLOW_LIMITS["conversions"]},
        "by_gateway_country": split,
        "trend": [
            {"bucket": k, **{m: v.get(m, 0) for m in ("delivered", "opt_outs")}} for k, v in sorted(trend.items())
        ],
        "attribution": {"flows": FLOW_LIMITS["conversions"]},
        "data_latency": flow_data_latency(flow.pk),
    }


def report_get(*, actor: Actor, campaign_id: Any = None, flow_id: Any = None, **kwargs: Any) -> dict[str, Any]:
    """campaign_reports.get: a campaign's report, or an automation flow's; exactly one of the two."""
    if (campaign_id is None) == (flow_id is None):
        both = campaign_id is not None
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give campaign_id or flow_id, not both." if both else "Give campaign_id or flow_id.",
            field="flow_id" if both else "campaign_id",
            hint="campaign_id for a campaign (sms_marketing.campaigns.list), flow_id for an automation flow "
            "(sms_marketing.automations.list); exactly one of them.",
        )
    if flow_id is not None:
        return flow_report_get(actor=actor, flow_id=flow_id, **kwargs)
    return campaign_report_get(actor=actor, campaign_id=campaign_id, **kwargs)


def _snapshots_beside(
    campaign_id: int,
    start: datetime | None,
    end: datetime | None,
    delivered: int,
    states: dict[str, int],
    click_totals: dict[str, Any],
    opt_outs: int,
    cost: dict[str, Any],
    conversions: dict[str, Any],
) -> list[dict[str, Any]]:
    """Recorded snapshots (sms_marketing.performance_snapshot.record) overlapping the report's
    range, each beside this report's computed figures with the difference. A snapshot never
    changes a computed figure; the comparison is with this report's scope (its dates and
    gateways), in the snapshot's currency for cost and revenue."""
    from reporting.snapshot_selectors import snapshot_differences, snapshots_for

    rows = snapshots_for(
        campaign_id=campaign_id,
        date_from=start.date() if start else None,
        date_to=end.date() if end else None,
    )
    out = []
    for snapshot in rows:
        currency = snapshot.get("currency") or "HKD"
        computed = {
            "sent": sum(states.values()),
            "delivered": delivered,
            "failed": states.get(MessageState.FAILED, 0) + states.get(MessageState.EXPIRED, 0),
            "clicks": int(click_totals["n"] or 0),
            "unique_clicks": int(click_totals["u"] or 0),
            "opt_outs": opt_outs,
            "conversions": conversions["total"],
            "cost": cost.get(currency, {}).get("for_roi"),
            "revenue": conversions["by_currency"].get(currency, {}).get("net_revenue"),
        }
        out.append(
            {
                **snapshot,
                "differences": snapshot_differences(snapshot, computed),
                "compared_with": "this report's scope (its date range and gateways); cost as billed "
                "(queued at estimate), revenue net of refunds, in the snapshot's currency",
            }
        )
    return out


# --- link clicks -------------------------------------------------------------------------------


def _links(actor: Actor, campaign_id: Any, link_id: Any) -> tuple[Campaign, list[ShortLink]]:
    if campaign_id is None and link_id is None:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give campaign_id or link_id.",
            field="campaign_id",
            hint="See sms_marketing.campaigns.list (a campaign names its short link).",
        )
    if link_id is not None:
        link = ShortLink.objects.filter(pk=link_id).first()
        if link is None or link.campaign_id is None or (campaign_id is not None and link.campaign_id != campaign_id):
            if not actor.has_perm(VIEW_REPORT):
                raise permission_denied(VIEW_REPORT)
            raise ApplicationError(
                ErrorCode.NOT_FOUND,
                f"No campaign link {link_id}.",
                field="link_id",
                hint="Only a campaign's short link has click reports.",
            )
        campaign = _campaign(actor, int(link.campaign_id))
        return campaign, [link]
    campaign = _campaign(actor, campaign_id)
    links = list(ShortLink.objects.filter(campaign_id=campaign.pk).order_by("pk"))
    return campaign, links


def link_clicks_list(
    *,
    actor: Actor,
    campaign_id: Any = None,
    link_id: Any = None,
    date_from: Any = None,
    date_to: Any = None,
    granularity: str = "day",
    person_level: bool = False,
    limit: int = 50,
    before_id: int | None = None,
) -> dict[str, Any]:
    campaign, links = _links(actor, campaign_id, link_id)
    if granularity not in GRANULARITIES:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, "granularity must be hour or day.", field="granularity", hint="Default day."
        )
    if person_level and not actor.has_perm(VIEW_PERSON_CLICKS):
        raise permission_denied(VIEW_PERSON_CLICKS)
    start, end = _range(date_from, date_to)
    ids = [link.pk for link in links]
    qs = _in_range(ReportClickBucket.objects.filter(link_id__in=ids), start, end)
    per_link: dict[int, dict[str, Any]] = {
        link.pk: {
            "link_id": link.pk,
            "short_url": link.short_url,
            "landing_host": link.landing_host,
            "utm": link.utm,
            "per_recipient": link.per_recipient,
            "clicks": 0,
            "unique_clicks": 0,
            "scanner_and_bot_clicks": 0,
            "by_device": {},
            "series": [],
        }
        for link in links
    }
    series: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for r in qs.values("link_id", "hour", "device_class").annotate(n=Sum("clicks"), u=Sum("unique_clicks")).order_by():
        row = per_link[r["link_id"]]
        if r["device_class"] == DeviceClass.BOT:
            row["scanner_and_bot_clicks"] += r["n"]
        else:
            row["clicks"] += r["n"]
            row["unique_clicks"] += r["u"]
            row["by_device"][r["device_class"]] = row["by_device"].get(r["device_class"], 0) + r["n"]
            bucket = series[r["link_id"]][_bucket_key(r["hour"], granularity)]
            bucket["clicks"] += r["n"]
            bucket["unique_clicks"] += r["u"]
    conv = _in_range(
        ReportConversion.objects.filter(touch_link_id__in=ids, claimed=True, campaign_id=campaign.pk), start, end
    )
    for r in (
        conv.values("touch_link_id", "kind", "currency")
        .annotate(n=Count("id"), amount=Sum("amount"), refunded=Sum("refunded"))
        .order_by()
    ):
        after = per_link[r["touch_link_id"]].setdefault("conversions_after_click", {"count": 0, "net_revenue": {}})
        after["count"] += r["n"]
        if r["currency"]:
            prev = Decimal(after["net_revenue"].get(r["currency"], "0"))
            after["net_revenue"][r["currency"]] = _money(prev + (r["amount"] or 0) - (r["refunded"] or 0))
    for pk, row in per_link.items():
        row.setdefault("conversions_after_click", {"count": 0, "net_revenue": {}})
        row["series"] = [{"bucket": k, **v} for k, v in sorted(series[pk].items())]
    answer: dict[str, Any] = {
        "scope": {
            "campaign_id": campaign.pk,
            "segment": {"id": campaign.segment_id, "name": campaign.segment.name},
            "date_from": start.isoformat() if start else None,
            "date_to": end.isoformat() if end else None,
            "granularity": granularity,
            "gateways": "all (a click is not tied to a gateway)",
            "date_rule": "Clicks by their time (UTC); conversions by their first event's time.",
        },
        "links": list(per_link.values()),
        "person_level": person_level,
        "rules": {
            "unique": "A recipient's first human click on the link (per-recipient links only).",
            "scanner_and_bot": "Clicks from link scanners, previews and bots (User-Agent rules, HEAD requests "
            "excluded) are counted apart and never attributed.",
            "conversions_after_click": "Conversions credited to this campaign by a click on this link "
            "(sms_marketing.conversion_attribution.get for the rules).",
        },
        "attribution": attribution_rules(),
        "data_latency": data_latency(campaign.pk),
    }
    if person_level:
        answer.update(_person_rows(actor, campaign, links, start, end, limit, before_id))
    return answer


def _person_rows(
    actor: Actor,
    campaign: Campaign,
    links: list[ShortLink],
    start: datetime | None,
    end: datetime | None,
    limit: int,
    before_id: int | None,
) -> dict[str, Any]:
    """Click rows with the contact's masked phone (full only with view_full_phone)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, "limit must be 1-200.", field="limit", hint="Default 50.")
    qs = LinkClick.objects.filter(link_id__in=[link.pk for link in links]).order_by("-id")
    qs = _in_range(qs, start, end, field="clicked_at")
    if before_id:
        qs = qs.filter(id__lt=before_id)
    clicks = list(qs.values("id", "link_id", "clicked_at", "device_class", "recipient_token", "is_unique")[:limit])
    # Tokens -> contacts: the campaign's recipients whose token (md5 of the link's salt and the
    # contact id, as the dispatch wrote it) is among these rows'.
    wanted: dict[int, set[str]] = defaultdict(set)
    for c in clicks:
        if c["recipient_token"]:
            wanted[c["link_id"]].add(c["recipient_token"])
    phone_of: dict[tuple[int, str], tuple[int, str]] = {}
    for link, tokens in wanted.items():
        salt = recipient_token_salt(campaign.pk, link)
        token = Substr(
            MD5(Concat(Value(salt), Cast("contact_id", CharField()), output_field=CharField())),
            1,
            RECIPIENT_TOKEN_LENGTH,
        )
        for contact, phone, tok in (
            OutboundMessage.objects.filter(batch__campaign_id=campaign.pk, contact_id__isnull=False)
            .annotate(tok=token)
            .filter(tok__in=tokens)
            .values_list("contact_id", "destination", "tok")
            .distinct()
        ):
            phone_of[(link, tok)] = (contact, phone)
    full = actor.has_perm(FULL_PHONE_PERMISSION)
    contacts = {v[0] for v in phone_of.values()}
    converted = dict(
        ReportConversion.objects.filter(contact_id__in=contacts, campaign_id=campaign.pk, claimed=True)
        .values("contact_id")
        .annotate(n=Count("id"))
        .values_list("contact_id", "n")
    )
    rows = []
    for c in clicks:
        who = phone_of.get((c["link_id"], c["recipient_token"] or ""))
        rows.append(
            {
                "click_id": c["id"],
                "link_id": c["link_id"],
                "clicked_at": c["clicked_at"].isoformat(),
                "device_class": c["device_class"],
                "scanner_or_bot": c["device_class"] == DeviceClass.BOT,
                "unique": c["is_unique"],
                "contact_id": who[0] if who else None,
                "phone": (who[1] if full else phone_mask(who[1])) if who else None,
                "conversions": converted.get(who[0], 0) if who else 0,
            }
        )
    return {
        "clicks": rows,
        "phones_masked": not full,
        "next_before_id": rows[-1]["click_id"] if len(rows) == limit else None,
    }


# --- conversion attribution ---------------------------------------------------------------------


def conversion_attribution_get(
    *, actor: Actor, campaign_id: Any, date_from: Any = None, date_to: Any = None
) -> dict[str, Any]:
    campaign = _campaign(actor, campaign_id)
    start, end = _range(date_from, date_to)
    claimed = _in_range(ReportConversion.objects.filter(campaign_id=campaign.pk, claimed=True), start, end)
    conversions = _conversions(campaign.pk, start, end)
    by_rule = dict(claimed.values("rule").annotate(n=Count("id")).values_list("rule", "n").order_by())
    paths = [
        {"path": r["path"], "conversions": r["n"]}
        for r in claimed.values("path").annotate(n=Count("id")).order_by("-n", "path")[:10]
    ]
    lost = _in_range(ReportConversion.objects.filter(sms_campaign_id=campaign.pk, claimed=False), start, end)
    conflicts_lost = list(
        lost.values("conflict_channel").annotate(n=Count("id"), amount=Sum("amount")).order_by("conflict_channel")
    )
    conflicts_claimed = list(
        claimed.exclude(conflict_channel="")
        .values("conflict_channel")
        .annotate(n=Count("id"))
        .order_by("conflict_channel")
    )
    shared = 0
    other_campaigns: dict[int, int] = defaultdict(int)
    for others in claimed.exclude(other_campaigns=[]).values_list("other_campaigns", flat=True):
        shared += 1
        for pk in others or []:
            other_campaigns[int(pk)] += 1
    elsewhere = _in_range(
        ReportConversion.objects.filter(claimed=True).exclude(campaign_id=campaign.pk).exclude(other_campaigns=[]),
        start,
        end,
    )
    if _json_contains():
        credited_elsewhere = elsewhere.filter(other_campaigns__contains=[campaign.pk]).count()
    else:  # SQLite: no JSON containment; the rows touched by several campaigns are few
        credited_elsewhere = sum(campaign.pk in (o or []) for o in elsewhere.values_list("other_campaigns", flat=True))
    limits: dict[str, int] = defaultdict(int)
    for values in (
        _in_range(
            ReportConversion.objects.filter(Q(campaign_id=campaign.pk) | Q(sms_campaign_id=campaign.pk)), start, end
        )
        .exclude(limits=[])
        .values_list("limits", flat=True)
    ):
        for v in values or []:
            limits[v] += 1
    cost = _cost(campaign.pk, start, end, None)
    return {
        "scope": {
            "campaign_id": campaign.pk,
            "campaign_name": campaign.name,
            "date_from": start.isoformat() if start else None,
            "date_to": end.isoformat() if end else None,
            "date_rule": "Conversions by the time of their first event (UTC).",
            "gateways": "all (cost: every gateway of the campaign)",
        },
        "orders": conversions["orders"],
        "bookings": conversions["bookings"],
        "payments": conversions["payments"],
        "revenue": conversions["by_currency"],
        "refund_rule": "Refunds (order_refunded) are deducted from the order they refund, whenever they arrive.",
        "cost": cost,
        "cost_rule": COST_RULE,
        "roi": _rois(cost, conversions),
        "by_rule": by_rule,
        "conversion_paths": paths,
        "channel_conflicts": {
            "not_claimed": [
                {"channel": r["conflict_channel"], "conversions": r["n"], "revenue": _money(r["amount"])}
                for r in conflicts_lost
            ],
            "claimed_with_earlier_other_channel_touch": [
                {"channel": r["conflict_channel"], "conversions": r["n"]} for r in conflicts_claimed
            ],
        },
        "shared_with_other_campaigns": {
            "conversions_also_touched_by_others": shared,
            "other_campaigns": [{"campaign_id": k, "conversions": v} for k, v in sorted(other_campaigns.items())],
            "credited_to_others_after_touch_here": credited_elsewhere,
        },
        "tracking_limits": {"met": dict(limits), "known": tracking_limits()},
        "attribution": attribution_rules(),
        "data_latency": data_latency(campaign.pk),
    }


def _json_contains() -> bool:
    from django.db import connection

    return bool(connection.features.supports_json_field_contains)


def campaign_roi_figures(campaign_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Attributed revenue (net of refunds) and cost per campaign, from the kept aggregates, for the
    poor-ROI alert (reporting.alerts): the main currency of each campaign's cost. Two grouped
    queries whatever the number of campaigns."""
    cost: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    rows = (
        ReportMessageBucket.objects.filter(campaign_id__in=campaign_ids)
        .values("campaign_id", "currency", "state")
        .annotate(billed=Sum("cost_billed"), est=Sum("cost_estimated"))
        .order_by()
    )
    for r in rows:
        queued = (r["est"] or 0) if r["state"] == MessageState.QUEUED else 0
        cost[r["campaign_id"]][r["currency"]] += (r["billed"] or 0) + queued
    revenue: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    conversions = (
        ReportConversion.objects.filter(campaign_id__in=campaign_ids, claimed=True)
        .values("campaign_id", "currency")
        .annotate(amount=Sum("amount"), refunded=Sum("refunded"))
        .order_by()
    )
    for c in conversions:
        if c["campaign_id"] is not None:
            revenue[c["campaign_id"]][c["currency"]] += (c["amount"] or 0) - (c["refunded"] or 0)
    out: dict[int, dict[str, Any]] = {}
    for cid, by_currency in cost.items():
        currency, spent = max(by_currency.items(), key=lambda kv: kv[1])
        out[cid] = {"revenue": revenue[cid].get(currency, Decimal(0)), "cost": spent, "currency": currency}
    return out
