"""A real Celery worker, fed through Redis, working on the test database (PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from compliance.models import ActionRequest, RequestState
from smsplatform.celery import app
from smsplatform.kernel.previews import preview_store
from smsplatform.models import AuditLog, Preview
from tests.conftest import actor

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.CELERY_BROKER_URL.startswith("redis://") or connection.vendor != "postgresql",
        reason="run by `make test-celery`: PostgreSQL and CELERY_BROKER_URL=redis://...",
    ),
]
ROOT = Path(__file__).resolve().parents[2]


def _db_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgresql://{user}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def worker(transactional_db: Any) -> Iterator[subprocess.Popen[bytes]]:
    app.control.purge()
    env = {**os.environ, "DATABASE_URL": _db_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "smsplatform",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "worker died")
        if app.control.ping(timeout=0.5):
            break
    else:
        proc.kill()
        raise RuntimeError("worker did not start")
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_worker_expires_due_requests(worker: Any, technical: Any, config_policy: Any, config_token: str) -> None:
    from smsplatform.config_service import platform_config_update

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


def test_worker_runs_the_housekeeping_the_beat_schedule_names(worker: Any, technical: Any) -> None:
    from django_celery_beat.models import PeriodicTask

    names = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"compliance.expire_action_requests", "smsplatform.purge_expired_previews"} <= names
    old = preview_store(actor=actor(technical), kind="segments", payload={}, result={})
    Preview.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=30))
    for name in names & {"smsplatform.purge_expired_previews"}:
        app.send_task(name)
    wait_for(lambda: not Preview.objects.filter(pk=old.pk).exists())
