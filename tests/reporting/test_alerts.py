"""The alert beat: thresholds from the configuration, SQL aggregates, once per condition per campaign per
window (a unique constraint, raced for real on PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import Campaign, CampaignState, SendBatch
from gateways.models import Gateway, MessagePurpose, MessageState, OutboundMessage
from gateways.platform_config import platform_config_update
from reporting import alerts
from reporting.alerts import alerts_raise, campaign_figures, roi_source_register, window_start
from reporting.models import AlertFiring, InboxItem, NotificationKind, ReviewNotification
from reporting.selectors import campaign_roi_figures
from reporting.tasks import raise_alerts
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor
from smsplatform.schedules import periodic_tasks_ensure
from tests.reporting.conftest import key
from tests.support.db import postgres_only, race
from tests.support.factories import CampaignFactory, ContactFactory, OptOutFactory

pytestmark = [pytest.mark.usefixtures("known_gateways")]


def sent_campaign(owner: Any, states: dict[str, int], *, cost: str = "0.35", estimate: str | None = None) -> Campaign:
    now = timezone.now()
    campaign = CampaignFactory.create(
        owner=owner,
        state=CampaignState.COMPLETED,
        dispatched_at=now - timedelta(hours=2),
        estimate={"cost": {"HKD": estimate}} if estimate else {},
    )
    batch = SendBatch.objects.create(
        campaign=campaign, number=1, not_before=now, quota_reference=f"campaign:{campaign.pk}:"
    )
    gateway = Gateway.objects.get(code="simulator")
    rows = []
    n = 0
    for state, count in states.items():
        for _ in range(count):
            n += 1
            contact = ContactFactory.create(created_by=owner)
            rows.append(
                OutboundMessage(
                    gateway=gateway,
                    sender_id="#SHOPHK",
                    destination=contact.phone,
                    country="HK",
                    body="x",
                    encoding="gsm7",
                    segments=1,
                    cost=Decimal(cost),
                    currency="HKD",
                    purpose=MessagePurpose.MARKETING,
                    state=state,
                    reference=f"campaign:{campaign.pk}:batch:1",
                    quota_reference=f"campaign:{campaign.pk}:",
                    batch=batch,
                    contact=contact,
                )
            )
    OutboundMessage.objects.bulk_create(rows)
    return campaign


def set_alerts(**changes: Any) -> None:
    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"alerts": {**config["config"]["alerts"], **changes}},
        base_version_token=config["base_version_token"],
        idempotency_key=key("cfg"),
    )


@pytest.fixture(autouse=True)
def _no_roi_source() -> Any:
    """Most tests here leave ROI out (the app's own source, the report aggregates, is put back after)."""
    roi_source_register(None)
    yield
    roi_source_register(campaign_roi_figures)


@pytest.mark.django_db
def test_figures_come_from_grouped_queries(owner: Any, django_assert_max_num_queries: Any) -> None:
    campaign = sent_campaign(owner, {MessageState.DELIVERED: 6, MessageState.FAILED: 3, MessageState.EXPIRED: 1})
    opted = OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.DELIVERED)[:2]
    for message in opted:
        OptOutFactory.create(contact=message.contact, occurred_at=timezone.now())
    # An opt-out before the dispatch is not the campaign's.
    early = OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.DELIVERED)[3]
    OptOutFactory.create(contact=early.contact, occurred_at=timezone.now() - timedelta(days=3))
    with django_assert_max_num_queries(3):
        figures = campaign_figures([campaign.pk])[campaign.pk]
    assert figures == {
        "messages": 10,
        "delivered": 6,
        "failed": 4,
        "final": 10,
        "cost": {"HKD": Decimal("3.5000")},
        "opt_outs": 2,
    }


@pytest.mark.django_db
def test_delivery_failures_alert_once_per_window(owner: Any, ops: Any, django_capture_on_commit_callbacks: Any) -> None:
    set_alerts(min_messages=10, delivery_failure_rate="0.2")
    campaign = sent_campaign(owner, {MessageState.DELIVERED: 7, MessageState.FAILED: 3})
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        first = alerts_raise(now=now)
    assert [s["kind"] for s in first["sent"]] == [NotificationKind.DELIVERY_FAILURES]
    assert first["roi_evaluated"] is False
    notification = ReviewNotification.objects.get()
    assert notification.origin == "alert" and notification.campaign == campaign
    assert sorted(notification.recipients) == ["ops1", "owner1"]
    assert "3 of 10" in notification.body and set(InboxItem.objects.values_list("user__username", flat=True)) == {
        "ops1",
        "owner1",
    }
    assert len(mail.outbox) == 1 and "Delivery failures" in mail.outbox[0].subject
    # Same window: nothing again.
    again = alerts_raise(now=now + timedelta(minutes=5))
    assert again["sent"] == [] and again["already_sent_this_window"] == 1
    assert AlertFiring.objects.count() == 1
    # The next window raises it again.
    later = alerts_raise(now=now + timedelta(hours=24))
    assert len(later["sent"]) == 1 and AlertFiring.objects.count() == 2


@pytest.mark.django_db
def test_below_the_thresholds_or_the_sample_nothing_is_sent(owner: Any) -> None:
    set_alerts(min_messages=10, delivery_failure_rate="0.5")
    sent_campaign(owner, {MessageState.DELIVERED: 7, MessageState.FAILED: 3})
    set_alerts(min_messages=10, delivery_failure_rate="0.5")
    assert alerts_raise()["sent"] == []
    set_alerts(min_messages=50, delivery_failure_rate="0.1")
    assert alerts_raise()["sent"] == []
    set_alerts(enabled=False, min_messages=1, delivery_failure_rate="0.1")
    assert alerts_raise() == {"enabled": False, "sent": [], "campaigns": 0}
    assert not ReviewNotification.objects.exists()


@pytest.mark.django_db
def test_cost_anomaly_and_opt_out_spike(owner: Any, crm: Any, make_user: Any) -> None:
    compliance_user = make_user("compliance", username="comp1")
    set_alerts(min_messages=10, cost_anomaly_factor="1.5", optout_spike_rate="0.05", delivery_failure_rate="0.9")
    campaign = sent_campaign(owner, {MessageState.DELIVERED: 20}, cost="1.00", estimate="10.00")
    for message in OutboundMessage.objects.filter(batch__campaign=campaign)[:2]:
        OptOutFactory.create(contact=message.contact, occurred_at=timezone.now())
    out = alerts_raise()
    kinds = {s["kind"]: s for s in out["sent"]}
    assert set(kinds) == {NotificationKind.COST_ANOMALY, NotificationKind.OPTOUT_SPIKE}
    # Opt-out spikes go to compliance and CRM besides the owner.
    assert sorted(kinds[NotificationKind.OPTOUT_SPIKE]["recipients"]) == ["comp1", "crm1", "owner1"]
    assert "2.00x the estimate" in ReviewNotification.objects.get(kind=NotificationKind.COST_ANOMALY).body
    assert compliance_user.pk


@pytest.mark.django_db
def test_poor_roi_once_a_source_is_registered(owner: Any) -> None:
    set_alerts(min_messages=10, delivery_failure_rate="0.9", poor_roi_threshold="1.0")
    campaign = sent_campaign(owner, {MessageState.DELIVERED: 20})
    assert alerts_raise()["sent"] == []
    roi_source_register(lambda ids: {cid: {"revenue": "5.00", "cost": "7.00", "currency": "HKD"} for cid in ids})
    out = alerts_raise()
    assert [s["kind"] for s in out["sent"]] == [NotificationKind.POOR_ROI] and out["roi_evaluated"] is True
    assert AlertFiring.objects.get().campaign == campaign


@pytest.mark.django_db
def test_the_bulk_limit_leaves_the_owner_and_approvers(owner: Any, ops: Any, make_user: Any) -> None:
    set_alerts(min_messages=10, delivery_failure_rate="0.2", bulk_recipients=1)
    make_user("technical", username="tech2")
    sent_campaign(owner, {MessageState.DELIVERED: 5, MessageState.FAILED: 5})
    out = alerts_raise()
    assert out["sent"][0]["recipients"] == ["owner1"]


@pytest.mark.django_db
def test_the_task_and_its_beat_entry(owner: Any) -> None:
    periodic_tasks_ensure()
    assert PeriodicTask.objects.get(task="reporting.raise_alerts").interval.every == 300
    set_alerts(min_messages=10, delivery_failure_rate="0.2")
    sent_campaign(owner, {MessageState.DELIVERED: 5, MessageState.FAILED: 5})
    assert len(raise_alerts.delay().get()["sent"]) == 1


def test_windows_are_aligned() -> None:
    now = timezone.now().replace(hour=13, minute=7)
    start = window_start(now, 24)
    assert start <= now < start + timedelta(hours=24) and start.hour == 0 and start.minute == 0
    assert window_start(now + timedelta(hours=1), 24) == start
    assert alerts.TASK_NAME == "reporting.raise_alerts"


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_beats_racing_send_each_alert_once(owner: Any, ops: Any) -> None:
    set_alerts(min_messages=10, delivery_failure_rate="0.2")
    sent_campaign(owner, {MessageState.DELIVERED: 5, MessageState.FAILED: 5})
    now = timezone.now()
    results = race(4, lambda i: alerts_raise(now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(len(r["sent"]) for r in results) == 1
    assert sum(r["already_sent_this_window"] for r in results) == 3
    assert AlertFiring.objects.count() == 1 and ReviewNotification.objects.count() == 1
    assert InboxItem.objects.count() == 2


def test_the_app_registers_the_report_aggregates_as_the_roi_source() -> None:
    from reporting import alerts

    roi_source_register(None)
    from django.apps import apps

    apps.get_app_config("reporting").ready()
    assert alerts._roi_source is campaign_roi_figures
