"""A campaign from draft to receipts and a resend, through the services (every interface calls these)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.content import recipient_token
from campaigns.dispatch import batches_advance
from campaigns.models import BatchState, Campaign, CampaignState, SendBatch
from campaigns.progress import campaign_progress
from campaigns.retries import retry_preview
from campaigns.selectors import cost_preview, delivery_status_get, send_batches_list
from campaigns.services import (
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
    failed_messages_resend,
)
from campaigns.tasks import dispatch_campaign
from compliance.services import action_request_approve
from gateways.models import MessageState, OutboundMessage, QuotaReservation
from smsplatform.kernel.errors import ApplicationError
from tests.support.campaigns import PHONES, act, draft_data, key

pytestmark = pytest.mark.django_db


def _draft(world: dict[str, Any], marketer: Any, **overrides: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(marketer), data=draft_data(world, **overrides), idempotency_key=key())
    assert out["status"] == "executed", out
    return dict(out["result"])


def _fire_beat(campaign_id: int) -> dict[str, Any]:
    """What beat does when the one-off clocked entry comes due."""
    entry = PeriodicTask.objects.get(name=f"campaign:{campaign_id}")
    assert entry.enabled and entry.one_off and entry.clocked is not None
    assert entry.task == "campaigns.dispatch_campaign"
    return dict(dispatch_campaign.apply(args=json.loads(entry.args)).get())


def test_draft_shows_the_message_as_sent_and_its_cost(world: dict[str, Any], marketer: Any) -> None:
    draft = _draft(world, marketer)
    assert draft["state"] == CampaignState.DRAFT
    assert draft["recipients"] == 4  # the opted-out phone is not counted
    assert draft["encoding"] == "UCS-2" and draft["segments_per_message"] == 2
    assert "https://s.example.hk/s/" in draft["body_preview"]
    preview = cost_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    assert preview["sendable"] == 4 and preview["unsendable"] == 1
    assert preview["exclusions"]["opted_out"] == 1
    assert preview["estimated_cost"] == {"HKD": "2.80"}  # 4 x 2 segments x 0.35
    assert preview["short_link_effect"]["segments_without_link"] == 1
    assert preview["quota"]["within"] is True
    assert "differ" in preview["estimate_note"]


def test_scheduled_send_waits_for_approval_then_beat_sends_and_receipts_return(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    draft = _draft(world, marketer)
    cid = draft["campaign_id"]
    send_at = timezone.now() + timedelta(hours=1)
    held = campaign_schedule(
        actor=act(marketer),
        campaign_id=cid,
        base_version_token=draft["base_version_token"],
        schedule={"send_at": send_at.isoformat(), "batch_size": 2, "batch_interval_seconds": 0},
        idempotency_key=key(),
    )
    assert held["status"] == "pending_approval"
    assert Campaign.objects.get(pk=cid).state == CampaignState.PENDING_APPROVAL
    assert not PeriodicTask.objects.filter(name=f"campaign:{cid}").exists()

    decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "executed", decided
    campaign = Campaign.objects.get(pk=cid)
    assert campaign.state == CampaignState.SCHEDULED
    assert campaign.approved_version == campaign.version and campaign.approved_by_id == approver_user.pk

    # Beat fires (the clocked time is made due by moving the campaign's send time into the past).
    Campaign.objects.filter(pk=cid).update(send_at=timezone.now() - timedelta(seconds=1))
    outcome = _fire_beat(cid)
    assert outcome["dispatched"] is True, outcome
    assert outcome["messages"] == 4 and outcome["batches"] == 2
    messages = list(OutboundMessage.objects.filter(batch__campaign_id=cid).order_by("pk"))
    assert {m.destination for m in messages} == {PHONES[n] for n in ("a", "b", "c", "undelivered")}
    assert PHONES["stopped"] not in {m.destination for m in messages}
    link_id = world["short_link_id"]
    for m in messages:
        assert m.state == MessageState.QUEUED and m.quota_reference == f"campaign:{cid}:send"
        assert m.contact_id is not None
        token = recipient_token(cid, link_id, m.contact_id)
        assert m.body.count(f"/{token} ") == 1, m.body  # each recipient's own token, computed in SQL
    assert QuotaReservation.objects.get(reference=f"campaign:{cid}:send").segments == 8

    # The batches start and the simulator answers (receipts come straight back in eager mode).
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    progress = campaign_progress(cid)
    assert progress["delivered"] == 3 and progress["failed"] == 1, progress
    assert Campaign.objects.get(pk=cid).state == CampaignState.COMPLETED
    assert set(SendBatch.objects.filter(campaign_id=cid).values_list("state", flat=True)) == {BatchState.COMPLETED}

    report = send_batches_list(actor=act(marketer), campaign_id=cid)
    assert sum(b["delivered"] for b in report["batches"]) == 3
    assert report["message_states"]["submitted"].endswith("Pending is not success.")
    status = delivery_status_get(actor=act(marketer), phone=PHONES["undelivered"])
    (failed,) = status["messages"]
    assert failed["state"] == "failed" and failed["resend"] == {"eligible": True, "reason": "temporary_failure"}
    assert "*" in failed["phone"]  # masked for marketing

    retry = retry_preview(actor=act(marketer), campaign_id=cid)
    assert retry["eligible"] == 1 and retry["failed"] == 1
    resent = failed_messages_resend(
        actor=act(marketer), retry_preview_id=retry["retry_preview_id"], idempotency_key=key()
    )
    assert resent["status"] == "executed", resent
    new = OutboundMessage.objects.select_related("resend_of", "batch").get(resend_of__isnull=False)
    assert new.resend_of is not None and new.batch is not None
    assert new.resend_of.destination == PHONES["undelivered"] and new.batch.kind == "resend"
    # The preview is single use, and the resent message is not eligible again.
    with pytest.raises(ApplicationError) as err:
        failed_messages_resend(actor=act(marketer), retry_preview_id=retry["retry_preview_id"], idempotency_key=key())
    assert err.value.code == "preview_already_used"

    # The copy goes out and fails as its original did: the number failed twice. The copy is not a
    # temporary failure and not resendable (else a number that always fails is resent forever).
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    new.refresh_from_db()
    assert new.state == MessageState.FAILED
    verdicts = {
        m["message_id"]: m["resend"]
        for m in delivery_status_get(actor=act(marketer), phone=PHONES["undelivered"])["messages"]
    }
    assert verdicts[new.pk]["reason"] == "failed_again" and not verdicts[new.pk]["eligible"]
    assert verdicts[new.resend_of.pk] == {"eligible": False, "reason": "already_resent"}
    again = retry_preview(actor=act(marketer), campaign_id=cid)
    assert again["eligible"] == 0 and again["excluded"].get("failed_again") == 1, again


def test_marketer_cannot_send_without_approval_or_confirmation(world: dict[str, Any], marketer: Any) -> None:
    draft = _draft(world, marketer)
    with pytest.raises(ApplicationError) as err:
        campaign_send_approved(
            actor=act(marketer),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,  # a marketer's confirmation does not count
            idempotency_key=key(),
        )
    assert err.value.code == "campaign_not_approved" and err.value.field == "confirm"
    assert not OutboundMessage.objects.exists()
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.DRAFT
