"""Writes of the compliance app: approval decisions, expiry, policies."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from compliance.governance import action_spec
from compliance.models import ActionRequest, ApprovalPolicy, RequestState
from compliance.selectors import action_request_payload
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import (
    ApplicationError,
    ErrorCode,
    not_found,
    permission_denied,
)

APPROVE_PERMISSION = "compliance.approve_actionrequest"


def _lock_request(request_id: int) -> ActionRequest:
    # Lock the request row: two approvers clicking at once are serialised here,
    # and the second sees the first one's final state.
    request = (
        ActionRequest.objects.select_for_update(of=("self",))
        .select_related("required_role", "requested_by")
        .filter(pk=request_id)
        .first()
    )
    if request is None:
        raise not_found(
            "action request",
            request_id,
            field="action_request_id",
            hint="Check the id.",
        )
    return request


def _check_decider(actor: Actor, request: ActionRequest) -> None:
    if not actor.has_perm(APPROVE_PERMISSION):
        raise permission_denied(APPROVE_PERMISSION)
    if actor.user_id is not None and actor.user_id == request.requested_by_id:
        raise ApplicationError(
            ErrorCode.APPROVAL_SELF_APPROVAL,
            "A requester can never decide their own request.",
            field="action_request_id",
            hint="Another member of the approving role must decide it.",
        )
    if not actor.user.is_superuser and not actor.user.groups.filter(pk=request.required_role_id).exists():
        raise ApplicationError(
            ErrorCode.APPROVAL_ROLE_REQUIRED,
            f"This request must be decided by the role {request.required_role.name!r}.",
            field="action_request_id",
            hint="Ask a member of that role (see sms_marketing.owners.list).",
        )


def _check_pending(request: ActionRequest) -> None:
    if request.state != RequestState.PENDING:
        raise ApplicationError(
            ErrorCode.APPROVAL_NOT_PENDING,
            f"Request #{request.pk} is already {request.get_state_display().lower()}.",
            field="action_request_id",
            hint="Only pending requests can be decided; see sms_marketing.action_request.status.",
        )


def _expire(request: ActionRequest, actor: Actor) -> None:
    request.state = RequestState.EXPIRED
    request.decided_at = timezone.now()
    request.save(update_fields=["state", "decided_at"])
    audit_record(
        actor=actor,
        action="action_request.expire",
        object_type="action_request",
        object_id=request.pk,
        before={"state": RequestState.PENDING},
        after={"state": RequestState.EXPIRED},
        action_request_id=request.pk,
    )


def action_request_approve(*, actor: Actor, action_request_id: int, reason: str = "") -> dict[str, Any]:
    """Approve and execute: the action's rules are checked again now, as the requester."""
    expired = False
    with transaction.atomic(durable=True):
        request = _lock_request(action_request_id)
        _check_pending(request)
        _check_decider(actor, request)
        if request.is_expired:
            # Record the expiry (it is a fact), then refuse after commit.
            _expire(request, actor)
            expired = True
        else:
            spec = action_spec(request.action)
            requester = Actor(
                user=request.requested_by,
                channel=Channel(request.channel),
                token_name=request.token_name,
            )
            request.decided_by_id = actor.user_id
            request.decided_at = timezone.now()
            request.decision_reason = reason
            try:
                # A savepoint: a rule that fails now leaves no partial write behind.
                with transaction.atomic():
                    if not requester.has_perm(spec.permission):
                        raise permission_denied(
                            spec.permission,
                            hint="The requester no longer holds the permission; reject or re-request.",
                        )
                    checked = spec.check(requester, request.payload)
                    result = spec.execute(requester, request.payload, request, checked.context)
                request.state = RequestState.EXECUTED
                request.executed_at = timezone.now()
                request.outcome = {"result": result}
            except ApplicationError as exc:
                request.state = RequestState.FAILED
                request.outcome = {"error": exc.as_dict()}
            request.save()
            audit_record(
                actor=actor,
                action="action_request.approve",
                object_type="action_request",
                object_id=request.pk,
                before={"state": RequestState.PENDING},
                after={"state": request.state, "outcome": request.outcome},
                reason=reason,
                action_request_id=request.pk,
            )
    if expired:
        raise ApplicationError(
            ErrorCode.APPROVAL_EXPIRED,
            f"Request #{action_request_id} expired before it was decided.",
            field="action_request_id",
            hint="The requester must submit the action again.",
        )
    return action_request_payload(request)


def action_request_reject(*, actor: Actor, action_request_id: int, reason: str) -> dict[str, Any]:
    if not reason or not reason.strip():
        raise ApplicationError(
            ErrorCode.APPROVAL_REASON_REQUIRED,
            "A rejection needs a reason the requester can act on.",
            field="reason",
            hint="Say what must change before the request can be approved.",
        )
    with transaction.atomic(durable=True):
        request = _lock_request(action_request_id)
        _check_pending(request)
        _check_decider(actor, request)
        request.state = RequestState.REJECTED
        request.decided_by_id = actor.user_id
        request.decided_at = timezone.now()
        request.decision_reason = reason.strip()
        request.save()
        audit_record(
            actor=actor,
            action="action_request.reject",
            object_type="action_request",
            object_id=request.pk,
            before={"state": RequestState.PENDING},
            after={"state": RequestState.REJECTED},
            reason=reason.strip(),
            action_request_id=request.pk,
        )
    return action_request_payload(request)


def action_requests_close(*, actor: Actor, requests: Any, reason: str) -> list[dict[str, Any]]:
    """Close pending requests whose subject is gone (a cancelled campaign): rejected with ``reason``,
    audited, and each requester told through the notification outbox. Runs in the caller's
    transaction (the change that made them moot), so both commit together or neither.

    SKIP LOCKED, in pk order: a request an approver is deciding at this moment is left to that
    decision, which re-checks its rules under the subject's lock and fails there; waiting for it
    here could deadlock (the decision locks the request, then the subject)."""
    from smsplatform.kernel.notifications import notification_record

    closed = []
    now = timezone.now()
    for request in (
        requests.filter(state=RequestState.PENDING)
        .select_for_update(of=("self",), skip_locked=True)
        .select_related("requested_by")
        .order_by("pk")
    ):
        request.state = RequestState.REJECTED
        request.decided_by_id = actor.user_id
        request.decided_at = now
        request.decision_reason = reason[:1000]
        request.save(update_fields=["state", "decided_by", "decided_at", "decision_reason"])
        email = getattr(request.requested_by, "email", "") or ""
        notified = None
        if email:
            notified = notification_record(
                recipients=[email],
                subject=f"Request #{request.pk} closed: {reason}"[:200],
                body=f"Your request #{request.pk} ({request.summary}) was closed without a decision: {reason}.",
                object_type="action_request",
                object_id=request.pk,
            ).pk
        audit_record(
            actor=actor,
            action="action_request.close",
            object_type="action_request",
            object_id=request.pk,
            before={"state": RequestState.PENDING},
            after={"state": RequestState.REJECTED, "notification_id": notified},
            reason=reason,
            action_request_id=request.pk,
        )
        closed.append({"action_request_id": request.pk, "action": request.action, "notification_id": notified})
    return closed


def action_requests_expire(*, actor: Actor) -> int:
    """Mark every pending request past its expiry as expired (run by beat)."""
    now = timezone.now()
    count = 0
    with transaction.atomic(durable=True):
        # SKIP LOCKED: a request an approver is deciding right now is left to them.
        due = (
            ActionRequest.objects.select_for_update(skip_locked=True)
            .filter(state=RequestState.PENDING, expires_at__lte=now)
            .order_by("pk")
        )
        for request in due:
            _expire(request, actor)
            count += 1
    return count


def approval_policy_validate(policy: ApprovalPolicy) -> None:
    """An approving role must be able to approve; otherwise requests could never be decided."""
    if not policy.approver_role_id or not Group.objects.filter(pk=policy.approver_role_id).exists():
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, "Unknown approver role.", field="approver_role")
    if not policy.approver_role.permissions.filter(
        codename="approve_actionrequest", content_type__app_label="compliance"
    ).exists():
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"The role {policy.approver_role.name!r} cannot approve requests.",
            field="approver_role",
            hint="Pick a role holding 'Can approve or reject action requests' (e.g. approver).",
        )


def approval_policy_save(*, actor: Actor, policy: ApprovalPolicy) -> ApprovalPolicy:
    """Create or change a policy (admin). Audited with before and after."""
    perm = "compliance.change_approvalpolicy" if policy.pk else "compliance.add_approvalpolicy"
    if not actor.has_perm(perm):
        raise permission_denied(perm)
    approval_policy_validate(policy)
    with transaction.atomic(durable=True):
        before = None
        if policy.pk:
            old = ApprovalPolicy.objects.select_for_update().select_related("approver_role").get(pk=policy.pk)
            before = {
                "action": old.action,
                "rule": old.describe(),
                "enabled": old.enabled,
            }
        policy.full_clean()
        policy.save()
        audit_record(
            actor=actor,
            action="approval_policy.save",
            object_type="approval_policy",
            object_id=policy.pk,
            before=before,
            after={
                "action": policy.action,
                "rule": policy.describe(),
                "enabled": policy.enabled,
            },
        )
    return policy
