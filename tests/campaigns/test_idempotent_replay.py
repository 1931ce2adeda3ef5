"""A retried write answers its first result, even after it was approved and executed or the state
it changed would refuse it now (issue 14, item 7)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import campaign_schedule, campaign_update
from compliance.models import ActionType
from compliance.services import action_request_approve
from smsplatform.kernel.errors import ApplicationError
from tests.campaigns.test_campaign_rules import _draft
from tests.support.campaigns import act, key, policy

pytestmark = pytest.mark.django_db


def test_an_update_retried_after_approval_gets_its_first_result(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    policy(ActionType.CAMPAIGN_UPDATE)
    draft = _draft(world, marketer)
    call = {
        "actor": act(marketer),
        "campaign_id": draft["campaign_id"],
        "base_version_token": draft["base_version_token"],
        "changes": {"send_goal": "More visits"},
        "idempotency_key": key(),
    }
    held = campaign_update(**call)
    assert held["status"] == "pending_approval"
    decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "executed"
    assert Campaign.objects.get(pk=draft["campaign_id"]).version == 2  # the token above is stale now
    assert campaign_update(**call) == held  # not stale_version_token
    # Another request under the same key is still refused.
    with pytest.raises(ApplicationError) as err:
        campaign_update(**{**call, "changes": {"send_goal": "Other"}})
    assert err.value.code == "idempotency_key_reused"


def test_an_executed_update_retried_gets_its_first_result(world: dict[str, Any], marketer: Any) -> None:
    draft = _draft(world, marketer)
    call = {
        "actor": act(marketer),
        "campaign_id": draft["campaign_id"],
        "base_version_token": draft["base_version_token"],
        "changes": {"send_goal": "More visits"},
        "idempotency_key": key(),
    }
    first = campaign_update(**call)
    assert first["status"] == "executed"
    assert campaign_update(**call) == first


def test_a_schedule_retried_after_its_lead_time_passed_gets_its_first_result(
    world: dict[str, Any], marketer: Any, approver_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy(ActionType.CAMPAIGN_SCHEDULE)
    draft = _draft(world, marketer)
    send_at = (timezone.now() + timedelta(hours=3)).isoformat()
    call = {
        "actor": act(marketer),
        "campaign_id": draft["campaign_id"],
        "base_version_token": draft["base_version_token"],
        "schedule": {"send_at": send_at},
        "confirm": True,
        "idempotency_key": key(),
    }
    held = campaign_schedule(**call)
    assert held["status"] == "pending_approval", held
    # Hours later, the send time is within the lead time: a fresh request would be refused ...
    later = timezone.now() + timedelta(hours=2, minutes=59)
    monkeypatch.setattr("campaigns.services.schedule.timezone.now", lambda: later)
    with pytest.raises(ApplicationError) as err:
        campaign_schedule(**{**call, "idempotency_key": key()})
    assert err.value.code == "send_time_too_soon"
    # ... but the retry of the first one answers what it answered.
    assert campaign_schedule(**call) == held


def test_a_resend_retried_after_its_preview_was_used_gets_its_first_result(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    from campaigns.dispatch import batches_advance
    from campaigns.retries import retry_preview
    from campaigns.services import failed_messages_resend
    from compliance.models import Condition
    from gateways.models import OutboundMessage
    from tests.campaigns.test_campaign_rules import _send_confirmed

    policy(ActionType.MESSAGES_RESEND, Condition.RECIPIENTS_OVER, threshold_count=0)
    draft = _draft(world, marketer)
    _send_confirmed(approver_user, draft)
    batches_advance(budget_seconds=5)
    preview = retry_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    call = {"actor": act(marketer), "retry_preview_id": preview["retry_preview_id"], "idempotency_key": key()}
    held = failed_messages_resend(**call)
    assert held["status"] == "pending_approval"
    action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert OutboundMessage.objects.filter(resend_of__isnull=False).count() == 1
    assert failed_messages_resend(**call) == held  # not preview_already_used
    assert OutboundMessage.objects.filter(resend_of__isnull=False).count() == 1
