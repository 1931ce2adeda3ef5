"""Real thread races on PostgreSQL: max sends and single use hold under concurrency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from campaigns.otp import services
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
