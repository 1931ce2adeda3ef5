"""Automation pages: thin views over campaigns.automations.selectors (flows_list, flow_summary,
flow_funnel, flow_dry_run) and flow_services.flow_update_state (activate / pause, governed: the
activation rules and the approval policies are the service's, the same as automations.update_state)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from campaigns.automations.flow_models import FlowState
from campaigns.automations.flow_services import CHANGE, CONFIRM, VIEW, flow_get_or_404, flow_update_state
from campaigns.automations.selectors import MAX_DRY_RUN_DAYS, flow_dry_run, flow_funnel, flow_summary, flows_list
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view

# The inputs a state change's error may name; the activation rules name the flow's own fields.
FIELDS = (
    "operation",
    "reason",
    "confirm",
    "opt_out_exclusion",
    "max_per_period",
    "template_version_id",
    "gateway",
    "sender_id",
    "monthly_budget",
)


@staff_view(VIEW)
def flow_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state") or None
    if state not in FlowState.values:
        state = None
    listing = flows_list(state=state, limit=200)
    context = {"listing": listing, "state": state or "", "states": FlowState.choices}
    return render(request, "staff/automations/list.html", context)


def _missing(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    return render(request, "staff/automations/missing.html", {"error": error.as_dict()}, status=404)


def _detail(
    request: HttpRequest, flow_id: int, errors: FieldErrors, values: dict[str, str], status: int = 200
) -> HttpResponse:
    flow = flow_get_or_404(flow_id)
    summary = flow_summary(flow)
    context = {
        "f": summary,
        "funnel": flow_funnel(flow),
        "errors": errors,
        "v": {"key": new_key("flow"), "token": summary["base_version_token"], **values},
        "may_change": request.user.has_perm(CHANGE),
        "may_confirm": request.user.has_perm(CONFIRM),
        "can_activate": summary["state"] in (FlowState.DRAFT, FlowState.PAUSED),
        "can_pause": summary["state"] == FlowState.ACTIVE,
        "max_days": MAX_DRY_RUN_DAYS,
    }
    return render(request, "staff/automations/detail.html", context, status=status)


@staff_view(VIEW)
def flow_detail(request: HttpRequest, flow_id: int) -> HttpResponse:
    try:
        return _detail(request, flow_id, FieldErrors(FIELDS), {"reason": ""})
    except ApplicationError as error:
        return _missing(request, error)


@staff_view(VIEW)
def dry_run(request: HttpRequest, flow_id: int) -> HttpResponse:
    """flow_dry_run for the days asked (writes nothing); an htmx request gets the result only."""
    raw = request.GET.get("days", "7").strip()
    context: dict[str, Any] = {"days": raw, "flow_id": flow_id}
    try:
        flow = flow_get_or_404(flow_id)
        context["run"] = flow_dry_run(flow=flow, days=int(raw) if raw.isdigit() else raw)  # type: ignore[arg-type]
    except ApplicationError as error:
        if error.field != "days":
            return _missing(request, error)
        context["error"] = error.as_dict()
    part = bool(request.headers.get("HX-Request"))
    template = "staff/automations/_dry_run.html" if part else "staff/automations/dry_run.html"
    return render(request, template, context, status=400 if "error" in context else 200)


@staff_view(CHANGE)
def flow_state(request: HttpRequest, flow_id: int) -> HttpResponse:
    """POST: flow_update_state(operation=activate|pause) with the token read on the detail page."""
    if request.method != "POST":
        return flow_detail(request, flow_id)
    errors = FieldErrors(FIELDS)
    values = {"reason": request.POST.get("reason", "")}
    operation = request.POST.get("operation", "")
    try:
        flow_get_or_404(flow_id)
    except ApplicationError as error:
        return _missing(request, error)
    try:
        answer = flow_update_state(
            actor=staff_actor(request),
            flow_id=flow_id,
            operation=operation,
            base_version_token=request.POST.get("token", ""),
            confirm=request.POST.get("confirm") == "on",
            idempotency_key=request.POST.get("key", ""),
            reason=values["reason"],
        )
    except ApplicationError as error:
        errors.add(error, aliases={"base_version_token": "operation", "flow_id": "operation", "changes": "operation"})
        return _detail(request, flow_id, errors, values, status=400)
    summary = flow_summary(flow_get_or_404(flow_id))
    return render(request, "staff/automations/answer.html", {"answer": answer, "f": summary, "operation": operation})
