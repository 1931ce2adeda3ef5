"""The approval page of a campaign request, in human terms (registered in ``apps.py``).

An approver must see what they approve: the campaign (linked to its review page), the copy as it
will appear, sender ID, gateway, link target, schedule in its time zone, recipients and cost with
their currency. Built from the request's frozen payload and facts and the campaign selectors;
figures are shown as frozen at request time and as they stand now.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from campaigns.models import CampaignState
from campaigns.selectors import campaign_get, cost_preview
from compliance.models import ActionRequest, ActionType, RequestState
from compliance.presenters import payload_presentation
from smsplatform.admin_utils import amounts_text, error_text, readable
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError

CAMPAIGN_ACTIONS = (
    ActionType.CAMPAIGN_SEND,
    ActionType.CAMPAIGN_SCHEDULE,
    ActionType.CAMPAIGN_UPDATE,
    ActionType.CAMPAIGN_CANCEL,
)

VERBS: dict[str, str] = {
    ActionType.CAMPAIGN_SEND: "Send now",
    ActionType.CAMPAIGN_SCHEDULE: "Schedule",
    ActionType.CAMPAIGN_UPDATE: "Change",
    ActionType.CAMPAIGN_CANCEL: "Cancel or stop",
}


def _local(iso: str | None, time_zone: str) -> str | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%d %H:%M (%a)")


def _frozen_cost(facts: dict[str, Any], estimate: dict[str, Any]) -> str:
    """The cost the policy saw (a bare total in the facts) with its currency: the campaign's estimate
    names it, and when it is in one currency the two are the same money."""
    cost, by_currency = facts.get("cost"), estimate.get("cost") or {}
    if cost in (None, ""):
        return "—"
    if isinstance(by_currency, dict) and len(by_currency) == 1:
        return amounts_text(cost, next(iter(by_currency)))
    try:
        total = sum((Decimal(str(v)) for v in by_currency.values()), Decimal(0)) if by_currency else None
    except InvalidOperation:
        total = None
    if total is not None and total == Decimal(str(cost)):
        return f"{amounts_text(by_currency)} (total {cost})"
    return str(cost)


def campaign_request_presentation(request: ActionRequest, actor: Actor) -> SafeString:
    payload, facts = request.payload or {}, request.facts or {}
    campaign_id = payload.get("campaign_id")
    if campaign_id is None:
        return payload_presentation(request, actor)
    detail = campaign_get(actor=actor, campaign_id=campaign_id)
    preview, live_error = None, None
    if request.state == RequestState.PENDING:
        try:
            preview = cost_preview(actor=actor, campaign_id=campaign_id)
        except ApplicationError as exc:
            live_error = error_text(exc)
    schedule = dict(detail["schedule"])
    requested_schedule = payload.get("schedule") or {}
    time_zone = requested_schedule.get("time_zone") or schedule["time_zone"]
    send_at = facts.get("send_at") or requested_schedule.get("send_at")
    parts = list(preview["message"]["parts"]) if preview else []
    changes = payload.get("changes") or {}
    estimate = detail.get("estimate_detail") or {}
    pending = request.state == RequestState.PENDING
    # The version the request covers; a later change makes the approval fail its re-check.
    token = payload.get("base_version_token")
    context = {
        "request": request,
        "verb": VERBS.get(request.action, request.get_action_display()),
        "detail": detail,
        "state_label": CampaignState(detail["state"]).label.lower(),
        "campaign_url": reverse("admin:campaigns_campaign_change", args=[campaign_id]),
        "changed_since": pending and token is not None and token != detail["base_version_token"],
        "preview": preview,
        "live_error": live_error,
        "parts": [{"number": i, "text": text, "characters": len(text)} for i, text in enumerate(parts, 1)],
        "is_send": request.action == ActionType.CAMPAIGN_SEND,
        "is_schedule": request.action == ActionType.CAMPAIGN_SCHEDULE,
        "is_cancel": request.action == ActionType.CAMPAIGN_CANCEL,
        "is_update": request.action == ActionType.CAMPAIGN_UPDATE,
        "send_at_local": _local(send_at, time_zone),
        "time_zone": time_zone,
        "batch_size": requested_schedule.get("batch_size") or schedule["batch_size"],
        "batch_interval_seconds": requested_schedule.get("batch_interval_seconds")
        or schedule["batch_interval_seconds"],
        "recipients": facts.get("recipients"),
        "frozen_cost": _frozen_cost(facts, estimate),
        "live_cost": amounts_text(preview["estimated_cost"]) if preview else None,
        "gateways": sorted({row["gateway"] for row in estimate.get("by_country", []) if row.get("gateway")}),
        "changes": readable(changes) if changes else None,
        "other_facts": readable(
            {k: v for k, v in facts.items() if k not in {"recipients", "cost", "send_at", "segments_per_message"}}
        ),
    }
    # The template engine's output is already safe (autoescaped): format_html keeps it as it is.
    return format_html("{}", render_to_string("admin/campaigns/action_request_review.html", context))
