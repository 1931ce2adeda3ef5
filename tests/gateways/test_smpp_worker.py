"""The SMPP bind worker against the SMSC simulator on loopback: real binds, real PDUs."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from gateways.delivery.inbound import INBOUND_HANDLERS
from gateways.delivery.queue import message_queue
from gateways.models import (
    Account,
    DeliveryReceipt,
    Gateway,
    InboundMessage,
    MessageState,
    OutboundMessage,
)
from gateways.smpp.worker import BindWorker
from smsplatform.kernel.actor import Actor
from tests.support.db import postgres_only
from tests.support.smpp import CHINESE_200, queue, run_worker, smpp_gateway, state
from tests.support.smsc.server import find_duplicates, read_log
from tests.support.smsc_setup import PASSWORD, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
SYSTEM = Actor.system("test")


def test_gsm_and_a_three_part_chinese_message_with_receipts(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    gsm, chinese = queue("+85291234567"), queue("+85261234567", CHINESE_200)
    stats = run_worker(gateway)
    assert stats.accepted_messages == 2 and stats.receipts == 4
    assert state(gsm) == MessageState.DELIVERED and state(chinese) == MessageState.DELIVERED
    records = smsc.submitted()
    parts = [r for r in records if r["destination"] == "85261234567"]
    assert [r["concat_part"] for r in parts] == [1, 2, 3] and len({r["concat_ref"] for r in parts}) == 1
    assert "".join(r["text"] for r in parts) == CHINESE_200 and parts[0]["data_coding"] == 8
    single = next(r for r in records if r["destination"] == "85291234567")
    assert single["text"] == "Hello from the shop [GSM] €5" and single["data_coding"] == 0
    assert sorted(chinese.parts.values_list("part_number", flat=True)) == [1, 2, 3]


def test_escape_pairs_never_split_at_part_boundaries(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    message = queue("+85291234568", "]" * 153)
    run_worker(gateway)
    assert state(message) == MessageState.DELIVERED
    records = [r for r in smsc.submitted() if r["destination"] == "85291234568"]
    assert [len(r["text"]) for r in records] == [76, 76, 1]


def test_fault_prefixes(smsc: Any) -> None:
    gateway = smpp_gateway(smsc, window=1)
    invalid, throttled = queue("+85259000123"), queue("+85259001123")
    undelivered, silent = queue("+85259002123"), queue("+85259003123")
    stats = run_worker(gateway)
    assert (state(invalid), invalid.error_code) == (MessageState.FAILED, "smpp_0x0b")
    assert state(throttled) == MessageState.DELIVERED and stats.throttled == 2
    assert state(undelivered) == MessageState.FAILED
    assert state(silent) == MessageState.SUBMITTED  # no receipt: pending, never 'delivered'
    throttled_records = [r for r in smsc.submitted() if r["destination"] == "85259001123"]
    assert [r["outcome"] for r in throttled_records] == ["refused", "refused", "accepted"]


def test_a_temporary_smsc_error_requeues_backed_off_and_counts_the_attempt(smsc: Any) -> None:
    gateway = smpp_gateway(smsc, window=1)
    message = queue("+85259005123")  # ESME_RSYSERR for the first two submits
    run_worker(gateway)
    message.refresh_from_db()
    assert (message.state, message.error_code, message.attempts) == (MessageState.QUEUED, "smpp_0x08", 1)
    assert message.next_attempt_at is not None and message.next_attempt_at > message.updated_at
    assert not message.parts.exists() and message.final_at is None
    # Not due yet: the next run leaves it alone; once due it is tried again, then taken.
    run_worker(gateway, idle=0.3)
    assert len([r for r in smsc.submitted() if r["destination"] == "85259005123"]) == 1
    for _ in range(2):
        OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
        run_worker(gateway)
    message.refresh_from_db()
    assert (message.state, message.attempts) == (MessageState.DELIVERED, 3)
    outcomes = [r["outcome"] for r in smsc.submitted() if r["destination"] == "85259005123"]
    assert outcomes == ["refused", "refused", "accepted"]


def test_link_drop_reconnects_and_never_resends(smsc: Any) -> None:
    gateway = smpp_gateway(smsc, window=1)
    before, dropped, after = queue("+85291230001"), queue("+85259004123"), queue("+85291230002")
    stats = run_worker(gateway, idle=1.5)
    assert stats.reconnects >= 1
    assert state(before) == MessageState.DELIVERED and state(after) == MessageState.DELIVERED
    assert state(dropped) == MessageState.UNKNOWN  # it may have reached the SMSC: reconciled, not resent
    assert [r["destination"] for r in smsc.submitted()].count("85259004123") == 1
    assert not find_duplicates(read_log(smsc.log_path))


def test_receipts_before_the_submit_answer(smsc_factory: Any) -> None:
    server = smsc_factory(receipt_before_resp_ratio=1.0)
    gateway = smpp_gateway(server)
    messages = [queue(f"+8529123400{i}") for i in range(5)]
    run_worker(gateway)
    assert {state(m) for m in messages} == {MessageState.DELIVERED}


def test_gateway_rate_limit_backs_off_and_loses_nothing(smsc_factory: Any) -> None:
    server = smsc_factory(max_rate_per_second=20)
    gateway = smpp_gateway(server, rate=1000)
    messages = [queue(f"+852912350{i:02d}") for i in range(40)]
    stats = run_worker(gateway, idle=1.5)
    assert stats.throttled > 0
    assert {state(m) for m in messages} == {MessageState.DELIVERED}
    accepted = [r for r in server.submitted() if r["outcome"] == "accepted"]
    assert len(accepted) == 40 and not find_duplicates(read_log(server.log_path))


def test_mobile_originated_stop_reaches_the_handlers(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    seen: list[str] = []

    def handler(message: InboundMessage) -> dict[str, str]:
        seen.append(message.body)
        return {"body": message.body}

    INBOUND_HANDLERS.append(handler)
    try:
        worker = BindWorker(gateway, password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
        stop = threading.Event()
        runner = threading.Thread(
            target=lambda: (
                smsc.inject_mo("85291234567", "SHOPHK", "STOP") and smsc.inject_mo("85291234567", "SHOPHK", "退訂")
            ),
            daemon=True,
        )
        worker.connect()
        runner.start()
        wait_for(lambda: len(worker.inbound) >= 2, timeout=5)
        worker.run(stop=stop, idle_exit_after=0.5)
    finally:
        INBOUND_HANDLERS.remove(handler)
    assert seen == ["STOP", "退訂"]
    assert list(InboundMessage.objects.values_list("source", flat=True)) == ["+85291234567"] * 2


def test_marketing_to_an_opted_out_number_is_never_submitted(smsc: Any) -> None:
    from contacts.optouts import opt_out_record

    gateway = smpp_gateway(smsc)
    with transaction.atomic():
        opted = message_queue(
            actor=SYSTEM,
            gateway_code="smpp-hk",
            sender_id="#SHOPHK",
            destination="+85291239999",
            body="Sale",
            purpose="marketing",
        )
    kept = queue("+85291239998")
    with transaction.atomic():  # STOP arrives after dispatch, before the worker claims
        opt_out_record(actor=SYSTEM, phone="+85291239999", reason="stop", source="sms:smpp-hk")
    stats = run_worker(gateway)
    assert stats.suppressed_messages == 1 and stats.accepted_messages == 1
    opted.refresh_from_db()
    assert (opted.state, opted.error_code) == (MessageState.FAILED, "suppressed")
    assert state(kept) == MessageState.DELIVERED
    assert [r["destination"] for r in smsc.submitted()] == ["85291239998"]


def test_a_stop_committed_after_the_claim_withdraws_the_held_message(smsc_factory: Any) -> None:
    """The worker claims ahead of the socket; a STOP committed between the claim and the write
    still wins: the held message is withdrawn, never written, its quota hold released."""
    from contacts.optouts import opt_out_record
    from gateways.models import QuotaReservation

    server = smsc_factory(max_rate_per_second=20)
    gateway = smpp_gateway(server, window=1, rate=20)
    phones = [f"+852912370{i:02d}" for i in range(12)]
    messages = []
    for phone in phones:
        with transaction.atomic():
            messages.append(
                message_queue(
                    actor=SYSTEM,
                    gateway_code="smpp-hk",
                    sender_id="#SHOPHK",
                    destination=phone,
                    body="Weekend sale",
                    purpose="marketing",
                )
            )
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    claim = worker._claim
    stopped: list[str] = []

    def claim_then_stop() -> int:
        taken = claim()
        if taken and not stopped:  # every message is claimed and held; the last one's number opts out
            opt_out_record(actor=SYSTEM, phone=phones[-1], reason="stop", source="sms:smpp-hk")
            stopped.append(phones[-1])
        return taken

    worker._claim = claim_then_stop  # type: ignore[method-assign]
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)
    last = messages[-1]
    last.refresh_from_db()
    assert (last.state, last.error_code) == (MessageState.FAILED, "suppressed")
    assert "Opt-out" in last.error_reason and stats.suppressed_messages == 1
    assert phones[-1].lstrip("+") not in {r["destination"] for r in server.submitted()}
    assert {state(m) for m in messages[:-1]} == {MessageState.DELIVERED}
    reservation = QuotaReservation.objects.get(reference=last.quota_reference)
    assert reservation.segments == 0 and reservation.settled_segments == 0  # its hold went back


def test_stop_requeues_what_was_never_written_and_sends_nothing_twice(smsc_factory: Any) -> None:
    server = smsc_factory(max_rate_per_second=10)
    gateway = smpp_gateway(server, window=2)
    messages = [queue(f"+852912360{i:02d}") for i in range(30)]
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, drain_timeout=1.0)
    stop = threading.Event()
    threading.Timer(0.8, stop.set).start()
    stats = worker.run(stop=stop)
    states = [state(m) for m in messages]
    assert set(states) <= {MessageState.DELIVERED, MessageState.SUBMITTED, MessageState.QUEUED, MessageState.UNKNOWN}
    assert stats.requeued_messages == states.count(MessageState.QUEUED) > 0
    accepted = {r["destination"] for r in server.submitted() if r["outcome"] == "accepted"}
    for message, current in zip(messages, states, strict=True):
        if current == MessageState.QUEUED:  # back in the queue: it never reached the SMSC
            assert message.destination.lstrip("+") not in accepted and message.attempts == 0
    assert not find_duplicates(read_log(server.log_path))


def test_submit_sm_bytes_match_smpplib() -> None:
    import smpplib.client
    import smpplib.consts
    import smpplib.smpp

    from gateways.smpp import wire
    from gateways.smpp.encoding import encode_body, with_udh

    client = smpplib.client.Client("127.0.0.1", 1, allow_unknown_opt_params=True)
    for sender, body, receipt in (("#SHOPHK", "Hello [GSM] €5", True), ("85290000000", CHINESE_200, False)):
        encoded = encode_body(body)
        numeric = sender.lstrip("+").isdigit()
        for short in with_udh(encoded):
            expected = smpplib.smpp.make_pdu(
                "submit_sm",
                client=client,
                source_addr_ton=1 if numeric else smpplib.consts.SMPP_TON_ALNUM,
                source_addr_npi=1 if numeric else 0,
                source_addr=sender.lstrip("+"),
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr="85291234567",
                short_message=short,
                data_coding=encoded.data_coding,
                esm_class=encoded.esm_class,
                registered_delivery=1 if receipt else 0,
            ).generate()
            ours = wire.submit_sm_body(
                wire.source_fields(sender),
                "+85291234567",
                short,
                esm_class=encoded.esm_class,
                data_coding=encoded.data_coding,
                receipt=receipt,
            )
            assert ours == expected[16:]


def test_receipts_parse_from_tlvs_or_text() -> None:
    from gateways.smpp import constants as C
    from gateways.smpp import wire
    from gateways.smpp.worker import receipt_from
    from tests.support.smsc import pdu as P

    def deliver(stat: str, err: int, tlvs: bool) -> wire.Deliver:
        text = P.receipt_text("1a2b", stat, err, "2511280930", "2511280930", "Hello", stat == "DELIVRD")
        body = P.deliver_sm_body(
            source="85291234567",
            destination="SHOPHK",
            short_message=text.encode(),
            esm_class=C.ESM_CLASS_RECEIPT,
            tlvs=P.receipt_tlvs("1a2b", stat, err) if tlvs else b"",
        )
        return wire.parse_deliver_sm(body)

    for tlvs in (True, False):
        delivered = receipt_from(deliver("DELIVRD", 0, tlvs))
        assert delivered is not None
        assert (delivered.provider_message_id, delivered.status, delivered.error_code) == (
            "1a2b",
            MessageState.DELIVERED,
            "",
        )
        failed = receipt_from(deliver("UNDELIV", 1, tlvs))
        assert failed is not None and (failed.status, failed.error_code) == (MessageState.FAILED, "001")
    mo = wire.parse_deliver_sm(P.deliver_sm_body(source="85291234567", destination="SHOPHK", short_message=b"STOP"))
    assert (mo.esm_class, mo.source, mo.short_message, mo.receipted_message_id) == (0, "85291234567", b"STOP", "")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_answers_are_written_by_the_flush_thread(smsc_factory: Any) -> None:
    server = smsc_factory(receipt_before_resp_ratio=0.3)
    gateway = smpp_gateway(server, window=20)
    messages = [queue(f"+852912370{i:02d}") for i in range(40)]
    chinese, invalid = queue("+85261237000", CHINESE_200), queue("+85259000777")
    undelivered = queue("+85259002777")
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05)
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)
    assert stats.flushes >= 1 and stats.accepted_messages == 42 and stats.failed_messages == 1
    assert {state(m) for m in [*messages, chinese]} == {MessageState.DELIVERED}
    assert (state(invalid), state(undelivered)) == (MessageState.FAILED, MessageState.FAILED)
    assert chinese.parts.count() == 3
    assert not DeliveryReceipt.objects.filter(applied_at__isnull=True).exists()
    assert DeliveryReceipt.objects.count() == 40 + 3 + 1
    assert not find_duplicates(read_log(server.log_path))
    assert Account.objects.get().balance == Decimal("1000") - Decimal("0.30") * (40 + 3 + 1)


def test_the_claim_cursor_comes_back_for_messages_behind_it(smsc: Any) -> None:
    gateway = smpp_gateway(smsc)
    # Marketing: the priority lane (transactional, OTP, test) is claimed from the start every time.
    behind = queue("+85291238001", purpose="marketing")
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD)
    worker._claim_after = behind.pk + 1000  # as after claiming newer messages
    assert worker._claim() == 1  # nothing after the cursor: the rescan finds it
    assert [job.message.pk for job, _index in worker.ready] == [behind.pk]
    assert state(behind) == MessageState.SUBMITTING
    later = queue("+85291238002", purpose="marketing")
    assert worker._claim() == 0  # after the cursor only: the next rescan is not due yet
    assert state(later) == MessageState.QUEUED
