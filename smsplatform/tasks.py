from __future__ import annotations

from typing import Any

from celery import shared_task

from smsplatform.kernel.notifications import notification_deliver, notifications_sweep
from smsplatform.kernel.previews import previews_purge_expired


@shared_task(name="smsplatform.purge_expired_previews")
def purge_expired_previews() -> int:
    return previews_purge_expired()


@shared_task(name="smsplatform.send_notification")
def send_notification(notification_id: int) -> dict[str, Any]:
    """One attempt at an outbox row; a failed attempt re-enqueues itself with back-off."""
    return notification_deliver(notification_id=notification_id)


@shared_task(name="smsplatform.sweep_notifications")
def sweep_notifications() -> int:
    """Beat: send outbox rows whose enqueue was lost or whose worker died."""
    return notifications_sweep()


@shared_task(name="smsplatform.beat_heartbeat")
def beat_heartbeat() -> None:
    """Beat sends this every few seconds; the worker that runs it proves both are alive (/readyz)."""
    from smsplatform.operations.health import heartbeat_record

    heartbeat_record()


@shared_task(name="smsplatform.retention_purge")
def retention_purge() -> dict[str, Any]:
    """Beat, hourly: purge what is past its retention period, within a time budget per run."""
    from smsplatform.operations.retention import retention_purge as purge

    return purge()
