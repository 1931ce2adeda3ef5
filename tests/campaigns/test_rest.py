"""Campaigns through REST (/api/v1/): each endpoint, and each safety rule tried through it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from campaigns.dispatch import batches_advance
from campaigns.models import Campaign, CampaignState, CampaignVersion
from compliance.models import ActionRequest, RequestState
from compliance.roles import Role
from compliance.services import action_request_approve
from gateways.models import OutboundMessage
from smsplatform.models import AuditLog
from tests.support.campaigns import PHONES, act, draft_data, key

pytestmark = pytest.mark.django_db

BASE = "/api/v1/campaigns/"


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field", "hint"} <= set(body["error"])
    return dict(body["error"])


def create(api: Any, world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    response = api.post(BASE, {**draft_data(world, **overrides), "idempotency_key": key("rest")}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "executed"
    return dict(response.json()["result"])


def in_an_hour() -> str:
    return (timezone.now() + timedelta(hours=1)).isoformat()


def sent_campaign(
    api_for: Any, world: dict[str, Any], marketer: Any, approver_user: Any, capture: Any
) -> dict[str, Any]:
    """The marketer drafts; an approver who may confirm sends it now; the simulator answers."""
    draft = create(api_for(marketer), world)
    with capture(execute=True):
        response = api_for(approver_user).post(
            f"{BASE}{draft['campaign_id']}/send/",
            {"base_version_token": draft["base_version_token"], "confirm": True, "idempotency_key": key("rest")},
            format="json",
        )
    assert response.status_code == 200, response.json()
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.COMPLETED
    return draft


# --- happy paths ----------------------------------------------------------------------------------------


def test_create_list_get_update_and_cost_preview(api_for: Any, world: dict[str, Any], marketer: Any) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    cid = draft["campaign_id"]
    assert draft["state"] == "draft" and draft["recipients"] == 4
    entry = AuditLog.objects.get(action="campaign.create", object_id=str(cid))
    assert entry.channel == "api" and entry.token_name.startswith("test-token")

    listed = api.get(BASE, {"state": "draft", "limit": 10}).json()
    assert [c["campaign_id"] for c in listed["campaigns"]] == [cid]
    assert api.get(BASE, {"state": "scheduled"}).json()["count"] == 0

    got = api.get(f"{BASE}{cid}/").json()
    assert got["base_version_token"] == draft["base_version_token"] and got["versions"][0]["version"] == 1

    updated = api.patch(
        f"{BASE}{cid}/",
        {
            "base_version_token": got["base_version_token"],
            "changes": {"name": "Spring sale (final)", "send_goal": "Visits", "budget": "50.00"},
            "reason": "final copy",
            "idempotency_key": key("rest"),
        },
        format="json",
    )
    assert updated.status_code == 200, updated.json()
    result = updated.json()["result"]
    assert result["version"] == 2 and result["changed"] == ["budget", "name", "send_goal"]
    campaign = Campaign.objects.get(pk=cid)
    assert campaign.name == "Spring sale (final)" and str(campaign.budget) == "50.00"
    assert CampaignVersion.objects.filter(campaign=campaign).count() == 2

    preview = api.get(f"{BASE}{cid}/cost-preview/").json()
    assert preview["sendable"] == 4 and preview["exclusions"]["opted_out"] == 1
    assert preview["estimated_cost"] == {"HKD": "2.80"} and len(preview["message"]["parts"]) == 2
    assert preview["budget"]["campaign_budget"] == "50.00" and preview["quota"]["within"] is True


def test_create_retried_with_the_same_key_returns_the_first_result(
    api_for: Any, world: dict[str, Any], marketer: Any
) -> None:
    api = api_for(marketer)
    body = {**draft_data(world), "idempotency_key": key("rest")}
    first = api.post(BASE, body, format="json").json()
    again = api.post(BASE, body, format="json").json()
    assert first == again and Campaign.objects.count() == 1
    reused = api.post(BASE, {**body, "name": "Other"}, format="json")
    assert error_of(reused, 409)["code"] == "idempotency_key_reused"


def test_schedule_is_held_for_approval_then_approved(
    api_for: Any, world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    cid = draft["campaign_id"]
    response = api.post(
        f"{BASE}{cid}/schedule/",
        {
            "base_version_token": draft["base_version_token"],
            "send_at": in_an_hour(),
            "batch_size": 2,
            "batch_interval_seconds": 0,
            "reason": "spring",
            "idempotency_key": key("rest"),
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    held = response.json()
    assert held["status"] == "pending_approval" and held["required_role"] == Role.APPROVER
    assert Campaign.objects.get(pk=cid).state == CampaignState.PENDING_APPROVAL
    listed = api.get(BASE).json()["campaigns"][0]
    assert listed["approval"]["pending_requests"][0]["action_request_id"] == held["action_request_id"]

    decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "executed", decided
    campaign = Campaign.objects.get(pk=cid)
    assert campaign.state == CampaignState.SCHEDULED and campaign.batch_size == 2
    assert PeriodicTask.objects.get(name=f"campaign:{cid}").enabled


def test_cancel_a_scheduled_campaign(api_for: Any, world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    draft = create(api_for(marketer), world)
    cid = draft["campaign_id"]
    scheduled = api_for(approver_user).post(
        f"{BASE}{cid}/schedule/",
        {
            "base_version_token": draft["base_version_token"],
            "send_at": in_an_hour(),
            "confirm": True,
            "idempotency_key": key("rest"),
        },
        format="json",
    )
    assert scheduled.status_code == 200 and scheduled.json()["result"]["state"] == "scheduled", scheduled.json()
    api = api_for(marketer)
    assert (
        error_of(api.post(f"{BASE}{cid}/cancel-schedule/", {"idempotency_key": key("rest")}), 400)["field"] == "reason"
    )
    response = api.post(
        f"{BASE}{cid}/cancel-schedule/", {"reason": "offer withdrawn", "idempotency_key": key("rest")}, format="json"
    )
    assert response.status_code == 200, response.json()
    result = response.json()["result"]
    assert result["outcome"] == "cancelled_before_sending" and result["affected_recipients"] == 4
    assert Campaign.objects.get(pk=cid).state == CampaignState.CANCELLED
    assert not PeriodicTask.objects.filter(name=f"campaign:{cid}").exists()  # no beat entry is left behind


def test_send_batches_delivery_status_retry_and_resend(
    api_for: Any,
    world: dict[str, Any],
    marketer: Any,
    approver_user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    draft = sent_campaign(api_for, world, marketer, approver_user, django_capture_on_commit_callbacks)
    cid = draft["campaign_id"]
    api = api_for(marketer)

    # Once completed, there is nothing left to cancel.
    refused = api.post(f"{BASE}{cid}/cancel-schedule/", {"reason": "late", "idempotency_key": key("rest")})
    assert error_of(refused, 400)["code"] == "campaign_not_cancellable"

    batches = api.get(f"{BASE}{cid}/batches/").json()
    assert batches["campaign_state"] == "completed"
    assert sum(b["delivered"] for b in batches["batches"]) == 3
    assert sum(b["failed"] for b in batches["batches"]) == 1

    status = api.get("/api/v1/delivery-status/", {"phone": PHONES["undelivered"], "campaign_id": cid}).json()
    assert status["phones_masked"] is True
    (failed,) = status["messages"]
    assert failed["state"] == "failed" and failed["phone"] != PHONES["undelivered"] and "*" in failed["phone"]
    assert PHONES["undelivered"] not in str(status)
    one = api.get("/api/v1/delivery-status/", {"message_id": failed["message_id"]}).json()
    assert one["messages"][0]["resend"] == {"eligible": True, "reason": "temporary_failure"}

    retry = api.get(f"{BASE}{cid}/retry-preview/").json()
    assert (retry["failed"], retry["eligible"], retry["excluded"]) == (1, 1, {})
    body = {"retry_preview_id": retry["retry_preview_id"], "reason": "network", "idempotency_key": key("rest")}
    resent = api.post("/api/v1/failed-messages/resend/", body, format="json")
    assert resent.status_code == 200, resent.json()
    assert OutboundMessage.objects.filter(resend_of__isnull=False).count() == 1
    again = api.post("/api/v1/failed-messages/resend/", {**body, "idempotency_key": key("rest")}, format="json")
    assert error_of(again, 409)["code"] == "preview_already_used"


# --- safety rules through REST ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"idempotency_key": None}, "idempotency_key_required", "idempotency_key"),
        ({"idempotency_key": "short"}, "validation_error", "idempotency_key"),
        ({"state": "approved"}, "validation_error", "state"),
        ({"approved_version": 1}, "validation_error", "approved_version"),
        ({"segment_id": "members"}, "validation_error", "segment_id"),
        ({"variables": {"offer": {"pct": 20}}}, "validation_error", "variables.offer"),
        ({"tracking": "sometimes"}, "validation_error", "tracking"),
        ({"budget": "lots"}, "validation_error", "budget"),
        ({"name": None}, "validation_error", "name"),
        ({"segment_id": 999999}, "not_found", "segment_id"),
        ({"max_segments": 11}, "validation_error", "max_segments"),
        ({"text": "Spring sale {{link}}"}, None, None),  # a rule failure (no brand / opt-out wording)
    ],
)
def test_create_draft_bad_input_is_a_structured_error(
    api_for: Any, world: dict[str, Any], marketer: Any, change: dict[str, Any], code: str | None, field: str | None
) -> None:
    body = {**draft_data(world), "idempotency_key": key("rest"), **change}
    body = {k: v for k, v in body.items() if not (k == "idempotency_key" and v is None)}
    response = api_for(marketer).post(BASE, body, format="json")
    assert response.status_code in (400, 404), response.json()
    error = error_of(response, response.status_code)
    if code is not None:
        assert (error["code"], error["field"]) == (code, field), error
    assert error["hint"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("raw", ["{oops", "[1, 2]", '"text"'])
def test_create_draft_malformed_body(api_for: Any, marketer: Any, roles: Any, raw: str) -> None:
    response = api_for(marketer).generic("POST", BASE, raw, content_type="application/json")
    assert error_of(response, 400)["code"] in ("malformed_request", "validation_error")


def test_update_refuses_protected_fields_stale_and_missing_tokens(
    api_for: Any, world: dict[str, Any], marketer: Any
) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    url = f"{BASE}{draft['campaign_id']}/"
    token = draft["base_version_token"]

    def patch(**body: Any) -> Any:
        return api.patch(url, {"idempotency_key": key("rest"), **body}, format="json")

    for protected in ({"state": "scheduled"}, {"approved_version": 1}, {"approved_by": 1}, {"version": 9}):
        error = error_of(patch(base_version_token=token, changes=protected), 400)
        assert error["field"] == f"changes.{next(iter(protected))}" and "never set" in error["hint"]
    error = error_of(patch(base_version_token=token, changes={"name": "x"}, state="approved"), 400)
    assert error["field"] == "state"
    assert error_of(patch(base_version_token=token, changes={}), 400)["field"] == "changes"
    assert error_of(patch(base_version_token=token, changes="name"), 400)["field"] == "changes"
    assert error_of(patch(base_version_token=token, changes={"tracking": "yes please"}), 400)["field"] == (
        "changes.tracking"
    )
    assert error_of(patch(base_version_token=token, changes={"batch_size": 0}), 400)["field"] == "changes.batch_size"
    assert error_of(patch(base_version_token=token, changes={"max_segments": 11}), 400)["field"].endswith(
        "max_segments"
    )
    assert error_of(patch(changes={"name": "x"}), 400)["code"] == "version_token_required"
    missing_key = api.patch(url, {"base_version_token": token, "changes": {"name": "x"}}, format="json")
    assert error_of(missing_key, 400)["code"] == "idempotency_key_required"

    assert patch(base_version_token=token, changes={"name": "Second"}).status_code == 200
    stale = error_of(patch(base_version_token=token, changes={"name": "Third"}), 409)
    assert stale["code"] == "stale_version_token"
    assert stale["details"]["current_version_token"] == api.get(url).json()["base_version_token"]
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert (campaign.name, campaign.version, campaign.state) == ("Second", 2, CampaignState.DRAFT)


def test_marketers_confirm_does_not_send(api_for: Any, world: dict[str, Any], marketer: Any) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    response = api.post(
        f"{BASE}{draft['campaign_id']}/send/",
        {"base_version_token": draft["base_version_token"], "confirm": True, "idempotency_key": key("rest")},
        format="json",
    )
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == ("campaign_not_approved", "confirm")
    assert not OutboundMessage.objects.exists()
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.DRAFT


def test_send_is_held_for_approval_under_a_policy(
    api_for: Any, world: dict[str, Any], marketer: Any, send_policy: Any
) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    body = {"base_version_token": draft["base_version_token"], "confirm": True, "idempotency_key": key("rest")}
    response = api.post(f"{BASE}{draft['campaign_id']}/send/", body, format="json")
    assert response.status_code == 202 and response.json()["status"] == "pending_approval"
    assert ActionRequest.objects.get().state == RequestState.PENDING
    assert not OutboundMessage.objects.exists()


def test_cancel_of_a_completed_campaign_is_refused(api_for: Any, world: dict[str, Any], marketer: Any) -> None:
    api = api_for(marketer)
    draft = create(api, world)
    Campaign.objects.filter(pk=draft["campaign_id"]).update(state=CampaignState.COMPLETED)
    response = api.post(
        f"{BASE}{draft['campaign_id']}/cancel-schedule/",
        {"reason": "too late", "idempotency_key": key("rest")},
        format="json",
    )
    assert error_of(response, 400)["code"] == "campaign_not_cancellable"
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.COMPLETED


def test_resend_takes_only_a_preview_id(api_for: Any, marketer: Any, roles: Any) -> None:
    api = api_for(marketer)
    url = "/api/v1/failed-messages/resend/"
    missing = error_of(api.post(url, {"idempotency_key": key("rest")}, format="json"), 400)
    assert missing["field"] == "retry_preview_id"
    widened = api.post(
        url, {"retry_preview_id": "x", "message_ids": [1, 2], "idempotency_key": key("rest")}, format="json"
    )
    assert error_of(widened, 400)["field"] == "message_ids"
    unknown = api.post(
        url,
        {"retry_preview_id": "6d3f1c55-8a55-4f55-9d55-2b55c55d55e5", "idempotency_key": key("rest")},
        format="json",
    )
    assert error_of(unknown, 404)["code"] == "preview_not_found"


def test_another_users_campaign_is_invisible(
    api_for: Any, world: dict[str, Any], marketer: Any, make_user: Any
) -> None:
    draft = create(api_for(marketer), world)
    cid = draft["campaign_id"]
    other = api_for(make_user(Role.MARKETING, username="marketer2"))
    assert other.get(BASE).json()["count"] == 0
    for path in ("", "cost-preview/", "batches/", "retry-preview/"):
        assert error_of(other.get(f"{BASE}{cid}/{path}"), 404)["code"] == "not_found"
    patched = other.patch(
        f"{BASE}{cid}/",
        {"base_version_token": draft["base_version_token"], "changes": {"name": "x"}, "idempotency_key": key("r")},
        format="json",
    )
    assert error_of(patched, 404)["code"] == "not_found"
    token = draft["base_version_token"]
    for path, body in (
        ("schedule/", {"base_version_token": token, "send_at": in_an_hour()}),
        ("send/", {"base_version_token": token}),
        ("cancel-schedule/", {"reason": "mine now"}),
    ):
        response = other.post(f"{BASE}{cid}/{path}", {**body, "idempotency_key": key("r")}, format="json")
        assert error_of(response, 404)["code"] == "not_found"
    assert Campaign.objects.get(pk=cid).name == "Spring sale"


def test_permissions_and_query_validation(
    api_for: Any, world: dict[str, Any], marketer: Any, technical: Any, client: Any
) -> None:
    assert error_of(client.get(BASE), 401)["code"] == "authentication_required"
    # Technical staff run gateways and integrations, not campaigns (CRM reads campaigns for their reports).
    denied = api_for(technical).get(BASE)
    assert error_of(denied, 403)["code"] == "permission_denied"
    api = api_for(marketer)
    assert error_of(api.get(BASE, {"state": "sent"}), 400)["field"] == "state"
    assert error_of(api.get(BASE, {"limit": "many"}), 400)["field"] == "limit"
    assert error_of(api.get(BASE, {"owner": "someone"}), 400)["field"] == "owner"
    assert error_of(api.get("/api/v1/delivery-status/"), 400)["field"] == "message_id"
    assert error_of(api.get("/api/v1/delivery-status/", {"message_id": "x"}), 400)["field"] == "message_id"
    assert error_of(api.get(f"{BASE}12345/"), 404)["code"] == "not_found"
    assert error_of(api.delete(f"{BASE}12345/"), 405)["code"] == "method_not_allowed"


def test_openapi_documents_every_campaign_endpoint_without_warnings(client: Any) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    operations = {
        ("/api/v1/campaigns/", "get"): "campaigns_list",
        ("/api/v1/campaigns/", "post"): "campaigns_create_draft",
        ("/api/v1/campaigns/{campaign_id}/", "get"): "campaigns_get",
        ("/api/v1/campaigns/{campaign_id}/", "patch"): "campaigns_update",
        ("/api/v1/campaigns/{campaign_id}/cost-preview/", "get"): "cost_preview",
        ("/api/v1/campaigns/{campaign_id}/schedule/", "post"): "campaigns_schedule",
        ("/api/v1/campaigns/{campaign_id}/cancel-schedule/", "post"): "campaigns_cancel_schedule",
        ("/api/v1/campaigns/{campaign_id}/send/", "post"): "campaigns_send_approved",
        ("/api/v1/campaigns/{campaign_id}/batches/", "get"): "send_batches_list",
        ("/api/v1/campaigns/{campaign_id}/retry-preview/", "get"): "failed_messages_retry_preview",
        ("/api/v1/delivery-status/", "get"): "delivery_status_get",
        ("/api/v1/failed-messages/resend/", "post"): "failed_messages_resend",
    }
    for (path, method), operation_id in operations.items():
        assert paths[path][method]["operationId"] == operation_id
    assert "202" in paths["/api/v1/campaigns/{campaign_id}/schedule/"]["post"]["responses"]

    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        SchemaGenerator().get_schema(request=None, public=True)
    messages = [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
    assert not [m for m in messages if "campaigns" in m.lower()], messages
