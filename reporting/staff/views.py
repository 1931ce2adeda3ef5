"""Reporting pages: thin views over reporting.selectors (campaign_report_get, link_clicks_list,
conversion_attribution_get: the campaign access and report permission are theirs), the chart from
reporting.charts, and the inbox over reporting.inbox / notifications.inbox_mark_read (own items only)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from campaigns.selectors import campaigns_list
from reporting.charts import chart_svg
from reporting.inbox import inbox_list, inbox_unread_count
from reporting.notifications import inbox_mark_read
from reporting.selectors import VIEW_REPORT, campaign_report_get, conversion_attribution_get, link_clicks_list
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import FieldErrors, staff_actor, staff_view

FILTERS = ("date_from", "date_to", "granularity")


@staff_view(VIEW_REPORT)
def report_list(request: HttpRequest) -> HttpResponse:
    """The campaigns this user may see, each linking to its report."""
    try:
        listing = campaigns_list(actor=staff_actor(request), limit=100)
    except ApplicationError as error:
        return render(request, "staff/reporting/missing.html", {"error": error.as_dict()}, status=403)
    return render(request, "staff/reporting/list.html", {"campaigns": listing["campaigns"]})


def _filters(request: HttpRequest) -> dict[str, str]:
    return {f: request.GET.get(f, "").strip() for f in FILTERS}


def _refused(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    status = {"permission_denied": 403, "not_found": 404}.get(str(error.code), 400)
    return render(request, "staff/reporting/missing.html", {"error": error.as_dict()}, status=status)


@staff_view(VIEW_REPORT)
def report(request: HttpRequest, campaign_id: int) -> HttpResponse:
    values = _filters(request)
    errors = FieldErrors(FILTERS)
    args: dict[str, Any] = {"date_from": values["date_from"] or None, "date_to": values["date_to"] or None}
    actor = staff_actor(request)
    try:
        result = campaign_report_get(
            actor=actor, campaign_id=campaign_id, granularity=values["granularity"] or "hour", **args
        )
        clicks = link_clicks_list(actor=actor, campaign_id=campaign_id, granularity="day", **args)
    except ApplicationError as error:
        if error.field not in FILTERS:
            return _refused(request, error)
        errors.add(error)
        context = {"v": values, "errors": errors, "campaign_id": campaign_id, "r": None}
        return render(request, "staff/reporting/report.html", context, status=400)
    context = {
        "v": values,
        "errors": errors,
        "campaign_id": campaign_id,
        "r": result,
        "clicks": clicks,
        "chart": chart_svg(result["trend"]),
    }
    return render(request, "staff/reporting/report.html", context)


@staff_view(VIEW_REPORT)
def attribution(request: HttpRequest, campaign_id: int) -> HttpResponse:
    values = _filters(request)
    errors = FieldErrors(FILTERS)
    try:
        result = conversion_attribution_get(
            actor=staff_actor(request),
            campaign_id=campaign_id,
            date_from=values["date_from"] or None,
            date_to=values["date_to"] or None,
        )
    except ApplicationError as error:
        if error.field not in FILTERS:
            return _refused(request, error)
        errors.add(error)
        context = {"v": values, "errors": errors, "campaign_id": campaign_id, "a": None}
        return render(request, "staff/reporting/attribution.html", context, status=400)
    context = {"v": values, "errors": errors, "campaign_id": campaign_id, "a": result}
    return render(request, "staff/reporting/attribution.html", context)


@staff_view()
def inbox(request: HttpRequest) -> HttpResponse:
    actor = staff_actor(request)
    unread_only = request.GET.get("unread") == "1"
    context = {
        "items": inbox_list(actor=actor, unread_only=unread_only),
        "unread": inbox_unread_count(actor=actor),
        "unread_only": unread_only,
    }
    return render(request, "staff/reporting/inbox.html", context)


@staff_view()
def inbox_read(request: HttpRequest) -> HttpResponse:
    """POST: mark the chosen items read (the service touches only the user's own)."""
    if request.method == "POST":
        ids = [int(i) for i in request.POST.getlist("item") if i.isdigit()]
        inbox_mark_read(actor=staff_actor(request), item_ids=ids)
    return redirect("staff:inbox:list")
