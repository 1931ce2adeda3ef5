"""Fixtures shared by the integration tests: a real Celery worker subprocess on Redis and the test
database (PostgreSQL), as the ``celery_worker`` tests need it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from smsplatform.celery import app

ROOT = Path(__file__).resolve().parents[2]

# The marks of a test that drives real worker processes (make test-celery: PostgreSQL + Redis).
REAL_WORKER_TEST = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.CELERY_BROKER_URL.startswith("redis://") or connection.vendor != "postgresql",
        reason="run by `make test-celery`: PostgreSQL and CELERY_BROKER_URL=redis://...",
    ),
]


def celery_worker_command(name: str) -> list[str]:
    """A Celery worker as the tests run it: solo pool, quiet, no gossip, mingle or heartbeat."""
    return [
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
        f"{name}@%h",
    ]


def worker_db_url() -> str:
    """The test database, as a subprocess (Celery or bind worker) reaches it."""
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgresql://{user}@{host}:{port}/{db['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: this process's, on the test database and broker."""
    return {**os.environ, "DATABASE_URL": worker_db_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, **extra}


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
    app.control.purge()
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
