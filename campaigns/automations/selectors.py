"""Flow reads: automations.list (every flow with its rules and its numbers over 7 and 30 days), a
flow's per-step funnel, a contact's enrolments, and the dry run (who would enter from the last N
days' events). Phones are masked."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from campaigns.automations.engine import _first_send, _payload_matches
from campaigns.automations.flow_models import Enrolment, EnrolmentState, Flow, FlowPurpose
from campaigns.automations.models import CommerceEvent
from campaigns.automations.rules import template_problem
from campaigns.automations.spec import flow_token
from compliance.optouts import active_opt_outs
from contacts.models import ConsentEvidence, ConsentPurpose, Contact
from gateways.models import MessageState, OutboundMessage
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.phones import phone_mask

WINDOWS = {"7d": 7, "30d": 30}
MAX_DRY_RUN_DAYS = 90


def _numbers(flow: Flow, days: int, now: Any) -> dict[str, Any]:
    since = now - timedelta(days=days)
    enrolments = Enrolment.objects.filter(flow=flow, entered_at__gte=since)
    entered = enrolments.count()
    skipped = dict(
        enrolments.filter(state=EnrolmentState.SKIPPED).values_list("reason").annotate(n=Count("id")).order_by()
    )
    exited = enrolments.filter(state=EnrolmentState.EXITED).count()
    messages = (
        OutboundMessage.objects.filter(
            batch__isnull=True,  # a flow's messages are never in a campaign batch (msg_unbatched_reference)
            purpose=flow.purpose,
            created_at__gte=since,
            reference__startswith=flow.reference_prefix,
        )
        .exclude(state=MessageState.FAILED, error_code="flow_exit")
        .aggregate(n=Count("id"), cost=Sum("cost"), failed=Count("id", filter=Q(state=MessageState.FAILED)))
    )
    return {
        "entered": entered,
        "sent": int(messages["n"] or 0),
        "failed": int(messages["failed"] or 0),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": skipped,
        "exited": exited,
        "cost": str(Decimal(messages["cost"] or 0).quantize(Decimal("0.01"))),
    }


def flow_summary(flow: Flow, *, now: Any = None) -> dict[str, Any]:
    now = now or timezone.now()
    version = flow.template_version
    return {
        "flow_id": flow.pk,
        "name": flow.name,
        "state": flow.state,
        "version": flow.version,
        "base_version_token": flow_token(flow),
        "purpose": flow.purpose,
        "trigger": {
            "event_types": flow.trigger_event_types,
            "anchor": flow.trigger_anchor,
            "offset_minutes": flow.trigger_offset_minutes,
            "payload_match": flow.trigger_payload_match,
            "date_trigger": flow.is_date_trigger,
        },
        "filters": flow.filters,
        "steps": flow.steps,
        "exit_conditions": flow.exit_conditions,
        "frequency_limit": {
            "max_per_period": flow.max_per_period,
            "period_hours": flow.period_hours,
            "once_per_order": flow.once_per_order,
            "set": bool(flow.max_per_period and flow.period_hours),
        },
        "opt_out_handling": {
            "opt_out_exclusion": flow.opt_out_exclusion,
            "note": "Opted-out numbers are never sent to (checked at entry and again at send time)."
            if flow.opt_out_exclusion
            else "Opt-out exclusion is off: the flow cannot be activated.",
            "marketing_rules": flow.purpose == FlowPurpose.MARKETING,
        },
        "template_version": None
        if version is None
        else {
            "template_version_id": version.pk,
            "template_id": version.template_id,
            "name": version.name,
            "version": version.version,
            "approval_status": version.approval_status,
            "usable": template_problem(flow) is None,
            "problem": template_problem(flow),
        },
        "sender_id": flow.sender_id,
        "gateway": flow.gateway.code if flow.gateway else None,
        "monthly_budget": str(flow.monthly_budget) if flow.monthly_budget is not None else None,
        "cost_check": flow.cost_check or None,
        "updated_at": flow.updated_at.isoformat(),
        "updated_by": flow.updated_by.get_username() if flow.updated_by else None,
        "pending_enrolments": Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING).count(),
        "numbers": {name: _numbers(flow, days, now) for name, days in WINDOWS.items()},
    }


def flows_list(*, state: str | None = None, limit: int = 50) -> dict[str, Any]:
    flows = Flow.objects.select_related("template_version", "gateway", "updated_by").order_by("name")
    if state:
        flows = flows.filter(state=state)
    now = timezone.now()
    items = [flow_summary(f, now=now) for f in flows[:limit]]
    return {
        "flows": items,
        "count": len(items),
        "note": "numbers: entered, sent, skipped by reason, exited and cost over the last 7 and 30 days. "
        "Pending is not delivered.",
    }


def flow_funnel(flow: Flow) -> list[dict[str, Any]]:
    """Per step: enrolments that reached it, are waiting at it, and messages sent by it."""
    by_step = dict(
        Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING)
        .values_list("step_index")
        .annotate(n=Count("id"))
        .order_by()
    )
    sent_by_step: dict[int, int] = {}
    for reference in OutboundMessage.objects.filter(
        batch__isnull=True, purpose=flow.purpose, reference__startswith=flow.reference_prefix
    ).values_list("reference", flat=True):
        parts = reference.split(":")
        if len(parts) == 4 and parts[3].isdigit():
            sent_by_step[int(parts[3])] = sent_by_step.get(int(parts[3]), 0) + 1
    total = Enrolment.objects.filter(flow=flow).count()
    out = [{"step": "entered", "count": total}]
    for index, step in enumerate(flow.steps or []):
        label = f"{index}: wait {step['minutes']} min" if step["kind"] == "wait" else f"{index}: send"
        out.append({"step": label, "waiting": by_step.get(index, 0), "sent": sent_by_step.get(index, 0)})
    finished = dict(
        Enrolment.objects.filter(flow=flow)
        .exclude(state=EnrolmentState.WAITING)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    out.append({"step": "finished", **{str(k): v for k, v in finished.items()}})
    return out


def contact_enrolments(*, contact_id: int, limit: int = 100) -> list[dict[str, Any]]:
    rows = Enrolment.objects.filter(contact_id=contact_id).select_related("flow").order_by("-id")[:limit]
    return [
        {
            "enrolment_id": e.pk,
            "flow_id": e.flow_id,
            "flow": e.flow.name,
            "state": e.state,
            "step_index": e.step_index,
            "due_at": e.due_at.isoformat(),
            "sent": e.sent,
            "reason": e.reason,
            "entered_at": e.entered_at.isoformat(),
            "phone": phone_mask(e.phone),
        }
        for e in rows
    ]


def flow_dry_run(*, flow: Flow, days: int, sample: int = 20) -> dict[str, Any]:
    """Which contacts would have entered from the last ``days`` days' trigger events, with today's
    exclusions (filters, opt-outs, marketing consent). Writes nothing."""
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DRY_RUN_DAYS:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"days must be a whole number from 1 to {MAX_DRY_RUN_DAYS}.",
            field="days",
            hint="E.g. 7.",
        )
    from contacts.criteria import criteria_q

    since = timezone.now() - timedelta(days=days)
    events = list(
        CommerceEvent.objects.filter(type__in=flow.trigger_event_types or [], occurred_at__gte=since).values(
            "id", "contact_id", "payload"
        )
    )
    events = [e for e in events if _payload_matches(flow, e["payload"] or {})]
    contact_ids = sorted({e["contact_id"] for e in events})
    contacts = Contact.objects.filter(pk__in=contact_ids)
    excluded: dict[str, int] = {}
    if flow.filters:
        passing = set(contacts.filter(criteria_q(flow.filters)).values_list("pk", flat=True))
        excluded["filtered"] = len(contact_ids) - len(passing)
    else:
        passing = set(contact_ids)
    phones = dict(Contact.objects.filter(pk__in=passing).values_list("pk", "phone"))
    opted = set(active_opt_outs().filter(phone__in=list(phones.values())).values_list("phone", flat=True))
    after_optout = {pk for pk, phone in phones.items() if phone not in opted}
    excluded["opted_out"] = len(passing) - len(after_optout)
    would = after_optout
    if flow.purpose == FlowPurpose.MARKETING:
        consented = set(
            ConsentEvidence.objects.filter(contact_id__in=after_optout, purpose=ConsentPurpose.MARKETING).values_list(
                "contact_id", flat=True
            )
        )
        excluded["no_consent"] = len(after_optout) - len(consented)
        would = consented
    send_index, _wait = _first_send(flow)
    return {
        "flow_id": flow.pk,
        "days": days,
        "trigger_events": len(events),
        "contacts_matched": len(contact_ids),
        "would_enter": len(would),
        "would_enter_events": sum(1 for e in events if e["contact_id"] in would),
        "excluded": excluded,
        "first_send_step": send_index,
        "sample": [
            {"contact_id": pk, "phone": phone_mask(phones[pk])} for pk in sorted(would)[: max(0, min(sample, 100))]
        ],
        "note": "A dry run writes nothing; at send time frequency caps, quiet hours and the flow's limits apply too.",
    }
