"""The bind worker against an SMSC as rude as real ones (issue 15): receipt text carrying the
message's own octets (NUL bytes), rows the database refuses, destinations throttled forever,
receipts that never come. Run on PostgreSQL too: it is the database that refuses NUL."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateways.delivery.receipts import receipts_ingest
from gateways.models import DeliveryQuarantine, DeliveryReceipt, MessageState, OutboundMessage, QuarantineKind
from gateways.smpp import constants as C
from gateways.smpp import wire
from gateways.smpp import worker as worker_module
from gateways.smpp.worker import receipt_from
from smsplatform.models import AuditLog
from tests.support.db import postgres_only
from tests.support.smpp import CHINESE_200, queue, run_worker, smpp_gateway, state
from tests.support.smsc import pdu as P
from tests.support.smsc_setup import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def test_receipt_text_with_the_messages_nul_bytes_is_stored(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    ucs2_latin = queue("+85291230001", "Hello 你好 order 42")  # UCS-2: 00 48 00 65 ...
    at_sign = queue("+85291230002", "@home: your parcel")  # GSM '@' is septet 0x00
    long_gsm = queue("+85291230003", "x" * 200)  # two parts: UDH 05 00 03 ...
    chinese = queue("+85291230004", CHINESE_200)
    stats = run_worker(gateway)
    assert stats.accepted_messages == 4 and stats.quarantined == 0
    for message in (ucs2_latin, at_sign, long_gsm, chinese):
        assert state(message) == MessageState.DELIVERED
    texts = [r["text"] for r in DeliveryReceipt.objects.values_list("raw", flat=True)]
    assert len(texts) == 1 + 1 + 2 + 3
    assert all("\x00" not in text for text in texts)
    assert sum("\\x00" in text for text in texts) >= 6  # the NULs, kept as escapes
    assert not DeliveryQuarantine.objects.exists()


def test_a_refused_row_is_quarantined_and_its_neighbours_are_written(smsc: Any, monkeypatch: Any) -> None:
    """The database refuses one receipt and one answer: every other result of the same flush is
    written, the two are quarantined with the database's reason, and the flush is not lost."""
    gateway = smpp_gateway(smsc)
    real_record = worker_module.outcomes_record

    def refusing(**kwargs: Any) -> Any:
        if any(m.destination == "+85291239999" for m in kwargs["messages"]):
            raise psycopg.errors.DataError("value refused for the answer")
        if any("POISON" in str(r.raw.get("text", "")) for r in kwargs["receipts"]):
            raise psycopg.errors.UntranslatableCharacter('unsupported Unicode escape sequence "\\u0000"')
        return real_record(**kwargs)

    monkeypatch.setattr(worker_module, "outcomes_record", refusing)
    fine = [queue(f"+8529123000{i}") for i in range(5)]
    poisoned_receipt = queue("+85291238888", "POISON in the receipt")
    poisoned_answer = queue("+85291239999")
    stats = run_worker(gateway)
    assert stats.quarantined == 2
    for message in fine:
        assert state(message) == MessageState.DELIVERED
    assert state(poisoned_receipt) == MessageState.SUBMITTED  # its answer written, its receipt refused
    assert state(poisoned_answer) == MessageState.SUBMITTING  # reconciled to 'unknown': it did leave
    rows = {row.kind: row for row in DeliveryQuarantine.objects.all()}
    assert set(rows) == {QuarantineKind.RECEIPT, QuarantineKind.ANSWER}
    assert "unsupported Unicode escape" in rows[QuarantineKind.RECEIPT].reason
    assert "POISON" in rows[QuarantineKind.RECEIPT].payload["raw"]["text"]
    assert rows[QuarantineKind.ANSWER].message_id == poisoned_answer.pk
    assert rows[QuarantineKind.ANSWER].payload["provider_ids"][0]
    assert AuditLog.objects.filter(action="delivery.quarantine").count() == 2


def _receipt_pdu(short_message: bytes, tlvs: bytes) -> wire.Deliver:
    body = P.deliver_sm_body(
        source="85291234567",
        destination="SHOPHK",
        short_message=short_message,
        esm_class=C.ESM_CLASS_RECEIPT,
        tlvs=tlvs,
    )
    return wire.parse_deliver_sm(body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.binary(max_size=20),
    junk=st.binary(max_size=40),
    message_id=st.binary(min_size=1, max_size=30).filter(lambda b: b"\x00" not in b),
    stat=st.sampled_from(["DELIVRD", "UNDELIV", "EXPIRED", "ACCEPTD", "REJECTD"]),
    with_tlvs=st.booleans(),
)
def test_any_receipt_bytes_are_ingested_or_refused_never_raise(
    text: bytes, junk: bytes, message_id: bytes, stat: str, with_tlvs: bool
) -> None:
    """Random octets in every place a receipt has them: ingestion stores each receipt (NULs and
    invalid UTF-8 escaped) or drops an unparseable one; nothing raises, nothing is lost."""
    gateway = _property_gateway()
    pid = message_id.decode("latin-1")
    short = f"id:{pid} sub:001 dlvrd:001 submit date:2512010000 done date:2512010000 stat:{stat} err:000 text:"
    tlvs = P.receipt_tlvs(pid, stat, 0) if with_tlvs else b""
    try:
        pdu = _receipt_pdu(short.encode("latin-1") + text + junk, tlvs)
    except (ValueError, IndexError):
        return  # the id itself made the PDU malformed: the worker drops it the same way
    event = receipt_from(pdu)
    if event is None:
        return
    before = DeliveryReceipt.objects.count()
    receipts_ingest(gateway=gateway, events=[event])
    stored = DeliveryReceipt.objects.order_by("-pk").first()
    assert DeliveryReceipt.objects.count() == before + 1 and stored is not None
    assert "\x00" not in stored.provider_message_id and "\x00" not in stored.raw["text"]
    assert stored.raw["text"].isascii() and stored.raw["text"].isprintable()


def _property_gateway() -> Any:
    from gateways.models import Gateway, Provider

    gateway, _ = Gateway.objects.get_or_create(
        code="smpp-prop", defaults={"name": "SMPP prop", "provider": Provider.SMPP, "countries": ["HK"]}
    )
    return gateway


def test_an_mo_with_nul_and_undecodable_characters_is_stored() -> None:
    from gateways.adapters.base import InboundEvent
    from gateways.delivery.inbound import inbound_receive
    from gateways.models import InboundMessage

    gateway = _property_gateway()
    (stored,) = inbound_receive(
        gateway=gateway,
        events=[InboundEvent(source="+85291234567", destination="SHOP", body="STOP\x00 now\n\udc80", raw={})],
    )
    stored.refresh_from_db()
    assert stored.body == "STOP\ufffd now\n\ufffd"
    assert InboundMessage.objects.count() == 1


# --- 'unknown' only ever means "may have left" ------------------------------------------------------


def test_parts_whose_bytes_never_left_are_not_unknown(smsc: Any) -> None:
    """The link breaks while submit_sm are still in the worker's buffer (the SMSC hung up): those
    cannot have reached it. They go back to the queue; nothing of them is 'unknown'."""
    import socket

    from gateways.models import Gateway
    from gateways.smpp.worker import BindWorker

    gateway = smpp_gateway(smsc, window=10)
    messages = [queue(f"+8529123100{i}") for i in range(4)]
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, journal=False)
    assert worker._claim() == 4
    ours, theirs = socket.socketpair()
    theirs.close()  # the SMSC is gone: the first send fails, nothing leaves
    ours.setblocking(False)
    with pytest.raises(OSError):
        worker._link_run(ours)
    ours.close()
    assert len(worker.inflight) == 4 and len(worker.unsent) == 4
    worker._handle_link_down("test: peer closed")
    assert not worker.inflight and len(worker.ready) == 4
    assert all(not job.written for job, _index in worker.ready)
    assert [state(m) for m in messages] == [MessageState.SUBMITTING] * 4  # still ours: next bind
    worker._shutdown()
    assert [state(m) for m in messages] == [MessageState.QUEUED] * 4
    assert worker.stats.unknown_messages == 0 and worker.stats.requeued_messages == 4


def test_a_throttled_message_is_recorded_unwritten_in_the_journal(tmp_path: Any) -> None:
    """A submit refused with ESME_RTHROTTLED did not reach the SMSC: a worker killed while it waits
    to go again leaves it requeued, not 'unknown'."""
    from gateways.smpp import journal as journal_module
    from gateways.smpp.journal import Journal, journal_read

    journal = Journal("gw", directory=tmp_path)
    journal.claimed([1, 2, 3])
    journal.written([1, 2, 3])
    journal.unwritten([2])  # refused (throttled): back in the ready queue
    journal.written([3])
    journal.close(clean=False)
    contents = journal_read(sorted(tmp_path.glob("*.jnl")), journal_module.boot_id())
    assert contents.trusted
    assert contents.claimed == {1, 2, 3} and contents.written == {1, 3}


# --- a destination throttled forever -----------------------------------------------------------------


def test_a_destination_throttled_forever_leaves_the_bind_and_fails_after_its_attempts(smsc: Any) -> None:
    from gateways.delivery.outcomes import MAX_ATTEMPTS

    gateway = smpp_gateway(smsc, window=2)
    gateway.settings = {**gateway.settings, "throttle_max_retries": 4, "throttle_max_seconds": 2}
    gateway.save()
    stuck = queue("+85259006123")  # ESME_RTHROTTLED on every submit
    others = [queue(f"+852912320{i:02d}") for i in range(30)]
    stats = run_worker(gateway)
    for message in others:  # not starved by the storm
        assert state(message) == MessageState.DELIVERED
    stuck.refresh_from_db()
    assert (stuck.state, stuck.error_code, stuck.attempts) == (MessageState.QUEUED, "smpp_0x58", 1)
    assert "times in" in stuck.error_reason and stuck.next_attempt_at is not None
    first = [r["outcome"] for r in smsc.submitted() if r["destination"] == "85259006123"]
    # 4 refusals while others went through, 5 x 4 in all or 2 s: the ceiling, whichever comes first.
    assert set(first) == {"refused"} and 2 <= len(first) <= 20 and stats.throttled == len(first)
    # Every attempt ends the same way; the last one fails it, with the reason reports show.
    for _ in range(MAX_ATTEMPTS - 1):
        OutboundMessage.objects.filter(pk=stuck.pk).update(next_attempt_at=None)
        run_worker(gateway, idle=0.3)
    stuck.refresh_from_db()
    assert (stuck.state, stuck.error_code, stuck.attempts) == (MessageState.FAILED, "retries_exhausted", MAX_ATTEMPTS)
    assert stuck.error_reason.startswith("smpp_0x58: ") and stuck.final_at is not None
    assert len([r for r in smsc.submitted() if r["destination"] == "85259006123"]) <= 20 * MAX_ATTEMPTS
    assert not stuck.parts.exists()


def test_throttling_has_an_age_ceiling_too(smsc: Any) -> None:
    gateway = smpp_gateway(smsc, window=1)
    gateway.settings = {**gateway.settings, "throttle_max_retries": 1000, "throttle_max_seconds": 0.3}
    gateway.save()
    stuck = queue("+85259006124")
    run_worker(gateway)
    stuck.refresh_from_db()
    assert (stuck.state, stuck.error_code, stuck.attempts) == (MessageState.QUEUED, "smpp_0x58", 1)
    refusals = len([r for r in smsc.submitted() if r["destination"] == "85259006124"])
    assert 2 <= refusals < 1000


# --- receipts that never come ------------------------------------------------------------------------


@pytest.mark.parametrize("billing", ["charged", "refunded"])
def test_a_message_whose_receipt_never_comes_expires_after_the_validity_period(smsc: Any, billing: str) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from gateways.delivery.reconcile import messages_expire
    from gateways.quotas import account_instance
    from gateways.tasks import reconcile_messages
    from smsplatform.kernel.actor import Actor

    gateway = smpp_gateway(smsc)
    gateway.settings = {**gateway.settings, "validity_seconds": 600, "expired_billing": billing}
    gateway.save()
    silent = queue("+85259003123")  # accepted, no receipt ever
    answered = queue("+85291234001")
    run_worker(gateway)
    assert state(silent) == MessageState.SUBMITTED and state(answered) == MessageState.DELIVERED
    charged = account_instance()
    # Not yet: within the validity period nothing changes, not even through the beat task.
    reconcile_messages()
    assert state(silent) == MessageState.SUBMITTED
    later = timezone.now() + timedelta(seconds=601)
    assert messages_expire(actor=Actor.system("test"), now=later) == 1
    silent.refresh_from_db()
    assert (silent.state, silent.error_code) == (MessageState.EXPIRED, "receipt_timeout")
    assert "600 s" in silent.error_reason and silent.final_at == later
    assert set(silent.parts.values_list("state", flat=True)) == {MessageState.EXPIRED}
    assert state(answered) == MessageState.DELIVERED
    account = account_instance()
    if billing == "charged":
        assert (account.balance, account.segments_used) == (charged.balance, charged.segments_used)
    else:
        assert account.balance == charged.balance + silent.cost
        assert account.segments_used == charged.segments_used - silent.segments
        assert AuditLog.objects.filter(action="quota.refund").count() == 1
    assert AuditLog.objects.filter(action="messages.expired").count() == 1
    # Final: never expired twice, never resent, a late receipt changes nothing.
    assert messages_expire(actor=Actor.system("test"), now=later + timedelta(hours=1)) == 0
    run_worker(gateway, idle=0.3)
    assert len([r for r in smsc.submitted() if r["destination"] == "85259003123"]) == 1
    assert state(silent) == MessageState.EXPIRED


def test_validity_zero_disables_expiry_and_bad_settings_fall_back(smsc: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from gateways.delivery.reconcile import RECEIPT_VALIDITY_SECONDS, gateway_validity, messages_expire
    from smsplatform.kernel.actor import Actor

    gateway = smpp_gateway(smsc)
    gateway.settings = {**gateway.settings, "validity_seconds": 0}
    gateway.save()
    silent = queue("+85259003124")
    run_worker(gateway)
    assert messages_expire(actor=Actor.system("test"), now=timezone.now() + timedelta(days=30)) == 0
    assert state(silent) == MessageState.SUBMITTED
    gateway.settings = {"validity_seconds": "soon", "expired_billing": "maybe"}
    assert gateway_validity(gateway) == (RECEIPT_VALIDITY_SECONDS, "charged")


def test_receipts_for_parts_in_reverse_order_and_a_failed_part(smsc_factory: Any) -> None:
    """The last part's receipt first, the first part's last: a message is delivered only once
    every part is; one undelivered part fails it whatever the order."""
    server = smsc_factory(receipt_parts_reversed=0.2)  # apart enough to land in different flushes
    gateway = smpp_gateway(server)
    chinese = queue("+85291234002", CHINESE_200)
    undelivered = queue("+85259002125", "x" * 300)  # UNDELIV receipts for every part
    run_worker(gateway, idle=1.0)
    assert state(chinese) == MessageState.DELIVERED
    assert state(undelivered) == MessageState.FAILED
    receipts = list(DeliveryReceipt.objects.order_by("received_at", "pk").values_list("provider_message_id", flat=True))
    parts = list(chinese.parts.order_by("part_number").values_list("provider_message_id", flat=True))
    order = [pid for pid in receipts if pid in parts]
    assert order == parts[::-1]  # they did come last part first


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_issue_run_on_postgresql_with_the_flush_thread(smsc_factory: Any) -> None:
    """Issue 15's run in small: UCS-2 Latin, multi-part and '@' messages among plain ones, receipts
    partly before their answers, on PostgreSQL with the flush thread (its own connection, its own
    transactions): every message delivered, none 'unknown' or 'submitting', nothing quarantined,
    each sent once."""
    from gateways.models import Gateway
    from gateways.smpp.worker import BindWorker
    from tests.support.smsc.server import find_duplicates, read_log

    server = smsc_factory(receipt_before_resp_ratio=0.3)
    gateway = smpp_gateway(server, window=20)
    bodies = ["Hello 你好 order 42", "@home: your parcel", "y" * 200, CHINESE_200, "plain GSM text"]
    messages = [queue(f"+852912380{i:02d}", bodies[i % len(bodies)]) for i in range(60)]
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05)
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)
    assert worker.flusher is None and stats.flushes >= 1  # the flush thread ran and was stopped
    assert {state(m) for m in messages} == {MessageState.DELIVERED}
    assert stats.quarantined == 0 and stats.unknown_messages == 0
    assert not DeliveryReceipt.objects.filter(applied_at__isnull=True).exists()
    assert not find_duplicates(read_log(server.log_path))


def test_a_connection_lost_while_salvaging_keeps_the_unwritten_rest_for_the_next_flush(
    smsc: Any, monkeypatch: Any
) -> None:
    """The flush is refused for its data, then the connection goes while it is written in halves:
    the halves already committed are not written twice, the rest waits for the next flush."""
    from gateways.models import Gateway
    from gateways.smpp.worker import BindWorker

    gateway = smpp_gateway(smsc)
    messages = [queue(f"+8529123300{i}") for i in range(4)]
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, journal=False)
    assert worker._claim() == 4
    jobs = sorted({id(job): job for job, _index in worker.ready}.values(), key=lambda job: job.message.pk)
    for number, job in enumerate(jobs):
        job.provider_ids, job.answered, job.done = [f"pid-{number}"], 1, True
    worker.completed = list(jobs)
    real_record = worker_module.outcomes_record
    calls: list[int] = []

    def flaky(**kwargs: Any) -> Any:
        calls.append(len(kwargs["messages"]))
        if len(calls) <= 2:  # the flush, then its answers alone
            raise psycopg.errors.DataError("refused for its data")
        if len(calls) == 4:  # the second half: the connection goes
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real_record(**kwargs)

    monkeypatch.setattr(worker_module, "outcomes_record", flaky)
    with pytest.raises(psycopg.OperationalError):
        worker.flush()
    # all, the answers alone, their first half (written), their second half (connection lost)
    assert calls == [4, 4, 2, 2]
    assert [state(m) for m in messages] == [MessageState.SUBMITTED] * 2 + [MessageState.SUBMITTING] * 2
    assert worker.completed == jobs[2:]  # only what was not written
    worker.flush()
    assert [state(m) for m in messages] == [MessageState.SUBMITTED] * 4
    assert not DeliveryQuarantine.objects.exists()
    assert sum(m.parts.count() for m in messages) == 4  # nothing recorded twice
