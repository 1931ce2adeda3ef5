"""The demo roles' schedule paths (issue 13 item 3) with the official MCP client against a live
server, as seed_demo leaves the installation: marketing is held for an approver (its confirm does
not count, and the answer says so), the approver schedules on their own confirmation, CRM may not."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from mcp import ClientSession

from campaigns.models import Campaign, CampaignState
from campaigns.spec import campaign_token
from gateways.models import Gateway
from smsplatform.management.commands.seed_demo import demo_key
from tests.support.mcp import run, tool_answer

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_demo_role_has_its_schedule_path_over_mcp(live_server: Any) -> None:
    Gateway.objects.filter(code="simulator").delete()  # the suite's placeholder; seed_demo makes the real one
    call_command("seed_demo", "--quiet", stdout=io.StringIO())
    campaign = Campaign.objects.get(name="Demo weekend sale")
    url = f"{live_server.url}/mcp"

    def schedule(username: str, n: int, **extra: Any) -> dict[str, Any]:
        campaign.refresh_from_db()
        args = {
            "campaign_id": campaign.pk,
            "base_version_token": campaign_token(campaign),
            "send_at": (timezone.now() + timedelta(days=1)).isoformat(),
            "idempotency_key": f"demo-path-{username}-{n}",
            **extra,
        }

        async def body(session: ClientSession) -> dict[str, Any]:
            result = await session.call_tool("sms_marketing.campaigns.schedule", args)
            return tool_answer(result)

        return dict(run(url, demo_key(username), body))

    held = schedule("demo_marketing", 1, confirm=True)
    assert held["status"] == "pending_approval" and held["required_role"] == "approver", held
    assert "confirm=true did not count" in held["hint"]
    assert Campaign.objects.get(pk=campaign.pk).state == CampaignState.PENDING_APPROVAL

    assert schedule("demo_crm", 2)["error"]["code"] == "permission_denied"

    done = schedule("demo_approver", 3, confirm=True)
    assert done["status"] == "executed" and done["result"]["state"] == "scheduled", done
