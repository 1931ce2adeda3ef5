"""Reads of the compliance app."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Case, IntegerField, QuerySet, Value, When

from compliance.models import ActionRequest, ApprovalPolicy, RequestState
from compliance.roles import CAPABILITIES, ROLE_LABELS, Role
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import not_found


def approval_policies_list(*, action: str | None = None) -> list[dict[str, Any]]:
    qs = ApprovalPolicy.objects.select_related("approver_role").order_by("action", "id")
    if action:
        qs = qs.filter(action=action)
    return [
        {
            "id": p.pk,
            "action": p.action,
            "action_label": p.get_action_display(),
            "condition": p.condition,
            "threshold_count": p.threshold_count,
            "threshold_amount": str(p.threshold_amount) if p.threshold_amount is not None else None,
            "currency": p.currency,
            "channels": list(p.channels or []),
            "approver_role": p.approver_role.name,
            "request_ttl_hours": p.request_ttl_hours,
            "enabled": p.enabled,
            "rule": p.describe(),
            "description": p.description,
        }
        for p in qs
    ]


def owners_list(*, role: str | None = None) -> list[dict[str, Any]]:
    """Users with platform roles and what they may do. No emails or phones: minimal data."""
    users = (
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[r.value for r in Role])
        .distinct()
        .prefetch_related("groups")
        .order_by("username")
    )
    if role:
        users = users.filter(groups__name=role)
    out = []
    for user in users:
        roles = sorted(g.name for g in user.groups.all() if g.name in {r.value for r in Role})
        out.append(
            {
                "username": user.username,
                "display_name": user.get_full_name() or user.username,
                "roles": [
                    {
                        "role": r,
                        "label_en": ROLE_LABELS[Role(r)][0],
                        "label_zh": ROLE_LABELS[Role(r)][1],
                    }
                    for r in roles
                ],
                "capabilities": sorted(name for name, perm in CAPABILITIES.items() if user.has_perm(perm)),
            }
        )
    return out


def queue_order(qs: QuerySet[ActionRequest]) -> QuerySet[ActionRequest]:
    """Pending first, then newest."""
    return qs.annotate(
        _pending_first=Case(
            When(state=RequestState.PENDING, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
    ).order_by("_pending_first", "-created_at", "-id")


def action_request_access(*, actor: Actor, action_request_id: int) -> ActionRequest:
    """A request the actor may see: their own, or any with view_all_actionrequests."""
    qs = ActionRequest.objects.select_related("required_role", "requested_by", "decided_by", "policy")
    if not actor.has_perm("compliance.view_all_actionrequests"):
        qs = qs.filter(requested_by_id=actor.user_id)
    request = qs.filter(pk=action_request_id).first()
    if request is None:
        raise not_found(
            "action request",
            action_request_id,
            field="action_request_id",
            hint="Use the action_request_id a write tool returned with status pending_approval.",
        )
    return request


def action_request_payload(request: ActionRequest) -> dict[str, Any]:
    outcome = request.outcome or {}
    return {
        "action_request_id": request.pk,
        "action": request.action,
        "state": request.state,
        "state_label": request.get_state_display(),
        "is_final": request.is_final,
        "summary": request.summary,
        "requested_by": request.requested_by.username,
        "channel": request.channel,
        "required_role": request.required_role.name,
        "created_at": request.created_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "decided_by": request.decided_by.username if request.decided_by_id and request.decided_by else None,
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "decision_reason": request.decision_reason or None,
        "executed_at": request.executed_at.isoformat() if request.executed_at else None,
        "result": outcome.get("result"),
        "error": outcome.get("error"),
        "note": (
            "This reports governance progress only. Do not retry a non-idempotent send; "
            "reuse the same idempotency_key or make an explicit new request."
        ),
    }


def action_request_status(*, actor: Actor, action_request_id: int) -> dict[str, Any]:
    return action_request_payload(action_request_access(actor=actor, action_request_id=action_request_id))


def held_request_brief(*, actor: Actor, answer: dict[str, Any]) -> dict[str, Any]:
    """Where the request a governed write was held for stands now (id, state, the role that
    decides), for a page that shows the write's answer: the same read as
    sms_marketing.action_request.status, and nothing when the write was not held or the actor
    may not read the request."""
    from smsplatform.kernel.errors import ApplicationError

    request_id = answer.get("action_request_id")
    if not request_id:
        return {}
    try:
        status = action_request_status(actor=actor, action_request_id=int(request_id))
    except ApplicationError:
        return {}
    return {"id": status["action_request_id"], "state": status["state"], "role": status["required_role"]}
