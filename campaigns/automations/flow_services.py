"""Flow writes: create a draft, and automations.update_state (activate, pause, archive, update) through
the governance spine (ActionType.AUTOMATION_UPDATE).

Activation -- and any change while the flow stays active -- is refused without opt-out handling,
a frequency limit, a valid approved template and a passing cost check (rules.flow_activation_check).
Large, promotional or transaction-critical flows follow the approval policies: the facts are the
estimated monthly messages (``recipients``), the monthly cost, and ``sensitive`` (promotional:
marketing; transaction-critical: transactional). Approval re-runs the check before executing.
Pausing holds pending steps (the tick only sends for active flows); archiving drops them.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from campaigns.automations.engine import enrolments_drop
from campaigns.automations.errors import AutomationErrorCode
from campaigns.automations.flow_models import Flow, FlowPurpose, FlowState, FlowVersion
from campaigns.automations.rules import flow_activation_check
from campaigns.automations.spec import (
    UPDATE_STATE_FIELDS,
    flow_fields_set,
    flow_snapshot,
    flow_token,
    flow_token_check,
    spec_normalise,
)
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.idempotency import run_idempotent

VIEW = "automations.view_flow"
ADD = "automations.add_flow"
CHANGE = "automations.change_flow"
CONFIRM = "automations.confirm_flow"

OPERATIONS = ("activate", "pause", "archive", "update")
# Which states each operation may start from.
ALLOWED_FROM = {
    "activate": (FlowState.DRAFT, FlowState.PAUSED),
    "pause": (FlowState.ACTIVE,),
    "archive": (FlowState.DRAFT, FlowState.ACTIVE, FlowState.PAUSED),
    "update": (FlowState.DRAFT, FlowState.ACTIVE, FlowState.PAUSED),
}
TARGET = {"activate": FlowState.ACTIVE, "pause": FlowState.PAUSED, "archive": FlowState.ARCHIVED}


def flow_get_or_404(flow_id: Any, *, lock: bool = False) -> Flow:
    qs = Flow.objects.select_related("template_version", "gateway", "updated_by")
    if lock:
        qs = qs.select_for_update(of=("self",))
    flow = qs.filter(pk=flow_id).first() if isinstance(flow_id, int) else None
    if flow is None:
        raise ApplicationError(
            ErrorCode.NOT_FOUND,
            f"No flow {flow_id}.",
            field="flow_id",
            hint="See sms_marketing.automations.list.",
        )
    return flow


def _version_record(actor: Actor, flow: Flow, changed: list[str], reason: str) -> None:
    FlowVersion.objects.create(
        flow=flow,
        version=flow.version,
        state=flow.state,
        data=flow_snapshot(flow),
        changed_fields=changed,
        reason=reason,
        created_by=actor.user,
    )


def flow_result(flow: Flow, **extra: Any) -> dict[str, Any]:
    return {
        "flow_id": flow.pk,
        "name": flow.name,
        "state": flow.state,
        "version": flow.version,
        "base_version_token": flow_token(flow),
        **extra,
    }


def flow_create(*, actor: Actor, data: dict[str, Any], idempotency_key: str | None, reason: str = "") -> dict[str, Any]:
    """A new draft flow (nothing runs until it is activated through update_state)."""
    if not actor.has_perm(ADD):
        raise permission_denied(ADD)
    spec = spec_normalise(data)
    for required in ("name", "trigger_event_types", "steps"):
        if required not in spec:
            raise ApplicationError(
                AutomationErrorCode.FLOW_INVALID,
                f"{required} is required.",
                field=required,
                hint="See the flow fields.",
            )

    def body() -> dict[str, Any]:
        if Flow.objects.filter(name=spec["name"]).exists():
            raise ApplicationError(
                AutomationErrorCode.FLOW_INVALID,
                f"A flow named {spec['name']!r} exists.",
                field="name",
                hint="Choose another name.",
            )
        now = timezone.now()
        flow = Flow(created_by=actor.user, updated_by=actor.user, created_at=now, updated_at=now)
        flow_fields_set(flow, spec)
        flow.save()
        _version_record(actor, flow, sorted(spec), reason)
        audit_record(
            actor=actor,
            action="flow.create",
            object_type="flow",
            object_id=flow.pk,
            after=flow_snapshot(flow),
            reason=reason,
            idempotency_key=idempotency_key or "",
        )
        return flow_result(flow)

    return run_idempotent(actor=actor, key=idempotency_key, operation="flow.create", payload=spec, execute=body)


def _apply(flow: Flow, payload: dict[str, Any]) -> tuple[Flow, list[str]]:
    """The flow as it would be after the change (unsaved): the operation's target state and fields."""
    changes = spec_normalise(payload.get("changes") or {})
    flow_fields_set(flow, changes)
    target = TARGET.get(payload["operation"])
    if target is not None:
        flow.state = target
    return flow, sorted(changes)


def _state_check(flow: Flow, operation: str) -> None:
    if flow.state not in ALLOWED_FROM[operation]:
        raise ApplicationError(
            AutomationErrorCode.FLOW_STATE,
            f"Flow {flow.pk} is {flow.state}; {operation} applies to {', '.join(ALLOWED_FROM[operation])} flows.",
            field="operation",
            hint="Read the flow's state with sms_marketing.automations.list.",
        )


def _update_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    flow = flow_get_or_404(payload["flow_id"])
    flow_token_check(flow, payload["base_version_token"])
    operation = payload["operation"]
    _state_check(flow, operation)
    flow, changed = _apply(flow, payload)
    if operation == "update" and not changed:
        raise ApplicationError(
            AutomationErrorCode.FLOW_INVALID, "changes is empty.", field="changes", hint="Name a field to change."
        )
    facts: dict[str, Any] = {
        "operation": operation,
        "changed": changed,
        "promotional": flow.purpose == FlowPurpose.MARKETING,
        "transaction_critical": flow.purpose == FlowPurpose.TRANSACTIONAL,
        "confirmed": payload.get("confirm") is True and actor.has_perm(CONFIRM),
    }
    estimate = None
    if flow.state == FlowState.ACTIVE:
        # Activating, or changing a flow that stays active: every rule must hold.
        estimate = flow_activation_check(flow)
        facts.update(
            recipients=estimate["messages"],
            cost=estimate["monthly_cost"],
            currency=estimate["currency"],
            sensitive=True,
        )
    else:
        # Pausing, archiving and draft edits stop or change nothing that sends.
        facts.update(recipients=0, cost="0", sensitive=False, confirmed=True)
    return Checked(facts=facts, context=estimate)


def _update_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    flow = flow_get_or_404(payload["flow_id"], lock=True)
    flow_token_check(flow, payload["base_version_token"])
    operation = payload["operation"]
    _state_check(flow, operation)
    before = flow_snapshot(flow)
    flow, changed = _apply(flow, payload)
    estimate = context
    if flow.state == FlowState.ACTIVE and estimate is None:
        estimate = flow_activation_check(flow)
    now = timezone.now()
    if estimate is not None:
        flow.cost_check = estimate
    if operation == "activate" and flow.activated_at is None:
        flow.activated_at = now
    flow.version += 1
    flow.updated_at = now
    flow.updated_by = actor.user if actor.user_id else flow.updated_by
    flow.approval_request_id = request.pk if request else flow.approval_request_id
    flow.save()
    dropped = (
        enrolments_drop(flow=flow, now=now)
        if operation == "archive"
        else {"dropped_enrolments": 0, "withdrawn_messages": 0}
    )
    _version_record(actor, flow, changed, payload.get("reason", ""))
    audit_record(
        actor=actor,
        action=f"flow.{operation}",
        object_type="flow",
        object_id=flow.pk,
        before=before,
        after={**flow_snapshot(flow), "cost_check": estimate, **dropped},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return flow_result(flow, operation=operation, changed=changed, cost_check=estimate, **dropped)


register_action(
    GovernedAction(
        action=ActionType.AUTOMATION_UPDATE,
        permission=CHANGE,
        check=_update_check,
        execute=_update_execute,
        summary=lambda payload, facts: (
            f"{payload['operation'].capitalize()} flow #{payload['flow_id']}"
            + (
                f": ~{facts.get('recipients')} messages / {facts.get('cost')} a month"
                if facts.get("recipients")
                else ""
            )
        ),
    )
)


def flow_update_state(
    *,
    actor: Actor,
    flow_id: Any,
    operation: str,
    base_version_token: Any,
    changes: dict[str, Any] | None = None,
    confirm: bool = False,
    idempotency_key: str | None,
    reason: str = "",
    allowed_fields: tuple[str, ...] = UPDATE_STATE_FIELDS,
) -> dict[str, Any]:
    if not actor.has_perm(CHANGE):
        raise permission_denied(CHANGE)
    if operation not in OPERATIONS:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"operation must be one of {', '.join(OPERATIONS)}.",
            field="operation",
            hint="activate, pause, archive or update.",
        )
    unknown = sorted(set(changes or {}) - set(allowed_fields))
    if unknown:
        raise ApplicationError(
            AutomationErrorCode.FLOW_INVALID,
            f"changes.{unknown[0]} cannot be changed here.",
            field=f"changes.{unknown[0]}",
            hint=f"Changeable: {', '.join(allowed_fields)}.",
        )
    flow = flow_get_or_404(flow_id)
    return governed_write(
        actor=actor,
        action=ActionType.AUTOMATION_UPDATE,
        payload={
            "flow_id": flow.pk,
            "operation": operation,
            "base_version_token": str(base_version_token or ""),
            "changes": dict(changes or {}),
            "confirm": bool(confirm),
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )
