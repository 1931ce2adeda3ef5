"""What the campaign write services share: their permissions, how a campaign takes an
evaluation and its fields, its version rows, the result every write returns, and the rules of
a live send or schedule (the confirmation rule, the live check, the hold for approval)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.content import Evaluation, budget_check, campaign_evaluate, quota_check, short_link_in_use
from campaigns.errors import CampaignErrorCode
from campaigns.models import Campaign, CampaignState, CampaignVersion
from campaigns.spec import campaign_error, campaign_snapshot, campaign_spec, campaign_token, campaign_token_check
from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.money import money_text

ADD = "campaigns.add_campaign"
CHANGE = "campaigns.change_campaign"
SCHEDULE = "campaigns.schedule_campaign"
SEND = "campaigns.send_campaign"
CONFIRM = "campaigns.confirm_campaign"
DISPATCH_TASK = "campaigns.dispatch_campaign"


def campaign_evaluation_apply(campaign: Campaign, evaluation: Evaluation) -> None:
    campaign.body_preview = evaluation.body_preview
    campaign.encoding = evaluation.encoding
    campaign.segments_per_message = evaluation.segments
    campaign.estimate = {
        "at": timezone.now().isoformat(),
        "recipients": evaluation.recipients,
        "matched": evaluation.counts["matched"],
        "exclusions": evaluation.counts["exclusions"],
        "cost": {k: str(v) for k, v in evaluation.cost.items()},
        "by_country": evaluation.by_country,
    }


def campaign_link_claim(campaign: Campaign, evaluation: Evaluation | None) -> None:
    """Make the evaluated short link this campaign's own. The claim is one conditional UPDATE: of
    two drafts racing for the same free link one wins, the other is refused (and rolls back)."""
    link = evaluation.link if evaluation is not None else None
    if link is None or link.campaign_id == campaign.pk:
        return
    claimed = type(link).objects.filter(pk=link.pk, campaign_id__isnull=True).update(campaign_id=campaign.pk)
    if not claimed:
        owner = type(link).objects.filter(pk=link.pk).values_list("campaign_id", flat=True).first()
        if owner != campaign.pk:
            raise short_link_in_use(link.code, owner or 0)


def campaign_version_record(actor: Actor, campaign: Campaign, changed: list[str], reason: str) -> None:
    CampaignVersion.objects.create(
        campaign=campaign,
        version=campaign.version,
        data=json.loads(json.dumps(campaign_snapshot(campaign), default=str)),
        changed_fields=changed,
        reason=reason,
        created_by=actor.user,
    )


def campaign_fields_set(campaign: Campaign, spec: dict[str, Any]) -> None:
    from gateways.models import Gateway

    for name, value in spec.items():
        if name == "gateway":
            campaign.gateway = Gateway.objects.get(code=value) if value else None
        elif name == "text":
            campaign.text = value or ""
        elif name == "budget":
            campaign.budget = Decimal(value) if value is not None else None
        elif name == "send_at":
            campaign.send_at = datetime.fromisoformat(value) if value else None
        else:
            setattr(campaign, name, value)


def campaign_result(campaign: Campaign, evaluation: Evaluation | None = None, **extra: Any) -> dict[str, Any]:
    out = {
        "campaign_id": campaign.pk,
        "name": campaign.name,
        "state": campaign.state,
        "version": campaign.version,
        "base_version_token": campaign_token(campaign),
        "body_preview": campaign.body_preview,
        "encoding": campaign.encoding,
        "segments_per_message": campaign.segments_per_message,
    }
    if evaluation is not None:
        out.update(
            recipients=evaluation.recipients,
            estimated_cost={k: str(v) for k, v in evaluation.cost.items()},
            warnings=evaluation.warnings,
        )
    out.update(extra)
    return out


def campaign_reviewer(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, *, action: str = ActionType.CAMPAIGN_SCHEDULE
) -> int | None:
    """Approval by someone else, or explicit confirmation by a holder of confirm_campaign."""
    if request is not None:
        return request.decided_by_id
    if payload.get("confirm") is True and actor.has_perm(CONFIRM):
        return actor.user_id
    path = campaign_review_path(actor, action)
    raise campaign_error(
        CampaignErrorCode.CAMPAIGN_NOT_APPROVED,
        f"A live send needs an approval by someone else or a confirmation by a holder of {CONFIRM}. {path['message']}",
        field="confirm",
        hint=path["hint"],
        path=path["path"],
    )


def campaign_confirmed(actor: Actor, payload: dict[str, Any]) -> bool:
    """The fact an 'unconfirmed' approval policy looks at: confirm=true from a holder of confirm_campaign."""
    return payload.get("confirm") is True and actor.has_perm(CONFIRM)


def _holding_policies(action: str, actor: Actor) -> list[ApprovalPolicy]:
    """The enabled policies that hold every unconfirmed request of ``action`` from this channel,
    whatever its size: the ones that give a user who cannot confirm a path."""
    policies = ApprovalPolicy.objects.filter(
        action=action, enabled=True, condition__in=[Condition.ALWAYS, Condition.UNCONFIRMED]
    ).select_related("approver_role")
    return [p for p in policies.order_by("id") if not p.channels or str(actor.channel) in p.channels]


def _roles_with(permission: str) -> list[str]:
    app_label, codename = permission.split(".", 1)
    groups = Group.objects.filter(permissions__content_type__app_label=app_label, permissions__codename=codename)
    return sorted(groups.values_list("name", flat=True).distinct())


def campaign_review_path(actor: Actor, action: str) -> dict[str, Any]:
    """Which way a live schedule or send goes for THIS user: ``confirm`` (they may confirm it
    themselves), ``request_approval`` (held for an approver), or ``none`` (no path: who can help).

    The answer is what the campaign_not_approved error, the admin's request forms and the
    pending answer tell the user, so each of them names the same way forward."""
    tool = (
        "sms_marketing.campaigns.send_approved"
        if action == ActionType.CAMPAIGN_SEND
        else "sms_marketing.campaigns.schedule"
    )
    permission = SEND if action == ActionType.CAMPAIGN_SEND else SCHEDULE
    holding = _holding_policies(action, actor)
    approver_roles = sorted({p.approver_role.name for p in holding})
    if not actor.has_perm(permission):
        roles = ", ".join(_roles_with(permission)) or "none"
        return {
            "path": "none",
            "message": f"You may not request this: it needs {permission} (roles: {roles}).",
            "hint": "Ask a user with one of those roles to request it; approvers decide held requests in the admin "
            "(Action requests).",
        }
    if actor.has_perm(CONFIRM):
        also = " Without confirm it is held for an approver." if holding else ""
        return {
            "path": "confirm",
            "message": f"You may confirm: call {tool} with confirm=true.{also}",
            "hint": f"Call {tool} again with confirm=true, after reviewing the campaign (sms_marketing.cost_preview).",
        }
    if holding:
        return {
            "path": "request_approval",
            "message": (
                f"You may request approval: call {tool} without confirm (your confirm does not count: you do not "
                f"hold {CONFIRM}); it is held for an approver (role {', '.join(approver_roles)}), who approves it "
                "in the admin (Action requests)."
            ),
            "hint": f"Call {tool} without confirm, then follow the request with sms_marketing.action_request.status.",
        }
    confirmers = ", ".join(_roles_with(CONFIRM)) or "none"
    return {
        "path": "none",
        "message": (
            f"No path applies to you: you do not hold {CONFIRM}, and no enabled approval policy holds this "
            f"request for an approver (policies for {action} apply only over a threshold, or none exist)."
        ),
        "hint": (
            f"Ask a compliance user to add an approval policy for {action} with condition 'unconfirmed' (then "
            f"call {tool} without confirm), or ask a holder of {CONFIRM} (roles: {confirmers}) to call it with "
            "confirm=true."
        ),
    }


def campaign_hold_notice(actor: Actor, answer: dict[str, Any], *, confirm: bool) -> dict[str, Any]:
    """A held answer to a confirm=true that did not count says so (once, also on a replay)."""
    if confirm and answer.get("status") == "pending_approval" and not actor.has_perm(CONFIRM):
        notice = f"confirm=true did not count: you do not hold {CONFIRM}, so the request is held for an approver."
        return {**answer, "hint": f"{notice} {answer.get('hint', '')}".strip()}
    return answer


def campaign_live_check(
    actor: Actor, payload: dict[str, Any], *, send_at: datetime | None
) -> tuple[Campaign, Evaluation]:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"])
    campaign_token_check(campaign, payload["base_version_token"])
    allowed = (CampaignState.DRAFT, CampaignState.PENDING_APPROVAL, CampaignState.APPROVED, CampaignState.SCHEDULED)
    if campaign.state not in allowed:
        raise campaign_error(
            CampaignErrorCode.CAMPAIGN_STATE,
            f"Campaign {campaign.pk} is {campaign.state}.",
            field="campaign_id",
            hint="Only draft, approved or scheduled campaigns can be scheduled or sent.",
        )
    evaluation = campaign_evaluate(actor, campaign_spec(campaign), campaign_id=campaign.pk, send_at=send_at)
    if evaluation.body_preview != campaign.body_preview:
        raise campaign_error(
            CampaignErrorCode.CAMPAIGN_CONTENT_CHANGED,
            "The message would differ from the reviewed draft (a template, link or rule changed).",
            field="campaign_id",
            hint="Read the campaign again (campaigns.get) and update it so the draft shows what will go out.",
        )
    budget_check(evaluation, budget=campaign.budget)
    quota = quota_check(evaluation)
    if not quota["within"]:
        raise campaign_error(
            CampaignErrorCode.QUOTA_EXCEEDED,
            f"The campaign needs {quota['segments_needed']} segments / "
            f"{money_text(quota['amount_needed'], quota['currency'])}; available {quota['available_segments']} "
            f"segments / {money_text(quota['available_amount'], quota['currency'])}.",
            field="campaign_id",
            hint="Top up, raise the quota or narrow the segment (sms_marketing.quotas.get).",
            **quota,
        )
    return campaign, evaluation


def campaign_mark_pending(actor: Actor, payload: dict[str, Any], request: ActionRequest) -> None:
    """The on-hold step of a schedule or send: a draft with a request waiting is pending approval.

    Runs in the transaction that creates the action request (the engine's on_hold), so the
    request and the campaign's state change commit together, audited."""
    campaign = (
        Campaign.objects.select_for_update(of=("self",))
        .filter(pk=payload["campaign_id"], state__in=[CampaignState.DRAFT, CampaignState.FAILED])
        .first()
    )
    if campaign is None:
        return
    before = campaign.state
    Campaign.objects.filter(pk=campaign.pk).update(state=CampaignState.PENDING_APPROVAL, approval_request_id=request.pk)
    audit_record(
        actor=actor,
        action="campaign.pending_approval",
        object_type="campaign",
        object_id=campaign.pk,
        before={"state": before},
        after={"state": CampaignState.PENDING_APPROVAL, "approval_request_id": request.pk},
        reason=payload.get("reason", ""),
        action_request_id=request.pk,
    )
