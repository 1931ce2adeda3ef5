"""Two batches racing on the same (source, event id) on PostgreSQL: each event is stored once, one
batch answers accepted and the other duplicate (ON CONFLICT DO NOTHING, then the stored row)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from django.db import connection

from campaigns.automations import intake
from campaigns.automations.intake import events_ingest
from campaigns.automations.models import CommerceEvent, EventSource
from contacts.models import Contact
from tests.automations.conftest import event
from tests.support.db import postgres_only


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_batches_racing_store_each_event_once(monkeypatch: pytest.MonkeyPatch) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    Contact.objects.create(phone="+85291234567", country="HK", source="crm")
    batch = [event(event_id=f"r{i}", order_id=f"O{i}") for i in range(50)]
    # Both batches check for stored duplicates before either inserts.
    overlap = threading.Barrier(2, timeout=5)
    real = intake._stored_hashes

    def stored_then_wait(src: EventSource, event_ids: list[str]) -> dict[str, str]:
        found = real(src, event_ids)
        with contextlib.suppress(threading.BrokenBarrierError):
            overlap.wait()
        return found

    monkeypatch.setattr(intake, "_stored_hashes", stored_then_wait)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            answers.append(events_ingest(source=source, events=batch))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted((a["accepted"], a["duplicate"]) for a in answers) == [(0, 50), (50, 0)]
    loser = next(a for a in answers if a["duplicate"])
    assert all(r["payload_differs"] is False for r in loser["results"])
    assert CommerceEvent.objects.count() == 50
