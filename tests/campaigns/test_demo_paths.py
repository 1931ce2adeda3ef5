"""Every demo role has a path to schedule a cheap campaign with the seeded roles and policies
(issue 13, item 3), and a fresh draft is edited without approval (item 4): over MCP (the server's
own tool runner), REST and the admin, as seed_demo leaves the installation."""

from __future__ import annotations

import io
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignState
from campaigns.spec import campaign_token
from compliance.models import ActionRequest, ApprovalPolicy, Condition, RequestState
from compliance.services import action_request_approve
from gateways.models import Gateway
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.mcp.server import run_tool
from tests.support.campaigns import key
from tests.support.mcp import tool_answer

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo() -> Campaign:
    Gateway.objects.filter(code="simulator").delete()  # the suite's placeholder; seed_demo makes the real one
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    return Campaign.objects.get(name="Demo weekend sale")


def user(name: str) -> Any:
    return get_user_model().objects.get(username=name)


def mcp(username: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(f"sms_marketing.{tool}", args, SimpleNamespace(user=user(username), auth=None))
    body = tool_answer(result)
    assert result.isError == ("error" in body)
    return body


def schedule_args(campaign: Campaign, **extra: Any) -> dict[str, Any]:
    campaign.refresh_from_db()
    send_at = (timezone.now() + timedelta(days=1)).isoformat()
    return {
        "campaign_id": campaign.pk,
        "base_version_token": campaign_token(campaign),
        "send_at": send_at,
        "idempotency_key": key("demo"),
        **extra,
    }


def test_marketing_is_held_for_an_approver_even_with_confirm_and_the_approver_approves(demo: Campaign) -> None:
    held = mcp("demo_marketing", "campaigns.schedule", schedule_args(demo, confirm=True))
    assert held["status"] == "pending_approval" and held["required_role"] == "approver", held
    assert "confirm=true did not count" in held["hint"]
    assert Campaign.objects.get(pk=demo.pk).state == CampaignState.PENDING_APPROVAL
    approver = Actor(user=user("demo_approver"), channel=Channel.ADMIN)
    decided = action_request_approve(actor=approver, action_request_id=held["action_request_id"], reason="fine")
    assert ActionRequest.objects.get(pk=held["action_request_id"]).state == RequestState.EXECUTED, decided
    demo.refresh_from_db()
    assert demo.state == CampaignState.SCHEDULED and demo.approved_by == user("demo_approver")


def test_operations_is_held_and_the_approver_confirms_on_their_own(demo: Campaign) -> None:
    held = mcp("demo_operations", "campaigns.schedule", schedule_args(demo))
    assert held.get("status") == "pending_approval", held
    ActionRequest.objects.filter(pk=held["action_request_id"]).update(state=RequestState.REJECTED)
    Campaign.objects.filter(pk=demo.pk).update(state=CampaignState.DRAFT)

    done = mcp("demo_approver", "campaigns.schedule", schedule_args(demo, confirm=True))
    assert done["status"] == "executed" and done["result"]["state"] == "scheduled", done
    assert done["result"]["approved_by"] == user("demo_approver").pk


def test_roles_without_the_schedule_permission_are_told_who_may(demo: Campaign) -> None:
    for name in ("demo_crm", "demo_compliance", "demo_technical"):
        refused = mcp(name, "campaigns.schedule", schedule_args(demo))
        assert refused["error"]["code"] == "permission_denied", (name, refused)


def test_without_a_holding_policy_the_error_names_this_users_path(demo: Campaign) -> None:
    ApprovalPolicy.objects.filter(action="campaign.schedule", condition=Condition.UNCONFIRMED).delete()
    refused = mcp("demo_marketing", "campaigns.schedule", schedule_args(demo))["error"]
    assert (refused["code"], refused["field"]) == ("campaign_not_approved", "confirm")
    assert "No path applies to you" in refused["message"]
    assert "condition 'unconfirmed'" in refused["hint"] and "roles: approver" in refused["hint"]

    refused = mcp("demo_approver", "campaigns.schedule", schedule_args(demo))["error"]
    assert refused["code"] == "campaign_not_approved"
    assert "You may confirm" in refused["message"] and "confirm=true" in refused["hint"]
    assert Campaign.objects.get(pk=demo.pk).state == CampaignState.DRAFT


def test_rest_schedule_by_marketing_is_held(demo: Campaign, api_for: Any) -> None:
    args = schedule_args(demo)
    response = api_for(user("demo_marketing")).post(
        f"/api/v1/campaigns/{demo.pk}/schedule/",
        {k: v for k, v in args.items() if k != "campaign_id"},
        format="json",
    )
    assert response.status_code == 202 and response.json()["status"] == "pending_approval", response.json()


def _admin_schedule(username: str, demo: Campaign, **extra: str) -> list[str]:
    client = Client()
    client.force_login(user(username))
    url = reverse("admin:campaigns_campaign_change", args=[demo.pk])
    page = client.get(url)
    assert page.status_code == 200
    demo.refresh_from_db()
    body = {
        "send_at": (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        "base_version_token": campaign_token(demo),
        "idempotency_key": key("adm"),
        **extra,
    }
    response = client.post(reverse("admin:campaigns_campaign_schedule", args=[demo.pk]), body, follow=True)
    return [page.content.decode(), *(str(m) for m in response.context["messages"])]


def test_admin_request_schedule_works_for_marketing_and_admin(demo: Campaign) -> None:
    page, *said = _admin_schedule("demo_marketing", demo)
    assert "You may request approval" in page
    assert any("held for approval as request" in m for m in said), said

    ActionRequest.objects.update(state=RequestState.REJECTED)
    Campaign.objects.filter(pk=demo.pk).update(state=CampaignState.DRAFT)
    page, *said = _admin_schedule("admin", demo, confirm="on")
    assert "You may confirm" in page
    assert any("done" in m for m in said), said
    assert Campaign.objects.get(pk=demo.pk).state == CampaignState.SCHEDULED


def test_a_fresh_draft_is_edited_at_once_an_approved_one_goes_back_through_approval(demo: Campaign) -> None:
    policy = ApprovalPolicy.objects.get(action="campaign.update")
    assert policy.condition == Condition.OVERWRITES_EXISTING
    edited = mcp(
        "demo_marketing",
        "campaigns.update",
        {
            "campaign_id": demo.pk,
            "base_version_token": campaign_token(demo),
            "changes": {"name": "Demo weekend sale (v2)", "budget": "90"},
            "idempotency_key": key("demo"),
        },
    )
    assert edited["status"] == "executed", edited
    done = mcp("demo_approver", "campaigns.schedule", schedule_args(demo, confirm=True))
    assert done["status"] == "executed", done
    demo.refresh_from_db()
    note = mcp(
        "demo_marketing",
        "campaigns.update",
        {
            "campaign_id": demo.pk,
            "base_version_token": campaign_token(demo),
            "changes": {"review_notes": "checked the copy"},
            "idempotency_key": key("demo"),
        },
    )
    assert note["status"] == "executed", note  # a note does not touch what was approved
    demo.refresh_from_db()
    held = mcp(
        "demo_marketing",
        "campaigns.update",
        {
            "campaign_id": demo.pk,
            "base_version_token": campaign_token(demo),
            "changes": {"budget": "80"},
            "idempotency_key": key("demo"),
        },
    )
    assert held["status"] == "pending_approval", held
    assert Campaign.objects.get(pk=demo.pk).state == CampaignState.SCHEDULED


def test_seed_demo_corrects_the_old_update_policy_in_place(demo: Campaign) -> None:
    ApprovalPolicy.objects.filter(action="campaign.update").update(condition=Condition.ALWAYS)
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    assert list(ApprovalPolicy.objects.filter(action="campaign.update").values_list("condition", flat=True)) == [
        Condition.OVERWRITES_EXISTING
    ]
