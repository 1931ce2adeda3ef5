"""The events' retention: the beat task deletes events older than SMS_EVENTS_RETENTION_DAYS,
in batches, and keeps the rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.automations.services import events_purge
from campaigns.automations.tasks import purge_events
from contacts.models import Contact
from smsplatform.celery import app as celery_app
from smsplatform.models import AuditLog
from smsplatform.schedules import PERIODIC, periodic_tasks_ensure

pytestmark = pytest.mark.django_db


def make(source: EventSource, contact: Contact, n: int, days_ago: float, prefix: str) -> None:
    occurred = timezone.now() - timedelta(days=days_ago)
    CommerceEvent.objects.bulk_create(
        [
            CommerceEvent(
                source=source,
                event_id=f"{prefix}{i}",
                type="order_paid" if i % 2 else "product_viewed",
                contact=contact,
                occurred_at=occurred,
                payload_hash="0" * 64,
            )
            for i in range(n)
        ]
    )


def test_purge_deletes_only_events_past_the_retention(source: EventSource, contact: Contact, settings: Any) -> None:
    settings.SMS_EVENTS_RETENTION_DAYS = 30
    make(source, contact, 5, 31, "old")
    make(source, contact, 3, 29, "new")
    assert events_purge(batch=2) == 5
    assert sorted(CommerceEvent.objects.values_list("event_id", flat=True)) == ["new0", "new1", "new2"]
    row = AuditLog.objects.get(action="commerce_events.purge")
    assert row.after is not None and row.after["deleted"] == 5


def test_purge_deletes_in_batches_of_n_ids(source: EventSource, contact: Contact, settings: Any) -> None:
    settings.SMS_EVENTS_RETENTION_DAYS = 30
    make(source, contact, 7, 40, "old")
    with CaptureQueriesContext(connection) as queries:
        assert events_purge(batch=2) == 7
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    # order_paid: 4 old events (2 statements), product_viewed: 3 (2 statements)
    assert len(deletes) == 4, deletes


def test_purge_stops_after_its_statement_budget(source: EventSource, contact: Contact, settings: Any) -> None:
    settings.SMS_EVENTS_RETENTION_DAYS = 30
    make(source, contact, 8, 40, "old")
    assert events_purge(batch=1, max_statements=3) == 3
    assert CommerceEvent.objects.count() == 5


def test_nothing_to_purge_writes_no_audit_row(source: EventSource, contact: Contact) -> None:
    make(source, contact, 2, 1, "new")
    assert purge_events() == 0
    assert not AuditLog.objects.filter(action="commerce_events.purge").exists()


def test_the_beat_entry_and_its_task_exist() -> None:
    assert ("Purge commerce events past their retention", "automations.purge_events", 3600) in PERIODIC
    celery_app.loader.import_default_modules()
    assert "automations.purge_events" in celery_app.tasks
    periodic_tasks_ensure()
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(task="automations.purge_events").exists()
