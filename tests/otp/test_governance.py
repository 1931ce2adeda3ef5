"""otp.send is a governed write: a policy can hold it, an approver executes it, and neither the
held request's audit row nor its approval page shows the full phone or any code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.otp.models import OtpTemplate, Verification
from campaigns.otp.services import otp_send
from compliance.models import ActionRequest, ActionType, Condition
from compliance.services import action_request_approve
from gateways.models import OutboundMessage
from smsplatform.models import AuditLog
from tests.otp.conftest import key
from tests.support.actors import actor
from tests.support.factories import ApprovalPolicyFactory

pytestmark = pytest.mark.django_db

PHONE = "+85291234567"


def test_a_policy_holds_the_send_and_approval_executes_it(template: OtpTemplate, tech: Any, approver: Any) -> None:
    ApprovalPolicyFactory.create(action=ActionType.OTP_SEND, condition=Condition.ALWAYS)
    held = otp_send(actor=actor(tech), template_id=template.pk, phone=PHONE, idempotency_key=key())
    assert held["status"] == "pending_approval"
    assert not Verification.objects.exists() and not OutboundMessage.objects.exists()
    request = ActionRequest.objects.get(action=ActionType.OTP_SEND)
    audit = json.dumps(list(AuditLog.objects.filter(action="action_request.create").values("after")))
    assert PHONE not in audit and "+852****4567" in audit
    page = Client()
    page.force_login(approver)
    text = page.get(reverse("admin:compliance_actionrequest_change", args=[request.pk])).content.decode()
    assert PHONE not in text and "+852****4567" in text
    outcome = action_request_approve(actor=actor(approver), action_request_id=request.pk, reason="ok")
    assert outcome["state"] == "executed" and outcome["result"]["phone"] == "+852****4567"
    verification = Verification.objects.get()
    assert verification.sends == 1 and OutboundMessage.objects.get().purpose == "otp"


def test_system_actors_cannot_request_templates(otp_gateway: Any) -> None:
    from campaigns.otp.services import otp_template_save
    from smsplatform.kernel.actor import Actor
    from smsplatform.kernel.errors import ApplicationError
    from tests.otp.conftest import CONTENT

    with pytest.raises(ApplicationError) as caught:
        otp_template_save(actor=Actor.system("job"), idempotency_key=key(), content=CONTENT)
    assert caught.value.code == "permission_denied"
    assert not OtpTemplate.objects.exists()
