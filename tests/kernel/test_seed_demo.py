"""seed_demo: idempotent, and its demo campaign is made through the real services."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from campaigns.models import Campaign, CampaignState
from compliance.models import ApprovalPolicy, OptOut
from contacts.models import Contact
from gateways.models import Gateway
from smsplatform.models import ApiToken, AuditLog

pytestmark = pytest.mark.django_db


def test_seed_demo_twice_builds_one_demo_world() -> None:
    Gateway.objects.filter(code="simulator").delete()  # the suite's placeholder; seed_demo makes the real one
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "demo_marketing" in out.getvalue() and "Bearer " in out.getvalue()
    counts = (Contact.objects.count(), OptOut.objects.count(), Campaign.objects.count(), ApiToken.objects.count())
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    assert (
        Contact.objects.count(),
        OptOut.objects.count(),
        Campaign.objects.count(),
        ApiToken.objects.count(),
    ) == counts
    campaign = Campaign.objects.get()
    assert campaign.state == CampaignState.DRAFT and campaign.estimate["recipients"] == 38  # 40 minus 2 STOPs
    assert "Reply STOP" in campaign.body_preview and campaign.sender_id == "#DEMOHK"
    assert AuditLog.objects.filter(action="campaign.create", object_id=str(campaign.pk)).exists()
    assert ApprovalPolicy.objects.filter(action="campaign.send").exists()
    assert all(c.source == "demo" for c in Contact.objects.all())


def test_seed_demo_makes_demo_flows_and_otp_templates_through_the_services_once() -> None:
    """A new user sees automation flows and OTP templates; a rerun adds nothing."""
    from campaigns.automations.flow_models import Flow, FlowState, FlowVersion
    from campaigns.otp.models import OtpTemplate
    from compliance.models import ActionRequest, RequestState
    from templates.models import Template

    Gateway.objects.filter(code="simulator").delete()
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    counts = (
        Flow.objects.count(),
        FlowVersion.objects.count(),
        OtpTemplate.objects.count(),
        Template.objects.count(),
        ActionRequest.objects.count(),
        AuditLog.objects.count(),
    )
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    assert (
        Flow.objects.count(),
        FlowVersion.objects.count(),
        OtpTemplate.objects.count(),
        Template.objects.count(),
        ActionRequest.objects.count(),
        AuditLog.objects.count(),
    ) == counts
    flows = {f.name: f for f in Flow.objects.all()}
    users = dict(get_user_model().objects.values_list("username", "pk"))
    shipped = flows["Demo: order shipped notice"]
    cart = flows["Demo: abandoned cart reminder"]
    assert shipped.state == FlowState.ACTIVE and shipped.created_by_id == users["demo_marketing"]
    assert shipped.updated_by_id == users["demo_approver"] and shipped.cost_check["within_budget"]
    assert cart.state == FlowState.DRAFT and cart.steps == [{"kind": "wait", "minutes": 60}, {"kind": "send"}]
    assert cart.template_version is not None and cart.template_version.purpose == "marketing"
    assert AuditLog.objects.filter(action="flow.create").count() == 2
    assert AuditLog.objects.filter(action="flow.activate", object_id=str(shipped.pk)).exists()
    login = OtpTemplate.objects.get(name="Demo login code")
    assert login.version == 1 and login.current_version is not None
    reset = OtpTemplate.objects.get(name="Demo password reset")
    assert reset.version == 0
    assert ActionRequest.objects.filter(action="otp_template.save", state=RequestState.PENDING).count() == 1
