"""The bind worker's journal (a killed worker's never-written messages go back to the queue) and
its fail-over to the fallback gateway when the bind stays down."""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gateways.delivery.claim import messages_claim_rows
from gateways.delivery.queue import message_queue
from gateways.mcp_tools import gateways_list_tool
from gateways.models import (
    BindState,
    BindWorkerStatus,
    Gateway,
    GatewayRate,
    MessageState,
    OutboundMessage,
    Provider,
    SenderId,
    SenderIdKind,
    SenderIdStatus,
)
from gateways.selectors import bind_status
from gateways.smpp import journal as journal_module
from gateways.smpp.journal import Journal, journal_read, journals_recover
from gateways.smpp.worker import BindWorker
from gateways.tasks import reconcile_messages
from smsplatform.kernel.actor import Actor
from smsplatform.mcp.registry import load_tools
from smsplatform.models import AuditLog
from tests.support.smpp import queue, smpp_gateway, state
from tests.support.smsc.server import find_duplicates, read_log
from tests.support.smsc_setup import PASSWORD, SYSTEM_ID, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
SYSTEM = Actor.system("test")


def journal_files() -> list[str]:
    return sorted(os.listdir(settings.SMS_SMPP_JOURNAL_DIR))


def claim(gateway: Gateway, journal: Journal, limit: int = 100) -> list[int]:
    result = messages_claim_rows(gateway_id=gateway.pk, limit=limit, on_claim=journal.claimed)
    return [m.pk for m in result.messages]


def die(journal: Journal) -> None:
    """What a SIGKILL leaves: the files, and a lock nobody holds any more."""
    journal.close(clean=False)


def test_a_dead_workers_never_written_messages_go_back_to_the_queue(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529123{i:04d}") for i in range(6)]
    journal = Journal(gateway.code)
    claimed = claim(gateway, journal)
    assert claimed == [m.pk for m in messages]
    journal.written(claimed[:2])  # two were written to the socket, the other four never
    die(journal)

    recovery = journals_recover()

    assert (recovery.journals, recovery.requeued, recovery.unknown, recovery.untrusted) == (1, 4, 2, 0)
    assert [state(m) for m in messages] == [MessageState.UNKNOWN] * 2 + [MessageState.QUEUED] * 4
    requeued = OutboundMessage.objects.filter(pk__in=claimed[2:])
    assert {(m.attempts, m.submit_started_at) for m in requeued} == {(0, None)}  # the attempt never happened
    assert AuditLog.objects.filter(action="messages.requeue").exists()
    assert journal_files() == []  # recovered once, then gone
    assert journals_recover().journals == 0


def test_a_live_workers_journal_is_never_touched(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529124{i:04d}") for i in range(3)]
    journal = Journal(gateway.code)
    claim(gateway, journal)
    assert journals_recover().journals == 0  # its lock is held: the worker is alive
    assert {state(m) for m in messages} == {MessageState.SUBMITTING}
    journal.settled((m.pk, journal.segment) for m in messages)
    journal.close(clean=True)
    assert journal_files() == []


def test_a_journal_from_before_a_reboot_or_cut_short_is_not_trusted(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529125{i:04d}") for i in range(4)]
    journal = Journal(gateway.code)
    claim(gateway, journal)
    die(journal)
    segment = next(Path(settings.SMS_SMPP_JOURNAL_DIR).glob("*.jnl"))
    data = segment.read_bytes()
    header, _, records = data.partition(b"\n")
    magic, _boot, scope = header.split(b" ")

    # The page cache may have lost the last appends in a crash: nothing is known to be unwritten.
    segment.write_bytes(b" ".join([magic, b"another-boot", scope]) + b"\n" + records)
    assert not journal_read([segment], journal_module.boot_id()).trusted
    segment.write_bytes(header + b"\n" + records[:-3])
    cut = journal_read([segment], journal_module.boot_id())
    assert not cut.trusted and ("cut short" in cut.problem or "bad record" in cut.problem)

    recovery = journals_recover()
    assert (recovery.untrusted, recovery.requeued, recovery.unknown) == (1, 0, 0)
    # Left to the reconciler: 'unknown' after its timeout, never sent twice.
    assert {state(m) for m in messages} == {MessageState.SUBMITTING}
    assert journal_files() == []


def test_another_databases_journal_is_left_alone(smsc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529126{i:04d}") for i in range(2)]
    monkeypatch.setattr(journal_module, "database_scope", lambda: "elsewhere")
    journal = Journal(gateway.code)
    claim(gateway, journal)
    die(journal)
    monkeypatch.undo()
    assert journals_recover().journals == 0
    assert {state(m) for m in messages} == {MessageState.SUBMITTING}
    assert len(journal_files()) == 2  # still there for a worker of that database


def test_segments_roll_over_and_the_settled_ones_are_deleted(smsc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 100)
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529127{i:04d}") for i in range(30)]
    journal = Journal(gateway.code)
    batches = []
    for _ in range(3):
        ids = claim(gateway, journal, limit=10)
        batches.append((journal.segment, ids))
        journal.written(ids[:5])
    assert [segment for segment, _ids in batches] == [0, 1, 2]
    assert len([f for f in journal_files() if f.endswith(".jnl")]) == 3
    journal.settled((pk, batches[1][0]) for pk in batches[1][1])  # the middle one is settled; the first is not
    assert len([f for f in journal_files() if f.endswith(".jnl")]) == 3
    journal.settled((pk, batches[0][0]) for pk in batches[0][1])  # now both older segments go; the current stays
    assert len([f for f in journal_files() if f.endswith(".jnl")]) == 1
    die(journal)
    recovery = journals_recover()
    assert (recovery.requeued, recovery.unknown) == (5, 5)  # only the last batch was still open
    assert [state(m) for m in messages[20:]] == [MessageState.UNKNOWN] * 5 + [MessageState.QUEUED] * 5


def test_the_reconciler_recovers_journals_before_it_marks_anything_unknown(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529128{i:04d}") for i in range(3)]
    journal = Journal(gateway.code)
    claimed = claim(gateway, journal)
    journal.written(claimed[:1])
    die(journal)
    OutboundMessage.objects.update(submit_started_at="2020-01-01T00:00:00Z")  # long stuck
    reconcile_messages()
    assert [state(m) for m in messages] == [MessageState.UNKNOWN, MessageState.QUEUED, MessageState.QUEUED]


def test_a_worker_recovers_a_killed_predecessor_and_sends_each_message_once(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529129{i:04d}") for i in range(8)]
    # The predecessor claimed all eight, wrote the first three (the SMSC took them), then died.
    killed = Journal(gateway.code)
    claimed = claim(gateway, killed)
    killed.written(claimed[:3])
    die(killed)

    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)

    assert (stats.recovered_requeued, stats.recovered_unknown, stats.accepted_messages) == (5, 3, 5)
    assert [state(m) for m in messages] == [MessageState.UNKNOWN] * 3 + [MessageState.DELIVERED] * 5
    assert sorted(r["destination"] for r in smsc.submitted()) == [m.destination.lstrip("+") for m in messages[3:]]
    assert journal_files() == []  # the worker stopped cleanly: its own journal went too


def test_the_worker_journals_every_part_before_it_is_written(smsc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529130{i:04d}") for i in range(5)]
    order: list[tuple[str, Any]] = []
    original_written = Journal.written

    def written(self: Journal, ids: Any) -> None:
        order.append(("journal", list(ids)))
        original_written(self, ids)

    monkeypatch.setattr(Journal, "written", written)
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    worker.run(stop=threading.Event(), idle_exit_after=1.0)
    journaled = {pk for _kind, ids in order for pk in ids}
    assert journaled == {m.pk for m in messages}
    submitted = {r["destination"] for r in smsc.submitted()}
    assert submitted == {m.destination.lstrip("+") for m in messages}


# --- fail-over ----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def primary_and_fallback(fallback_server: Any, *, failover_after: float = 0.3) -> tuple[Gateway, Gateway]:
    fallback = Gateway.objects.create(
        code="smpp-b",
        name="SMPP B",
        provider=Provider.SMPP,
        countries=["HK"],
        priority=2,
        window_size=10,
        max_rate_per_second=1000,
        encodings=["GSM-7", "UCS-2"],
        settings={"host": fallback_server.host, "port": fallback_server.port, "system_id": SYSTEM_ID},
        credentials_env={"password": "TEST_SMPP_PASSWORD"},
    )
    GatewayRate.objects.create(gateway=fallback, country="HK", price_per_segment=Decimal("0.30"))
    primary = smpp_gateway(fallback_server)
    primary.settings = {
        "host": "127.0.0.1",
        "port": closed_port(),
        "system_id": SYSTEM_ID,
        "failover_after": failover_after,
    }
    primary.fallback = fallback
    primary.countries = ["HK", "MO"]
    primary.save()
    GatewayRate.objects.create(gateway=primary, country="MO", price_per_segment=Decimal("0.40"))
    return primary, fallback


def run_for(gateway: Gateway, seconds: float) -> Any:
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        return worker.run(stop=stop)
    finally:
        timer.cancel()


def test_a_gateway_whose_bind_stays_down_fails_over_to_its_fallback(smsc: Any) -> None:
    primary, fallback = primary_and_fallback(smsc)
    hk = [queue(f"+8529131{i:04d}") for i in range(12)]
    SenderId.objects.create(
        value="SHOPMO", kind=SenderIdKind.ALPHANUMERIC, brand="Shop", status=SenderIdStatus.REGISTERED, regions=["MO"]
    )
    with transaction.atomic():
        macau = message_queue(
            actor=SYSTEM,
            gateway_code=primary.code,
            sender_id="SHOPMO",
            destination="+85366123456",
            body="Hello Macau",
            purpose="transactional",
        )

    stats = run_for(primary, 1.5)

    assert stats.failed_over_messages == 12
    for message in hk:
        message.refresh_from_db()
        assert (message.state, message.gateway_id, message.error_code) == (
            MessageState.QUEUED,
            fallback.pk,
            "failed_over",
        )
        assert message.attempts == 0 and "failed over from smpp-hk" in message.error_reason
    # The fallback does not cover Macau: that one waits for the primary, unclaimed and untouched.
    macau.refresh_from_db()
    assert (macau.state, macau.gateway_id, macau.attempts) == (MessageState.QUEUED, primary.pk, 0)
    assert AuditLog.objects.filter(action="messages.fail_over").exists()

    run_worker_stats = run_for(fallback, 1.5)
    assert run_worker_stats.accepted_messages == 12
    assert {state(m) for m in hk} == {MessageState.DELIVERED}
    assert not find_duplicates(read_log(smsc.log_path))


def test_no_fail_over_before_the_grace_period_or_without_a_fallback(smsc: Any) -> None:
    primary, fallback = primary_and_fallback(smsc, failover_after=30)
    messages = [queue(f"+8529132{i:04d}") for i in range(3)]
    assert run_for(primary, 0.8).failed_over_messages == 0
    primary.settings = {**primary.settings, "failover_after": 0}
    primary.fallback = None
    primary.save()
    assert run_for(primary, 0.8).failed_over_messages == 0
    assert {(state(m), m.gateway_id) for m in messages} == {(MessageState.QUEUED, primary.pk)}
    fallback.enabled = False
    fallback.save()
    primary.fallback = fallback
    primary.save()
    assert run_for(primary, 0.8).failed_over_messages == 0


def test_held_messages_fail_over_when_the_link_drops_and_stays_down(smsc_factory: Any) -> None:
    """The primary's SMSC goes away mid-send: what the worker holds, never written, goes to the
    fallback; what was in flight is 'unknown'; nothing reaches two SMSCs."""
    primary_server = smsc_factory(max_rate_per_second=20)
    fallback_server = smsc_factory()
    primary, fallback = primary_and_fallback(fallback_server)
    primary.settings = {
        "host": primary_server.host,
        "port": primary_server.port,
        "system_id": SYSTEM_ID,
        "failover_after": 0.3,
    }
    primary.save()
    messages = [queue(f"+8529133{i:04d}") for i in range(60)]
    threading.Timer(0.6, primary_server.stop).start()
    stats = run_for(primary, 2.5)
    assert stats.failed_over_messages > 0
    run_for(fallback, 2.0)
    states = {m.pk: state(m) for m in messages}
    first = {r["destination"] for r in primary_server.submitted() if r["outcome"] == "accepted"}
    second = {r["destination"] for r in fallback_server.submitted() if r["outcome"] == "accepted"}
    assert not first & second
    for message in messages:
        phone = message.destination.lstrip("+")
        if states[message.pk] == MessageState.UNKNOWN:
            assert phone not in second
        else:
            assert states[message.pk] in (MessageState.DELIVERED, MessageState.SUBMITTED)
            assert (phone in first) != (phone in second)
    assert wait_for(lambda: len(second) > 0)


# --- what operators see -------------------------------------------------------------------


def test_operators_see_a_down_bind_and_its_fail_over(smsc: Any) -> None:
    primary, _fallback = primary_and_fallback(smsc)
    [queue(f"+8529134{i:04d}") for i in range(3)]
    seen: list[dict[str, Any] | None] = []
    worker = BindWorker(Gateway.objects.get(pk=primary.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    stop = threading.Event()
    original = worker._report

    def report(*args: Any, **kwargs: Any) -> None:
        # Look right after the worker reported its fail-over, as gateways.list would.
        original(*args, **kwargs)
        if worker.stats.failed_over_messages and not seen:
            seen.append(bind_status(Gateway.objects.get(pk=primary.pk)))
            stop.set()

    worker._report = report  # type: ignore[method-assign]
    worker.run(stop=stop)
    status = seen[0]
    assert status is not None and status["state"] == "down" and status["workers"] == 1
    assert status["failing_over_to"] == "smpp-b" and "bind failed" in status["last_error"]
    # Stopped: no worker any more, and gateways.list (schema-checked) says so.
    listed = {g["code"]: g for g in gateways_list_tool(SYSTEM, {})["gateways"]}
    assert listed["smpp-hk"]["bind"]["state"] == "no_worker"
    assert listed["smpp-b"]["bind"]["state"] == "no_worker"
    row = BindWorkerStatus.objects.get(gateway=primary)
    assert row.state == BindState.STOPPED and row.stats["failed_over_messages"] == 3


def test_bind_status_from_worker_reports(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    now = timezone.now()

    def worker(owner: str, state: str, heartbeat_ago: float, **extra: Any) -> BindWorkerStatus:
        return BindWorkerStatus.objects.create(
            gateway=gateway,
            owner=owner,
            host="h",
            pid=1,
            state=state,
            state_since=now - timedelta(minutes=5),
            heartbeat_at=now - timedelta(seconds=heartbeat_ago),
            started_at=now - timedelta(hours=1),
            **extra,
        )

    assert bind_status(gateway)["state"] == "no_worker"  # type: ignore[index]
    dead = worker("a", BindState.BOUND, heartbeat_ago=120)  # bound, but silent for two minutes
    assert bind_status(gateway)["state"] == "no_worker"  # type: ignore[index]
    worker("b", BindState.DOWN, heartbeat_ago=2, last_error="bind failed: refused", failing_over_to="smpp-b")
    status = bind_status(gateway)
    assert status is not None and (status["state"], status["failing_over_to"]) == ("down", "smpp-b")
    dead.heartbeat_at = now
    dead.save()
    assert bind_status(gateway)["state"] == "bound"  # type: ignore[index]
    assert bind_status(Gateway.objects.get(code="simulator")) is None  # not an SMPP gateway
    schema = load_tools()["sms_marketing.gateways.list"].output_schema
    jsonschema.validate(gateways_list_tool(SYSTEM, {}), schema)


def test_recovery_leaves_alone_what_the_dead_worker_had_released(smsc: Any) -> None:
    """A message the dead worker had given up (failed over, requeued after a temporary refusal, a
    claim rolled back) may be held by another worker by now: recovery must not requeue it."""
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529135{i:04d}") for i in range(4)]
    journal = Journal(gateway.code)
    claimed = claim(gateway, journal)
    journal.written(claimed[:1])
    journal.settled([(claimed[2], journal.segment), (claimed[3], journal.segment)])  # released
    # ... and another worker has claimed those two since (they are 'submitting' again).
    die(journal)
    recovery = journals_recover()
    assert (recovery.requeued, recovery.unknown) == (1, 1)
    assert [state(m) for m in messages] == [
        MessageState.UNKNOWN,
        MessageState.QUEUED,
        MessageState.SUBMITTING,
        MessageState.SUBMITTING,
    ]


def test_a_message_claimed_again_after_its_release_is_the_new_claims(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    message = queue("+85291360001")
    journal = Journal(gateway.code)
    (pk,) = claim(gateway, journal)
    journal.written([pk])
    journal.settled([(pk, journal.segment)])  # a temporary refusal put it back in the queue...
    OutboundMessage.objects.filter(pk=pk).update(state=MessageState.QUEUED)
    assert claim(gateway, journal) == [pk]  # ... and this worker claimed it again, not written yet
    die(journal)
    assert journals_recover().requeued == 1
    assert state(message) == MessageState.QUEUED
