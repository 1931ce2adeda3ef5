"""The rules a flow must meet to be active, checked at activation (and every governed change of an
active flow) and again by the tick at send time: opt-out handling, a frequency limit, a valid
approved template of the flow's purpose (no promotion in a transactional one), a usable gateway
and sender ID, and a cost check (the estimate from the last 30 days' events within the monthly
budget)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count
from django.utils import timezone

from campaigns.automations.errors import AutomationErrorCode
from campaigns.automations.flow_models import Flow, FlowPurpose
from campaigns.automations.models import CommerceEvent
from smsplatform.kernel.content import promotion_found
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.money import money_text
from templates.content_rules import PLACEHOLDER_RE, placeholders, render
from templates.models import Purpose, TemplateVersion, VersionApproval

ESTIMATE_DAYS = 30
VALID_APPROVALS = (VersionApproval.APPROVED, VersionApproval.NOT_REQUIRED)
# Sample values for the rendering checks: the longest a field may take (segments are counted on it).
SAMPLE_CHAR = "W"


def send_steps(flow: Flow) -> int:
    return sum(1 for s in flow.steps or [] if s.get("kind") == "send")


def template_problem(flow: Flow, version: TemplateVersion | None = None) -> str | None:
    """Why the flow's pinned template version cannot be sent (None when it can)."""
    version = version or flow.template_version
    if version is None:
        return "no template version is pinned"
    if version.approval_status not in VALID_APPROVALS:
        return f"template version {version.pk} is not approved ({version.approval_status})"
    wanted = Purpose.TRANSACTIONAL if flow.purpose == FlowPurpose.TRANSACTIONAL else Purpose.MARKETING
    if version.purpose != wanted:
        return f"template version {version.pk} is {version.purpose}; a {flow.purpose} flow needs a {wanted} template"
    if flow.purpose == FlowPurpose.TRANSACTIONAL:
        found = promotion_found(version.body)
        if found:
            return f"a transactional flow carries no promotion; template version {version.pk} has {found[0]}"
    missing = [name for name in placeholders(version.body) if name not in (flow.variables or {})]
    if missing:
        return f"template field {missing[0]!r} has no value in the flow's variables"
    return None


def variable_value(source: str, event: dict[str, Any], contact: dict[str, Any]) -> str | None:
    """A variable's value for one enrolment: ``event.<field>``, ``payload.<key>``,
    ``contact.name`` or a literal (None when the event lacks it)."""
    if source.startswith("event."):
        value = event.get(source[6:])
    elif source.startswith("payload."):
        value = (event.get("payload") or {}).get(source[8:])
    elif source.startswith("contact."):
        value = contact.get(source[8:])
    else:
        return source
    if value is None or value == "":
        return None
    return str(value)


class Renderer:
    """A flow's message for one enrolment: the pinned template with each field's value taken from
    the event or contact (the placeholders are parsed once per flow, not once per message)."""

    def __init__(self, flow: Flow) -> None:
        version = flow.template_version
        assert version is not None
        self.body = version.body
        variables = flow.variables or {}
        self.sources = [(name, variables.get(name, "")) for name in placeholders(version.body)]
        # The body split once at its placeholders: literal, name, literal, name, ..., literal
        # (templates.content_rules.render's result, joined per message instead of a regex pass).
        self.parts: list[str] = PLACEHOLDER_RE.split(self.body)
        # The event fields a message may need (event.<field>; payload.<key> needs the payload).
        self.event_fields = sorted(
            {s[6:] for _n, s in self.sources if s.startswith("event.")}
            | ({"payload"} if any(s.startswith("payload.") for _n, s in self.sources) else set())
        )

    def values(self, event: dict[str, Any], contact: dict[str, Any]) -> dict[str, str] | None:
        values = {}
        for name, source in self.sources:
            value = variable_value(source, event, contact)
            if value is None:
                return None
            values[name] = value
        return values

    def render(self, values: dict[str, str]) -> str:
        if not values:
            return self.body
        parts = self.parts
        out = [parts[0]]
        for index in range(1, len(parts), 2):
            value = values.get(parts[index])
            if value is None:
                return render(self.body, values)  # a placeholder without a value stays as written
            out.append(value)
            out.append(parts[index + 1])
        return "".join(out)


def render_body(flow: Flow, event: dict[str, Any], contact: dict[str, Any]) -> str | None:
    renderer = Renderer(flow)
    values = renderer.values(event, contact)
    return None if values is None else renderer.render(values)


def cost_estimate(flow: Flow, *, now: Any = None) -> dict[str, Any]:
    """The monthly cost the flow would reach at the last 30 days' event volume: trigger events per
    country x send steps x segments x the gateway's price there."""
    from gateways.selectors import segment_prices
    from smsplatform.kernel.segments import count_segments

    now = now or timezone.now()
    since = now - timedelta(days=ESTIMATE_DAYS)
    by_country = dict(
        CommerceEvent.objects.filter(type__in=flow.trigger_event_types or [], occurred_at__gte=since)
        .values_list("contact__country")
        .annotate(n=Count("id"))
        .order_by()
    )
    segments = 1
    if flow.template_version is not None:
        fields = {f.get("name"): f for f in flow.template_version.fields or []}
        sample = {
            name: SAMPLE_CHAR * int((fields.get(name) or {}).get("max_length") or 10)
            for name in placeholders(flow.template_version.body)
        }
        try:
            segments = count_segments(render(flow.template_version.body, sample))[2]
        except Exception:
            segments = 1
    quotes = segment_prices(countries=sorted(by_country), gateway_code=flow.gateway.code if flow.gateway else None)
    steps = send_steps(flow)
    total = Decimal(0)
    currency = ""
    uncovered = []
    for country, n in sorted(by_country.items()):
        quote = quotes.get(country)
        if quote is None:
            uncovered.append(country)
            continue
        total += quote.price_per_segment * segments * steps * n
        currency = currency or quote.currency
    events = sum(by_country.values())
    return {
        "at": now.isoformat(),
        "window_days": ESTIMATE_DAYS,
        "trigger_events": events,
        "messages": events * steps,
        "segments_per_message": segments,
        "monthly_cost": str(total.quantize(Decimal("0.01"))),
        "currency": currency or "HKD",
        "uncovered_countries": uncovered,
        "monthly_budget": str(flow.monthly_budget) if flow.monthly_budget is not None else None,
        "within_budget": flow.monthly_budget is not None and total <= flow.monthly_budget,
    }


def flow_activation_check(flow: Flow) -> dict[str, Any]:
    """Refuse an activation (or a change of an active flow) lacking any required rule; the cost
    check's figures when it passes."""
    from gateways.rules import sender_id_check_usable

    if not flow.opt_out_exclusion:
        raise ApplicationError(
            AutomationErrorCode.FLOW_OPT_OUT_REQUIRED,
            "A flow is activated only with opt-out handling (opted-out numbers excluded).",
            field="opt_out_exclusion",
            hint="Set opt_out_exclusion to true (sms_marketing.automations.update_state).",
        )
    if not flow.max_per_period or not flow.period_hours:
        raise ApplicationError(
            AutomationErrorCode.FLOW_FREQUENCY_REQUIRED,
            "A flow is activated only with a frequency limit (at most N sends per contact per period).",
            field="max_per_period",
            hint="Set max_per_period and period_hours (sms_marketing.automations.update_state).",
        )
    problem = template_problem(flow)
    if problem:
        raise ApplicationError(
            AutomationErrorCode.FLOW_TEMPLATE_INVALID,
            f"The flow's template cannot be used: {problem}.",
            field="template_version_id",
            hint="Pin an approved template version of the flow's purpose (sms_marketing.templates.list).",
        )
    if flow.gateway is None or not flow.gateway.enabled:
        raise ApplicationError(
            AutomationErrorCode.FLOW_GATEWAY_NOT_USABLE,
            "A flow is activated only with an enabled gateway.",
            field="gateway",
            hint="See sms_marketing.gateways.list.",
        )
    countries = list(flow.gateway.countries or [])
    usable = []
    for country in countries:
        try:
            sender_id_check_usable(value=flow.sender_id, country=country)
            usable.append(country)
        except ApplicationError:
            continue
    if not usable:
        raise ApplicationError(
            AutomationErrorCode.FLOW_GATEWAY_NOT_USABLE,
            f"Sender ID {flow.sender_id!r} is not usable in any country gateway {flow.gateway.code} covers.",
            field="sender_id",
            hint="Use a registered sender ID (sms_marketing.sender_ids.list).",
        )
    estimate = cost_estimate(flow)
    if flow.monthly_budget is None or not estimate["within_budget"]:
        budget = money_text(flow.monthly_budget, estimate["currency"]) if flow.monthly_budget is not None else "none"
        raise ApplicationError(
            AutomationErrorCode.FLOW_COST_CHECK_FAILED,
            f"Cost check failed: the last {ESTIMATE_DAYS} days' volume ({estimate['trigger_events']} events) "
            f"costs about {money_text(estimate['monthly_cost'], estimate['currency'])} a month; monthly budget: "
            f"{budget}.",
            field="monthly_budget",
            hint="Set a monthly_budget covering the estimate (sms_marketing.automations.update_state).",
            details={"estimate": estimate},
        )
    return estimate
