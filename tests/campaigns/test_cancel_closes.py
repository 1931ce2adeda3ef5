"""After cancel_schedule a campaign says cancelled and approved for nothing, keeps no beat entry,
and the requests still waiting about it are closed (rejected "campaign cancelled", audited, the
requester told through the notification outbox): through the service, MCP, REST and the admin."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import Campaign, CampaignState
from campaigns.services import campaign_create_draft, campaign_schedule, campaign_update
from compliance.models import ActionRequest, ActionType, Condition, RequestState
from smsplatform.mcp.server import run_tool
from smsplatform.models import AuditLog, Notification
from tests.support.campaigns import act, draft_data, key, policy

pytestmark = pytest.mark.django_db


def _mcp(user: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(f"sms_marketing.{name}", args, SimpleNamespace(user=user, auth=None))
    assert not result.isError, result.structuredContent
    return dict(result.structuredContent or {})


@pytest.fixture
def scheduled_with_a_waiting_update(world: dict[str, Any], marketer: Any, approver_user: Any) -> dict[str, Any]:
    """Scheduled on an approver's confirmation; the marketer's later change waits for approval."""
    marketer.email = "marketer1@example.com"
    marketer.save()
    policy(ActionType.CAMPAIGN_UPDATE, Condition.OVERWRITES_EXISTING)
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    done = campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(days=1)).isoformat()},
        confirm=True,
        idempotency_key=key(),
    )
    assert done["status"] == "executed", done
    held = campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=done["result"]["base_version_token"],
        changes={"budget": "90"},
        idempotency_key=key(),
    )
    assert held["status"] == "pending_approval", held
    return {"campaign_id": draft["campaign_id"], "request_id": held["action_request_id"]}


def _assert_cancelled_and_closed(marketer: Any, case: dict[str, Any]) -> None:
    cid = case["campaign_id"]
    got = _mcp(marketer, "campaigns.get", {"campaign_id": cid})
    assert got["state"] == "cancelled" and got["approval"]["approved"] is False, got
    assert got["approval"]["approved_version"] is None and got["approval"]["pending_requests"] in ([], 0, None)
    assert got["schedule"]["beat_entry"] is None
    assert not PeriodicTask.objects.filter(name=f"campaign:{cid}").exists()
    request = ActionRequest.objects.get(pk=case["request_id"])
    assert request.state == RequestState.REJECTED and request.decision_reason.startswith("campaign cancelled: ")
    assert AuditLog.objects.filter(action="action_request.close", object_id=str(request.pk)).exists()
    told = Notification.objects.get(object_type="action_request", object_id=str(request.pk))
    assert told.recipients == ["marketer1@example.com"] and "campaign cancelled" in told.body
    assert _mcp(marketer, "action_request.status", {"action_request_id": request.pk})["state"] == "rejected"


def test_cancel_over_mcp_clears_the_approval_and_closes_waiting_requests(
    scheduled_with_a_waiting_update: dict[str, Any], marketer: Any
) -> None:
    case = scheduled_with_a_waiting_update
    out = _mcp(
        marketer,
        "campaigns.cancel_schedule",
        {"campaign_id": case["campaign_id"], "reason": "Offer withdrawn", "idempotency_key": key()},
    )
    assert out["result"]["closed_requests"] == [case["request_id"]] and out["result"]["approved"] is False
    _assert_cancelled_and_closed(marketer, case)


def test_cancel_over_rest(scheduled_with_a_waiting_update: dict[str, Any], marketer: Any, api_for: Any) -> None:
    case = scheduled_with_a_waiting_update
    response = api_for(marketer).post(
        f"/api/v1/campaigns/{case['campaign_id']}/cancel-schedule/",
        {"reason": "Offer withdrawn", "idempotency_key": key()},
        format="json",
    )
    assert response.status_code == 200, response.json()
    _assert_cancelled_and_closed(marketer, case)


def test_cancel_in_the_admin(scheduled_with_a_waiting_update: dict[str, Any], marketer: Any) -> None:
    case = scheduled_with_a_waiting_update
    client = Client()
    client.force_login(marketer)
    response = client.post(
        reverse("admin:campaigns_campaign_cancel", args=[case["campaign_id"]]),
        {"reason": "Offer withdrawn", "idempotency_key": key("adm")},
        follow=True,
    )
    assert any("done" in str(m) for m in response.context["messages"])
    _assert_cancelled_and_closed(marketer, case)
    assert Campaign.objects.get(pk=case["campaign_id"]).state == CampaignState.CANCELLED


def test_closing_twice_closes_once(scheduled_with_a_waiting_update: dict[str, Any], marketer: Any) -> None:
    from compliance.services import action_requests_close
    from smsplatform.kernel.actor import Actor

    closed = action_requests_close(
        actor=Actor.system("test"),
        requests=ActionRequest.objects.filter(pk=case_id(scheduled_with_a_waiting_update)),
        reason="x",
    )
    assert [c["action_request_id"] for c in closed] == [scheduled_with_a_waiting_update["request_id"]]
    # Already closed: a second close finds nothing pending.
    assert action_requests_close(actor=Actor.system("test"), requests=ActionRequest.objects.all(), reason="x") == []


def case_id(case: dict[str, Any]) -> int:
    return int(case["request_id"])
