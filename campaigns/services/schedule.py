"""campaigns.schedule: a live send at a set time, through the campaign's one-off beat entry.

Needs an approval by someone else (a held request) or an explicit confirmation by a holder of
``campaigns.confirm_campaign``; a held request marks the campaign pending approval."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.content import Evaluation
from campaigns.errors import CampaignErrorCode
from campaigns.models import Campaign, CampaignState
from campaigns.quiet_hours import quiet_release_time
from campaigns.services.beat import campaign_beat_set
from campaigns.services.common import (
    SCHEDULE,
    campaign_confirmed,
    campaign_fields_set,
    campaign_hold_notice,
    campaign_live_check,
    campaign_mark_pending,
    campaign_result,
    campaign_reviewer,
)
from campaigns.spec import campaign_error, campaign_token_check, schedule_normalise
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ErrorCode, permission_denied
from smsplatform.kernel.idempotency import idempotent_replay
from smsplatform.kernel.money import money_text


def _schedule_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    send_at = datetime.fromisoformat(payload["schedule"]["send_at"])
    if send_at <= timezone.now():
        raise campaign_error(
            CampaignErrorCode.SEND_TIME_PASSED,
            f"send_at {send_at.isoformat()} has passed.",
            field="send_at",
            hint="Schedule again with a later time, or send now with campaigns.send_approved.",
        )
    _campaign, evaluation = campaign_live_check(actor, payload, send_at=send_at)
    # execute() reuses the evaluation (counts and cost) instead of evaluating again.
    return Checked(
        facts={**evaluation.facts(), "send_at": send_at.isoformat(), "confirmed": campaign_confirmed(actor, payload)},
        context=evaluation,
    )


def _schedule_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    campaign = campaign_access(actor=actor, campaign_id=payload["campaign_id"], lock=True)
    campaign_token_check(campaign, payload["base_version_token"])
    reviewer = campaign_reviewer(actor, payload, request)
    evaluation: Evaluation | None = context
    schedule = payload["schedule"]
    campaign_fields_set(campaign, schedule)
    campaign.state = CampaignState.SCHEDULED
    campaign.approved_version = campaign.version
    campaign.approved_by_id = reviewer
    campaign.approved_at = timezone.now()
    campaign.approval_request_id = request.pk if request else None
    campaign_beat_set(campaign, version=campaign.version)
    campaign.updated_at = timezone.now()
    campaign.save()
    audit_record(
        actor=actor,
        action="campaign.schedule",
        object_type="campaign",
        object_id=campaign.pk,
        after={**schedule, "version": campaign.version, **(evaluation.facts() if evaluation else {})},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    quiet = _quiet_note(campaign, evaluation)
    return campaign_result(
        campaign,
        evaluation,
        send_at=campaign.send_at.isoformat() if campaign.send_at else None,
        time_zone=campaign.time_zone,
        batch_size=campaign.batch_size,
        batch_interval_seconds=campaign.batch_interval_seconds,
        notify=campaign.notify,
        quiet_hours=quiet,
        approved_by=reviewer,
        approved_by_username=campaign.approved_by.get_username() if campaign.approved_by else None,
    )


def _quiet_note(campaign: Campaign, evaluation: Evaluation | None) -> list[dict[str, Any]]:
    if campaign.send_at is None or evaluation is None:
        return []
    out = []
    for country in evaluation.quotes:
        release = quiet_release_time(country, campaign.send_at)
        if release != campaign.send_at:
            out.append({"country": country, "waits_until": release.isoformat()})
    return out


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_SCHEDULE,
        permission=SCHEDULE,
        check=_schedule_check,
        execute=_schedule_execute,
        on_hold=campaign_mark_pending,
        summary=lambda payload, facts: (
            f"Schedule campaign #{payload['campaign_id']} for {facts.get('send_at')}: "
            f"{facts.get('recipients')} recipients, cost {money_text(facts.get('cost'), facts.get('currency'))}"
        ),
    )
)


def campaign_schedule(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    schedule: dict[str, Any],
    confirm: bool = False,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(SCHEDULE):
        raise permission_denied(SCHEDULE)
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    merged = {
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "time_zone": campaign.time_zone,
        "batch_size": campaign.batch_size,
        "batch_interval_seconds": campaign.batch_interval_seconds,
        "notify": campaign.notify,
        **dict((schedule or {}).items()),
    }
    if merged.get("send_at") is None:
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR, "send_at is required.", field="send_at", hint="ISO 8601 date-time."
        )
    normalised = schedule_normalise(merged)
    payload = {
        "campaign_id": campaign.pk,
        # A missing token stays empty (version_token_required), not the text "None".
        "base_version_token": str(base_version_token or ""),
        "schedule": normalised,
        "confirm": bool(confirm),
        "reason": reason,
    }
    lead = timedelta(minutes=int(platform_config_data()["schedule"]["min_lead_minutes"]))
    if datetime.fromisoformat(normalised["send_at"]) < timezone.now() + lead:
        # A retry of a request made in time answers its first result, even once the lead time is gone.
        replay = idempotent_replay(
            actor=actor, key=idempotency_key, operation=ActionType.CAMPAIGN_SCHEDULE, payload=payload
        )
        if replay is not None:
            return campaign_hold_notice(actor, replay, confirm=bool(confirm))
        raise campaign_error(
            CampaignErrorCode.SEND_TIME_TOO_SOON,
            f"send_at must be at least {lead} ahead (schedule.min_lead_minutes).",
            field="send_at",
            hint="Pick a later time, or send now with campaigns.send_approved.",
        )
    answer = governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_SCHEDULE,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )
    return campaign_hold_notice(actor, answer, confirm=bool(confirm))
