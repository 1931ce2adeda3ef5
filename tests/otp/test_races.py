"""Real thread races on PostgreSQL: max sends and single use hold under concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from campaigns.otp import services
from campaigns.otp.codes import code_hash
from campaigns.otp.models import OtpTemplate, Verification
from campaigns.otp.services import otp_check, otp_send
from gateways.models import OutboundMessage
from smsplatform.kernel.errors import ApplicationError
from tests.support.actors import actor
from tests.support.db import postgres_only, race

pytestmark = [pytest.mark.django_db(transaction=True), postgres_only]


def test_fifty_concurrent_sends_never_pass_max_sends(
    make_template: Callable[..., OtpTemplate], tech: Any, settings: Any
) -> None:
    # The abuse defence (5 sends an hour per phone, the range burst detector) would refuse some of
    # them first (so would the verify/send ratio): here it allows more, so what refuses them is the
    # verification's own limit of 5.
    settings.SMS_OTP_ABUSE = {"range_burst": 1000, "conversion_min_sends": 1000}
    template = make_template(limits={"phone": {"count": 100, "window_seconds": 3600}})

    def one(i: int) -> Any:
        return otp_send(
            actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key=f"race-send-{i:04d}"
        )

    results = race(50, one)
    sent = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(sent) == 5, [r for r in results if not isinstance(r, dict | ApplicationError)]
    assert {r.code for r in refused} <= {"otp_max_sends_reached", "idempotency_in_progress"}
    assert len(sent) + len(refused) == 50
    assert Verification.objects.get().sends == 5 and OutboundMessage.objects.count() == 5


def test_concurrent_right_codes_approve_once(template: OtpTemplate, tech: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "code_generate", lambda *, length, alphabet: "246810")
    vid = otp_send(actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key="race-check-0001")[
        "result"
    ]["verification_id"]
    results = race(10, lambda i: otp_check(actor=actor(tech), verification_id=vid, code="246810"))
    approved = [r for r in results if isinstance(r, dict) and r["status"] == "approved"]
    assert len(approved) == 1
    assert all(
        isinstance(r, ApplicationError) and r.code == "otp_verification_not_pending"
        for r in results
        if r not in approved
    )
    assert Verification.objects.get().checks <= 5


def test_concurrent_wrong_codes_count_max_checks_then_lock(
    template: OtpTemplate, tech: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL check writes in one statement without an explicit transaction: twenty
    concurrent wrong codes still count exactly max_checks (5), lock it, and leave one audit row
    per counted check; the right code afterwards is refused."""
    from smsplatform.models import AuditLog

    monkeypatch.setattr(services, "code_generate", lambda *, length, alphabet: "246810")
    vid = otp_send(actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key="race-wrong-0001")[
        "result"
    ]["verification_id"]
    results = race(20, lambda i: otp_check(actor=actor(tech), verification_id=vid, code=f"{i:06d}"))
    counted = [r for r in results if isinstance(r, dict)]
    assert len(counted) == 5, results
    assert sorted(r["checks_used"] for r in counted) == [1, 2, 3, 4, 5]
    assert [r["status"] for r in counted if r["checks_used"] == 5] == ["locked"]
    assert all(
        isinstance(r, ApplicationError) and r.code == "otp_verification_not_pending"
        for r in results
        if r not in counted
    )
    verification = Verification.objects.get()
    assert (verification.checks, verification.status) == (5, "locked") and verification.ended_at is not None
    assert AuditLog.objects.filter(action="otp.check", object_id=vid).count() == 5
    with pytest.raises(ApplicationError) as caught:
        otp_check(actor=actor(tech), verification_id=vid, code="246810")
    assert caught.value.code == "otp_verification_not_pending"


def test_concurrent_mixed_codes_approve_at_most_once(
    template: OtpTemplate, tech: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right and wrong codes at once: one approval at most, never more than 5 checks compared,
    the verified-prefix counter counts the one approval, an audit row for each counted check."""
    from campaigns.otp.models import OtpRateCounter
    from smsplatform.models import AuditLog

    monkeypatch.setattr(services, "code_generate", lambda *, length, alphabet: "246810")
    vid = otp_send(actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key="race-mixed-0001")[
        "result"
    ]["verification_id"]
    results = race(
        12, lambda i: otp_check(actor=actor(tech), verification_id=vid, code="246810" if i % 3 else "000000")
    )
    counted = [r for r in results if isinstance(r, dict)]
    approved = [r for r in counted if r["status"] == "approved"]
    assert len(approved) == 1, results
    assert 1 <= len(counted) <= 5
    verification = Verification.objects.get()
    assert verification.status == "approved" and verification.checks == len(counted)
    assert AuditLog.objects.filter(action="otp.check", object_id=vid).count() == len(counted)
    assert sum(c.count for c in OtpRateCounter.objects.filter(scope="prefix_verified")) == 1


def test_a_check_waiting_on_a_resend_compares_against_the_new_code(
    template: OtpTemplate, tech: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend's write (the new code's hash, one more send) holds the verification's row lock when a
    check of the old code arrives: the check waits, then PostgreSQL re-evaluates it on the resent
    row, so it compares against the new code. The old code never approves, and the new one does."""
    monkeypatch.setattr(services, "code_generate", lambda *, length, alphabet: "246810")
    vid = otp_send(
        actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key="race-resend-0001"
    )["result"]["verification_id"]
    locked, answers = threading.Event(), []

    def resend_holding_the_lock() -> None:
        try:
            with transaction.atomic():
                Verification.objects.filter(public_id=vid).update(
                    code_hash=code_hash(verification_id=vid, code="135790"), sends=F("sends") + 1
                )
                locked.set()
                time.sleep(0.5)  # the check below starts and waits on the row lock meanwhile
        finally:
            connection.close()

    def check_old_code() -> None:
        try:
            locked.wait(5)
            answers.append(otp_check(actor=actor(tech), verification_id=vid, code="246810"))
        finally:
            connection.close()

    threads = [threading.Thread(target=resend_holding_the_lock), threading.Thread(target=check_old_code)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers and answers[0]["status"] == "pending" and answers[0]["valid"] is False, answers
    assert answers[0]["checks_used"] == 1
    verification = Verification.objects.get()
    assert (verification.sends, verification.checks) == (2, 1)
    assert otp_check(actor=actor(tech), verification_id=vid, code="135790")["status"] == "approved"
