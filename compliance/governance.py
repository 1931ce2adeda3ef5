"""The approval engine every governed write goes through (ARCHITECTURE, spine 3).

A governed action registers the permission its requester needs, ``check``
(validates the payload against the current state) and ``execute`` (does the work).
``check`` returns a ``Checked``: the facts the policies look at, and a context
holding whatever ``execute`` needs from the check (an expensive evaluation, say).
``governed_write`` either executes at once, handing ``execute`` the context of the
check it just ran, or freezes the validated payload and the facts in an
ActionRequest (the context is never stored). Approval later runs ``check`` again and
hands the fresh context to ``execute``, so every rule is re-checked at the moment
the approver clicks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from compliance.models import ActionRequest, ApprovalPolicy, Condition
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.idempotency import run_idempotent

Facts = dict[str, Any]


@dataclass(frozen=True)
class Checked:
    """What a check found: ``facts`` for the policies (stored on a held request) and
    ``context`` for the ``execute`` of the same call (never stored)."""

    facts: Facts
    context: Any = None


@dataclass(frozen=True)
class GovernedAction:
    action: str
    permission: str
    # check(actor, payload) -> Checked; raises ApplicationError when a rule fails.
    check: Callable[[Actor, dict[str, Any]], Checked]
    # execute(actor, payload, action_request or None, context of the check just run) -> result
    # dict; runs inside a transaction.
    execute: Callable[[Actor, dict[str, Any], ActionRequest | None, Any], dict[str, Any]]
    # summary(payload, facts) -> one line for the approval queue.
    summary: Callable[[dict[str, Any], Facts], str]
    # on_hold(actor, payload, action_request): what the held request changes besides itself
    # (a campaign marked pending approval); runs in the transaction that creates the request.
    on_hold: Callable[[Actor, dict[str, Any], ActionRequest], None] | None = None
    # A role name: the action is held for that role even when no policy matches (an OTP template
    # is used only once approved); a policy that matches still decides the role. Such an action
    # needs a requesting user (an approval can never be granted by its requester).
    always_held_by: str = ""
    # audit_view(payload) -> what the audit row of a held request shows of the payload (an OTP
    # send's phone number is masked there); None: the payload as it is.
    audit_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_ACTIONS: dict[str, GovernedAction] = {}


def register_action(spec: GovernedAction) -> GovernedAction:
    _ACTIONS[spec.action] = spec
    return spec


def payload_shown(action: str, payload: Any) -> Any:
    """A request's payload as audit rows and pages show it: through the action's ``audit_view``
    (an OTP send's phone masked), or as it is."""
    spec = _ACTIONS.get(action)
    if spec is None or spec.audit_view is None or not isinstance(payload, dict):
        return payload
    return spec.audit_view(payload)


def action_spec(action: str) -> GovernedAction:
    try:
        return _ACTIONS[action]
    except KeyError:  # pragma: no cover - a programming error, not user input
        raise ApplicationError(ErrorCode.INTERNAL_ERROR, f"Action {action!r} is not registered.") from None


def _in_business_hours(at: datetime, approval_cfg: dict[str, Any], tz_name: str) -> bool:
    hours = approval_cfg.get("business_hours", {})
    local = at.astimezone(ZoneInfo(tz_name))
    if local.weekday() not in hours.get("weekdays", [0, 1, 2, 3, 4]):
        return False
    start = time.fromisoformat(hours.get("start", "09:00"))
    end = time.fromisoformat(hours.get("end", "19:00"))
    return start <= local.time() < end


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def policy_matches(policy: ApprovalPolicy, facts: Facts, actor: Actor, config: dict[str, Any]) -> bool:
    if policy.channels and str(actor.channel) not in policy.channels:
        return False
    if policy.condition == Condition.ALWAYS:
        return True
    if policy.condition == Condition.RECIPIENTS_OVER:
        recipients = facts.get("recipients")
        # Unknown size is treated as large: never skip approval for lack of a number.
        return recipients is None or int(recipients) > int(policy.threshold_count or 0)
    if policy.condition == Condition.COST_OVER:
        cost = _decimal(facts.get("cost"))
        return cost is None or cost > (policy.threshold_amount or Decimal(0))
    if policy.condition == Condition.OUTSIDE_BUSINESS_HOURS:
        tz_name = config.get("schedule", {}).get("time_zone", "Asia/Hong_Kong")
        return not _in_business_hours(timezone.now(), config.get("approval", {}), tz_name)
    if policy.condition == Condition.OVERWRITES_EXISTING:
        return bool(facts.get("overwrites_existing"))
    if policy.condition == Condition.SENSITIVE_CONTENT:
        # The action's check() decides what is sensitive (template wording, payment landing pages).
        return bool(facts.get("sensitive"))
    if policy.condition == Condition.UNCONFIRMED:
        # The action's check() sets "confirmed" only for an explicit confirmation by a holder of
        # its confirm permission; anything else (missing included) is held.
        return not facts.get("confirmed")
    return True  # pragma: no cover - unknown conditions fail safe


def matching_policy(action: str, facts: Facts, actor: Actor) -> ApprovalPolicy | None:
    from smsplatform.config_service import platform_config_data

    policies = list(
        ApprovalPolicy.objects.filter(action=action, enabled=True).select_related("approver_role").order_by("id")
    )
    if not policies:
        return None  # most writes: no policy, and no read of the platform config either
    config = platform_config_data()
    for policy in policies:
        if policy_matches(policy, facts, actor, config):
            return policy
    return None


def _check_requester(spec: GovernedAction, actor: Actor) -> None:
    if not actor.has_perm(spec.permission):
        raise permission_denied(spec.permission)


def governed_write(
    *,
    actor: Actor,
    action: str,
    payload: dict[str, Any],
    idempotency_key: str | None,
    reason: str = "",
    also_governed_by: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Execute the action now, or hold it for approval when a policy says so.

    ``also_governed_by``: other actions whose policies apply too (after the action's own), for
    a write that is more than one kind of change -- a contact upsert that lifts an opt-out is an
    ``opt_outs.update`` and still a contact change, so neither policy can be side-stepped by
    choosing the other. The request is held under ``action`` with the first policy that matches.

    Returns ``{"status": "executed", "result": ...}`` or
    ``{"status": "pending_approval", "action_request_id": ..., ...}``.
    """
    spec = action_spec(action)
    _check_requester(spec, actor)

    def body() -> dict[str, Any]:
        checked = spec.check(actor, payload)
        policy = None
        if actor.user_id:
            for governing in (action, *also_governed_by):
                policy = matching_policy(governing, checked.facts, actor)
                if policy is not None:
                    break
        if policy is None and spec.always_held_by:
            if not actor.user_id:
                raise permission_denied(spec.permission, hint="Only a user may request this; an approver decides it.")
            return _hold_for_approval(
                spec=spec,
                actor=actor,
                payload=payload,
                facts=checked.facts,
                policy=None,
                reason=reason,
                key=idempotency_key,
            )
        if policy is None:
            result = spec.execute(actor, payload, None, checked.context)
            return {"status": "executed", "action": action, "result": result}
        return _hold_for_approval(
            spec=spec,
            actor=actor,
            payload=payload,
            facts=checked.facts,
            policy=policy,
            reason=reason,
            key=idempotency_key,
        )

    return run_idempotent(
        actor=actor,
        key=idempotency_key,
        operation=action,
        payload=payload,
        execute=body,
    )


def _hold_for_approval(
    *,
    spec: GovernedAction,
    actor: Actor,
    payload: dict[str, Any],
    facts: Facts,
    policy: ApprovalPolicy | None,
    reason: str,
    key: str | None,
) -> dict[str, Any]:
    from django.contrib.auth.models import Group

    from smsplatform.config_service import platform_config_data

    ttl = (policy.request_ttl_hours if policy else None) or platform_config_data()["approval"]["request_ttl_hours"]
    role = policy.approver_role if policy else Group.objects.get(name=spec.always_held_by)
    described = policy.describe() if policy else f"always (built in) -> {role.name}"
    request = ActionRequest.objects.create(
        action=spec.action,
        payload=payload,
        facts=facts,
        summary=spec.summary(payload, facts)[:300],
        policy=policy,
        required_role=role,
        requested_by=actor.user,
        channel=str(actor.channel),
        token_name=actor.token_name,
        request_reason=reason,
        idempotency_key=key or "",
        expires_at=timezone.now() + timedelta(hours=ttl),
    )
    audit_record(
        actor=actor,
        action="action_request.create",
        object_type="action_request",
        object_id=request.pk,
        after={
            "action": spec.action,
            "payload": payload_shown(spec.action, payload),
            "facts": facts,
            "policy": described,
        },
        reason=reason,
        action_request_id=request.pk,
        idempotency_key=key or "",
    )
    if spec.on_hold is not None:
        # Same transaction as the request: held and marked together, or neither.
        spec.on_hold(actor, payload, request)
    return {
        "status": "pending_approval",
        "action": spec.action,
        "action_request_id": request.pk,
        "required_role": role.name,
        "policy": described,
        "expires_at": request.expires_at.isoformat(),
        "hint": "An approver decides in the admin; follow it with sms_marketing.action_request.status.",
    }
