"""Campaign pages: the list with states and progress, a campaign's detail (batches, failures,
the live progress bar), the retry preview and the resend."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from campaigns.access import VIEW
from campaigns.models import CampaignState
from campaigns.resend_rules import RESEND
from campaigns.retries import retry_preview
from campaigns.selectors import (
    VIEW_BATCHES,
    campaign_get,
    campaign_progress_get,
    campaigns_list,
    delivery_status_get,
    send_batches_list,
)
from campaigns.services import failed_messages_resend
from gateways.models import MessageState
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import new_key, staff_actor, staff_view

FAILURES_PAGE = 50  # failed messages per page, newest first (delivery_status.get, keyset by id)
BATCHES_PAGE = 50  # batches per page, by number (send_batches.list, keyset by number)

# States in which the numbers still move: the progress bar keeps polling.
LIVE_STATES = (CampaignState.APPROVED, CampaignState.SCHEDULED, CampaignState.SENDING)
BAR_STATES = ("delivered", "submitted", "submitting", "queued", "failed", "expired", "unknown")
POLL_SECONDS = 2


def _bar(progress: dict[str, int] | None) -> dict[str, Any]:
    """The progress bar's parts: each message state's share of the total, in a fixed order."""
    progress = progress or {}
    total = sum(progress.get(s, 0) for s in MessageState.values)
    parts = [
        {"state": s, "count": progress.get(s, 0), "percent": round(100 * progress.get(s, 0) / total, 2) if total else 0}
        for s in BAR_STATES
        if s in MessageState.values
    ]
    return {"total": total, "parts": parts, "by_state": {p["state"]: p["count"] for p in parts}}


@staff_view(VIEW)
def campaign_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state") or None
    error = None
    try:
        listing = campaigns_list(actor=staff_actor(request), state=state, limit=100)
    except ApplicationError as exc:
        error, listing = exc.as_dict(), {"campaigns": [], "states": {s.value: s.label for s in CampaignState}}
    rows = [{**c, "bar": _bar(c.get("sending")), "live": c["state"] in LIVE_STATES} for c in listing["campaigns"]]
    context = {"rows": rows, "states": listing["states"], "state": state or "", "error": error}
    return render(request, "staff/campaigns/list.html", context)


@staff_view(VIEW)
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign (campaigns.get, whose progress feeds the bar); its batches and failures arrive
    as a fragment of their own (they aggregate every message of the campaign)."""
    actor = staff_actor(request)
    try:
        campaign = campaign_get(actor=actor, campaign_id=campaign_id)
    except ApplicationError as exc:
        return render(request, "staff/campaigns/missing.html", {"error": exc.as_dict()}, status=exc.http_status)
    progress = {
        "campaign_id": campaign["campaign_id"],
        "name": campaign["name"],
        "state": campaign["state"],
        "state_label": CampaignState(campaign["state"]).label,
        "progress": campaign["sending"] or {},
    }
    context = {
        "c": campaign,
        "progress": _progress_context(progress),
        "may_batches": bool(campaign["batches"]) and actor.has_perm(VIEW_BATCHES),
    }
    return render(request, "staff/campaigns/detail.html", context)


@staff_view(VIEW_BATCHES)
def batches_part(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """send_batches.list and the failed messages (delivery_status.get, phones masked unless permitted)."""
    actor = staff_actor(request)
    # Keyset paging, each list on its own: the last failure id, the last batch number of the page before.
    raw, raw_after = request.GET.get("before_id", ""), request.GET.get("after_number", "")
    before_id = int(raw) if raw.isdigit() else None
    after_number = int(raw_after) if raw_after.isdigit() else None
    try:
        batches = send_batches_list(actor=actor, campaign_id=campaign_id, limit=BATCHES_PAGE, after_number=after_number)
        failures = delivery_status_get(
            actor=actor, campaign_id=campaign_id, state="failed", limit=FAILURES_PAGE, before_id=before_id
        )
    except ApplicationError as exc:
        return render(request, "staff/campaigns/missing.html", {"error": exc.as_dict()}, status=exc.http_status)
    context = {
        "batches": batches,
        "failures": failures,
        "campaign_id": campaign_id,
        "before_id": before_id,
        "after_number": after_number,
        "may_resend": actor.has_perm(RESEND),
    }
    return render(request, "staff/campaigns/_batches.html", context)


def _progress_context(progress: dict[str, Any]) -> dict[str, Any]:
    return {
        **progress,
        "bar": _bar(progress["progress"]),
        "live": progress["state"] in LIVE_STATES,
        "poll_seconds": POLL_SECONDS,
    }


@staff_view(VIEW)
def progress_part(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The progress bar alone, polled while the campaign sends; it stops polling once the state is final."""
    try:
        progress = campaign_progress_get(actor=staff_actor(request), campaign_id=campaign_id)
    except ApplicationError as exc:
        return render(request, "staff/campaigns/missing.html", {"error": exc.as_dict()}, status=exc.http_status)
    return render(request, "staff/campaigns/_progress.html", {"progress": _progress_context(progress)})


@staff_view(RESEND)
def retry_preview_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """GET: failed_messages.retry_preview (who would get the message again, who not and why, the cost).
    POST: failed_messages.resend with that preview's id only; the governance answer is shown as it is."""
    actor = staff_actor(request)
    context: dict[str, Any] = {"campaign_id": campaign_id}
    if request.method == "POST":
        try:
            context["answer"] = failed_messages_resend(
                actor=actor,
                retry_preview_id=request.POST.get("retry_preview_id", ""),
                idempotency_key=request.POST.get("key", "") or new_key("resend"),
                reason=request.POST.get("reason", ""),
            )
        except ApplicationError as exc:
            context["error"] = exc.as_dict()
        return render(request, "staff/campaigns/retry.html", context, status=400 if "error" in context else 200)
    batch_id = request.GET.get("batch_id")
    try:
        context["preview"] = retry_preview(
            actor=actor, campaign_id=campaign_id, batch_id=int(batch_id) if batch_id and batch_id.isdigit() else None
        )
    except ApplicationError as exc:
        context["error"] = exc.as_dict()
    context["key"] = new_key("resend")
    return render(request, "staff/campaigns/retry.html", context)
