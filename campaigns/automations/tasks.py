"""Beat tasks of the automations app: thin, named (STYLE 9)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from campaigns.automations.engine import flow_tick
from campaigns.automations.services import events_purge


@shared_task(name="automations.purge_events")
def purge_events() -> int:
    """Beat: delete commerce events past SMS_EVENTS_RETENTION_DAYS, in batches."""
    return events_purge()


@shared_task(name="automations.tick")
def automations_tick() -> dict[str, Any]:
    """Every few seconds (beat): scan new events into enrolments and exits, then send what is due."""
    return flow_tick()
