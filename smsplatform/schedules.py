"""Periodic housekeeping registered with django-celery-beat's DatabaseScheduler."""

from __future__ import annotations

from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

# Stated in every report's data_latency (reporting.aggregates).
REPORT_REFRESH_SECONDS = 3

PERIODIC = [
    # (beat entry name, task name, every N seconds)
    ("Beat heartbeat", "smsplatform.beat_heartbeat", 10),
    ("Expire action requests", "compliance.expire_action_requests", 60),
    ("Purge expired previews", "smsplatform.purge_expired_previews", 3600),
    ("Send notifications left pending", "smsplatform.sweep_notifications", 60),
    ("Reconcile interrupted submissions", "gateways.reconcile_messages", 60),
    ("Retry messages whose back-off passed", "gateways.retry_due_messages", 5),
    ("Advance campaign batches", "campaigns.advance_batches", 5),
    ("Fold campaign message counters", "gateways.fold_message_counts", 60),
    ("Write orphaned short-link clicks", "templates.drain_click_spool", 60),
    ("Purge personal data past its retention", "smsplatform.retention_purge", 3600),
    ("Prune OTP abuse counters", "otp.prune_rate_counters", 3600),
    ("Scrub OTP codes from sent messages", "otp.scrub_codes", 30),
    ("Refresh report aggregates", "reporting.refresh_aggregates", REPORT_REFRESH_SECONDS),
    ("Run automation flows (scan events, send due steps)", "automations.tick", 5),
    ("Purge commerce events past their retention", "automations.purge_events", 3600),
    ("Raise review alerts (cost, opt-outs, failures, ROI)", "reporting.raise_alerts", 300),
]


def periodic_tasks_ensure(*, using: str = "default") -> int:
    """Create or correct the housekeeping entries. Idempotent."""
    changed = 0
    for name, task, seconds in PERIODIC:
        schedule, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        entry, created = PeriodicTask.objects.using(using).get_or_create(
            name=name, defaults={"task": task, "interval": schedule}
        )
        if not created and (entry.task != task or entry.interval_id != schedule.pk):
            entry.task, entry.interval = task, schedule
            entry.save()
        changed += int(created)
    if changed:
        PeriodicTasks.update_changed()
    return changed
