"""campaigns.update: change named fields of a campaign at the version the caller read.

A change to an approved or scheduled campaign sends it back to draft, unless the change itself
was approved (then the approval covers the new version)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.content import Evaluation, campaign_evaluate
from campaigns.errors import CampaignErrorCode
from campaigns.models import APPROVED_STATES, SENT_STATES, CampaignState
from campaigns.quiet_hours import quiet_hours_notices
from campaigns.services.beat import campaign_beat_disable, campaign_beat_set
from campaigns.services.common import (
    CHANGE,
    campaign_evaluation_apply,
    campaign_fields_set,
    campaign_link_claim,
    campaign_result,
    campaign_version_record,
)
from campaigns.spec import (
    CONTENT_FIELDS,
    NOTE_FIELDS,
    campaign_error,
    campaign_snapshot,
    campaign_spec,
    campaign_token_check,
    spec_normalise,
)
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ErrorCode, permission_denied


def _update_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"])
    campaign_token_check(campaign, payload["base_version_token"])
    if campaign.state in SENT_STATES or campaign.state == CampaignState.CANCELLED:
        raise campaign_error(
            CampaignErrorCode.CAMPAIGN_NOT_EDITABLE,
            f"Campaign {campaign.pk} is {campaign.state}; its content can no longer change.",
            field="campaign_id",
            hint="Create a new campaign (or resend failed messages with failed_messages.retry_preview).",
        )
    changes = payload["changes"]
    content_changed = any(k in CONTENT_FIELDS for k in changes)
    # What an "overwrites existing" policy holds: a change to the reviewed content of an approved or
    # scheduled campaign (a draft, or a note such as the send goal, is not held).
    reviewed = [k for k in changes if k not in NOTE_FIELDS]
    facts: dict[str, Any] = {
        "overwrites_existing": campaign.state in APPROVED_STATES and bool(reviewed),
        "changed": sorted(changes),
    }
    evaluation = None
    if content_changed:
        spec = {**campaign_spec(campaign), **{k: v for k, v in changes.items() if k in CONTENT_FIELDS}}
        send_at = changes.get("send_at", campaign.send_at.isoformat() if campaign.send_at else None)
        evaluation = campaign_evaluate(
            actor, spec, campaign_id=campaign.pk, send_at=datetime.fromisoformat(send_at) if send_at else None
        )
        facts.update(evaluation.facts())
    # A content change was evaluated here: execute() applies that evaluation, not a second one.
    return Checked(facts=facts, context=evaluation)


def _update_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"], lock=True)
    campaign_token_check(campaign, payload["base_version_token"])
    changes = payload["changes"]
    before = campaign_snapshot(campaign)
    evaluation: Evaluation | None = context  # set by the check when the content changes
    campaign_fields_set(campaign, changes)
    if evaluation is not None:
        campaign_evaluation_apply(campaign, evaluation)
        campaign_link_claim(campaign, evaluation)
    reviewed_fields = [k for k in changes if k not in NOTE_FIELDS]
    note = ""
    if campaign.state in APPROVED_STATES and reviewed_fields:
        if request is not None:
            # The change itself was approved: the approval now covers the new version.
            campaign.approved_version = campaign.version + 1
            campaign.approved_at = timezone.now()
            campaign.approved_by_id = request.decided_by_id
            campaign.approval_request_id = request.pk
            note = "The approved change keeps the campaign approved."
            if campaign.state == CampaignState.SCHEDULED:
                campaign_beat_set(campaign, version=campaign.version + 1)
        else:
            campaign_beat_disable(campaign)
            campaign.state = CampaignState.DRAFT
            campaign.approved_version = None
            campaign.approved_at = None
            campaign.approved_by = None
            note = "The campaign was approved or scheduled; the change sent it back to draft for approval."
    elif campaign.state in (CampaignState.PENDING_APPROVAL, CampaignState.FAILED) and reviewed_fields:
        campaign.state = CampaignState.DRAFT
        note = "A pending request for the old version will fail when decided; request again."
    campaign.version += 1
    campaign.updated_at = timezone.now()
    campaign.save()
    campaign_version_record(actor, campaign, sorted(changes), payload.get("reason", ""))
    audit_record(
        actor=actor,
        action="campaign.update",
        object_type="campaign",
        object_id=campaign.pk,
        before={k: before.get(k) for k in changes},
        after={k: campaign_snapshot(campaign).get(k) for k in changes},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    notices = quiet_hours_notices(evaluation.quotes, campaign.send_at) if evaluation is not None else []
    return campaign_result(campaign, evaluation, changed=sorted(changes), note=note, notices=notices)


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_UPDATE,
        permission=CHANGE,
        check=_update_check,
        execute=_update_execute,
        summary=lambda payload, facts: (
            f"Update campaign #{payload['campaign_id']}: {', '.join(facts.get('changed', []))}"
            + (" (approved/scheduled)" if facts.get("overwrites_existing") else "")
        ),
    )
)


def campaign_update(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    changes: dict[str, Any],
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(CHANGE):
        raise permission_denied(CHANGE)
    if not isinstance(changes, dict) or not changes:
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR,
            "changes must name at least one field.",
            field="changes",
            hint="Only the fields you name are changed.",
        )
    normalised = spec_normalise(changes, partial=True)
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    # The token is compared inside the governed write (_update_check), after the idempotency
    # lookup: a retry of an update that was approved and applied gets its first result, not
    # stale_version_token from the version that update itself bumped.
    return governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_UPDATE,
        payload={
            "campaign_id": campaign.pk,
            # A missing token stays empty (version_token_required), not the text "None".
            "base_version_token": str(base_version_token or ""),
            "changes": normalised,
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )
