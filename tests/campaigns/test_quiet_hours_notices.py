"""A send that quiet hours would hold says so (issue 13 item 16): create_draft, update and
cost_preview answer a structured notice (which rule, when the first message can go) on MCP and
REST, and seed_demo's output names the demo's HK quiet hours and whether they hold a send now."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.utils import timezone

from campaigns.quiet_hours import quiet_hours_notices
from gateways.models import Gateway
from smsplatform.mcp.server import run_tool
from tests.support.campaigns import draft_data, key, set_quiet_hours

pytestmark = pytest.mark.django_db

HK = ZoneInfo("Asia/Hong_Kong")


def _quiet_around_now() -> datetime:
    """HK quiet hours from an hour ago to two hours ahead (HK time); returns when they end."""
    now = timezone.now().astimezone(HK).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    set_quiet_hours({"HK": {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "time_zone": "Asia/Hong_Kong"}})
    return end


def _quiet_elsewhere() -> None:
    now = timezone.now().astimezone(HK)
    start, end = now + timedelta(hours=3), now + timedelta(hours=4)
    set_quiet_hours({"HK": {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "time_zone": "Asia/Hong_Kong"}})


def _mcp(user: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(f"sms_marketing.{name}", args, SimpleNamespace(user=user, auth=None))
    assert not result.isError, result.structuredContent
    return dict(result.structuredContent or {})


def test_create_draft_update_and_cost_preview_say_when_quiet_hours_hold_the_send(
    world: dict[str, Any], marketer: Any, api_for: Any
) -> None:
    end = _quiet_around_now()
    created = _mcp(marketer, "campaigns.create_draft", {**draft_data(world), "idempotency_key": key()})["result"]
    [notice] = created["notices"]
    assert notice["kind"] == "quiet_hours" and notice["country"] == "HK"
    assert notice["rule"].startswith("schedule.quiet_hours.HK: ") and "Asia/Hong_Kong" in notice["rule"]
    assert datetime.fromisoformat(notice["first_send_at"]) == end
    assert f"{end:%H:%M}" in notice["message"] and notice["message"].startswith("Sent now")

    preview = _mcp(marketer, "cost_preview", {"campaign_id": created["campaign_id"]})
    assert [n["country"] for n in preview["notices"]] == ["HK"]
    rest = api_for(marketer).get(f"/api/v1/campaigns/{created['campaign_id']}/cost-preview/").json()
    assert [n["first_send_at"] for n in rest["notices"]] == [n["first_send_at"] for n in preview["notices"]]

    updated = _mcp(
        marketer,
        "campaigns.update",
        {
            "campaign_id": created["campaign_id"],
            "base_version_token": created["base_version_token"],
            "changes": {"text": draft_data(world)["text"] + " "},
            "idempotency_key": key(),
        },
    )
    assert updated["status"] == "executed" and [n["country"] for n in updated["result"]["notices"]] == ["HK"]

    _quiet_elsewhere()
    assert _mcp(marketer, "cost_preview", {"campaign_id": created["campaign_id"]})["notices"] == []


def test_a_send_time_inside_quiet_hours_is_named_for_that_time(world: dict[str, Any]) -> None:
    set_quiet_hours({"HK": {"start": "21:00", "end": "09:00", "time_zone": "Asia/Hong_Kong"}})
    at = (timezone.now() + timedelta(days=2)).astimezone(HK).replace(hour=23, minute=0, second=0, microsecond=0)
    [notice] = quiet_hours_notices(["HK", "ZZ"], at)
    assert notice["message"].startswith("At its send time")
    assert datetime.fromisoformat(notice["first_send_at"]) == (at + timedelta(days=1)).replace(hour=9)
    assert quiet_hours_notices(["HK"], at.replace(hour=12)) == []


def test_seed_demo_names_the_hk_quiet_hours_and_whether_they_hold_a_send_now() -> None:
    Gateway.objects.filter(code="simulator").delete()
    _quiet_around_now()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "Quiet hours: HK" in text and "Now: Sent now, messages to HK fall in its quiet hours" in text
    _quiet_elsewhere()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "Quiet hours: HK" in out.getvalue() and "Now:" not in out.getvalue()


def test_a_send_now_inside_quiet_hours_says_when_it_goes(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    end = _quiet_around_now()
    created = _mcp(marketer, "campaigns.create_draft", {**draft_data(world), "idempotency_key": key()})["result"]
    with django_capture_on_commit_callbacks(execute=True):
        sent = _mcp(
            approver_user,
            "campaigns.send_approved",
            {
                "campaign_id": created["campaign_id"],
                "base_version_token": created["base_version_token"],
                "confirm": True,
                "idempotency_key": key(),
            },
        )
    [notice] = sent["result"]["notices"]
    assert notice["country"] == "HK" and datetime.fromisoformat(notice["first_send_at"]) == end
