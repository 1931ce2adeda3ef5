"""The OTP pages of the staff app through Django's test client (SQLite and PostgreSQL): the template
list with its rules, a new template or version requested through the form (always held for an
approver; a promotional body refused next to the body), and the verifications, masked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from campaigns.otp.models import OtpTemplate, OtpTemplateVersion
from campaigns.otp.services import otp_send
from compliance.models import ActionRequest
from tests.otp.conftest import CONTENT, key
from tests.support.actors import actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

PHONE = "+85291234567"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _hidden(html: str) -> dict[str, str]:
    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)  # type: ignore[union-attr]
        for name in ("key", "token")
    }


def _form(**changes: str) -> dict[str, str]:
    data = {
        "name": CONTENT["name"],
        "purpose": CONTENT["purpose"],
        "body_en": CONTENT["body_en"],
        "body_zh_hant": CONTENT["body_zh_hant"],
        "code_length": "6",
        "alphabet": "digits",
        "validity_minutes": "10",
        "max_checks": "5",
        "max_sends": "5",
        "allowed_countries": "hk",
        "sender_id": "#SHOPHK",
        "gateway": "otp-sim",
        "fallback_gateway": "",
        "single_segment_required": "on",
        "reason": "new login code",
    }
    for dimension, count in (("phone", 5), ("ip", 20), ("token", 1000), ("country", 5000)):
        data[f"limit_{dimension}_count"] = str(count)
        data[f"limit_{dimension}_window_seconds"] = "3600"
    data.update(changes)
    return data


def test_the_list_shows_purpose_validity_limits_gateway_regions_and_approval(
    template: OtpTemplate, compliance: Any
) -> None:
    html = logged_in(compliance).get("/app/otp/").content.decode()
    row = html.split(f'data-template="{template.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "login" in row and "10 min" in row and "phone: 5 / 3600 s" in row
    assert "otp-sim" in row and "HK" in row and "approved" in row


def test_a_promotional_body_is_refused_next_to_the_body(otp_gateway: Any, compliance: Any) -> None:
    client = logged_in(compliance)
    hidden = _hidden(client.get("/app/otp/new/").content.decode())
    promo = "Your code is {code}. 20% off today at https://shop.example"
    response = client.post("/app/otp/new/", {**hidden, **_form(body_en=promo)})
    assert response.status_code == 400
    html = response.content.decode()
    body_field = html.split('id="field-body_en"', 1)[1].split("</p>\n", 1)[0]
    assert 'data-code="otp_template_promotional"' in body_field
    assert not OtpTemplate.objects.exists() and not ActionRequest.objects.exists()


def test_a_new_template_and_a_new_version_are_held_for_an_approver(
    template: OtpTemplate, compliance: Any, otp_gateway: Any
) -> None:
    client = logged_in(compliance)
    hidden = _hidden(client.get("/app/otp/new/").content.decode())
    response = client.post("/app/otp/new/", {**hidden, **_form(name="Reset code", purpose="password_reset")})
    assert response.status_code == 200, response.content.decode()[:3000]
    assert 'data-status="pending_approval"' in response.content.decode()
    assert OtpTemplate.objects.get(name="Reset code").current_version is None  # not usable before approval
    # A new version of the approved template: held; the approved version stays the one in use.
    page = client.get(f"/app/otp/{template.pk}/").content.decode()
    assert "Valid for {minutes} minutes." in page
    approved = template.current_version_id
    edited = _form(validity_minutes="5")
    response = client.post(f"/app/otp/{template.pk}/", {**_hidden(page), **edited})
    assert response.status_code == 200, response.content.decode()[:3000]
    assert 'data-status="pending_approval"' in response.content.decode()
    template.refresh_from_db()
    assert template.current_version_id == approved
    assert OtpTemplateVersion.objects.filter(template=template).count() == 2
    listing = client.get("/app/otp/").content.decode()
    assert "pending_approval" in listing.split(f'data-template="{template.pk}"', 1)[1].split("</tr>", 1)[0]
    # A version awaiting approval has no number yet: the list never says "vNone", and a template
    # never approved shows its state once.
    assert "vNone" not in listing
    new = OtpTemplate.objects.get(name="Reset code")
    new_row = listing.split(f'data-template="{new.pk}"', 1)[1].split("</tr>", 1)[0]
    assert new_row.count("pending_approval") == 1, new_row


def test_verifications_are_listed_masked(template: OtpTemplate, tech: Any, compliance: Any) -> None:
    answer = otp_send(actor=actor(tech), template_id=template.pk, phone=PHONE, idempotency_key=key())
    assert answer["status"] == "executed", answer
    html = logged_in(compliance).get("/app/otp/verifications/").content.decode()
    table = html.split('id="verifications"', 1)[1]
    assert answer["result"]["verification_id"] in table
    assert PHONE not in html and PHONE[-4:] in table and "****" in table


def test_a_role_without_otp_permissions_is_refused(template: OtpTemplate, make_user: Any) -> None:
    from compliance.roles import Role

    client = logged_in(make_user(Role.MARKETING, username="otpmarketer"))
    assert client.get("/app/otp/").status_code == 403
    assert client.get("/app/otp/verifications/").status_code == 403
    assert client.post("/app/otp/new/", _form(name="X")).status_code == 403
