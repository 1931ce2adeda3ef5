"""A flow's specification: what a caller may set and how it is normalised, the snapshot read back
from a flow, and its version token. Every flow write normalises its input here first."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from campaigns.automations.errors import AutomationErrorCode
from campaigns.automations.flow_models import Flow, FlowPurpose, TriggerAnchor
from campaigns.automations.models import EventType
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token

LABEL = "automations.flow"

FIELDS = (
    "name",
    "description",
    "purpose",
    "trigger_event_types",
    "trigger_anchor",
    "trigger_offset_minutes",
    "trigger_payload_match",
    "filters",
    "steps",
    "exit_conditions",
    "template_version_id",
    "variables",
    "sender_id",
    "gateway",
    "opt_out_exclusion",
    "max_per_period",
    "period_hours",
    "once_per_order",
    "monthly_budget",
)
# What automations.update_state may change (the catalogue: events, template, frequency, opt-out
# exclusion and gateway; with the template its variables and sender, with the cost its budget).
UPDATE_STATE_FIELDS = (
    "trigger_event_types",
    "exit_conditions",
    "template_version_id",
    "variables",
    "sender_id",
    "gateway",
    "opt_out_exclusion",
    "max_per_period",
    "period_hours",
    "once_per_order",
    "monthly_budget",
)
EXIT_MATCHES = ("contact", "reference")
MAX_STEPS = 20
MAX_OFFSET_MINUTES = 366 * 24 * 60


def flow_error(
    message: str, *, field: str, hint: str = "See the flow fields in docs/MCP_TOOLS.md."
) -> ApplicationError:
    return ApplicationError(AutomationErrorCode.FLOW_INVALID, message, field=field, hint=hint)


def _event_types(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > 20:
        raise flow_error(f"{field} must be a non-empty list of event types.", field=field)
    out = []
    for i, item in enumerate(value):
        if item not in EventType.values:
            raise flow_error(
                f"{field}.{i}: {item!r} is not an event type ({', '.join(EventType.values)}).", field=f"{field}.{i}"
            )
        out.append(str(item))
    return sorted(set(out))


def _steps(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or len(value) > MAX_STEPS:
        raise flow_error(f"steps must be a list of 1 to {MAX_STEPS} steps.", field="steps")
    out: list[dict[str, Any]] = []
    for i, step in enumerate(value):
        kind = step.get("kind") if isinstance(step, dict) else None
        if kind == "wait":
            minutes = step.get("minutes")
            if set(step) != {"kind", "minutes"} or not isinstance(minutes, int) or not 1 <= minutes <= 525_600:
                raise flow_error(f"steps.{i}: a wait is {{kind: wait, minutes: 1..525600}}.", field=f"steps.{i}")
            out.append({"kind": "wait", "minutes": minutes})
        elif kind == "send":
            if set(step) != {"kind"}:
                raise flow_error(f"steps.{i}: a send step is {{kind: send}}.", field=f"steps.{i}")
            out.append({"kind": "send"})
        else:
            raise flow_error(f"steps.{i}: kind must be wait or send.", field=f"steps.{i}")
    if not any(s["kind"] == "send" for s in out):
        raise flow_error("steps must contain a send step.", field="steps")
    return out


def _exits(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) > 20:
        raise flow_error("exit_conditions must be a list (at most 20).", field="exit_conditions")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"event_type", "match"} or "event_type" not in item:
            raise flow_error(
                f"exit_conditions.{i} must be {{event_type, match: contact|reference}}.", field=f"exit_conditions.{i}"
            )
        _event_types([item["event_type"]], f"exit_conditions.{i}.event_type")
        match = item.get("match", "contact")
        if match not in EXIT_MATCHES:
            raise flow_error(f"exit_conditions.{i}.match must be contact or reference.", field=f"exit_conditions.{i}")
        out.append({"event_type": str(item["event_type"]), "match": match})
    return out


def _variables(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 30:
        raise flow_error("variables must be an object of template field -> source.", field="variables")
    for key, source in value.items():
        if not isinstance(source, str) or len(source) > 200:
            raise flow_error(f"variables.{key} must be a string.", field=f"variables.{key}")
    return {str(k): str(v) for k, v in value.items()}


def _positive(value: Any, field: str, maximum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise flow_error(f"{field} must be a whole number from 1 to {maximum}.", field=field)
    return value


def spec_normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Check each given field's shape and return the canonical form (rules needing the database,
    such as the template and gateway, are checked by the services)."""
    from contacts.criteria import criteria_normalise

    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise flow_error(
            f"{unknown[0]} cannot be set on a flow.", field=unknown[0], hint=f"Fields: {', '.join(FIELDS)}."
        )
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "name":
            if not isinstance(value, str) or not value.strip() or len(value) > 100:
                raise flow_error("name must be 1 to 100 characters.", field="name")
            out[name] = value.strip()
        elif name == "description":
            out[name] = str(value or "")[:2000]
        elif name == "purpose":
            if value not in FlowPurpose.values:
                raise flow_error("purpose must be transactional or marketing.", field="purpose")
            out[name] = value
        elif name == "trigger_event_types":
            out[name] = _event_types(value, name)
        elif name == "trigger_anchor":
            if value not in TriggerAnchor.values:
                raise flow_error(f"trigger_anchor must be one of {', '.join(TriggerAnchor.values)}.", field=name)
            out[name] = value
        elif name == "trigger_offset_minutes":
            if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_OFFSET_MINUTES:
                raise flow_error("trigger_offset_minutes must be a whole number within a year.", field=name)
            out[name] = value
        elif name == "trigger_payload_match":
            if not isinstance(value, dict) or not all(isinstance(v, str | int | bool) for v in value.values()):
                raise flow_error("trigger_payload_match must map payload keys to plain values.", field=name)
            out[name] = dict(value)
        elif name == "filters":
            out[name] = criteria_normalise(value, "filters") if value else {}
        elif name == "steps":
            out[name] = _steps(value)
        elif name == "exit_conditions":
            out[name] = _exits(value)
        elif name == "template_version_id":
            out[name] = _positive(value, name, 2**62)
        elif name == "variables":
            out[name] = _variables(value)
        elif name == "sender_id":
            if not isinstance(value, str) or len(value) > 16:
                raise flow_error("sender_id must be at most 16 characters.", field=name)
            out[name] = value
        elif name == "gateway":
            if value is not None and (not isinstance(value, str) or not value):
                raise flow_error("gateway must be a gateway code.", field=name)
            out[name] = value
        elif name in ("opt_out_exclusion", "once_per_order"):
            if not isinstance(value, bool):
                raise flow_error(f"{name} must be true or false.", field=name)
            out[name] = value
        elif name == "max_per_period":
            out[name] = _positive(value, name, 1000)
        elif name == "period_hours":
            out[name] = _positive(value, name, 24 * 366)
        elif name == "monthly_budget":
            if value is None:
                out[name] = None
            else:
                try:
                    amount = Decimal(str(value))
                except InvalidOperation:
                    raise flow_error("monthly_budget must be an amount.", field=name) from None
                if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e12"):
                    raise flow_error("monthly_budget must be a positive amount.", field=name)
                out[name] = str(amount.quantize(Decimal("0.01")))
    return out


def flow_fields_set(flow: Flow, spec: dict[str, Any]) -> None:
    from gateways.models import Gateway
    from templates.models import TemplateVersion

    for name, value in spec.items():
        if name == "gateway":
            gateway = Gateway.objects.filter(code=value).first() if value else None
            if value and gateway is None:
                raise ApplicationError(
                    AutomationErrorCode.FLOW_GATEWAY_NOT_USABLE,
                    f"No gateway {value!r}.",
                    field="gateway",
                    hint="See sms_marketing.gateways.list.",
                )
            flow.gateway = gateway
        elif name == "template_version_id":
            version = TemplateVersion.objects.filter(pk=value).first() if value else None
            if value and version is None:
                raise ApplicationError(
                    AutomationErrorCode.FLOW_TEMPLATE_INVALID,
                    f"No template version {value}.",
                    field="template_version_id",
                    hint="See sms_marketing.templates.list.",
                )
            flow.template_version = version
        elif name == "monthly_budget":
            flow.monthly_budget = Decimal(value) if value is not None else None
        else:
            setattr(flow, name, value)


def flow_snapshot(flow: Flow) -> dict[str, Any]:
    data = {
        "name": flow.name,
        "description": flow.description,
        "state": flow.state,
        "purpose": flow.purpose,
        "trigger_event_types": flow.trigger_event_types,
        "trigger_anchor": flow.trigger_anchor,
        "trigger_offset_minutes": flow.trigger_offset_minutes,
        "trigger_payload_match": flow.trigger_payload_match,
        "filters": flow.filters,
        "steps": flow.steps,
        "exit_conditions": flow.exit_conditions,
        "template_version_id": flow.template_version_id,
        "variables": flow.variables,
        "sender_id": flow.sender_id,
        "gateway": flow.gateway.code if flow.gateway_id and flow.gateway else None,
        "opt_out_exclusion": flow.opt_out_exclusion,
        "max_per_period": flow.max_per_period,
        "period_hours": flow.period_hours,
        "once_per_order": flow.once_per_order,
        "monthly_budget": str(flow.monthly_budget) if flow.monthly_budget is not None else None,
    }
    return json.loads(json.dumps(data, default=str))


def flow_token(flow: Flow) -> str:
    return version_token(LABEL, flow.pk, flow.version)


def flow_token_check(flow: Flow, token: str | None) -> None:
    version = parse_version_token(token, label=LABEL, pk=flow.pk)
    if version != flow.version:
        raise stale_token_error(label=LABEL, pk=flow.pk, current_version=flow.version)
