"""campaigns.cancel_schedule: cancel a schedule or a send not started, or stop one under way
(what was sent stays sent; the unsent messages are withdrawn). The notify list hears of it."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.dispatch import campaign_stop
from campaigns.errors import CampaignErrorCode
from campaigns.models import Campaign, CampaignState
from campaigns.selectors import campaign_action_requests
from campaigns.services.beat import campaign_beat_remove
from campaigns.services.common import SCHEDULE
from campaigns.spec import campaign_error, text_normalise
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from compliance.services import action_requests_close
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import permission_denied

CANCELLABLE = (
    CampaignState.PENDING_APPROVAL,
    CampaignState.APPROVED,
    CampaignState.SCHEDULED,
    CampaignState.SENDING,
)


def _affected(campaign: Campaign) -> int:
    from gateways.models import MessageState, OutboundMessage

    if campaign.state == CampaignState.SENDING:
        return OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.QUEUED).count()
    return int(campaign.segment.sendable_count)


def _cancel_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"])
    if campaign.state not in CANCELLABLE:
        raise campaign_error(
            CampaignErrorCode.CAMPAIGN_NOT_CANCELLABLE,
            f"Campaign {campaign.pk} is {campaign.state}; there is no schedule or send to cancel.",
            field="campaign_id",
            hint="Only pending, approved, scheduled or sending campaigns can be cancelled or stopped.",
        )
    affected = _affected(campaign)
    lead = (campaign.send_at - timezone.now()).total_seconds() / 60 if campaign.send_at else None
    return Checked(
        facts={"recipients": affected, "minutes_to_send": lead, "started": campaign.state == CampaignState.SENDING}
    )


def _notify(campaign: Campaign, subject: str, body: str) -> dict[str, Any]:
    from campaigns.notifications import campaign_notify

    return campaign_notify(campaign, subject=subject, body=body)


def _cancel_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"], lock=True)
    if campaign.state not in CANCELLABLE:
        raise campaign_error(
            CampaignErrorCode.CAMPAIGN_NOT_CANCELLABLE,
            f"Campaign {campaign.pk} is {campaign.state}.",
            field="campaign_id",
            hint="Nothing left to cancel.",
        )
    reason = payload["reason"]
    owner = campaign.owner.get_username()
    if campaign.state == CampaignState.SENDING:
        stopped = campaign_stop(actor=actor, campaign=campaign, reason=reason)
        notified = _notify(campaign, f"Campaign {campaign.name} stopped", f"Remaining batches stopped: {reason}")
        audit_record(
            actor=actor,
            action="campaign.stop",
            object_type="campaign",
            object_id=campaign.pk,
            after={**stopped, "notification": notified},
            reason=reason,
            action_request_id=request.pk if request else None,
        )
        return {
            "campaign_id": campaign.pk,
            "state": CampaignState.PAUSED,
            "outcome": "stopped_remaining_batches",
            "reason": reason,
            "owner": owner,
            **stopped,
            "notification": notified,
            "note": "Sending had started: what was sent stays sent; the unsent messages were withdrawn. "
            "Send a follow-up notice if the content sent needs correcting.",
        }
    affected = _affected(campaign)
    before = {"state": campaign.state, "approved_version": campaign.approved_version, "beat": campaign.beat_task_name}
    campaign_beat_remove(campaign)
    campaign.state = CampaignState.CANCELLED
    campaign.cancelled_at = timezone.now()
    campaign.cancel_reason = reason
    # A cancelled campaign is approved for nothing: campaigns.get must not say approved.
    campaign.approved_version = None
    campaign.approved_by = None
    campaign.approved_at = None
    campaign.updated_at = timezone.now()
    campaign.save()
    # Requests still waiting about it (an update, a schedule, a send) are moot: closed now, in this
    # transaction, each requester told (the cancel's own request, if it was held, is the one executing).
    waiting = campaign_action_requests(campaign_id=campaign.pk)
    if request is not None:
        waiting = waiting.exclude(pk=request.pk)
    closed = action_requests_close(actor=actor, requests=waiting, reason=f"campaign cancelled: {reason}")
    notified = _notify(campaign, f"Campaign {campaign.name} cancelled", f"Cancelled before sending: {reason}")
    audit_record(
        actor=actor,
        action="campaign.cancel_schedule",
        object_type="campaign",
        object_id=campaign.pk,
        before=before,
        after={
            "state": campaign.state,
            "approved_version": None,
            "affected": affected,
            "notification": notified,
            "closed_requests": [c["action_request_id"] for c in closed],
        },
        reason=reason,
        action_request_id=request.pk if request else None,
    )
    return {
        "campaign_id": campaign.pk,
        "state": campaign.state,
        "outcome": "cancelled_before_sending",
        "reason": reason,
        "owner": owner,
        "affected_recipients": affected,
        "notification": notified,
        "approved": False,
        "closed_requests": [c["action_request_id"] for c in closed],
    }


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_CANCEL,
        permission=SCHEDULE,
        check=_cancel_check,
        execute=_cancel_execute,
        summary=lambda payload, facts: (
            f"{'Stop' if facts.get('started') else 'Cancel'} campaign #{payload['campaign_id']}: "
            f"{facts.get('recipients')} recipients affected"
        ),
    )
)


def campaign_cancel_schedule(
    *, actor: Actor, campaign_id: Any, reason: Any, idempotency_key: str | None
) -> dict[str, Any]:
    if not actor.has_perm(SCHEDULE):
        raise permission_denied(SCHEDULE)
    reason = text_normalise(reason, "reason", max_chars=1000, required=True)
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    return governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_CANCEL,
        payload={"campaign_id": campaign.pk, "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )
