"""The Celery worker SIGKILLed in the middle of a campaign's dispatch (its INSERT ... SELECT running)
and again in the middle of the send: the dispatch never half-happens, the lost dispatch task is
found by the batch-advance beat and run again, and every recipient gets the message exactly once
(the SMSC simulator's own log is the ground truth).

Run with ``make test-celery`` (PostgreSQL + Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from gateways.models import MessageState, OutboundMessage
from smsplatform.celery import app
from smsplatform.models import AuditLog
from tests.support.faults import SmppWorkers, campaign_for, send, smpp_gateway, submissions
from tests.support.smsc_setup import PASSWORD
from tests.support.workers import REAL_WORKER_TEST, ROOT, broker_reset, celery_worker_command, worker_env

pytestmark = REAL_WORKER_TEST
GRACE = 3  # SMS_DISPATCH_GRACE_SECONDS of the Celery worker: the sweep's wait, shortened for the test


class CeleryWorkers:
    """A real Celery worker subprocess (solo pool, Redis, the test database) that can be SIGKILLed
    and started again."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self) -> None:
        self.started += 1
        with (self.tmp_path / f"celery-{self.started}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                celery_worker_command(f"kill-{os.getpid()}-{self.started}"),
                cwd=ROOT,
                env=worker_env(TEST_SMPP_PASSWORD=PASSWORD, SMS_DISPATCH_GRACE_SECONDS=str(GRACE)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not app.control.ping(timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start: {self.logs()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.tmp_path.glob("celery-*.log")))


@pytest.fixture
def celery_workers(transactional_db: Any, tmp_path: Path) -> Iterator[CeleryWorkers]:
    broker_reset()
    workers = CeleryWorkers(tmp_path)
    previous, app.conf.task_always_eager = app.conf.task_always_eager, False
    try:
        yield workers
    finally:
        workers.stop()
        app.conf.task_always_eager = previous
        broker_reset()


def dispatch_running() -> bool:
    """The dispatch's INSERT ... SELECT of the outbound messages is executing right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
            "AND query ILIKE %s",
            ["%INSERT INTO%gateways_outboundmessage%SELECT%"],
        )
        return bool(cursor.fetchone()[0])


def test_celery_worker_killed_mid_dispatch_and_mid_send_sends_each_message_once(
    celery_workers: CeleryWorkers, smpp_workers: SmppWorkers, smsc_factory: Any, make_user: Any
) -> None:
    total = 10_000
    smsc = smsc_factory(receipt_delay=(0.0, 0.02), keep_records=1000)
    smpp_gateway("smpp-a", smsc, priority=1)
    campaign, actor = campaign_for(make_user, total, batch_size=1000, interval=1)
    celery_workers.start()
    smpp_workers.start("smpp-a")
    send(campaign, actor)

    # 1. Killed while the dispatch's INSERT ... SELECT runs: nothing of it may remain.
    deadline = time.monotonic() + 30
    while not dispatch_running():
        assert time.monotonic() < deadline, f"the dispatch never started: {celery_workers.logs()}"
        time.sleep(0.005)
    celery_workers.kill()
    time.sleep(0.5)  # the server notices its client is gone and rolls the transaction back
    assert not OutboundMessage.objects.filter(batch__campaign=campaign).exists()
    assert not SendBatch.objects.filter(campaign=campaign).exists()
    assert Campaign.objects.get(pk=campaign.pk).state == CampaignState.APPROVED

    # The task is gone with its worker (the broker would give it back only after its visibility
    # timeout). A new worker runs the batch-advance beat task; its sweep dispatches again.
    celery_workers.start()
    killed_mid_send = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        app.send_task("campaigns.advance_batches")  # what beat does every few seconds
        time.sleep(0.5)
        if not killed_mid_send and int(smsc.stats().get("accepted", 0)) > total // 3:
            # 2. Killed mid-send (between batch advances): the bind worker keeps sending what is
            # due; the next Celery worker starts the remaining batches.
            celery_workers.kill()
            killed_mid_send = True
            time.sleep(1.0)
            celery_workers.start()
        if Campaign.objects.get(pk=campaign.pk).state == CampaignState.COMPLETED:
            break
    time.sleep(1.0)  # the last receipts
    smpp_workers.stop_all()

    campaign.refresh_from_db()
    messages = list(OutboundMessage.objects.filter(batch__campaign=campaign).values_list("destination", "state"))
    states = dict(Counter(state for _destination, state in messages))
    context = f"state={campaign.state}, killed_mid_send={killed_mid_send}, messages={states}"
    assert killed_mid_send, context
    assert campaign.state == CampaignState.COMPLETED, f"{context}\n{celery_workers.logs()}"
    assert SendBatch.objects.filter(campaign=campaign, kind=BatchKind.INITIAL).count() == 10, context
    assert len(messages) == total and states == {MessageState.DELIVERED: total}, context
    _records, per_phone = submissions(smsc)
    assert len(per_phone) == total and set(per_phone.values()) == {1}, "a message accepted twice"
    retry = AuditLog.objects.filter(action="campaign.dispatch_retry", object_id=str(campaign.pk))
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        # Redis gives a killed worker's task back only after its visibility timeout: the beat
        # sweep dispatched again. RabbitMQ redelivers it as soon as the dead worker's connection
        # drops, so there the task itself runs again; either way each message was sent once.
        assert retry.exists()
