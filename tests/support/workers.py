"""Worker subprocesses as the integration tests start them: a Celery worker's command line and the
environment that puts a subprocess on the test database and broker; the marks of a real-worker test."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from smsplatform.celery import app

ROOT = Path(__file__).resolve().parents[2]

# The marks of a test that drives real worker processes (make test-celery: PostgreSQL + Redis, and
# make test-celery-rabbitmq: the same tests on RabbitMQ).
REAL_WORKER_TEST = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("known_gateways"),
    pytest.mark.skipif(
        not settings.CELERY_BROKER_URL.startswith(("redis://", "amqp://")) or connection.vendor != "postgresql",
        reason="run by `make test-celery`: PostgreSQL and CELERY_BROKER_URL=redis://... or amqp://...",
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


def broker_reset() -> None:
    """An empty broker for the next real-worker test: its queues purged and, on Redis, the
    messages a killed worker took and never acknowledged dropped too. Redis keeps those aside
    (acks late) and a worker that starts after the visibility timeout puts them back on the
    queue: a kill test run ten minutes earlier would hand this test a stray task (a tick that ran
    before the test asked for one). RabbitMQ returns them to the queue when the connection
    closes, so the purge takes them."""
    app.control.purge()
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        if conn.transport.driver_type == "redis":
            channel.client.delete(channel.unacked_key, channel.unacked_index_key, channel.unacked_mutex_key)
    app.control.purge()
