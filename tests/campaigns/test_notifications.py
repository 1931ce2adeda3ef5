"""Campaign notifications go through the kernel's outbox: a row with the change, e-mail after commit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from campaigns.dispatch import campaign_dispatch
from campaigns.models import Campaign
from campaigns.notifications import campaign_notify
from campaigns.services import campaign_cancel_schedule, campaign_create_draft, campaign_schedule
from gateways.models import SenderId
from smsplatform.models import AuditLog, Notification, NotificationState
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def _scheduled(world: dict[str, Any], marketer: Any, approver_user: Any, notify: list[str]) -> int:
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    out = campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(days=1)).isoformat(), "notify": notify},
        confirm=True,
        idempotency_key=key(),
    )
    assert out["status"] == "executed", out
    return int(draft["campaign_id"])


def test_cancellation_is_e_mailed_after_commit_and_its_outcome_recorded(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    marketer.email = "marketer1@example.com"
    marketer.save()
    campaign_id = _scheduled(world, marketer, approver_user, ["marketer1", "lead@example.com", "nobody"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        out = campaign_cancel_schedule(
            actor=act(marketer), campaign_id=campaign_id, reason="Offer withdrawn", idempotency_key=key()
        )["result"]
        assert mail.outbox == []  # the cancellation's transaction has committed; the send waits for its callback
    notified = out["notification"]
    assert notified["status"] == "queued" and notified["unresolved"] == ["nobody"]
    assert notified["to"] == ["lead@example.com", "marketer1@example.com"]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["lead@example.com", "marketer1@example.com"]
    assert "cancelled" in mail.outbox[0].subject and "Offer withdrawn" in mail.outbox[0].body
    row = Notification.objects.get(pk=notified["notification_id"])
    assert (row.object_type, row.object_id, row.state) == ("campaign", str(campaign_id), NotificationState.SENT)
    audit = AuditLog.objects.get(action="campaign.cancel_schedule")
    assert audit.after is not None and audit.after["notification"]["notification_id"] == row.pk


def test_a_notification_rolls_back_with_the_change(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    campaign_id = _scheduled(world, marketer, approver_user, ["lead@example.com"])
    with TestCase.captureOnCommitCallbacks(execute=True), pytest.raises(Boom), transaction.atomic():
        out = campaign_notify(Campaign.objects.get(pk=campaign_id), subject="s", body="b")
        assert out["status"] == "queued" and Notification.objects.filter(pk=out["notification_id"]).exists()
        raise Boom
    assert not Notification.objects.exists() and mail.outbox == []


def test_nobody_to_notify_writes_no_row(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    campaign_id = _scheduled(world, marketer, approver_user, ["nobody"])
    out = campaign_notify(Campaign.objects.get(pk=campaign_id), subject="s", body="b")
    assert out == {"status": "none", "to": [], "unresolved": ["nobody"]}
    assert not Notification.objects.exists()


def test_a_failed_dispatch_is_notified_after_its_transaction(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    campaign_id = _scheduled(world, marketer, approver_user, ["lead@example.com"])
    campaign = Campaign.objects.get(pk=campaign_id)
    SenderId.objects.filter(value=campaign.sender_id).update(ssrs_registered_regions=[])  # unusable at dispatch
    with TestCase.captureOnCommitCallbacks(execute=True):
        out = campaign_dispatch(campaign_id=campaign_id, version=campaign.version)
        assert mail.outbox == []
    assert out["dispatched"] is False
    assert [m.subject for m in mail.outbox] == [f"Campaign {campaign.name} not sent"]
    assert Notification.objects.get().state == NotificationState.SENT
