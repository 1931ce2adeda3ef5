"""Beat tasks of the automations app."""

from __future__ import annotations

from celery import shared_task

from campaigns.automations.services import events_purge


@shared_task(name="automations.purge_events")
def purge_events() -> int:
    """Beat: delete commerce events past SMS_EVENTS_RETENTION_DAYS, in batches."""
    return events_purge()
