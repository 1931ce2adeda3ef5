"""A real Celery worker, fed through Redis, working on the test database (PostgreSQL): the
``celery_worker`` fixture of tests/integration/conftest.py."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.utils import timezone

from compliance.models import ActionRequest, RequestState
from smsplatform.celery import app
from smsplatform.kernel.previews import preview_store
from smsplatform.models import AuditLog, Preview
from tests.support.actors import actor
from tests.support.workers import REAL_WORKER_TEST

pytestmark = REAL_WORKER_TEST


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_worker_expires_due_requests(celery_worker: Any, technical: Any, config_policy: Any, config_token: str) -> None:
    from gateways.platform_config import platform_config_update

    result = platform_config_update(
        actor=actor(technical),
        changes={"default_gateway": "x"},
        base_version_token=config_token,
        idempotency_key="celery-key-0001",
    )
    request_id = result["action_request_id"]
    ActionRequest.objects.filter(pk=request_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    app.send_task("compliance.expire_action_requests")
    wait_for(lambda: ActionRequest.objects.get(pk=request_id).state == RequestState.EXPIRED)
    assert (
        AuditLog.objects.filter(
            action="action_request.expire", channel="system", token_name="compliance.expire_action_requests"
        ).count()
        == 1
    )


def test_worker_runs_the_housekeeping_the_beat_schedule_names(celery_worker: Any, technical: Any) -> None:
    from django_celery_beat.models import PeriodicTask

    names = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"compliance.expire_action_requests", "smsplatform.purge_expired_previews"} <= names
    old = preview_store(actor=actor(technical), kind="segments", payload={}, result={})
    Preview.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=30))
    for name in names & {"smsplatform.purge_expired_previews"}:
        app.send_task(name)
    wait_for(lambda: not Preview.objects.filter(pk=old.pk).exists())
