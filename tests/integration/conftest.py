"""Fixtures shared by the integration tests: a real Celery worker subprocess on Redis and the test
database (PostgreSQL), as the ``celery_worker`` tests need it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smsplatform.celery import app
from tests.support.faults import SmppWorkers
from tests.support.workers import ROOT, broker_reset, celery_worker_command, worker_env


@pytest.fixture
def celery_worker_env() -> dict[str, str]:
    """Extra environment for the Celery worker; a test module overrides it when its tasks need more."""
    return {}


@pytest.fixture
def celery_worker(
    transactional_db: Any, tmp_path: Path, celery_worker_env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (solo pool) on Redis and the test database, started for one test and
    stopped after it. Its output goes to ``celery.log`` in the test's tmp_path (never to a pipe
    nobody reads, which would block the worker once full)."""
    broker_reset()
    log_path = tmp_path / "celery.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            celery_worker_command(f"test-{os.getpid()}"),
            cwd=ROOT,
            env=worker_env(**celery_worker_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not app.control.ping(timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start: {log_path.read_text()[-2000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def smpp_workers(tmp_path: Path) -> Iterator[SmppWorkers]:
    workers = SmppWorkers(tmp_path)
    yield workers
    workers.stop_all()
