"""The action request page of a campaign request says what approving will do, in human terms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.services import campaign_schedule, campaign_send_approved, campaign_update
from compliance.models import ActionRequest, ActionType, RequestState
from tests.campaigns.test_admin import draft
from tests.support.campaigns import act, key, policy

pytestmark = pytest.mark.django_db


def page(user: Any, request_id: int) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("admin:compliance_actionrequest_change", args=[request_id]))
    assert response.status_code == 200
    return str(response.content.decode())


def test_send_request_shows_campaign_copy_sender_link_recipients_and_cost_with_currency(
    world: dict[str, Any], marketer: Any, approver_user: Any, send_policy: Any
) -> None:
    created = draft(world, marketer)
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        idempotency_key=key("page"),
    )
    assert held["status"] == "pending_approval", held
    html = page(approver_user, held["action_request_id"])
    review_url = reverse("admin:campaigns_campaign_change", args=[created["campaign_id"]])
    assert f'href="{review_url}" id="request-campaign-link">Spring sale</a>' in html
    assert "春季優惠全場8折" in html  # the copy as it will appear
    assert "#SHOPHK" in html and "https://shop.example.com/spring" in html
    assert "<b>Now</b>, when approved" in html
    assert "<b>4</b> when requested" in html  # five contacts, the opted-out one excluded
    assert "<b>2.80 HKD</b> when requested" in html  # 4 x 2 parts x 0.35, with its currency
    assert 'id="decision"' in html and "raw payload (JSON)" in html


def test_schedule_request_shows_the_time_in_its_time_zone(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    created = draft(world, marketer)
    send_at = (timezone.now() + timedelta(days=2)).replace(hour=2, minute=30, second=0, microsecond=0)  # 10:30 HKT
    held = campaign_schedule(
        actor=act(marketer),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        schedule={"send_at": send_at.isoformat(), "time_zone": "Asia/Hong_Kong"},
        idempotency_key=key("page"),
    )
    html = page(approver_user, held["action_request_id"])
    assert f"<b>{send_at.strftime('%Y-%m-%d')} 10:30" in html and "Asia/Hong_Kong" in html


def test_outcome_names_the_approver_by_username(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    created = draft(world, marketer)
    held = campaign_schedule(
        actor=act(marketer),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(hours=3)).isoformat()},
        idempotency_key=key("page"),
    )
    client = Client()
    client.force_login(approver_user)
    client.post(
        reverse("admin:compliance_actionrequest_decide", args=[held["action_request_id"]]), {"decision": "approve"}
    )
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    outcome = request.outcome or {}
    assert request.state == RequestState.EXECUTED and outcome["result"]["approved_by"] == approver_user.pk
    html = page(approver_user, request.pk)
    assert '<th scope="row">approved by</th><td>approver1</td>' in html


def test_update_request_shows_the_changes_beside_the_current_copy(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    policy(ActionType.CAMPAIGN_UPDATE)
    created = draft(world, marketer)
    held = campaign_update(
        actor=act(marketer),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        changes={"name": "Spring sale, members"},
        idempotency_key=key("page"),
    )
    assert held["status"] == "pending_approval", held
    html = page(approver_user, held["action_request_id"])
    assert "Message now (before the changes below)" in html
    assert '<th scope="row">name</th><td>Spring sale, members</td>' in html
