"""Who approved a campaign, readable: beside the approver's user id, their username, in
campaigns.get / campaigns.list (MCP and REST) and in the answer of the write that approved it
(the approval's outcome, an approver's confirmed send). Empty before any approval and again once
a cancel withdraws it; the advertised output schema requires both fields."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from jsonschema import Draft202012Validator

from campaigns.models import Campaign
from compliance.models import ActionRequest
from compliance.services import action_request_approve
from smsplatform.mcp.registry import registered_tools
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db

GET = "sms_marketing.campaigns.get"


def _spec(name: str) -> Any:
    return next(s for s in registered_tools() if s.name == name)


def _call(name: str, user: Any, args: dict[str, Any]) -> dict[str, Any]:
    spec = _spec(name)
    out = spec.handler(act(user), dict(args))
    errors = sorted(Draft202012Validator(spec.output_schema).iter_errors(out), key=str)
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"
    return dict(out)


def test_the_approvers_username_stands_beside_their_id(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any, api_for: Any
) -> None:
    created = _call("sms_marketing.campaigns.create_draft", marketer, {**draft_data(world), "idempotency_key": key()})
    cid = created["result"]["campaign_id"]
    approval = _call(GET, marketer, {"campaign_id": cid})["approval"]
    assert (approval["approved_by"], approval["approved_by_username"]) == (None, None)

    held = _call(
        "sms_marketing.campaigns.schedule",
        marketer,
        {
            "campaign_id": cid,
            "base_version_token": created["result"]["base_version_token"],
            "send_at": (timezone.now() + timedelta(hours=2)).isoformat(),
            "idempotency_key": key(),
        },
    )
    assert held["status"] == "pending_approval", held
    decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "executed", decided
    result = (ActionRequest.objects.get(pk=held["action_request_id"]).outcome or {})["result"]
    assert (result["approved_by"], result["approved_by_username"]) == (approver_user.pk, "approver1")

    got = _call(GET, marketer, {"campaign_id": cid})
    assert got["approval"]["approved_by"] == approver_user.pk
    assert got["approval"]["approved_by_username"] == "approver1"
    assert got["review"]["approved_by"] == "approver1"
    listed = _call("sms_marketing.campaigns.list", marketer, {})["campaigns"]
    assert [c["approval"]["approved_by_username"] for c in listed if c["campaign_id"] == cid] == ["approver1"]
    rest = api_for(marketer).get(f"/api/v1/campaigns/{cid}/").json()
    assert (rest["approval"]["approved_by"], rest["approval"]["approved_by_username"]) == (
        approver_user.pk,
        "approver1",
    )

    # A cancel withdraws the approval: both go back to empty, never a stale name.
    cancelled = _call(
        "sms_marketing.campaigns.cancel_schedule",
        approver_user,
        {"campaign_id": cid, "reason": "postponed", "idempotency_key": key()},
    )
    assert cancelled["status"] == "executed", cancelled
    approval = _call(GET, marketer, {"campaign_id": cid})["approval"]
    assert (approval["approved_by"], approval["approved_by_username"]) == (None, None)


def test_an_approvers_confirmed_send_answers_with_their_username(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    created = _call("sms_marketing.campaigns.create_draft", marketer, {**draft_data(world), "idempotency_key": key()})
    sent = _call(
        "sms_marketing.campaigns.send_approved",
        approver_user,
        {
            "campaign_id": created["result"]["campaign_id"],
            "base_version_token": created["result"]["base_version_token"],
            "confirm": True,
            "idempotency_key": key(),
        },
    )
    assert sent["status"] == "executed", sent
    assert (sent["result"]["approved_by"], sent["result"]["approved_by_username"]) == (approver_user.pk, "approver1")
    assert Campaign.objects.get(pk=created["result"]["campaign_id"]).approved_by_id == approver_user.pk


def test_the_schema_requires_the_username_beside_the_id(world: dict[str, Any], marketer: Any) -> None:
    created = _call("sms_marketing.campaigns.create_draft", marketer, {**draft_data(world), "idempotency_key": key()})
    got = _call(GET, marketer, {"campaign_id": created["result"]["campaign_id"]})
    validator = Draft202012Validator(_spec(GET).output_schema)
    for broken in ({"approved_by_username": 7}, {"approved_by": "approver1"}):
        answer = copy.deepcopy(got)
        answer["approval"].update(broken)
        assert list(validator.iter_errors(answer)), broken
    answer = copy.deepcopy(got)
    del answer["approval"]["approved_by_username"]
    assert list(validator.iter_errors(answer))
