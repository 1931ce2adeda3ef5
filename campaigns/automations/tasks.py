"""Celery tasks of the automations app: thin, named (STYLE 9)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from campaigns.automations.engine import flow_tick


@shared_task(name="automations.tick")
def automations_tick() -> dict[str, Any]:
    """Every few seconds (beat): scan new events into enrolments and exits, then send what is due."""
    return flow_tick()
