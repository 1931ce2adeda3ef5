"""The campaign composer: a guided form whose live parts (segment count, copy counter, short link,
schedule warnings) are htmx fragments, each calling the same service or selector as its MCP tool.

The submit creates the segment from its preview when an audience was picked (segments.create),
the draft (campaigns.create_draft), then asks to send or schedule it (campaigns.send_approved /
campaigns.schedule): each answer is shown as the service gave it, executed or held for approval.
The form carries its idempotency key from GET to POST, so submitting twice writes once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.quiet_hours import quiet_hours_notices
from campaigns.selectors import cost_preview_draft
from campaigns.services import ADD, campaign_create_draft, campaign_schedule, campaign_send_approved
from compliance.selectors import held_request_brief
from contacts.selectors import audiences_visible, segments_pick_list
from contacts.services import segment_create, segment_preview
from gateways.selectors import gateways_list, sender_ids_list
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view
from templates.copy_fit import copy_fit_preview
from templates.selectors import templates_list
from templates.services import short_link_create
from templates.short_links.preview import short_link_preview

# The composer's inputs, named as the services name their fields (an error's field finds its input).
FIELDS = (
    "name",
    "pick",
    "segment_name",
    "segment_preview_id",
    "text",
    "brand",
    "template_version_id",
    "max_segments",
    "url",
    "short_link_preview_id",
    "short_link_id",
    "sender_id",
    "gateway",
    "send_mode",
    "send_at",
    "time_zone",
    "budget",
    "send_goal",
    "reason",
)
# Service fields shown by another input.
ALIASES = {
    "segment_id": "pick",
    "criteria": "pick",
    "segment_preview_id": "pick",
    "short_link_preview_id": "url",
    "body": "text",
    "schedule": "send_at",
    "spec": "text",
    "utm": "url",
}
TIME_ZONES = ("Asia/Hong_Kong", "Asia/Taipei", "Asia/Macau", "Asia/Singapore", "Asia/Shanghai", "UTC")
SEND_MODES = ("draft", "send", "schedule")


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def _values(data: QueryDict) -> dict[str, str]:
    return {name: data.get(name, "") for name in FIELDS}


def _pick(value: str | None) -> tuple[int | None, int | None]:
    """The audience select's value: ``segment:<id>`` (a saved segment) or ``audience:<id>``."""
    kind, _, number = (value or "").partition(":")
    if kind == "segment":
        return _int(number), None
    if kind == "audience":
        return None, _int(number)
    return None, None


def _options(request: HttpRequest) -> dict[str, Any]:
    """What the selects offer: saved segments, audiences, templates' current versions, sender IDs, gateways."""
    actor = staff_actor(request)
    options: dict[str, Any] = {"time_zones": TIME_ZONES}
    try:
        options["segments"] = segments_pick_list(actor=actor, limit=100)
    except ApplicationError:
        options["segments"] = []
    try:
        options["audiences"] = list(audiences_visible(actor).order_by("name").values("id", "name")[:200])
    except ApplicationError:
        options["audiences"] = []
    for segment in options["segments"]:
        segment["pick"] = f"segment:{segment['segment_id']}"
    for audience in options["audiences"]:
        audience["pick"] = f"audience:{audience['id']}"
    options["templates"] = templates_list(purpose="marketing", limit=100)["templates"]
    for version in options["templates"]:
        version["pick"] = str(version.get("version_id", ""))
    options["sender_ids"] = [s for s in sender_ids_list() if s.get("status") == "registered"]
    options["gateways"] = list(gateways_list(include_disabled=False))
    return options


def _render_compose(
    request: HttpRequest, values: dict[str, str], errors: FieldErrors | None = None, status: int = 200
) -> HttpResponse:
    context = {
        **_options(request),
        "v": values,
        "errors": errors or FieldErrors(FIELDS),
        "send_modes": SEND_MODES,
    }
    return render(request, "staff/campaigns/compose.html", context, status=status)


@staff_view(ADD)
def compose(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        values = dict.fromkeys(FIELDS, "")
        values.update(send_mode="send", time_zone="Asia/Hong_Kong", key=new_key("compose"))
        if _int(request.GET.get("segment_id")):
            values["pick"] = f"segment:{request.GET['segment_id']}"
        return _render_compose(request, values)
    return _submit(request)


# --- the submit ----------------------------------------------------------------------------------------


def _draft_data(values: dict[str, str], segment_id: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": values["name"], "sender_id": values["sender_id"]}
    if segment_id is not None:
        data["segment_id"] = segment_id
    version_id = _int(values["template_version_id"])
    if version_id is not None:
        data["template_version_id"] = version_id
    else:
        data["text"] = values["text"]
        if values["brand"].strip():
            data["brand"] = values["brand"]
    if values["max_segments"].strip():
        data["max_segments"] = _int(values["max_segments"]) or 0
    link_id = _int(values["short_link_id"])
    if link_id is not None:
        data["short_link_id"] = link_id
    if values["gateway"].strip():
        data["gateway"] = values["gateway"].strip()
    if values["send_goal"].strip():
        data["send_goal"] = values["send_goal"]
    if values["budget"].strip():
        data["budget"] = values["budget"].strip()
    if values["time_zone"].strip():
        data["time_zone"] = values["time_zone"].strip()
    return data


def _send_at(values: dict[str, str]) -> str | None:
    """The datetime-local input (no offset) as ISO 8601: the services apply time_zone to it."""
    raw = values["send_at"].strip()
    return raw or None


def _submit(request: HttpRequest) -> HttpResponse:
    actor = staff_actor(request)
    values = _values(request.POST)
    values["key"] = request.POST.get("key", "") or new_key("compose")
    key = values["key"]
    errors = FieldErrors(FIELDS)
    mode = values["send_mode"] if values["send_mode"] in SEND_MODES else "draft"
    steps: list[dict[str, Any]] = []
    try:
        segment_id, audience_id = _pick(values["pick"])
        if segment_id is None and audience_id is not None:
            made = segment_create(
                actor=actor,
                segment_preview_id=values["segment_preview_id"].strip(),
                name=values["segment_name"].strip() or values["name"].strip(),
                idempotency_key=f"{key}-segment",
                reason=values["reason"],
            )
            steps.append({"step": "segment", "answer": made, "request": held_request_brief(actor=actor, answer=made)})
            if made["status"] != "executed":
                return _render_result(request, steps)
            segment_id = int(made["result"]["segment_id"])
        data = _draft_data(values, segment_id)
        if mode == "draft" and _send_at(values):
            data["send_at"] = _send_at(values)
        created = campaign_create_draft(
            actor=actor, data=data, idempotency_key=f"{key}-create", reason=values["reason"]
        )
        steps.append({"step": "create", "answer": created, "request": held_request_brief(actor=actor, answer=created)})
        if created["status"] != "executed" or mode == "draft":
            return _render_result(request, steps)
        result = created["result"]
        if mode == "schedule":
            answer = campaign_schedule(
                actor=actor,
                campaign_id=result["campaign_id"],
                base_version_token=result["base_version_token"],
                schedule={"send_at": _send_at(values), "time_zone": values["time_zone"] or "Asia/Hong_Kong"},
                idempotency_key=f"{key}-schedule",
                reason=values["reason"],
            )
        else:
            answer = campaign_send_approved(
                actor=actor,
                campaign_id=result["campaign_id"],
                base_version_token=result["base_version_token"],
                idempotency_key=f"{key}-send",
                reason=values["reason"],
            )
        steps.append({"step": mode, "answer": answer, "request": held_request_brief(actor=actor, answer=answer)})
        return _render_result(request, steps)
    except ApplicationError as error:
        if steps:
            # The draft exists: show what was done, and the refusal of the next step beside it.
            steps.append({"step": mode, "error": error.as_dict()})
            return _render_result(request, steps, status=400)
        errors.add(error, aliases=ALIASES)
        return _render_compose(request, values, errors, status=400)


def _render_result(request: HttpRequest, steps: list[dict[str, Any]], status: int = 200) -> HttpResponse:
    campaign_id = None
    for step in steps:
        answer = step.get("answer") or {}
        result = answer.get("result") or {}
        campaign_id = result.get("campaign_id", campaign_id)
    return render(
        request, "staff/campaigns/compose_result.html", {"steps": steps, "campaign_id": campaign_id}, status=status
    )


# --- the live parts (htmx fragments) -------------------------------------------------------------------


def _fragment_error(request: HttpRequest, template: str, error: ApplicationError, **extra: Any) -> HttpResponse:
    errors = FieldErrors(FIELDS)
    errors.add(error, aliases=ALIASES)
    return render(request, template, {"error": error.as_dict(), "errors": errors, **extra})


@staff_view(ADD)
def segment_preview_part(request: HttpRequest) -> HttpResponse:
    """segments.preview of the picked segment's criteria or of the picked audience: live counts and
    every exclusion by reason. A picked audience's preview id goes with the form to segments.create."""
    actor = staff_actor(request)
    data = request.POST if request.method == "POST" else request.GET
    segment_id, audience_id = _pick(data.get("pick"))
    template = "staff/campaigns/_segment.html"
    if segment_id is None and audience_id is None:
        return render(request, template, {"empty": True})
    try:
        if segment_id is not None:
            saved = {s["segment_id"]: s for s in segments_pick_list(actor=actor, limit=500)}.get(segment_id)
            if saved is None:
                return render(request, template, {"missing": True})
            criteria = saved["criteria"]
        else:
            criteria = {"audiences": [audience_id]}
        preview = segment_preview(actor=actor, criteria=criteria)
    except ApplicationError as error:
        return _fragment_error(request, template, error)
    exclusions = [
        {"reason": reason, "count": preview["exclusions"].get(reason, 0)}
        for reason in preview.get("exclusion_order") or sorted(preview["exclusions"])
    ]
    response = render(
        request,
        template,
        {"p": preview, "exclusions": exclusions, "saved_segment": segment_id is not None},
    )
    response["HX-Trigger-After-Settle"] = "staff:segment-changed"
    return response


@staff_view(ADD)
def fit_part(request: HttpRequest) -> HttpResponse:
    """copy.fit_preview of the copy as typed (or the picked template version): characters, encoding,
    parts, what forces UCS-2, the longest-variable case and the cost for the previewed recipients."""
    data = request.POST
    template = "staff/campaigns/_fit.html"
    version_id = _int(data.get("template_version_id"))
    text = data.get("text", "")
    if version_id is None and not text:
        return render(request, template, {"empty": True})
    countries = sorted({c.upper() for c in data.getlist("country") if len(c) == 2 and c.isalpha()}) or None
    recipients = _int(data.get("sendable")) or 1
    args: dict[str, Any] = {"recipients": max(1, min(recipients, 10_000_000)), "countries": countries}
    if version_id is not None:
        args["template_version_id"] = version_id
    else:
        args["text"] = text
        brand = data.get("brand", "").strip()
        if brand:
            args["brand"] = brand
        max_segments = _int(data.get("max_segments"))
        if max_segments:
            args["max_segments"] = max_segments
    try:
        fit = copy_fit_preview(**args)
    except ApplicationError as error:
        return _fragment_error(request, template, error)
    return render(request, template, {"fit": fit, "recipients_known": bool(_int(data.get("sendable")))})


@staff_view(ADD)
def cost_part(request: HttpRequest) -> HttpResponse:
    """cost_preview of the draft as the form stands (the same figures as sms_marketing.cost_preview,
    evaluated as campaigns.create_draft evaluates the draft; writes nothing): per country, exclusions,
    the short link's effect, budget, quota and quiet hours, before the submit."""
    values = _values(request.POST)
    template = "staff/campaigns/_cost.html"
    segment_id, audience_id = _pick(values["pick"])
    if segment_id is None:
        return render(request, template, {"needs_segment": audience_id is not None, "empty": audience_id is None})
    try:
        preview = cost_preview_draft(actor=staff_actor(request), data=_draft_data(values, segment_id))
    except ApplicationError as error:
        return _fragment_error(request, template, error)
    exclusions = [
        {"reason": reason, "count": preview["exclusions"].get(reason, 0)}
        for reason in preview.get("exclusion_order") or sorted(preview["exclusions"])
        if preview["exclusions"].get(reason)
    ]
    return render(request, template, {"c": preview, "exclusions": exclusions})


def _utm(data: QueryDict) -> dict[str, str]:
    return {
        k: str(data.get(k) or "").strip()
        for k in ("utm_source", "utm_medium", "utm_campaign")
        if str(data.get(k) or "").strip()
    }


@staff_view("sms_templates.preview_shortlink")
def link_preview_part(request: HttpRequest) -> HttpResponse:
    """short_links.preview: what the link will be and where it goes; creating it takes only this preview's id."""
    data = request.POST
    template = "staff/campaigns/_link.html"
    try:
        preview = short_link_preview(
            actor=staff_actor(request),
            url=data.get("url", "").strip(),
            utm=_utm(data) or None,
            per_recipient=data.get("per_recipient") == "on",
        )
    except ApplicationError as error:
        return _fragment_error(request, template, error)
    return render(request, template, {"preview": preview})


@staff_view("sms_templates.add_shortlink")
def link_create_part(request: HttpRequest) -> HttpResponse:
    """short_links.create from the preview id; on success the copy gets {{link}} where the cursor is."""
    data = request.POST
    template = "staff/campaigns/_link.html"
    key = data.get("key", "") or new_key("compose")
    preview_id = data.get("short_link_preview_id", "").strip()
    try:
        answer = short_link_create(
            actor=staff_actor(request),
            short_link_preview_id=preview_id,
            idempotency_key=f"{key}-link-{preview_id}",
            reason=data.get("reason", ""),
        )
    except ApplicationError as error:
        return _fragment_error(request, template, error)
    # The fragment of a created link carries data-insert-text: static/staff/app.js puts {{link}} into the copy.
    return render(
        request,
        template,
        {
            "answer": answer,
            "request_state": held_request_brief(actor=staff_actor(request), answer=answer),
        },
    )


@staff_view(ADD)
def schedule_part(request: HttpRequest) -> HttpResponse:
    """Quiet-hour warnings for the picked time (or now) in the previewed countries."""
    data = request.POST
    template = "staff/campaigns/_schedule.html"
    countries = sorted({c.upper() for c in data.getlist("country") if len(c) == 2 and c.isalpha()})
    mode = data.get("send_mode", "send")
    at: datetime | None = None
    zone_name = data.get("time_zone", "") or "Asia/Hong_Kong"
    if zone_name not in available_timezones():
        return render(request, template, {"bad_zone": zone_name})
    if mode == "schedule":
        parsed = parse_datetime(data.get("send_at", "").strip() or "")
        if parsed is None:
            return render(request, template, {"need_time": True, "countries": countries})
        at = parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=ZoneInfo(zone_name))
        if at <= timezone.now():
            return render(request, template, {"past": True, "countries": countries})
    notices = quiet_hours_notices(countries, at) if countries else []
    return render(request, template, {"notices": notices, "countries": countries, "mode": mode, "at": at})
