"""Campaigns in the admin: the review page approvers decide from, and the marketing staff's forms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.dispatch import batches_advance
from campaigns.models import Campaign, CampaignState, CampaignVersion, SendBatch
from campaigns.services import campaign_create_draft, campaign_schedule, campaign_send_approved
from compliance.models import ActionRequest, RequestState
from compliance.roles import Role
from gateways.models import OutboundMessage
from smsplatform.models import AuditLog
from tests.support.campaigns import PHONES, TEXT, act, draft_data, fresh_short_link, key
from tests.support.mcp import tool_answer

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(campaign_id: int, view: str = "change") -> str:
    return reverse(f"admin:campaigns_campaign_{view}", args=[campaign_id])


def draft(world: dict[str, Any], user: Any, **overrides: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(user), data=draft_data(world, **overrides), idempotency_key=key("adm"))
    assert out["status"] == "executed", out
    return dict(out["result"])


def request_schedule(user: Any, created: dict[str, Any]) -> int:
    held = campaign_schedule(
        actor=act(user),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(hours=2)).isoformat(), "batch_size": 2},
        idempotency_key=key("adm"),
    )
    assert held["status"] == "pending_approval", held
    return int(held["action_request_id"])


def sent(world: dict[str, Any], marketer: Any, approver_user: Any, capture: Any, **overrides: Any) -> int:
    created = draft(world, marketer, **overrides)
    with capture(execute=True):
        out = campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("adm"),
        )
    assert out["status"] == "executed", out
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    return int(created["campaign_id"])


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- the list ---------------------------------------------------------------------------------------------


def test_list_shows_a_progress_bar_from_the_counters_in_one_query(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sent(world, marketer, approver_user, django_capture_on_commit_callbacks)
    draft(world, marketer, name="Summer", short_link_id=fresh_short_link(marketer))
    client = logged_in(approver_user)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(reverse("admin:campaigns_campaign_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "0 queued · 0 submitted · 3 delivered · 1 failed" in html and "Summer" in html
    # The counters the database keeps per batch (gateways.message_counts): no message is counted.
    assert not [q for q in queries.captured_queries if "gateways_outboundmessage" in q["sql"]]
    counter_queries = [q for q in queries.captured_queries if "gateways_batchmessagecount" in q["sql"]]
    assert len(counter_queries) == 1, counter_queries
    filtered = client.get(reverse("admin:campaigns_campaign_changelist"), {"state__exact": "draft", "q": "Summ"})
    assert [c.name for c in filtered.context["cl"].result_list] == ["Summer"]


def test_list_shows_only_own_campaigns_to_a_marketer(world: dict[str, Any], marketer: Any, make_user: Any) -> None:
    created = draft(world, marketer)
    other = logged_in(make_user(Role.MARKETING, username="marketer2"))
    page = other.get(reverse("admin:campaigns_campaign_changelist"))
    assert page.status_code == 200 and list(page.context["cl"].result_list) == []
    assert other.get(change_url(created["campaign_id"])).status_code == 302  # "does not exist" redirect
    decided = other.post(change_url(created["campaign_id"], "send"), {"idempotency_key": key("adm")})
    assert decided.status_code == 404


def test_roles_without_campaign_permissions_are_refused(world: dict[str, Any], marketer: Any, technical: Any) -> None:
    created = draft(world, marketer)
    client = logged_in(technical)  # CRM reads campaigns (for their reports); technical has no campaign role
    assert client.get(reverse("admin:campaigns_campaign_changelist")).status_code == 403
    assert client.get(reverse("admin:campaigns_sendbatch_changelist")).status_code == 403
    assert client.post(change_url(created["campaign_id"], "decide"), {"decision": "approve"}).status_code == 404


# --- the review page -------------------------------------------------------------------------------------


def test_review_page_shows_everything_an_approver_decides_on(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    created = draft(world, marketer, budget="100")
    request_id = request_schedule(marketer, created)
    page = logged_in(approver_user).get(change_url(created["campaign_id"]))
    assert page.status_code == 200
    html = page.content.decode()
    context = page.context
    # The message exactly as it will appear, and its parts.
    assert created["body_preview"] in html
    assert [p["number"] for p in context["parts"]] == [1, 2]
    assert "".join(p["text"] for p in context["parts"]) == created["body_preview"]
    assert "Reply STOP to opt out" in context["parts"][1]["text"] and "1/2" in html and "2/2" in html
    assert "UCS-2" in html and context["message_changed"] is False
    # Counts and exclusions, cost per country, quota, budget, short-link effect.
    assert context["preview"]["sendable"] == 4 and ("opted_out", 1) in context["exclusions"]
    assert "<b>4</b> sendable of 5 matched" in html and "2.80 HKD" in html and "camp-sim" in html
    assert "Budget: 100.00" in html and "extra cost 1.40 HKD" in html
    # Sender, schedule, link, versions.
    assert "#SHOPHK" in html and "batches of 1000" in html
    assert "https://shop.example.com/spring?utm_source=sms" in html and "per-recipient tokens" in html
    assert "Version history" in html and context["detail"]["versions"][0]["by"] == "marketer1"
    # The pending request, with the decision buttons.
    assert f"Request #{request_id}" in html and "Approve and execute" in html
    assert [r["request"].pk for r in context["pending_requests"]] == [request_id]
    # No phone number appears on the page.
    assert not any(phone in html for phone in PHONES.values())


def test_approve_from_the_review_page_schedules_the_campaign(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    created = draft(world, marketer)
    request_id = request_schedule(marketer, created)
    response = logged_in(approver_user).post(
        change_url(created["campaign_id"], "decide"),
        {"action_request_id": request_id, "decision": "approve", "reason": "copy and cost fine"},
        follow=True,
    )
    assert response.status_code == 200
    assert f"Request #{request_id} approved and executed." in messages_of(response)
    campaign = Campaign.objects.get(pk=created["campaign_id"])
    assert campaign.state == CampaignState.SCHEDULED and campaign.approved_by_id == approver_user.pk
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.EXECUTED
    assert AuditLog.objects.filter(action="action_request.approve", channel="admin").exists()
    assert "Approve and execute" not in response.content.decode()  # nothing left to decide


def test_reject_needs_a_reason(world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any) -> None:
    created = draft(world, marketer)
    request_id = request_schedule(marketer, created)
    client = logged_in(approver_user)
    url = change_url(created["campaign_id"], "decide")
    refused = client.post(url, {"action_request_id": request_id, "decision": "reject", "reason": " "}, follow=True)
    assert refused.status_code == 200
    assert any("needs a reason" in m for m in messages_of(refused))
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING
    rejected = client.post(
        url, {"action_request_id": request_id, "decision": "reject", "reason": "wrong offer"}, follow=True
    )
    assert f"Request #{request_id} rejected." in messages_of(rejected)
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.REJECTED
    assert "wrong offer" in rejected.content.decode()  # the request history


def test_the_requester_sees_no_buttons_and_cannot_approve_their_own_request(
    world: dict[str, Any], approver_user: Any, schedule_policy: Any
) -> None:
    created = draft(world, approver_user)
    request_id = request_schedule(approver_user, created)
    client = logged_in(approver_user)
    page = client.get(change_url(created["campaign_id"]))
    html = page.content.decode()
    assert "Approve and execute" not in html and "You made this request" in html
    response = client.post(
        change_url(created["campaign_id"], "decide"),
        {"action_request_id": request_id, "decision": "approve"},
        follow=True,
    )
    assert response.status_code == 200
    assert any("never decide their own request" in m for m in messages_of(response))
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING
    assert Campaign.objects.get(pk=created["campaign_id"]).state == CampaignState.PENDING_APPROVAL


def test_a_request_about_another_campaign_is_not_decided_here(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    first = draft(world, marketer)
    # Without a link: a short link belongs to one campaign.
    second = draft(world, marketer, name="Other", text=TEXT.replace(" {{link}}", ""), short_link_id=None)
    request_id = request_schedule(marketer, second)
    response = logged_in(approver_user).post(
        change_url(first["campaign_id"], "decide"),
        {"action_request_id": request_id, "decision": "approve"},
        follow=True,
    )
    assert any("not about this campaign" in m for m in messages_of(response))
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING


# --- the marketing staff's forms -----------------------------------------------------------------------------


def _add_form(world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "segment": world["segment_id"],
        "template_version": "",
        "text": TEXT,
        "brand": "ShopHK",
        "language": "bilingual",
        "variables": "{}",
        "short_link": world["short_link_id"],
        "sender_id": "#SHOPHK",
        "gateway": "",
        "tracking": "on",
        "send_goal": "Spring visits",
        "budget": "",
        "reason": "spring plan",
        "idempotency_key": key("adm-form"),
        **overrides,
    }


def test_marketer_add_form_creates_an_audited_draft(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    assert client.get(reverse("admin:campaigns_campaign_add")).status_code == 200
    response = client.post(reverse("admin:campaigns_campaign_add"), _add_form(world, gateway="camp-sim"))
    campaign = Campaign.objects.get()
    assert response.status_code == 302 and response["Location"] == change_url(campaign.pk)
    assert campaign.state == CampaignState.DRAFT and campaign.owner_id == marketer.pk
    assert campaign.gateway is not None and campaign.gateway.code == "camp-sim"
    entry = AuditLog.objects.get(action="campaign.create")
    assert entry.channel == "admin" and entry.user_id == marketer.pk and entry.reason == "spring plan"
    assert CampaignVersion.objects.filter(campaign=campaign, version=1).exists()
    page = client.get(change_url(campaign.pk))
    assert page.status_code == 200 and "Draft #" in " ".join(messages_of(page))


def test_add_form_keeps_the_free_copy_part_limit(world: dict[str, Any], marketer: Any) -> None:
    response = logged_in(marketer).post(reverse("admin:campaigns_campaign_add"), _add_form(world, max_segments="5"))
    assert response.status_code == 302
    assert Campaign.objects.get().max_segments == 5


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"text": "【ShopHK】Spring sale {{link}}"}, "text", "unsubscribe"),
        ({"sender_id": "#NOPE"}, "sender_id", "sender"),
        ({"variables": '["not", "a", "map"]'}, "variables", "variables"),
        ({"budget": "-5"}, "budget", "budget"),
        ({"max_segments": "11"}, "max_segments", "1 to 10"),
        ({"max_segments": "0"}, "max_segments", "1 to 10"),
    ],
)
def test_add_form_rule_failure_is_shown_on_its_field(
    world: dict[str, Any], marketer: Any, overrides: dict[str, Any], field: str, words: str
) -> None:
    response = logged_in(marketer).post(reverse("admin:campaigns_campaign_add"), _add_form(world, **overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert words in str(errors[field]).lower(), errors
    assert not Campaign.objects.exists()


def test_request_buttons_go_through_the_policy(
    world: dict[str, Any], marketer: Any, schedule_policy: Any, send_policy: Any
) -> None:
    created = draft(world, marketer)
    cid = created["campaign_id"]
    client = logged_in(marketer)
    page = client.get(change_url(cid))
    html = page.content.decode()
    assert "Request schedule" in html and "Request send now" in html
    assert 'name="confirm"' not in html  # a marketer's confirmation would not count anyway
    form = page.context["schedule_form"]
    assert form.initial["base_version_token"] == created["base_version_token"]

    send_at = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    body = {
        "send_at": send_at,
        "time_zone": "Asia/Hong_Kong",
        "batch_size": "2",
        "batch_interval_seconds": "0",
        "reason": "for the weekend",
        "base_version_token": created["base_version_token"],
        "idempotency_key": key("adm"),
    }
    response = client.post(change_url(cid, "schedule"), body, follow=True)
    assert any("held for approval as request" in m for m in messages_of(response))
    request = ActionRequest.objects.get(action="campaign.schedule")
    assert request.channel == "admin" and request.payload["schedule"]["batch_size"] == 2
    assert Campaign.objects.get(pk=cid).state == CampaignState.PENDING_APPROVAL
    # The same submit again (a double click) replays the first result.
    client.post(change_url(cid, "schedule"), body, follow=True)
    assert ActionRequest.objects.filter(action="campaign.schedule").count() == 1

    sent_now = client.post(
        change_url(cid, "send"),
        {"base_version_token": created["base_version_token"], "confirm": "on", "idempotency_key": key("adm")},
        follow=True,
    )
    assert any("Send request: held for approval" in m for m in messages_of(sent_now))
    assert not OutboundMessage.objects.exists()

    cancel_without_reason = client.post(change_url(cid, "cancel"), {"idempotency_key": key("adm")}, follow=True)
    assert any("reason" in m for m in messages_of(cancel_without_reason))
    cancelled = client.post(
        change_url(cid, "cancel"), {"reason": "offer withdrawn", "idempotency_key": key("adm")}, follow=True
    )
    assert any("cancelled_before_sending" in m for m in messages_of(cancelled))
    assert Campaign.objects.get(pk=cid).state == CampaignState.CANCELLED


def test_a_refused_request_is_an_admin_message_not_a_500(world: dict[str, Any], marketer: Any) -> None:
    created = draft(world, marketer)
    client = logged_in(marketer)
    response = client.post(
        change_url(created["campaign_id"], "send"),
        {"base_version_token": created["base_version_token"], "confirm": "on", "idempotency_key": key("adm")},
        follow=True,
    )
    assert response.status_code == 200
    assert any("Send request refused" in m and "confirm" in m for m in messages_of(response))
    stale = client.post(
        change_url(created["campaign_id"], "schedule"),
        {"send_at": "2099-01-01T10:00", "base_version_token": "9.0000", "idempotency_key": key("adm")},
        follow=True,
    )
    assert any("Schedule request refused" in m for m in messages_of(stale))
    assert Campaign.objects.get(pk=created["campaign_id"]).state == CampaignState.DRAFT
    assert not OutboundMessage.objects.exists()


# --- batches ---------------------------------------------------------------------------------------------------


def test_batches_are_listed_with_counts_and_linked_from_the_campaign(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    cid = sent(world, marketer, approver_user, django_capture_on_commit_callbacks)
    client = logged_in(marketer)
    review = client.get(change_url(cid))
    html = review.content.decode()
    assert review.context["batches_url"] in html and "3 delivered" in html
    assert "Request schedule" not in html and "Cancel campaign" not in html  # completed: nothing to request
    listing = client.get(review.context["batches_url"])
    assert listing.status_code == 200
    (batch,) = listing.context["cl"].result_list
    assert batch.campaign_id == cid
    assert '<td class="field-delivered">3</td>' in listing.content.decode()
    detail = client.get(reverse("admin:campaigns_sendbatch_change", args=[batch.pk]))
    assert detail.status_code == 200 and "&quot;delivered&quot;: 3" in detail.content.decode()
    for page in (review, listing, detail):
        assert not any(phone in page.content.decode() for phone in PHONES.values())
    assert SendBatch.objects.count() == 1


# --- a campaign past its pre-send check ------------------------------------------------------------------


def test_a_sending_or_sent_campaign_shows_progress_not_a_failed_live_check(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any, api_for: Any
) -> None:
    from types import SimpleNamespace

    from smsplatform.mcp.server import run_tool

    created = draft(world, marketer, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("adm"),
        )
    cid = created["campaign_id"]
    client = logged_in(approver_user)
    for expected in (CampaignState.SENDING, CampaignState.COMPLETED):
        assert Campaign.objects.get(pk=cid).state == expected
        html = client.get(change_url(cid)).content.decode()
        assert "The live check failed" not in html and "errornote" not in html
        assert 'id="send-state"' in html and "the pre-send check no longer applies" in html
        assert "queued" in html and "delivered" in html  # the progress figures
        for _ in range(6):  # bring the paced later batches forward, so the send completes now
            if Campaign.objects.get(pk=cid).state != CampaignState.SENDING:
                break
            SendBatch.objects.filter(campaign_id=cid).update(not_before=timezone.now())
            OutboundMessage.objects.filter(batch__campaign_id=cid).update(next_attempt_at=timezone.now())
            with django_capture_on_commit_callbacks(execute=True):
                batches_advance(budget_seconds=2)
    # The pre-send preview itself says where to look instead, on MCP and REST.
    result = run_tool("sms_marketing.cost_preview", {"campaign_id": cid}, SimpleNamespace(user=marketer, auth=None))
    error = tool_answer(result)["error"]
    assert result.isError and error["code"] == "campaign_state" and "send_batches.list" in error["hint"]
    response = api_for(marketer).get(f"/api/v1/campaigns/{cid}/cost-preview/")
    assert response.status_code == 400 and response.json()["error"]["code"] == "campaign_state"
    # A draft still gets its live check.
    other = draft(world, marketer, name="Next", short_link_id=fresh_short_link(marketer))
    html = client.get(change_url(other["campaign_id"])).content.decode()
    assert 'id="send-state"' not in html and "review-parts" in html
