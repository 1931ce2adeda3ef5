"""The governance contract as the campaign writes use it: the check's evaluation is handed to
execute (evaluated once), a held schedule or send marks the campaign pending approval in the
transaction that creates the request (audited), and a schedule disabled in bulk tells beat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from campaigns.content import campaign_evaluate
from campaigns.models import Campaign, CampaignState
from campaigns.services import (
    campaign_cancel_schedule,
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
)
from compliance.models import ActionRequest
from compliance.services import action_request_approve
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db


def _draft(world: dict[str, Any], marketer: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())
    assert out["status"] == "executed", out
    return dict(out["result"])


def test_a_direct_create_evaluates_once(world: dict[str, Any], marketer: Any) -> None:
    with mock.patch("campaigns.services.create.campaign_evaluate", wraps=campaign_evaluate) as evaluate:
        _draft(world, marketer)
    assert evaluate.call_count == 1


def test_an_approved_send_is_evaluated_again_at_approval(
    world: dict[str, Any], marketer: Any, approver_user: Any, send_policy: Any
) -> None:
    draft = _draft(world, marketer)
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        idempotency_key=key(),
    )
    assert held["status"] == "pending_approval"
    with mock.patch("campaigns.services.common.campaign_evaluate", wraps=campaign_evaluate) as evaluate:
        decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "executed", decided
    assert evaluate.call_count == 1  # the approval's own check; execute reuses it


def test_a_held_send_marks_the_campaign_pending_and_audits_it(
    world: dict[str, Any], marketer: Any, send_policy: Any
) -> None:
    draft = _draft(world, marketer)
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        idempotency_key=key(),
        reason="launch",
    )
    assert held["status"] == "pending_approval"
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert campaign.state == CampaignState.PENDING_APPROVAL
    assert campaign.approval_request_id == held["action_request_id"]
    entry = AuditLog.objects.get(action="campaign.pending_approval", object_id=str(campaign.pk))
    assert entry.before == {"state": CampaignState.DRAFT}
    assert entry.after == {"state": CampaignState.PENDING_APPROVAL, "approval_request_id": held["action_request_id"]}
    assert entry.action_request_id == held["action_request_id"] and entry.reason == "launch"


def test_a_held_schedule_and_its_pending_mark_commit_together(
    world: dict[str, Any], marketer: Any, schedule_policy: Any
) -> None:
    draft = _draft(world, marketer)
    with (
        mock.patch("campaigns.services.common.audit_record", side_effect=ApplicationError("boom", "simulated")),
        pytest.raises(ApplicationError),
    ):
        campaign_schedule(
            actor=act(marketer),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            schedule={"send_at": (timezone.now() + timedelta(hours=1)).isoformat()},
            idempotency_key=key(),
        )
    # The hold failed inside the transaction: no request, no state change.
    assert not ActionRequest.objects.exists()
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.DRAFT


def test_cancelling_a_schedule_tells_beat_its_entries_changed(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    scheduled = campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(hours=1)).isoformat()},
        confirm=True,
        idempotency_key=key(),
    )
    assert scheduled["status"] == "executed", scheduled
    with mock.patch("django_celery_beat.models.PeriodicTasks.update_changed") as changed:
        campaign_cancel_schedule(
            actor=act(marketer), campaign_id=draft["campaign_id"], reason="postponed", idempotency_key=key()
        )
    assert changed.called
