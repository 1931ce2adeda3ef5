"""Celery tasks of the reporting app: thin and named (STYLE 9)."""

from __future__ import annotations

from celery import shared_task

from reporting.aggregates import refresh_all


@shared_task(name="reporting.refresh_aggregates")
def refresh_aggregates() -> dict[str, int]:
    """Every few seconds (beat): bring the report aggregates up to date."""
    return refresh_all()
