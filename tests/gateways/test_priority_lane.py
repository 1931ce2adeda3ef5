"""The priority lane (issue 16): OTP, transactional and test messages never wait behind a
campaign -- in the claim (SQLite and PostgreSQL), in the SMPP bind worker (claimed on every pass
and written ahead of the campaign rows it holds) and on the Celery path (their own queue).
And the suppression rule for OTP: a STOP does not block the code the person asked for; a hard
block (blocked, invalid number, complaint) does, at queue time and at claim time."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.utils import timezone

from compliance.models import HARD_BLOCK_REASONS, LIFTABLE_REASONS
from contacts.optouts import opt_out_record
from gateways.delivery.claim import messages_claim, messages_claim_rows
from gateways.delivery.queue import message_queue, message_submit_enqueue
from gateways.errors import GatewayErrorCode
from gateways.frequency import frequency_blocked_purpose, frequency_capped_destinations
from gateways.models import PRIORITY_PURPOSES, Gateway, MessageState, OutboundMessage, QuotaReservation
from gateways.smpp.worker import BindWorker
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from tests.support.db import postgres_only
from tests.support.delivery import queue
from tests.support.smpp import (
    CHINESE_200,
    PRIORITY_RATE,
    PRIORITY_WINDOW,
    assert_overtook,
    campaign_messages_queued,
    run_with_priority_message,
    smpp_gateway,
    worker_thread,
)
from tests.support.smpp import queue as smpp_queue
from tests.support.smsc_setup import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
SYSTEM = Actor.system("test")
CODE_TEXT = "Your ShopHK code is 482913. It expires in 5 minutes."


def opt_out(phone: str, reason: str) -> int:
    with transaction.atomic():
        return int(opt_out_record(actor=SYSTEM, phone=phone, reason=reason, source="test")["opt_out_id"])


# --- the claim ------------------------------------------------------------------------------


def test_the_claim_takes_the_priority_lane_first_and_leaves_the_cursor_on_the_campaign(sim: Any) -> None:
    campaign = [queue(f"+8529200{i:04d}", purpose="marketing") for i in range(6)]
    otp = queue("+85292100001", CODE_TEXT, purpose="otp")
    reply = queue("+85292100002", purpose="transactional")
    test_sms = queue("+85292100003", purpose="test")

    first = messages_claim_rows(gateway_id=sim.pk, limit=5)

    assert [m.pk for m in first.messages] == [otp.pk, reply.pk, test_sms.pk, campaign[0].pk, campaign[1].pk]
    # The cursor: the highest campaign row taken in id order, not the (newer) priority rows.
    assert first.last_id == campaign[1].pk
    rest = messages_claim_rows(gateway_id=sim.pk, limit=10, after_id=first.last_id)
    assert [m.pk for m in rest.messages] == [m.pk for m in campaign[2:]]
    assert rest.last_id == campaign[-1].pk


def test_the_priority_lane_is_claimed_whatever_the_cursor_says(sim: Any) -> None:
    campaign = [queue(f"+8529201{i:04d}", purpose="marketing") for i in range(3)]
    otp = queue("+85292100011", CODE_TEXT, purpose="otp")
    far = OutboundMessage.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000

    result = messages_claim_rows(gateway_id=sim.pk, limit=10, after_id=far)

    assert [m.pk for m in result.messages] == [otp.pk]
    assert result.last_id == 0  # the cursor is not moved by the priority pick
    assert {m.state for m in OutboundMessage.objects.filter(pk__in=[m.pk for m in campaign])} == {MessageState.QUEUED}


def test_priority_only_claims_nothing_of_the_campaign(sim: Any) -> None:
    campaign = [queue(f"+8529202{i:04d}", purpose="marketing") for i in range(3)]
    otps = [queue(f"+8529210002{i}", CODE_TEXT, purpose="otp") for i in range(2)]

    result = messages_claim_rows(gateway_id=sim.pk, limit=10, priority_only=True)

    assert [m.pk for m in result.messages] == [m.pk for m in otps]
    assert messages_claim_rows(gateway_id=sim.pk, limit=10, priority_only=True).messages == []
    assert OutboundMessage.objects.get(pk=campaign[0].pk).state == MessageState.QUEUED


def test_a_priority_row_not_due_yet_waits_like_any_other(sim: Any) -> None:
    otp = queue("+85292100031", CODE_TEXT, purpose="otp")
    OutboundMessage.objects.filter(pk=otp.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert messages_claim_rows(gateway_id=sim.pk, limit=10).messages == []


def test_messages_claim_and_the_submit_path_send_the_priority_lane_first(sim: Any) -> None:
    campaign = [queue(f"+8529203{i:04d}", purpose="marketing") for i in range(3)]
    otp = queue("+85292100041", CODE_TEXT, purpose="otp")
    claimed = messages_claim(gateway_id=sim.pk, limit=2)
    assert {m.pk for m in claimed} == {otp.pk, campaign[0].pk}


def test_the_partial_index_holds_only_queued_priority_rows(sim: Any) -> None:
    index = next(i for i in OutboundMessage._meta.indexes if i.name == "msg_priority_queued")
    assert index.fields == ["gateway", "id"]
    assert set(PRIORITY_PURPOSES) == {"otp", "transactional", "test"}
    if connection.vendor == "postgresql":
        queue("+85292100051", CODE_TEXT, purpose="otp")
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(
                f"EXPLAIN SELECT m.id FROM {OutboundMessage._meta.db_table} m WHERE m.gateway_id = %s "  # noqa: S608
                "AND m.state = 'queued' AND m.purpose IN ('otp', 'transactional', 'test') ORDER BY m.id LIMIT 10",
                [sim.pk],
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "msg_priority_queued" in plan, plan


# --- STOP and OTP: the suppression rule -----------------------------------------------------


@pytest.mark.parametrize("reason", [str(r) for r in LIFTABLE_REASONS])
def test_a_stop_does_not_block_the_code_the_person_asked_for(sim: Any, reason: str) -> None:
    phone = "+85292200001"
    opt_out(phone, reason)
    with pytest.raises(ApplicationError) as refused:
        queue(phone, purpose="marketing")
    assert refused.value.code == GatewayErrorCode.DESTINATION_OPTED_OUT
    otp = queue(phone, CODE_TEXT, purpose="otp")
    assert [m.pk for m in messages_claim_rows(gateway_id=sim.pk).messages] == [otp.pk]


@pytest.mark.parametrize("reason", [str(r) for r in HARD_BLOCK_REASONS])
def test_a_hard_block_refuses_an_otp_at_queue_time(sim: Any, reason: str) -> None:
    phone = "+85292200002"
    opt_out(phone, reason)
    with pytest.raises(ApplicationError) as refused:
        queue(phone, CODE_TEXT, purpose="otp")
    assert refused.value.code == GatewayErrorCode.DESTINATION_OPTED_OUT
    assert reason in refused.value.message and phone not in refused.value.message  # masked
    assert not OutboundMessage.objects.filter(destination=phone).exists()


@pytest.mark.parametrize("reason", [str(r) for r in HARD_BLOCK_REASONS])
def test_a_hard_block_committed_after_the_queueing_fails_the_otp_at_claim_time(sim: Any, reason: str) -> None:
    phone, other = "+85292200003", "+85292200004"
    otp = queue(phone, CODE_TEXT, purpose="otp")
    stopped = queue(other, CODE_TEXT, purpose="otp")
    block = opt_out(phone, reason)
    opt_out(other, "stop")  # a STOP after the queueing: the code still goes

    result = messages_claim_rows(gateway_id=sim.pk)

    assert [m.pk for m in result.messages] == [stopped.pk]
    assert result.suppressed == 1
    otp.refresh_from_db()
    assert (otp.state, otp.error_code) == (MessageState.FAILED, "suppressed")
    assert otp.error_reason.startswith(f"Opt-out #{block} ({reason}, test)")
    assert QuotaReservation.objects.get(reference=otp.quota_reference).state == "released"


def test_a_lifted_hard_block_lets_the_otp_through(sim: Any) -> None:
    phone = "+85292200005"
    block = opt_out(phone, "blocked")
    from compliance.models import OptOut

    OptOut.objects.filter(pk=block).update(lifted_at=timezone.now())
    otp = queue(phone, CODE_TEXT, purpose="otp")
    assert [m.pk for m in messages_claim_rows(gateway_id=sim.pk).messages] == [otp.pk]


def test_quiet_hours_never_hold_an_otp(sim: Any) -> None:
    from tests.support.campaigns import set_quiet_hours

    hk_now = timezone.now().astimezone(ZoneInfo("Asia/Hong_Kong")).replace(second=0, microsecond=0)
    start, end = hk_now - timedelta(hours=1), hk_now + timedelta(hours=2)
    set_quiet_hours({"HK": {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "time_zone": "Asia/Hong_Kong"}})
    from campaigns.quiet_hours import quiet_hours_notices

    assert quiet_hours_notices(["HK"]), "the quiet hours must be in force for this test to mean anything"
    otp = queue("+85292200011", CODE_TEXT, purpose="otp")
    assert [m.pk for m in messages_claim_rows(gateway_id=sim.pk).messages] == [otp.pk]


def test_frequency_caps_never_apply_to_an_otp(sim: Any) -> None:
    from smsplatform.config_service import platform_config_instance

    config = platform_config_instance()
    config.frequency_caps = {**config.frequency_caps, "per_day": 0, "per_week": 0, "transactional_per_day": 0}
    config.save(update_fields=["frequency_caps"])
    phone = "+85292200021"
    assert frequency_blocked_purpose("marketing") and frequency_blocked_purpose("transactional")
    assert not frequency_blocked_purpose("otp")
    assert frequency_capped_destinations(purpose="otp") == {}
    codes = [queue(phone, CODE_TEXT, purpose="otp") for _ in range(5)]  # far over any cap
    assert [m.pk for m in messages_claim_rows(gateway_id=sim.pk).messages] == [m.pk for m in codes]


# --- the Celery path ------------------------------------------------------------------------


def test_the_submit_task_of_the_priority_lane_goes_to_the_priority_queue(sim: Any, monkeypatch: Any) -> None:
    from django.conf import settings

    from gateways import tasks

    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        tasks.submit_messages,
        "apply_async",
        lambda args, queue=None, **kw: sent.append((queue or "celery", list(args[1]))),
    )
    monkeypatch.setattr(tasks.submit_messages, "delay", lambda gateway_id, ids: sent.append(("celery", list(ids))))
    campaign = [queue(f"+8529204{i:04d}", purpose="marketing") for i in range(2)]
    otp = queue("+85292300001", CODE_TEXT, purpose="otp")
    reply = queue("+85292300002", purpose="transactional")

    message_submit_enqueue(sim.pk, [campaign[0].pk, otp.pk, campaign[1].pk, reply.pk])

    assert settings.SMS_PRIORITY_QUEUE == "sms_priority"
    assert sent == [("sms_priority", [otp.pk, reply.pk]), ("celery", [campaign[0].pk, campaign[1].pk])]
    assert [q.name for q in settings.CELERY_TASK_QUEUES] == ["sms_priority", "celery"]  # consumed first


def test_an_otp_queued_and_enqueued_is_sent_at_once_on_the_embedded_path(
    sim: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        otp = message_queue(
            actor=SYSTEM,
            gateway_code="sim-hk",
            sender_id="#SHOPHK",
            destination="+85292300011",
            body=CODE_TEXT,
            purpose="otp",
        )
        gateway_id, ids = otp.gateway_id, [otp.pk]
        transaction.on_commit(lambda: message_submit_enqueue(gateway_id, ids))
    otp.refresh_from_db()
    assert otp.state in (MessageState.SUBMITTED, MessageState.DELIVERED)


# --- the SMPP bind worker -------------------------------------------------------------------

CAMPAIGN = 20_000


def test_an_otp_queued_behind_a_large_campaign_reaches_the_smsc_first(smsc: Any) -> None:
    """20,000 campaign messages queued and being sent on the same SMPP gateway; an OTP queued
    right after the worker claimed a batch ahead is claimed on the worker's next look at the
    priority lane (not after what it holds, not after the cursor's 20,000) and written ahead of
    what it holds: the simulator's record of submit_sm shows it within the window (and a pass) of
    where the stream was when it was queued."""
    from gateways.models import Account

    gateway = smpp_gateway(smsc, window=PRIORITY_WINDOW, rate=PRIORITY_RATE)
    Account.objects.update(balance=Decimal("100000"), monthly_quota_segments=1_000_000)
    campaign_messages_queued(gateway, CAMPAIGN)

    def queue_otp() -> dict[str, Any]:
        with transaction.atomic():
            otp = message_queue(
                actor=SYSTEM,
                gateway_code="smpp-hk",
                sender_id="#SHOPHK",
                destination="+85292400001",
                body=CODE_TEXT,
                purpose="otp",
            )
        return {"otp": otp}

    run = run_with_priority_message(gateway, queue_otp)

    otp = run.at["otp"]
    otp.refresh_from_db()
    assert otp.state == MessageState.DELIVERED
    assert run.by_priority == [1]  # claimed by the every-pass priority claim
    assert run.at["held"] >= 500  # claimed campaign parts not written yet: the OTP went ahead of them
    records = smsc.submitted()
    assert len(records) == CAMPAIGN + 1 and run.stats.accepted_messages == CAMPAIGN + 1
    assert_overtook(records, "+85292400001", run, CAMPAIGN)
    assert OutboundMessage.objects.filter(state=MessageState.DELIVERED).count() == CAMPAIGN + 1


def _worker_without_link() -> tuple[Gateway, BindWorker]:
    gateway = smpp_gateway(SimpleNamespace(host="127.0.0.1", port=9))  # never connected
    return gateway, BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD)


def test_the_worker_puts_priority_messages_ahead_of_the_parts_it_holds() -> None:
    _gateway, worker = _worker_without_link()
    campaign = [smpp_queue(f"+8529205{i:04d}", purpose="marketing") for i in range(4)]
    assert worker._claim() == 4
    otp = smpp_queue("+85292500001", CODE_TEXT, purpose="otp")
    long_reply = smpp_queue("+85292500002", CHINESE_200, purpose="transactional")  # three parts

    assert worker._claim_priority() == 2
    order = [(job.message.pk, index) for job, index in worker.ready]
    assert order == [
        (otp.pk, 0),
        (long_reply.pk, 0),
        (long_reply.pk, 1),
        (long_reply.pk, 2),
        *((m.pk, 0) for m in campaign),
    ]
    assert worker._claim_after == campaign[-1].pk  # the priority claim never moves the cursor
    assert worker.open_jobs == 6
    # The regular claim also puts what it takes of the priority lane at the front.
    later = smpp_queue("+85292500003", purpose="marketing")
    code = smpp_queue("+85292500004", CODE_TEXT, purpose="otp")
    worker._last_rescan = 0.0
    assert worker._claim() == 2
    assert worker.ready[0][0].message.pk == code.pk and worker.ready[-1][0].message.pk == later.pk


def test_a_killed_worker_with_a_priority_message_at_the_front_is_recovered_at_most_once() -> None:
    from gateways.smpp.journal import Journal, journals_recover

    _gateway, worker = _worker_without_link()
    worker.journal = Journal(worker.gateway.code)
    campaign = [smpp_queue(f"+8529206{i:04d}", purpose="marketing") for i in range(4)]
    assert worker._claim() == 4
    otp = smpp_queue("+85292600001", CODE_TEXT, purpose="otp")
    assert worker._claim_priority() == 1
    taken, _capped = worker._take(2)  # what the link does: take from the front, journal as written, write
    assert [job.message.pk for job, _index in taken] == [otp.pk, campaign[0].pk]
    worker.journal.written([job.message.pk for job, _index in taken])
    worker.journal.close(clean=False)  # SIGKILL

    recovery = journals_recover()

    assert (recovery.requeued, recovery.unknown) == (3, 2)
    states = dict(OutboundMessage.objects.values_list("pk", "state"))
    assert states[otp.pk] == states[campaign[0].pk] == MessageState.UNKNOWN  # maybe sent: never again
    assert {states[m.pk] for m in campaign[1:]} == {MessageState.QUEUED}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_priority_thread_claims_an_otp_while_the_worker_sends_a_campaign(smsc: Any) -> None:
    """PostgreSQL outside a transaction: the worker runs its flush and priority threads (their
    own connections). An OTP committed while it sends a campaign is claimed by the priority
    thread and reaches the SMSC ahead of what the worker held; nothing is sent twice and the
    journal is settled."""
    import os
    import time

    from django.conf import settings

    from gateways.models import Account
    from tests.support.smsc.server import find_duplicates, read_log
    from tests.support.smsc_setup import wait_for

    gateway = smpp_gateway(smsc, window=PRIORITY_WINDOW, rate=PRIORITY_RATE)
    Account.objects.update(balance=Decimal("100000"), monthly_quota_segments=1_000_000)
    campaign_messages_queued(gateway, 6_000)
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    priority = worker._claim_priority
    by_thread: list[str] = []

    def claim_priority() -> int:
        taken = priority()
        if taken:
            by_thread.append(threading.current_thread().name)
        return taken

    worker._claim_priority = claim_priority  # type: ignore[method-assign]
    runner, stop = worker_thread(worker, idle_exit_after=1.0)
    try:
        assert wait_for(lambda: worker.stats.submitted_parts >= 1_500, timeout=60)
        with transaction.atomic():
            otp = message_queue(
                actor=SYSTEM,
                gateway_code="smpp-hk",
                sender_id="#SHOPHK",
                destination="+85292700001",
                body=CODE_TEXT,
                purpose="otp",
            )
        submitted = worker.stats.submitted_parts
        deadline = time.monotonic() + 120
        while runner.is_alive() and time.monotonic() < deadline:
            runner.join(0.5)
    finally:
        stop.set()
        runner.join(30)
    assert by_thread == ["smpp-priority"]
    assert worker.prioritizer is None  # stopped with the worker
    otp.refresh_from_db()
    assert otp.state == MessageState.DELIVERED
    records = read_log(smsc.log_path)
    position = next(i for i, r in enumerate(records) if r["destination"] == "85292700001")
    assert position - submitted <= 2 * PRIORITY_WINDOW + PRIORITY_RATE // 2, (position, submitted)
    assert len(records) == 6_001 and not find_duplicates(records)
    assert not os.listdir(settings.SMS_SMPP_JOURNAL_DIR)  # a clean stop leaves no journal


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_notify_wakes_the_priority_thread_at_once(smsc: Any, monkeypatch: Any) -> None:
    """PostgreSQL: message_submit_enqueue after the OTP's commit NOTIFYs the gateway's channel and
    the priority thread, LISTENing on it, claims the OTP at once. The polls are made 30 s long here
    (the main loop's and the priority thread's), so only the wake-up can have sent it in time; a
    stop is still seen promptly (the wait is sliced)."""
    import time

    from gateways.smpp import worker as worker_module
    from tests.support.smsc.server import read_log
    from tests.support.smsc_setup import wait_for

    monkeypatch.setattr(worker_module, "PRIORITY_POLL_INTERVAL", 30.0)
    gateway = smpp_gateway(smsc, window=10, rate=PRIORITY_RATE)
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=30.0)
    runner, stop = worker_thread(worker)
    try:
        assert wait_for(lambda: worker.link is not None and worker.prioritizer is not None, timeout=30)
        # One worker for both lanes: it never yields to codes, nor announces them (split lanes only).
        assert worker.yielder is None and worker.releaser is None
        time.sleep(0.5)  # the first (empty) claims are done: from here on the polls are 30 s away
        with transaction.atomic():
            otp = message_queue(
                actor=SYSTEM,
                gateway_code="smpp-hk",
                sender_id="#SHOPHK",
                destination="+85292700002",
                body=CODE_TEXT,
                purpose="otp",
            )
        assert worker.stats.claimed_messages == 0  # nothing claimed before the wake-up
        began = time.monotonic()
        message_submit_enqueue(gateway.pk, [otp.pk])
        assert wait_for(lambda: worker.stats.submitted_parts >= 1, timeout=5)
        assert time.monotonic() - began < 5 and worker.stats.wakeups >= 1
    finally:
        stopping = time.monotonic()
        stop.set()
        worker.wake.set()
        runner.join(30)
    assert not runner.is_alive() and time.monotonic() - stopping < 10
    assert worker.prioritizer is None
    assert any(r["destination"] == "85292700002" for r in read_log(smsc.log_path))
    # Operators see where a code's time went in the worker: its claim, the claim's commit, then the link's turn.
    stats = worker.stats
    for part in ("claim", "commit", "link"):
        p99, slowest = getattr(stats, f"priority_{part}_ms_p99"), getattr(stats, f"priority_{part}_ms_max")
        assert 0 < p99 <= slowest < 5_000, part


# --- a gateway split in two lanes, each worker on a bind of its own ---------------------------------


def test_the_bulk_lane_leaves_fresh_priority_rows_to_the_priority_lane(sim: Any) -> None:
    """The bulk lane's claim takes no priority row in id order, and takes one first only once it
    has been queued longer than the grace (its own worker is down or behind)."""
    campaign = [queue(f"+8529203{i:04d}", purpose="marketing") for i in range(3)]
    otp = queue("+85292100041", CODE_TEXT, purpose="otp")
    later = queue("+85292030009", purpose="marketing")  # after the OTP in id order
    grace = timedelta(seconds=2)

    bulk = messages_claim_rows(gateway_id=sim.pk, limit=10, priority_grace=grace)

    assert [m.pk for m in bulk.messages] == [*(m.pk for m in campaign), later.pk]
    assert bulk.last_id == later.pk
    assert OutboundMessage.objects.get(pk=otp.pk).state == MessageState.QUEUED
    OutboundMessage.objects.filter(pk=otp.pk).update(created_at=timezone.now() - timedelta(seconds=3))
    assert [m.pk for m in messages_claim_rows(gateway_id=sim.pk, limit=10, priority_grace=grace).messages] == [otp.pk]


def _lane_run(gateway: Gateway, lane: str) -> Any:
    worker = BindWorker(
        Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05, lane=lane
    )
    return worker.run(stop=threading.Event(), idle_exit_after=1.0)


def test_a_gateway_split_in_lanes_sends_each_lane_on_a_bind_of_its_own(smsc: Any) -> None:
    """The bulk worker sends the campaign and leaves the codes; the priority worker sends the codes
    and leaves the campaign, on another SMPP session; a code left queued past the gateway's
    priority_grace_seconds (its worker stopped) is sent by the bulk worker."""
    from tests.support.smpp import state

    gateway = smpp_gateway(smsc, window=PRIORITY_WINDOW, rate=PRIORITY_RATE)
    Gateway.objects.filter(pk=gateway.pk).update(settings={**gateway.settings, "priority_grace_seconds": 60})
    campaign_messages_queued(gateway, 200)
    otp = smpp_queue("+85292500001", CODE_TEXT, purpose="otp")

    bulk = _lane_run(gateway, "bulk")

    assert bulk.accepted_messages == 200 and state(otp) == MessageState.QUEUED
    notice = smpp_queue("+85292500002", purpose="transactional")
    campaign_late = smpp_queue("+85261234999", purpose="marketing")

    priority = _lane_run(gateway, "priority")

    assert priority.accepted_messages == 2
    assert state(otp) == state(notice) == MessageState.DELIVERED
    assert state(campaign_late) == MessageState.QUEUED
    records = smsc.submitted()
    sessions = {r["destination"][:5]: r["session"] for r in records}
    assert sessions["85292"] != sessions["85260"], "each lane on its own bind"
    assert smsc.stats()["binds"] == 2

    stale = smpp_queue("+85292500003", CODE_TEXT, purpose="otp")
    OutboundMessage.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    assert _lane_run(gateway, "bulk").accepted_messages == 2
    assert state(stale) == state(campaign_late) == MessageState.DELIVERED


def test_a_lane_is_one_of_three_and_nice_only_lowers(sim: Any) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(ValueError, match="lane must be one of all, priority, bulk"):
        BindWorker(sim, password=PASSWORD, lane="express")
    with pytest.raises(CommandError, match="--nice must be 0-19"):
        call_command("smpp_worker", "--gateway", "smpp-hk", "--nice", "-5")


def test_the_bulk_lane_yields_at_most_its_share_of_each_second(sim: Any) -> None:
    """bulk_yield_ms of holding back per priority message, from a bucket of bulk_yield_share of a
    second that refills at that share: a flood of codes slows a campaign, never stops it."""
    Gateway.objects.filter(pk=sim.pk).update(settings={"bulk_yield_ms": 100, "bulk_yield_share": 0.3})
    worker = BindWorker(Gateway.objects.get(pk=sim.pk), password=PASSWORD, lane="bulk")
    now = worker._yield_refilled
    assert [worker.yield_to_priority(now) for _ in range(4)] == [True, True, True, False]
    assert worker._yield_until == pytest.approx(now + 0.1)
    assert worker.yield_to_priority(now + 0.2) is False  # 0.06 s refilled: not enough for 0.1
    assert worker.yield_to_priority(now + 0.4) is True  # 0.12 s refilled
    assert worker._yield_until == pytest.approx(now + 0.5)
    assert worker.stats.yields == 4
    # Over a long flood: at most the share of the time.
    yielded = sum(worker.yield_to_priority(now + 1 + i / 100) for i in range(1000)) * 0.1
    assert yielded <= 0.3 * 10 + 0.3
    off = BindWorker(Gateway.objects.get(pk=sim.pk), password=PASSWORD, lane="bulk")
    off.bulk_yield = 0.0
    assert off.yield_to_priority() is False


def test_a_yielding_bulk_lane_writes_no_campaign_part_and_claims_nothing(smsc: Any) -> None:
    """While it yields, the bulk worker's link writes no campaign part (a priority part it holds
    still goes) and its main loop claims nothing; after the yield, the campaign goes on."""
    from tests.support.smpp import state

    gateway = smpp_gateway(smsc, window=PRIORITY_WINDOW, rate=PRIORITY_RATE)
    Gateway.objects.filter(pk=gateway.pk).update(settings={**gateway.settings, "bulk_yield_ms": 1500})
    campaign_messages_queued(gateway, 50)
    worker = BindWorker(
        Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05, lane="bulk"
    )
    worker.bulk_yield_share = worker._yield_tokens = 2.0
    assert worker.yield_to_priority()
    yielded_at = time.time()
    stats = worker.run(stop=threading.Event(), idle_exit_after=0.5)
    records = smsc.submitted()
    assert stats.accepted_messages == 50 and len(records) == 50
    # Nothing was written before the yield ended (the simulator's clock is this machine's).
    first = min(float(r["time"]) for r in records)
    assert first - yielded_at >= 1.4, "a campaign part went out while yielding"
    assert state(OutboundMessage.objects.filter(purpose="marketing").earliest("pk")) == MessageState.DELIVERED


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_otp_send_tells_the_bulk_lane_to_yield(sim: Any) -> None:
    """gateways.delivery.queue.bulk_yield is a NOTIFY on the gateway's bulk channel, sent at once
    (outside a transaction); the bulk worker's listener makes it yield."""
    from gateways.delivery.queue import bulk_yield, bulk_yield_channel

    listener = connection.get_new_connection(connection.get_connection_params())
    listener.autocommit = True
    try:
        listener.execute(f'LISTEN "{bulk_yield_channel("smpp-main")}"')
        bulk_yield("smpp-main")
        notes = list(listener.notifies(timeout=2.0, stop_after=1))
        assert [n.channel for n in notes] == [bulk_yield_channel("smpp-main")]
        with transaction.atomic():
            bulk_yield("smpp-main")  # inside a transaction: nothing (it would go out at the commit)
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
    finally:
        listener.close()
    assert len(bulk_yield_channel("x" * 64)) <= 63


def test_a_yield_ends_once_the_codes_it_waited_for_are_written(sim: Any) -> None:
    """bulk_yield_ms is the longest a yield lasts: the priority lane's ``sent:<n>`` ends it once
    every code announced during it is out, and the bucket gets back the time it did not use."""
    Gateway.objects.filter(pk=sim.pk).update(settings={"bulk_yield_ms": 250, "bulk_yield_share": 0.3})
    worker = BindWorker(Gateway.objects.get(pk=sim.pk), password=PASSWORD, lane="bulk")
    now = worker._yield_refilled
    assert worker.yield_to_priority(now) and worker.yield_to_priority(now + 0.01) is False  # 0.05 left
    assert worker._yield_open == 2  # both codes are waited for, the second within the first's yield
    assert worker.yield_release(1, now + 0.03) is False and worker._yield_until == pytest.approx(now + 0.25)
    assert worker.yield_release(1, now + 0.04) is True
    assert worker._yield_until == pytest.approx(now + 0.04) and worker._yield_over.is_set()
    # 0.25 of 0.3 taken at 0; 0.003 refilled by 0.01; the 0.21 not used given back at 0.04.
    assert worker._yield_tokens == pytest.approx(0.05 + 0.003 + 0.21)
    assert worker.stats.yields == 1 and worker.stats.yields_released == 1
    assert worker.yield_release(1, now + 0.05) is False  # nothing to end
    # A code whose request was refused never goes out: its yield ends at the limit, and the next
    # yield does not wait for it.
    assert worker.yield_to_priority(now + 1.0)
    assert worker.yield_to_priority(now + 2.0)  # the first has run out
    assert worker._yield_open == 1
    assert worker.yield_release(1, now + 2.01) is True


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_priority_lane_announces_each_code_it_writes_to_the_bulk_lane(smsc: Any) -> None:
    """A priority-lane worker NOTIFYs ``sent:<n>`` on the gateway's bulk channel once a code's last
    part is in the socket (from a connection of its own); a bulk-lane worker's listener ends its
    yield on it."""
    from gateways.delivery.queue import YIELD_RELEASE_PREFIX, bulk_yield_channel
    from tests.support.smsc_setup import wait_for

    gateway = smpp_gateway(smsc, window=10, rate=PRIORITY_RATE)
    listener = connection.get_new_connection(connection.get_connection_params())
    listener.autocommit = True
    listener.execute(f'LISTEN "{bulk_yield_channel(gateway.code)}"')
    worker = BindWorker(
        Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05, lane="priority"
    )
    runner, stop = worker_thread(worker)
    try:
        assert wait_for(lambda: worker.link is not None and worker.releaser is not None, timeout=30)
        with transaction.atomic():
            for n in range(2):
                message_queue(
                    actor=SYSTEM,
                    gateway_code=gateway.code,
                    sender_id="#SHOPHK",
                    destination=f"+8529270000{n}",
                    body=CODE_TEXT,
                    purpose="otp",
                )
        announced = 0
        deadline = time.monotonic() + 10
        while announced < 2 and time.monotonic() < deadline:
            for note in listener.notifies(timeout=1.0, stop_after=1):
                assert note.payload.startswith(YIELD_RELEASE_PREFIX)
                announced += int(note.payload[len(YIELD_RELEASE_PREFIX) :])
        assert announced == 2
        assert wait_for(lambda: worker.stats.submitted_parts >= 2, timeout=5)
    finally:
        stop.set()
        worker.wake.set()
        runner.join(30)
        listener.close()
    assert not runner.is_alive() and worker.releaser is None


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_worker_gateway_is_woken_by_the_commit_itself(sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """message_submit_on_commit: for a bind worker's gateway the wake-up NOTIFY is sent inside the
    transaction, so PostgreSQL delivers it at the commit (nothing before it, nothing on a rollback,
    no statement after it); any other gateway is handed to its submit task after the commit."""
    from django.test.utils import CaptureQueriesContext

    from gateways.delivery.queue import message_submit_on_commit, worker_wake_channel
    from tests.support.factories import GatewayFactory

    gateway = GatewayFactory.create(code="smpp-wake", provider="smpp")
    listener = connection.get_new_connection(connection.get_connection_params())
    listener.autocommit = True
    try:
        listener.execute(f'LISTEN "{worker_wake_channel(gateway.pk)}"')
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            message_submit_on_commit(gateway, [1])
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == [], "not before the commit"
        assert [n.channel for n in listener.notifies(timeout=2.0, stop_after=1)] == [worker_wake_channel(gateway.pk)]
        sql = [q["sql"] for q in queries.captured_queries]
        assert sql[-1] == "COMMIT" and any("pg_notify" in s for s in sql[:-1]), sql
        with transaction.atomic():
            message_submit_on_commit(gateway, [1])
            transaction.set_rollback(True)
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == [], "a rollback wakes nobody"
    finally:
        listener.close()
    handed: list[tuple[int, list[int]]] = []
    monkeypatch.setattr(
        "gateways.delivery.queue.message_submit_enqueue", lambda gateway_id, ids, **_: handed.append((gateway_id, ids))
    )
    with transaction.atomic():
        message_submit_on_commit(sim, [7, 8])
        assert handed == [], "the submit task only after the commit"
    assert handed == [(sim.pk, [7, 8])]
