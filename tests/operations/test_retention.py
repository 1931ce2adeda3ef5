"""Retention: personal data past its period is purged in batches; figures and the audit log stay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from gateways.models import Gateway, InboundMessage, MessageState, OutboundMessage, Provider
from smsplatform.models import AuditLog, RetentionCursor
from smsplatform.operations.retention import retention_kinds, retention_purge
from templates.models import LinkClick, ShortLink
from tests.support.campaigns import fresh_short_link

pytestmark = pytest.mark.django_db

DAYS = {"message_bodies": 30, "inbound_messages": 60, "link_clicks": 90}


@pytest.fixture
def gateway() -> Gateway:
    return Gateway.objects.create(code="sim-ret", name="Sim", provider=Provider.SIMULATOR, countries=["HK"])


def messages(gateway: Gateway, ages_days: list[int]) -> list[OutboundMessage]:
    now = timezone.now()
    return [
        OutboundMessage.objects.create(
            gateway=gateway,
            sender_id="Shop",
            destination=f"+8525123{i:04d}",
            country="HK",
            body=f"Hello {i}",
            encoding="GSM-7",
            segments=1,
            cost="0.3000",
            purpose="marketing",
            state=MessageState.DELIVERED,
            quota_reference="q",
            created_at=now - timedelta(days=age),
        )
        for i, age in enumerate(ages_days)
    ]


def test_every_kind_is_registered() -> None:
    assert {k.name for k in retention_kinds()} >= {"message_bodies", "inbound_messages", "link_clicks"}


@override_settings(SMS_RETENTION_DAYS=DAYS)
def test_old_bodies_are_blanked_in_batches_rows_and_figures_kept(gateway: Gateway) -> None:
    rows = messages(gateway, [100, 90, 80, 40, 31, 29, 5, 1])
    result = retention_purge(batch_size=2)
    assert result["purged"]["message_bodies"] == 5 and result["finished"]["message_bodies"] is True
    bodies = dict(OutboundMessage.objects.values_list("pk", "body"))
    assert [bodies[m.pk] for m in rows] == ["", "", "", "", "", "Hello 5", "Hello 6", "Hello 7"]
    assert OutboundMessage.objects.count() == 8 and sum(m.cost for m in OutboundMessage.objects.all()) > 0
    assert RetentionCursor.objects.get(name="message_bodies").last_id == rows[4].pk

    # Time passes: the next run starts at the cursor and takes only what has newly expired.
    later = retention_purge(now=timezone.now() + timedelta(days=2), batch_size=2)
    assert later["purged"]["message_bodies"] == 1 and OutboundMessage.objects.get(pk=rows[5].pk).body == ""


@override_settings(SMS_RETENTION_DAYS=DAYS)
def test_inbound_texts_and_clicks_are_deleted_the_audit_log_is_kept(gateway: Gateway, marketing: Any) -> None:
    now = timezone.now()
    InboundMessage.objects.create(
        gateway=gateway, source="+85251234567", destination="Shop", body="STOP", received_at=now - timedelta(days=61)
    )
    InboundMessage.objects.create(
        gateway=gateway, source="+85251234568", destination="Shop", body="START", received_at=now - timedelta(days=1)
    )
    link = ShortLink.objects.get(pk=fresh_short_link(marketing))
    for age in (200, 91, 10):
        LinkClick.objects.create(
            link=link, device_class="mobile", recipient_token=f"t{age}", clicked_at=now - timedelta(days=age)
        )
    audit_before = AuditLog.objects.count()

    result = retention_purge()
    assert result["purged"] == {"inbound_messages": 1, "link_clicks": 2, "message_bodies": 0}
    assert list(InboundMessage.objects.values_list("body", flat=True)) == ["START"]
    assert list(LinkClick.objects.values_list("recipient_token", flat=True)) == ["t10"]
    entry = AuditLog.objects.order_by("-pk").first()
    assert entry is not None and entry.action == "retention.purge" and AuditLog.objects.count() == audit_before + 1
    after: Any = entry.after
    assert after["purged"]["link_clicks"] == 2 and after["periods_days"]["link_clicks"] == 90


@override_settings(SMS_RETENTION_DAYS={**DAYS, "message_bodies": 0})
def test_zero_keeps_a_kind_for_ever(gateway: Gateway) -> None:
    messages(gateway, [1000])
    assert "message_bodies" not in retention_purge()["purged"]
    assert OutboundMessage.objects.get().body == "Hello 0"


@override_settings(SMS_RETENTION_DAYS=DAYS)
def test_a_run_stops_at_its_time_budget_and_the_next_continues(gateway: Gateway, monkeypatch: Any) -> None:
    messages(gateway, [100] * 7)
    first = retention_purge(batch_size=2, time_budget=0)
    assert first["purged"].get("message_bodies", 0) == 0
    done = retention_purge(batch_size=2)
    assert done["purged"]["message_bodies"] == 7
    assert not OutboundMessage.objects.exclude(body="").exists()
