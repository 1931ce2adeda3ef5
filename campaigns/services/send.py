"""campaigns.send_approved: a live send now (dispatch queued after commit).

Needs an approval by someone else (a held request) or an explicit confirmation by a holder of
``campaigns.confirm_campaign``; a held request marks the campaign pending approval."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.content import Evaluation
from campaigns.models import CampaignState
from campaigns.quiet_hours import quiet_hours_notices
from campaigns.services.beat import campaign_beat_disable
from campaigns.services.common import (
    SEND,
    campaign_confirmed,
    campaign_hold_notice,
    campaign_live_check,
    campaign_mark_pending,
    campaign_result,
    campaign_reviewer,
)
from campaigns.spec import campaign_token_check
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import permission_denied
from smsplatform.kernel.money import money_text


def _send_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    _campaign, evaluation = campaign_live_check(actor, payload, send_at=None)
    # execute() reuses the evaluation (counts and cost) instead of evaluating again.
    return Checked(facts={**evaluation.facts(), "confirmed": campaign_confirmed(actor, payload)}, context=evaluation)


def _send_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    from campaigns.tasks import dispatch_campaign

    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"], lock=True)
    campaign_token_check(campaign, payload["base_version_token"])
    reviewer = campaign_reviewer(actor, payload, request, action=ActionType.CAMPAIGN_SEND)
    evaluation: Evaluation | None = context
    campaign_beat_disable(campaign)
    campaign.state = CampaignState.APPROVED
    campaign.approved_version = campaign.version
    campaign.approved_by_id = reviewer
    campaign.approved_at = timezone.now()
    campaign.approval_request_id = request.pk if request else None
    campaign.updated_at = timezone.now()
    campaign.save()
    audit_record(
        actor=actor,
        action="campaign.send",
        object_type="campaign",
        object_id=campaign.pk,
        after={"version": campaign.version, **(evaluation.facts() if evaluation else {})},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    campaign_id, version = campaign.pk, campaign.version
    transaction.on_commit(lambda: dispatch_campaign.delay(campaign_id, version))
    return campaign_result(
        campaign,
        evaluation,
        approved_by=reviewer,
        approved_by_username=campaign.approved_by.get_username() if campaign.approved_by else None,
        note="Dispatch queued; follow it with send_batches.list.",
        # Sent now at night: say which quiet hours hold it and until when, rather than wait silently.
        notices=quiet_hours_notices(evaluation.quotes) if evaluation else [],
    )


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_SEND,
        permission=SEND,
        check=_send_check,
        execute=_send_execute,
        on_hold=campaign_mark_pending,
        summary=lambda payload, facts: (
            f"Send campaign #{payload['campaign_id']} now: {facts.get('recipients')} recipients, "
            f"cost {money_text(facts.get('cost'), facts.get('currency'))}"
        ),
    )
)


def campaign_send_approved(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    confirm: bool = False,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(SEND):
        raise permission_denied(SEND)
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    answer = governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_SEND,
        payload={
            "campaign_id": campaign.pk,
            # A missing token stays empty (version_token_required), not the text "None".
            "base_version_token": str(base_version_token or ""),
            "confirm": bool(confirm),
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )
    return campaign_hold_notice(actor, answer, confirm=bool(confirm))
