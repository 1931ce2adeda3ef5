"""Celery tasks of the reporting app: thin and named (STYLE 9)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from reporting.aggregates import refresh_all
from reporting.alerts import TASK_NAME, alerts_raise


@shared_task(name="reporting.refresh_aggregates")
def refresh_aggregates() -> dict[str, int]:
    """Every few seconds (beat): bring the report aggregates up to date."""
    return refresh_all()


@shared_task(name=TASK_NAME)
def raise_alerts() -> dict[str, Any]:
    # Safe to run twice at once: each alert's once-per-window row is a unique constraint.
    return alerts_raise()
