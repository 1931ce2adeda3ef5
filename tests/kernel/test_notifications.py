"""The notification outbox: written with the change, sent after commit, outcome recorded, retried,
swept, and never sent twice."""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.mail import BadHeaderError
from django.db import connection, transaction
from django.db.models.query import QuerySet
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone

from compliance.roles import Role
from smsplatform.kernel import notifications
from smsplatform.kernel.notifications import (
    MAX_ATTEMPTS,
    SWEEP_GRACE,
    backoff,
    notification_deliver,
    notification_record,
    notifications_sweep,
)
from smsplatform.models import Notification, NotificationState
from tests.support.db import postgres_only

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def record(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "recipients": ["ops@example.com"],
        "subject": "Campaign 7 stopped",
        "body": "Remaining batches stopped.",
        "object_type": "campaign",
        "object_id": 7,
    }
    return notification_record(**{**fields, **overrides})


def failing_mail(monkeypatch: pytest.MonkeyPatch, *errors: Exception) -> list[Any]:
    """The next sends raise ``errors`` in turn, then succeed; returns the list of attempts."""
    calls: list[Any] = []
    queue = list(errors)

    def send(*args: Any, **kwargs: Any) -> int:
        calls.append(args)
        if queue:
            raise queue.pop(0)
        return 1

    monkeypatch.setattr(notifications, "send_mail", send)
    return calls


def test_row_is_written_in_the_changes_transaction_and_rolls_back_with_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(Boom), transaction.atomic():
        record()
        assert Notification.objects.count() == 1  # visible inside the change's transaction
        raise Boom
    assert not Notification.objects.exists()
    assert callbacks == [] and mail.outbox == []


def test_sent_after_commit_and_the_outcome_recorded(django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            notification = record(recipients=["b@example.com", "a@example.com", "a@example.com"])
        assert mail.outbox == []  # committed; the send is one of the on-commit callbacks
    assert len(callbacks) == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["a@example.com", "b@example.com"]
    assert mail.outbox[0].subject == "Campaign 7 stopped"
    notification.refresh_from_db()
    assert notification.state == NotificationState.SENT and notification.attempts == 1
    assert notification.sent_at is not None and notification.last_error == ""
    assert (notification.object_type, notification.object_id) == ("campaign", "7")
    # Delivering again (a duplicate task) sends nothing more.
    assert notification_deliver(notification_id=notification.pk)["skipped"] is True
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_real_commit_sends_with_no_transaction_open(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def send(*args: Any, **kwargs: Any) -> int:
        seen.append(connection.in_atomic_block)
        return 1

    monkeypatch.setattr(notifications, "send_mail", send)
    with transaction.atomic():
        notification = record()
        assert seen == []
    assert seen == [False]  # eager Celery ran the task after commit, outside any transaction
    notification.refresh_from_db()
    assert notification.state == NotificationState.SENT


def committed(**overrides: Any) -> Notification:
    """Record, then run the on-commit enqueue as a commit would (eager Celery sends it)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return record(**overrides)


def test_a_failure_is_recorded_and_retried_with_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = failing_mail(monkeypatch, smtplib.SMTPServerDisconnected("connection lost"))
    notification = committed()
    notification.refresh_from_db()
    assert len(calls) == 1
    assert notification.state == NotificationState.PENDING and notification.attempts == 1
    assert "SMTPServerDisconnected: connection lost" in notification.last_error
    wait = notification.next_attempt_at - timezone.now()
    assert timedelta(seconds=20) < wait <= backoff(1)
    # The retry enqueued with a countdown (run at once by eager Celery) found it not yet due.
    assert notification_deliver(notification_id=notification.pk)["skipped"] is True
    assert len(calls) == 1
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    out = notification_deliver(notification_id=notification.pk)
    assert out["sent"] is True and out["attempts"] == 2 and len(calls) == 2
    notification.refresh_from_db()
    assert notification.state == NotificationState.SENT and notification.sent_at is not None


def test_back_off_grows_and_attempts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(50) == timedelta(hours=1)
    calls = failing_mail(monkeypatch, *[OSError("refused")] * (MAX_ATTEMPTS + 1))
    notification = committed()
    for _ in range(MAX_ATTEMPTS - 1):
        Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
        notification_deliver(notification_id=notification.pk)
    notification.refresh_from_db()
    assert len(calls) == MAX_ATTEMPTS
    assert notification.state == NotificationState.FAILED and notification.attempts == MAX_ATTEMPTS
    assert "OSError: refused" in notification.last_error and notification.sent_at is None
    assert notifications_sweep(now=timezone.now() + timedelta(days=1)) == 0  # final: nothing picks it up


def test_a_permanent_error_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = failing_mail(monkeypatch, BadHeaderError("newline in header"))
    notification = committed()
    notification.refresh_from_db()
    assert len(calls) == 1 and notification.state == NotificationState.FAILED and notification.attempts == 1


def test_sweep_sends_rows_whose_enqueue_was_lost() -> None:
    lost = record(subject="lost")  # its on-commit enqueue never runs: the test never commits
    fresh = committed(subject="fresh")  # sent by its own task
    assert len(mail.outbox) == 1
    assert notifications_sweep() == 0  # not yet past the grace: its own task may still come
    assert notifications_sweep(now=timezone.now() + SWEEP_GRACE + timedelta(seconds=1)) == 1
    lost.refresh_from_db()
    fresh.refresh_from_db()
    assert lost.state == fresh.state == NotificationState.SENT
    assert [m.subject for m in mail.outbox] == ["fresh", "lost"]


def test_sweep_takes_back_a_row_whose_worker_died_mid_send() -> None:
    now = timezone.now()
    with transaction.atomic():
        dead = record(subject="dead worker")
        alive = record(subject="still sending")
        last = record(subject="died on its last attempt")
    mail.outbox.clear()
    Notification.objects.filter(pk=dead.pk).update(
        state=NotificationState.SENDING, attempts=1, lease_until=now - timedelta(seconds=1)
    )
    Notification.objects.filter(pk=alive.pk).update(
        state=NotificationState.SENDING, attempts=1, lease_until=now + timedelta(minutes=5)
    )
    Notification.objects.filter(pk=last.pk).update(
        state=NotificationState.SENDING, attempts=MAX_ATTEMPTS, lease_until=now - timedelta(seconds=1)
    )
    # The test transaction never commits, so the three were not sent; they are claimed only
    # as the sweep finds them.
    assert notifications_sweep() == 2
    states = dict(Notification.objects.values_list("subject", "state"))
    assert states == {
        "dead worker": NotificationState.SENT,
        "still sending": NotificationState.SENDING,
        "died on its last attempt": NotificationState.FAILED,
    }
    assert [m.subject for m in mail.outbox] == ["dead worker"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_row_send_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sends: list[str] = []

    def slow_send(subject: str, *args: Any, **kwargs: Any) -> int:
        sends.append(subject)
        time.sleep(0.5)  # the other worker tries to claim while this one is mid-send
        return 1

    monkeypatch.setattr(notifications, "send_mail", slow_send)
    # Hold each claim between its read and its write until the other worker has read too (or
    # a second has passed), so the two claim transactions really overlap.
    overlap = threading.Barrier(2, timeout=1)
    real_update = QuerySet.update

    def update(self: QuerySet[Any], **kwargs: Any) -> int:
        if self.model is Notification and kwargs.get("state") == NotificationState.SENDING:
            with contextlib.suppress(threading.BrokenBarrierError):
                overlap.wait()
        return real_update(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", update)
    # The on-commit enqueue is dropped, so that only the two racing workers deliver.
    monkeypatch.setattr(notifications, "_enqueue", lambda *a, **k: None)
    with transaction.atomic():
        notification = record()
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = notification_deliver(notification_id=notification.pk)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sends == ["Campaign 7 stopped"], results
    assert sorted(bool(r.get("sent")) for r in results) == [False, True], results
    notification.refresh_from_db()
    assert notification.state == NotificationState.SENT and notification.attempts == 1


def test_admin_lists_the_outbox_read_only(make_user: Any) -> None:
    committed()
    row = Notification.objects.get()
    client = Client()
    client.force_login(make_user(Role.OPERATIONS))
    listing = client.get(reverse("admin:smsplatform_notification_changelist"))
    assert listing.status_code == 200 and "Campaign 7 stopped" in listing.content.decode()
    change_url = reverse("admin:smsplatform_notification_change", args=[row.pk])
    assert client.get(change_url).status_code == 200  # a view page
    assert client.post(change_url, {"subject": "edited"}).status_code == 403
    assert client.get(reverse("admin:smsplatform_notification_add")).status_code == 403
    assert Notification.objects.get().subject == "Campaign 7 stopped"
    marketer = Client()
    marketer.force_login(make_user(Role.MARKETING))
    assert marketer.get(reverse("admin:smsplatform_notification_changelist")).status_code == 403
