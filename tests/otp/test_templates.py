"""OTP templates: the content rules on REST and admin (and on MCP through templates.save), approval by
another person only, and otp_templates.list on MCP, REST and admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.otp.models import OtpTemplate, OtpTemplateVersion
from campaigns.otp.services import otp_send, otp_template_save
from compliance.models import ActionRequest
from compliance.services import action_request_approve
from smsplatform.kernel.errors import ApplicationError
from tests.otp.conftest import CONTENT, key, mcp
from tests.support.actors import actor
from tests.support.rest import error_of

pytestmark = pytest.mark.django_db

PROMOTIONAL = "Your code is {code}. 20% off today at shop.hk!"
LONG_ZH = "你的驗證碼是{code}。" + "請勿把驗證碼告訴任何人，包括自稱本公司職員的人士。" * 3
BAD = [
    ({"body_en": PROMOTIONAL}, "otp_template_promotional", "body_en"),
    ({"body_en": "Your code: {code} https://bit.ly/x"}, "otp_template_promotional", "body_en"),
    ({"body_zh_hant": "驗證碼{code}，限時優惠！"}, "otp_template_promotional", "body_zh_hant"),
    ({"body_en": "Your code is ready."}, "otp_code_placeholder_missing", "body_en"),
    ({"body_en": "Hi {name}, your code is {code}"}, "otp_placeholder_unknown", "body_en"),
    ({"body_zh_hant": LONG_ZH}, "otp_not_single_segment", "body_zh_hant"),
    ({"code_length": 3}, "validation_error", "code_length"),
    ({"code_length": 11}, "validation_error", "code_length"),
    ({"allowed_countries": []}, "validation_error", "allowed_countries"),
    ({"limits": {"phone": {"count": 0, "window_seconds": 60}}}, "validation_error", "limits.phone.count"),
]


@pytest.mark.parametrize(("changes", "code", "field"), BAD)
def test_refused_by_the_service(
    compliance: Any, otp_gateway: Any, changes: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        otp_template_save(actor=actor(compliance), idempotency_key=key(), content={**CONTENT, **changes})
    assert (caught.value.code, caught.value.field) == (code, field)
    assert not ActionRequest.objects.exists() and not OtpTemplate.objects.exists()


@pytest.mark.parametrize(("changes", "code", "field"), BAD)
def test_refused_on_rest(
    compliance: Any, otp_gateway: Any, api_for: Callable[[Any], Any], changes: dict[str, Any], code: str, field: str
) -> None:
    response = api_for(compliance).post(
        "/api/v1/otp/templates/", {"content": {**CONTENT, **changes}, "idempotency_key": key()}, format="json"
    )
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
    assert not ActionRequest.objects.exists()


def _admin_data(**changes: Any) -> dict[str, Any]:
    data = {**CONTENT, "limits": '{"phone": {"count": 5, "window_seconds": 3600}}', "allowed_countries": "HK"}
    data.update({"validity_minutes": 10, "max_checks": 5, "max_sends": 5, "single_segment_required": "on"})
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"body_en": PROMOTIONAL}, "carries no promotion"),
        ({"body_en": "Your code is ready."}, "placeholder {code}"),
        ({"body_zh_hant": LONG_ZH}, "requires one"),
    ],
)
def test_refused_in_the_admin(compliance: Any, otp_gateway: Any, changes: dict[str, Any], message: str) -> None:
    client = Client()
    client.force_login(compliance)
    response = client.post(reverse("admin:otp_otptemplate_request"), _admin_data(**changes))
    assert response.status_code == 200 and message in response.content.decode()
    assert not ActionRequest.objects.exists()


def test_admin_request_is_held_and_approved_by_another_person(compliance: Any, approver: Any, otp_gateway: Any) -> None:
    client = Client()
    client.force_login(compliance)
    response = client.post(reverse("admin:otp_otptemplate_request"), _admin_data())
    assert response.status_code == 302
    request = ActionRequest.objects.get()
    template = OtpTemplate.objects.get()
    assert template.current_version is None and template.version == 0
    # The requester can never approve, even holding the approve permission and the role.
    compliance.groups.add(approver.groups.get())
    with pytest.raises(ApplicationError) as caught:
        action_request_approve(actor=actor(compliance), action_request_id=request.pk)
    assert caught.value.code == "approval_self_approval"
    client.post(reverse("admin:compliance_actionrequest_decide", args=[request.pk]), {"decision": "approve"})
    request.refresh_from_db()
    assert request.state == "pending"
    # An approver approves on the action-request page.
    approver_client = Client()
    approver_client.force_login(approver)
    page = approver_client.post(
        reverse("admin:compliance_actionrequest_decide", args=[request.pk]), {"decision": "approve", "reason": "ok"}
    )
    assert page.status_code == 302
    request.refresh_from_db()
    assert request.state == "executed", request.outcome
    template.refresh_from_db()
    assert template.version == 1 and template.current_version is not None
    assert template.current_version.approved_by == approver


def test_unapproved_template_is_never_used(compliance: Any, tech: Any, otp_gateway: Any) -> None:
    held = otp_template_save(actor=actor(compliance), idempotency_key=key(), content=CONTENT)
    template = OtpTemplate.objects.get()
    with pytest.raises(ApplicationError) as caught:
        otp_send(actor=actor(tech), template_id=template.pk, phone="+85291234567", idempotency_key=key())
    assert caught.value.code == "otp_template_not_approved"
    assert held["status"] == "pending_approval"


def test_rejected_requests_leave_the_template_unusable_and_a_new_version_waits(
    make_template: Callable[..., OtpTemplate], compliance: Any, approver: Any
) -> None:
    template = make_template()
    listed = next(t for t in _rest_list(compliance) if t["template_id"] == template.pk)
    held = otp_template_save(
        actor=actor(compliance),
        idempotency_key=key(),
        template_id=template.pk,
        base_version_token=listed["base_version_token"],
        content={"validity_minutes": 5},
        reason="shorter",
    )
    assert held["status"] == "pending_approval"
    listed = next(t for t in _rest_list(compliance) if t["template_id"] == template.pk)
    assert listed["approved"]["validity_minutes"] == 10  # sends still use the approved version
    assert listed["requested"]["validity_minutes"] == 5 and listed["requested"]["approval_state"] == "pending_approval"
    action_request_approve(actor=actor(approver), action_request_id=held["action_request_id"], reason="ok")
    template.refresh_from_db()
    assert template.version == 2 and template.current_version.validity_minutes == 5  # type: ignore[union-attr]
    assert OtpTemplateVersion.objects.filter(template=template).count() == 2


def _rest_list(user: Any) -> list[dict[str, Any]]:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    response = client.get("/api/v1/otp/templates/")
    assert response.status_code == 200
    return list(response.json()["templates"])


def test_list_on_mcp_rest_and_admin(template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any]) -> None:
    client = api_for(tech)
    over_mcp = mcp(client, "sms_marketing.otp_templates.list", {})
    over_rest = client.get("/api/v1/otp/templates/").json()
    assert over_mcp["templates"] == over_rest["templates"]
    item = over_rest["templates"][0]
    assert item["approval_state"] == "approved" and item["usable"] and item["version"] == 1
    approved = item["approved"]
    assert approved["validity_minutes"] == 10 and approved["allowed_countries"] == ["HK"]
    assert approved["limits"]["phone"] == {"count": 5, "window_seconds": 3600}
    assert approved["gateway"] == "otp-sim"
    admin = Client()
    admin.force_login(tech)
    page = admin.get(reverse("admin:otp_otptemplate_changelist"))
    assert page.status_code == 200 and "approved" in page.content.decode()
