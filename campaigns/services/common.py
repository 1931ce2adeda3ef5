"""What the campaign write services share: their permissions, how a campaign takes an
evaluation and its fields, its version rows, the result every write returns, and the rules of
a live send or schedule (the confirmation rule, the live check, the hold for approval)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.content import Evaluation, budget_check, campaign_evaluate, quota_check
from campaigns.errors import CampaignErrorCode
from campaigns.models import Campaign, CampaignState, CampaignVersion
from campaigns.spec import campaign_error, campaign_snapshot, campaign_spec, campaign_token, campaign_token_check
from compliance.models import ActionRequest
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


def campaign_reviewer(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> int | None:
    """Approval by someone else, or explicit confirmation by a holder of confirm_campaign."""
    if request is not None:
        return request.decided_by_id
    if payload.get("confirm") is True and actor.has_perm(CONFIRM):
        return actor.user_id
    raise campaign_error(
        CampaignErrorCode.CAMPAIGN_NOT_APPROVED,
        "A live send needs an approval (no approval policy held this request) or an explicit confirmation.",
        field="confirm",
        hint=(
            "Ask an approver: set an approval policy for this action, or have a user holding "
            "campaigns.confirm_campaign send it with confirm=true."
        ),
    )


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
