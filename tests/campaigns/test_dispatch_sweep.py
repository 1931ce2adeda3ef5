"""A dispatch task that never ran (its Celery worker was killed before it committed; the broker keeps
the task until its visibility timeout) is found by the batch-advance beat and run again, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns.dispatch import DISPATCH_GRACE, batches_advance, dispatch_sweep
from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from campaigns.services import campaign_create_draft, campaign_send_approved
from gateways.models import OutboundMessage
from smsplatform.models import AuditLog
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db


def approved_but_not_dispatched(world: dict[str, Any], marketer: Any, confirmer: Any) -> int:
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())
    cid = draft["result"]["campaign_id"]
    # The dispatch task is queued on commit; here it is lost (never run).
    sent = campaign_send_approved(
        actor=act(confirmer),
        campaign_id=cid,
        base_version_token=draft["result"]["base_version_token"],
        confirm=True,
        idempotency_key=key(),
    )
    assert sent["status"] == "executed", sent
    assert Campaign.objects.get(pk=cid).state == CampaignState.APPROVED
    assert not SendBatch.objects.filter(campaign_id=cid).exists()
    return int(cid)


@pytest.fixture
def confirmer(approver_user: Any) -> Any:
    return approver_user


def test_a_lost_dispatch_is_run_again_after_the_grace_period_and_only_once(
    world: dict[str, Any], marketer: Any, confirmer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    cid = approved_but_not_dispatched(world, marketer, confirmer)
    # Within the grace period the original task may still be on its way: nothing happens.
    assert dispatch_sweep() == 0
    later = timezone.now() + DISPATCH_GRACE + timedelta(seconds=5)
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch_sweep(now=later) == 1
    campaign = Campaign.objects.get(pk=cid)
    assert campaign.state in (CampaignState.SENDING, CampaignState.COMPLETED)  # eager: sent at once
    assert SendBatch.objects.filter(campaign_id=cid, kind=BatchKind.INITIAL).exists()
    sent = OutboundMessage.objects.filter(batch__campaign_id=cid).count()
    assert sent == 4
    retry = AuditLog.objects.get(action="campaign.dispatch_retry", object_id=str(cid))
    assert "lost" in retry.reason
    # Dispatched: the sweep leaves it alone, and a late redelivery of the original task skips.
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch_sweep(now=later + timedelta(minutes=10)) == 0
    from campaigns.tasks import dispatch_campaign

    # An eager result read in the test, not a join inside a task: Celery's "never get() within a
    # task" guard is a process-wide flag another test's in-process task run can leave set.
    late = dispatch_campaign.apply(args=(cid, campaign.version)).get(disable_sync_subtasks=False)
    assert late["dispatched"] is False and late["reason"] in ("already dispatched", f"campaign is {campaign.state}")
    assert OutboundMessage.objects.filter(batch__campaign_id=cid).count() == sent


def test_the_sweep_does_not_queue_the_same_campaign_over_and_over(
    world: dict[str, Any], marketer: Any, confirmer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    cid = approved_but_not_dispatched(world, marketer, confirmer)
    later = timezone.now() + DISPATCH_GRACE + timedelta(seconds=5)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert dispatch_sweep(now=later) == 1  # queued; say its worker is slow to pick it up
        assert dispatch_sweep(now=later + timedelta(seconds=5)) == 0
        assert dispatch_sweep(now=later + timedelta(seconds=200)) == 1  # still nothing: try again
    assert len(queued) == 2
    assert AuditLog.objects.filter(action="campaign.dispatch_retry", object_id=str(cid)).count() == 2


def test_batches_advance_runs_the_sweep_and_only_approved_or_scheduled_campaigns_are_swept(
    world: dict[str, Any], marketer: Any, confirmer: Any
) -> None:
    cid = approved_but_not_dispatched(world, marketer, confirmer)
    long_ago = timezone.now() - timedelta(hours=1)
    for state in (CampaignState.DRAFT, CampaignState.PENDING_APPROVAL, CampaignState.CANCELLED, CampaignState.FAILED):
        Campaign.objects.filter(pk=cid).update(state=state, approved_at=long_ago, send_at=long_ago)
        assert batches_advance(budget_seconds=1)["campaigns_redispatched"] == 0, state
    Campaign.objects.filter(pk=cid).update(state=CampaignState.SCHEDULED, send_at=timezone.now())
    assert batches_advance(budget_seconds=1)["campaigns_redispatched"] == 0  # not due long enough
    Campaign.objects.filter(pk=cid).update(send_at=long_ago)
    assert batches_advance(budget_seconds=1)["campaigns_redispatched"] == 1
