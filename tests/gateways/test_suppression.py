"""Claimed marketing messages to opted-out numbers fail as 'suppressed', set-based: at claim time
(``messages_claim``) and after the claim, before the send (``messages_suppress_claimed``, the
bind worker's opt-out watch). Each names its own opt-out; holds go back once per reservation."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from contacts.optouts import opt_out_record
from gateways.delivery.claim import messages_claim, messages_claim_rows, messages_suppress_claimed
from gateways.models import MessageState, OutboundMessage, QuotaReservation, ReservationState
from smsplatform.kernel.actor import Actor
from smsplatform.models import AuditLog
from tests.support.delivery import queue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
SYSTEM = Actor.system("test")
PHONES = [f"+8529123{i:04d}" for i in range(5)]


def opt_out(phone: str, reason: str = "stop") -> int:
    with transaction.atomic():
        return int(opt_out_record(actor=SYSTEM, phone=phone, reason=reason, source=f"src-{phone[-2:]}")["opt_out_id"])


def message_updates(queries: CaptureQueriesContext) -> list[str]:
    table = OutboundMessage._meta.db_table
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f'UPDATE "{table}"')]


def test_opt_outs_at_claim_time_fail_each_message_with_its_own_opt_out(sim: Any) -> None:
    marketing = [queue(phone, purpose="marketing") for phone in PHONES]
    kept = queue(PHONES[0], purpose="otp")  # the one purpose the suppression list lets through
    opt_outs = [opt_out(phone, "stop" if i % 2 else "web") for i, phone in enumerate(PHONES)]

    with CaptureQueriesContext(connection) as queries:
        claimed = messages_claim(gateway_id=sim.pk)

    assert [m.pk for m in claimed] == [kept.pk]
    for message, opt_out_id, phone in zip(marketing, opt_outs, PHONES, strict=True):
        message.refresh_from_db()
        assert (message.state, message.error_code, message.attempts) == (MessageState.FAILED, "suppressed", 0)
        reason = "stop" if PHONES.index(phone) % 2 else "web"
        assert message.error_reason.startswith(f"Opt-out #{opt_out_id} ({reason}, src-{phone[-2:]})")
        assert QuotaReservation.objects.get(reference=message.quota_reference).state == ReservationState.RELEASED
    if connection.vendor == "sqlite":  # PostgreSQL's claim is its own two statements
        assert len(message_updates(queries)) == 2  # one for the claimed, one for the suppressed: not one per row


def test_opt_outs_after_the_claim_withdraw_held_messages_in_one_update(sim: Any) -> None:
    marketing = [queue(phone, purpose="marketing") for phone in PHONES]
    transactional = queue(PHONES[0], purpose="transactional")
    claimed = {m.pk for m in messages_claim_rows(gateway_id=sim.pk).messages}
    assert claimed == {m.pk for m in [*marketing, transactional]}
    later = queue(PHONES[1], purpose="marketing")  # not claimed: the claim re-checks it anyway
    opt_outs = {phone: opt_out(phone) for phone in PHONES}
    suppressions = [
        (m.pk, opt_outs[m.destination], "stop", f"src-{m.destination[-2:]}") for m in [*marketing, transactional, later]
    ]

    with CaptureQueriesContext(connection) as queries:
        withdrawn = messages_suppress_claimed(actor=SYSTEM, suppressions=suppressions)

    assert withdrawn == len(marketing)
    assert len(message_updates(queries)) == 1
    for message in marketing:
        message.refresh_from_db()
        assert (message.state, message.error_code) == (MessageState.FAILED, "suppressed")
        assert message.final_at is not None
        expected = f"Opt-out #{opt_outs[message.destination]} (stop, src-{message.destination[-2:]})"
        assert message.error_reason.startswith(expected)
        assert QuotaReservation.objects.get(reference=message.quota_reference).state == ReservationState.RELEASED
    # Only claimed marketing messages move: not a transactional one, not one still queued.
    transactional.refresh_from_db()
    later.refresh_from_db()
    assert (transactional.state, later.state) == (MessageState.SUBMITTING, MessageState.QUEUED)
    after: Any = AuditLog.objects.get(action="messages.suppressed").after
    assert sorted(after["ids"]) == sorted(m.pk for m in marketing) and after["count"] == len(marketing)
    # Again: nothing is 'submitting' marketing any more, nothing moves, nothing is audited.
    assert messages_suppress_claimed(actor=SYSTEM, suppressions=suppressions) == 0
    assert AuditLog.objects.filter(action="messages.suppressed").count() == 1
