"""The abuse defence through every path a send takes: MCP, REST (429 with Retry-After) and the
admin's test-code form; a retry of a send already made (same idempotency key) takes no slot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.otp.models import OtpTemplate, PumpingBlock, Verification
from campaigns.otp.services import otp_send
from tests.otp.conftest import key, mcp
from tests.support.actors import actor
from tests.support.rest import error_of

pytestmark = [pytest.mark.django_db]

LIMITS = {"phone": {"count": 2, "window_seconds": 3600}}


def test_the_phone_limit_holds_on_mcp_rest_and_admin(
    make_template: Callable[..., OtpTemplate], tech: Any, api_for: Callable[[Any], Any]
) -> None:
    template = make_template(limits=LIMITS)
    client = api_for(tech)
    phone = "+85291230001"
    first = otp_send(actor=actor(tech), template_id=template.pk, phone=phone, idempotency_key=key())
    assert first["status"] == "executed"
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": phone, "idempotency_key": key()}
    )
    assert over_mcp["result"]["sends_used"] == 2

    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": phone, "idempotency_key": key()},
        format="json",
    )
    assert rest.status_code == 429, rest.content
    error = error_of(rest)
    assert error["code"] == "rate_limited" and error["field"] == "phone"
    assert int(rest["Retry-After"]) == error["details"]["retry_after"] > 0

    refused = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": phone, "idempotency_key": key()}
    )
    assert refused["error"]["code"] == "rate_limited" and refused["error"]["details"]["retry_after"] > 0

    admin = Client()
    admin.force_login(tech)
    page = admin.post(reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": phone, "locale": "en"})
    assert "Retry in" in page.content.decode() or "rate_limited" in page.content.decode()
    assert Verification.objects.get(phone=phone).sends == 2  # nothing more went out


def test_a_retry_with_the_same_key_answers_again_without_taking_a_slot(
    make_template: Callable[..., OtpTemplate], tech: Any
) -> None:
    template = make_template(limits=LIMITS)
    phone = "+85291230002"
    same = key()
    first = otp_send(actor=actor(tech), template_id=template.pk, phone=phone, idempotency_key=same)
    for _ in range(3):
        assert otp_send(actor=actor(tech), template_id=template.pk, phone=phone, idempotency_key=same) == first
    second = otp_send(actor=actor(tech), template_id=template.pk, phone=phone, idempotency_key=key())
    assert second["result"]["sends_used"] == 2  # the three retries used none of the limit of 2


def test_a_pumping_sweep_through_rest_is_blocked_and_stays_blocked(
    make_template: Callable[..., OtpTemplate], tech: Any, api_for: Callable[[Any], Any]
) -> None:
    template = make_template(limits={"ip": {"count": 10_000, "window_seconds": 3600}})
    client = api_for(tech)
    answers = []
    for n in range(40):
        response = client.post(
            "/api/v1/otp/verifications/",
            {"template_id": template.pk, "phone": f"+8525123{n:04d}", "idempotency_key": key()},
            format="json",
        )
        answers.append((response.status_code, error_of(response)["code"] if response.status_code >= 400 else "sent"))
    sent = [a for a in answers if a[1] == "sent"]
    assert 0 < len(sent) <= 11 and answers[-1][1] == "otp_range_blocked", answers
    assert PumpingBlock.objects.filter(lifted_at__isnull=True).count() == 1


def test_a_caller_without_the_send_permission_spends_no_slot_on_any_path(
    template: OtpTemplate, make_user: Callable[..., Any], api_for: Callable[[Any], Any]
) -> None:
    """Refused before the abuse counters on MCP, REST and the admin's test send: a caller who may
    not send cannot use up a phone's, an IP's or a range's limits for the people who may."""
    from campaigns.otp.models import OtpRateCounter
    from compliance.roles import Role

    operations = make_user(Role.OPERATIONS)
    phone = "+85291230003"
    client = api_for(operations)
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": phone, "idempotency_key": key()}
    )
    assert over_mcp["error"]["code"] == "permission_denied"
    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": phone, "client_ip": "203.0.113.5", "idempotency_key": key()},
        format="json",
    )
    assert rest.status_code == 403 and error_of(rest)["code"] == "permission_denied", rest.content
    admin = Client()
    admin.force_login(operations)
    page = admin.post(reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": phone, "locale": "en"})
    assert page.status_code == 302, page.content  # refused back to the list, nothing sent
    assert not OtpRateCounter.objects.exists() and not Verification.objects.exists()
