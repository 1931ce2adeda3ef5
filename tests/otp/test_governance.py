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


def test_a_caller_without_the_send_permission_spends_nothing(template: OtpTemplate, make_user: Any, tech: Any) -> None:
    """Refused first: no rate-limit slot, no idempotency key, no verification (and no campaign
    yield: the NOTIFY comes after this check)."""
    from campaigns.otp.models import OtpRateCounter
    from compliance.roles import Role
    from smsplatform.kernel.errors import ApplicationError
    from smsplatform.models import IdempotencyRecord

    operations = make_user(Role.OPERATIONS)
    keys = IdempotencyRecord.objects.count()  # the template's own
    with pytest.raises(ApplicationError) as caught:
        otp_send(actor=actor(operations), template_id=template.pk, phone=PHONE, idempotency_key=key())
    assert caught.value.code == "permission_denied"
    assert not OtpRateCounter.objects.exists() and IdempotencyRecord.objects.count() == keys
    assert not Verification.objects.exists()
    assert (
        otp_send(actor=actor(tech), template_id=template.pk, phone=PHONE, idempotency_key=key())["status"] == "executed"
    )


@pytest.mark.django_db(transaction=True)
def test_an_approvers_decision_that_executes_a_send_commits_durably(
    template: OtpTemplate, tech: Any, approver: Any
) -> None:
    """The send's own transaction commits without waiting for the WAL flush; an approval that
    executes a held send is a decision, committed durably (PostgreSQL)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ApprovalPolicyFactory.create(action=ActionType.OTP_SEND, condition=Condition.ALWAYS)
    otp_send(actor=actor(tech), template_id=template.pk, phone=PHONE, idempotency_key=key())
    request = ActionRequest.objects.get(action=ActionType.OTP_SEND)
    with CaptureQueriesContext(connection) as queries:
        outcome = action_request_approve(actor=actor(approver), action_request_id=request.pk, reason="ok")
    assert outcome["state"] == "executed"
    assert not [q["sql"] for q in queries.captured_queries if "synchronous_commit" in q["sql"]]
