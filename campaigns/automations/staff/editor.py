"""The flow editor of the staff app: a new draft (flow_services.flow_create) and the edit of a flow
(flow_services.flow_update_state with operation update, or activate with the edited fields), the
same services and governance as automations.update_state on MCP and REST.

The view only turns the form's inputs into the flow's fields (one step a line, one variable a line,
JSON for the payload match and the contact filter) and shows each refusal next to the field it
names: every rule -- the shape of a field, an approved template, opt-out handling, the frequency
limit, the gateway, the sender ID, the budget, the version token, the approval policies -- is the
services'. The form carries its idempotency key from GET to POST, so submitting twice writes once.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render

from campaigns.automations.flow_models import FlowPurpose, FlowState, TriggerAnchor
from campaigns.automations.flow_services import (
    ADD,
    CHANGE,
    CONFIRM,
    flow_create,
    flow_get_or_404,
    flow_update_state,
)
from campaigns.automations.models import EventType
from campaigns.automations.selectors import MAX_DRY_RUN_DAYS, flow_summary
from campaigns.automations.spec import FIELDS as FLOW_FIELDS
from campaigns.automations.spec import UPDATE_STATE_FIELDS, flow_snapshot, flow_token
from compliance.selectors import held_request_brief
from gateways.selectors import gateways_list, sender_ids_list
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view
from templates.selectors import templates_list

# The editor's inputs: the flow's fields as the services name them, and the write envelope.
FIELDS = (*FLOW_FIELDS, "reason", "confirm", "operation", "base_version_token")
# A refusal naming no input of its own is shown by the submit buttons.
ALIASES = {"flow_id": "operation", "changes": "operation"}


# --- form inputs -> flow fields (presentation only: a malformed input goes on as typed, and the
# --- service refuses it, naming the field) -------------------------------------------------------------


def _number(raw: str) -> Any:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return raw


def _steps(raw: str) -> Any:
    """One step a line: ``wait <minutes>`` or ``send``."""
    steps: list[Any] = []
    for line in raw.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].lower() == "wait" and len(words) == 2:
            steps.append({"kind": "wait", "minutes": _number(words[1])})
        elif [w.lower() for w in words] == ["send"]:
            steps.append({"kind": "send"})
        else:
            steps.append({"kind": line.strip()})
    return steps


def _steps_text(steps: list[dict[str, Any]]) -> str:
    return "\n".join(f"wait {s['minutes']}" if s.get("kind") == "wait" else str(s.get("kind")) for s in steps)


def _pairs(raw: str) -> Any:
    """One variable a line: ``field = source`` (source: event.<field>, payload.<key> or a literal)."""
    out: dict[str, Any] = {}
    for line in raw.splitlines():
        if not line.strip():
            continue
        name, sep, source = line.partition("=")
        if not sep:
            return line.strip()  # not an object: the service names the field
        out[name.strip()] = source.strip()
    return out


def _exits(raw: str) -> Any:
    """One exit a line: ``<event type> [contact|reference]``."""
    out: list[dict[str, str]] = []
    for line in raw.splitlines():
        words = line.split()
        if not words:
            continue
        item = {"event_type": words[0]}
        if len(words) > 1:
            item["match"] = " ".join(words[1:])
        out.append(item)
    return out


def _json(raw: str) -> Any:
    raw = raw.strip()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _data(post: QueryDict) -> dict[str, Any]:
    """The flow's fields from the form, shaped as flow_create and update_state take them."""
    return {
        "name": post.get("name", ""),
        "description": post.get("description", ""),
        "purpose": post.get("purpose", ""),
        "trigger_event_types": sorted(post.getlist("trigger_event_types")),
        "trigger_anchor": post.get("trigger_anchor", ""),
        "trigger_offset_minutes": _number(post.get("trigger_offset_minutes", "")) or 0,
        "trigger_payload_match": _json(post.get("trigger_payload_match", "")),
        "filters": _json(post.get("filters", "")),
        "steps": _steps(post.get("steps", "")),
        "exit_conditions": _exits(post.get("exit_conditions", "")),
        "template_version_id": _number(post.get("template_version_id", "")),
        "variables": _pairs(post.get("variables", "")),
        "sender_id": post.get("sender_id", "").strip(),
        "gateway": post.get("gateway", "").strip() or None,
        "opt_out_exclusion": post.get("opt_out_exclusion") == "on",
        "max_per_period": _number(post.get("max_per_period", "")),
        "period_hours": _number(post.get("period_hours", "")),
        "once_per_order": post.get("once_per_order") == "on",
        "monthly_budget": post.get("monthly_budget", "").strip() or None,
    }


def _values(post: QueryDict) -> dict[str, Any]:
    """The inputs as typed, to show the form again."""
    values: dict[str, Any] = {name: post.get(name, "") for name in FIELDS}
    values["trigger_event_types"] = post.getlist("trigger_event_types")
    for flag in ("opt_out_exclusion", "once_per_order", "confirm"):
        values[flag] = post.get(flag) == "on"
    values["key"] = post.get("key", "")
    values["token"] = post.get("token", "")
    return values


def _values_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A flow's fields as the form shows them."""
    return {
        **{name: "" if snapshot.get(name) is None else snapshot[name] for name in FLOW_FIELDS},
        "trigger_payload_match": json.dumps(snapshot["trigger_payload_match"], ensure_ascii=False)
        if snapshot["trigger_payload_match"]
        else "",
        "filters": json.dumps(snapshot["filters"], ensure_ascii=False) if snapshot["filters"] else "",
        "steps": _steps_text(snapshot["steps"]),
        "variables": "\n".join(f"{k} = {v}" for k, v in (snapshot["variables"] or {}).items()),
        "exit_conditions": "\n".join(
            f"{e['event_type']} {e.get('match', 'contact')}" for e in snapshot["exit_conditions"]
        ),
        "reason": "",
        "confirm": False,
    }


# --- rendering ---------------------------------------------------------------------------------------


def _options(flow: Any = None) -> dict[str, Any]:
    """What the selects offer: every template's current version and every gateway, and the flow's own
    pinned version and gateway even when they are not among those (an older version, a disabled
    gateway), so saving an unrelated field never unpins them."""
    templates = templates_list(limit=200)["templates"]
    gateways = list(gateways_list(include_disabled=True))
    pinned = flow.template_version if flow is not None else None
    if pinned is not None and all(t.get("version_id") != pinned.pk for t in templates):
        templates.append(
            {
                "version_id": pinned.pk,
                "name": pinned.name,
                "version": pinned.version,
                "purpose": pinned.purpose,
                "approval_status": pinned.approval_status,
            }
        )
    return {
        "event_types": EventType.choices,
        "purposes": FlowPurpose.choices,
        "anchors": TriggerAnchor.choices,
        "templates": templates,
        "sender_ids": [s for s in sender_ids_list() if s.get("status") == "registered"],
        "gateways": gateways,
    }


def _field_errors(error: ApplicationError) -> FieldErrors:
    """The refusal on the input it names: changes.<f>, steps.<i>, variables.<k> and the like go
    to their field's input."""
    errors = FieldErrors(FIELDS)
    name = error.field or ""
    if name.startswith("changes."):
        name = name[len("changes.") :]
    head = name.split(".", 1)[0]
    target = ALIASES.get(name) or (head if head in FIELDS else name)
    errors.add(error, aliases={error.field or "": target})
    return errors


def _render(
    request: HttpRequest,
    values: dict[str, Any],
    errors: FieldErrors | None = None,
    *,
    flow: Any = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        **_options(flow),
        "v": values,
        "errors": errors or FieldErrors(FIELDS),
        # The page's heading: the flow's name and state (not flow_summary's numbers: this page edits).
        "flow": {"flow_id": flow.pk, "name": flow.name, "state": flow.state} if flow is not None else None,
        "editable": UPDATE_STATE_FIELDS if flow is not None else FLOW_FIELDS,
        "can_activate": flow is not None and flow.state in (FlowState.DRAFT, FlowState.PAUSED),
        "may_confirm": request.user.has_perm(CONFIRM),
        "max_days": MAX_DRY_RUN_DAYS,
    }
    return render(request, "staff/automations/edit.html", context, status=status)


# --- the views ---------------------------------------------------------------------------------------


@staff_view(ADD)
def flow_new(request: HttpRequest) -> HttpResponse:
    """GET: an empty draft (or a copy of ?from=<flow id>); POST: flow_create."""
    if request.method != "POST":
        values: dict[str, Any]
        source = request.GET.get("from", "")
        try:
            copied = flow_get_or_404(int(source)) if source.isdigit() else None
        except ApplicationError:
            copied = None
        if copied is not None:
            values = _values_of(flow_snapshot(copied))
            values["name"] = f"{copied.name} (copy)"[:100]
        else:
            values = dict.fromkeys(FIELDS, "")
            values.update(
                purpose=FlowPurpose.MARKETING,
                trigger_anchor=TriggerAnchor.OCCURRED_AT,
                trigger_offset_minutes=0,
                trigger_event_types=[],
                steps="send",
                opt_out_exclusion=True,
                once_per_order=False,
                confirm=False,
            )
        values["key"] = new_key("flow-new")
        return _render(request, values)
    values = _values(request.POST)
    values["key"] = values["key"] or new_key("flow-new")
    try:
        created = flow_create(
            actor=staff_actor(request),
            data=_data(request.POST),
            idempotency_key=values["key"],
            reason=request.POST.get("reason", ""),
        )
    except ApplicationError as error:
        return _render(request, values, _field_errors(error), status=400)
    return redirect("staff:automations:detail", created["flow_id"])


@staff_view(CHANGE)
def flow_edit(request: HttpRequest, flow_id: int) -> HttpResponse:
    """GET: the flow's fields (those update_state may change are editable); POST: update_state with
    operation update (save) or activate (save and activate), the changed fields as ``changes``."""
    try:
        flow = flow_get_or_404(flow_id)
    except ApplicationError as error:
        return render(request, "staff/automations/missing.html", {"error": error.as_dict()}, status=404)
    snapshot = flow_snapshot(flow)
    if request.method != "POST":
        values = _values_of(snapshot)
        values.update(key=new_key("flow-edit"), token=flow_token(flow))
        return _render(request, values, flow=flow)
    values = {**_values_of(snapshot), **_values(request.POST)}
    for name in FLOW_FIELDS:
        if name not in UPDATE_STATE_FIELDS:
            values[name] = _values_of(snapshot)[name]  # shown, not editable here
    data = _data(request.POST)
    changes = {name: data[name] for name in UPDATE_STATE_FIELDS if data[name] != snapshot.get(name)}
    operation = request.POST.get("operation", "")
    actor = staff_actor(request)
    try:
        answer = flow_update_state(
            actor=actor,
            flow_id=flow.pk,
            operation=operation,
            base_version_token=request.POST.get("token", ""),
            changes=changes,
            confirm=request.POST.get("confirm") == "on",
            idempotency_key=values["key"] or new_key("flow-edit"),
            reason=request.POST.get("reason", ""),
        )
    except ApplicationError as error:
        return _render(request, values, _field_errors(error), flow=flow, status=400)
    summary = flow_summary(flow_get_or_404(flow.pk))
    context = {
        "answer": answer,
        "f": summary,
        "operation": operation,
        "request_state": held_request_brief(actor=actor, answer=answer),
        "changed": sorted(changes),
    }
    return render(request, "staff/automations/answer.html", context)
