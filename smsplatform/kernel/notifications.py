"""The notification outbox (STYLE 18): e-mail leaves the process only after the change it reports
has committed, and its outcome is recorded.

``notification_record`` writes the row inside the caller's transaction, so a rolled-back change
leaves no notification behind, and asks for the send with ``transaction.on_commit``.
``notification_deliver`` (the ``smsplatform.send_notification`` task) claims the row, sends with
no transaction open and no row locked, and records sent / retry with back-off / failed.
``notifications_sweep`` (beat) re-enqueues rows whose on-commit enqueue was lost, and rows whose
worker died mid-send.

Two workers handed the same row never both send it: the claim is a compare-and-set on
(state, attempts), taken under ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it.
A worker that dies after sending and before recording may cause one repeat once its lease runs
out (at least once, never concurrently).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.core.mail import BadHeaderError, send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from smsplatform.models import Notification, NotificationState

MAX_ATTEMPTS = 5
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
# How long a claiming worker owns a row; longer than any SMTP conversation should take.
LEASE = timedelta(minutes=10)
# A pending row this far past due was not picked up by its own task: the sweep re-enqueues it.
SWEEP_GRACE = timedelta(minutes=2)
# Errors a retry cannot fix (the message itself is malformed).
PERMANENT_ERRORS: tuple[type[Exception], ...] = (BadHeaderError,)


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt after ``attempts`` failed ones: 30 s, 1 min, 2 min, ... capped."""
    return min(BACKOFF_FIRST * 2 ** min(max(attempts - 1, 0), 16), BACKOFF_MAX)


def _enqueue(notification_id: int, countdown: float | None = None) -> None:
    from smsplatform.tasks import send_notification  # the task module imports this one

    if countdown is None:
        send_notification.delay(notification_id)
    else:
        send_notification.apply_async((notification_id,), countdown=countdown)


def notification_record(
    *, recipients: list[str], subject: str, body: str, object_type: str = "", object_id: object = ""
) -> Notification:
    """Write one notification in the caller's transaction; it is sent after that transaction commits."""
    notification = Notification.objects.create(
        recipients=sorted(set(recipients)),
        subject=subject[:200],
        body=body,
        object_type=object_type,
        object_id=str(object_id) if object_id not in (None, "") else "",
    )
    # After commit only: a rolled-back change sends nothing, and no mail server is
    # contacted while the caller still holds its row locks.
    transaction.on_commit(functools.partial(_enqueue, notification.pk))
    return notification


def _claimable(now: datetime) -> Q:
    return Q(state=NotificationState.PENDING, next_attempt_at__lte=now) | Q(
        state=NotificationState.SENDING, lease_until__lt=now
    )


def _claim(notification_id: int, now: datetime) -> Notification | None:
    """Take the row for one send attempt, or None if it is not due or another worker has it."""
    # Durable: a claim (and so a send) never runs inside someone else's transaction.
    with transaction.atomic(durable=True):
        # SKIP LOCKED: a worker claiming the same row right now makes us skip it, not wait for it.
        row = (
            Notification.objects.select_for_update(skip_locked=True).filter(_claimable(now), pk=notification_id).first()
        )
        if row is None:
            return None
        same = Notification.objects.filter(pk=row.pk, state=row.state, attempts=row.attempts)
        if row.attempts >= MAX_ATTEMPTS:  # a worker died mid-send on the last attempt
            same.update(
                state=NotificationState.FAILED,
                lease_until=None,
                last_error=(row.last_error or "The worker sending it stopped before recording the outcome.")[:2000],
            )
            return None
        # Compare-and-set on (state, attempts): on databases without row locks, of two
        # workers that read the same row only one update matches.
        won = same.update(state=NotificationState.SENDING, attempts=F("attempts") + 1, lease_until=now + LEASE)
        if not won:
            return None
    row.state, row.attempts, row.lease_until = NotificationState.SENDING, row.attempts + 1, now + LEASE
    return row


def notification_deliver(*, notification_id: int) -> dict[str, Any]:
    """One send attempt, its outcome recorded. Never raises for a mail failure."""
    now = timezone.now()
    row = _claim(notification_id, now)
    if row is None:
        state = Notification.objects.filter(pk=notification_id).values_list("state", flat=True).first()
        return {"notification_id": notification_id, "sent": False, "state": state, "skipped": True}
    # Ours until the lease ends; every outcome update below matches the claim (state and attempt).
    ours = Notification.objects.filter(pk=row.pk, state=NotificationState.SENDING, attempts=row.attempts)
    try:
        # The network call: no transaction open, no row locked.
        send_mail(row.subject, row.body, None, list(row.recipients), fail_silently=False)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if isinstance(exc, PERMANENT_ERRORS) or row.attempts >= MAX_ATTEMPTS:
            ours.update(state=NotificationState.FAILED, lease_until=None, last_error=error)
            return {
                "notification_id": row.pk,
                "sent": False,
                "state": NotificationState.FAILED,
                "attempts": row.attempts,
                "error": error,
            }
        wait = backoff(row.attempts)
        ours.update(
            state=NotificationState.PENDING, lease_until=None, last_error=error, next_attempt_at=timezone.now() + wait
        )
        _enqueue(row.pk, countdown=wait.total_seconds())
        return {
            "notification_id": row.pk,
            "sent": False,
            "state": NotificationState.PENDING,
            "attempts": row.attempts,
            "error": error,
            "retry_in": wait.total_seconds(),
        }
    sent_at = timezone.now()
    ours.update(state=NotificationState.SENT, lease_until=None, sent_at=sent_at)
    return {"notification_id": row.pk, "sent": True, "state": NotificationState.SENT, "attempts": row.attempts}


def notifications_sweep(*, now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue rows nobody is working on: pending well past due (their enqueue was lost) or
    sending past their lease (their worker died). Returns how many were enqueued."""
    now = now or timezone.now()
    due = list(
        Notification.objects.filter(
            Q(state=NotificationState.PENDING, next_attempt_at__lte=now - SWEEP_GRACE)
            | Q(state=NotificationState.SENDING, lease_until__lt=now)
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for notification_id in due:
        _enqueue(notification_id)
    return len(due)
