"""seed_demo: idempotent, and its demo campaign is made through the real services."""

from __future__ import annotations

import io

import pytest
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
