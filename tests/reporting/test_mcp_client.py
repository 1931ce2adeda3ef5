"""The two reporting tools through the official MCP client against a live server: listed with their
catalogue notes, answers valid against their output schemas (the client checks), errors structured."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import ClientSession, types

from reporting.models import PerformanceSnapshot, ReviewNotification
from smsplatform.mcp.catalogue import catalogue
from tests.reporting.conftest import key
from tests.support.mcp import run, structured, tool_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_gateways")]

TOOLS = ("sms_marketing.performance_snapshot.record", "sms_marketing.review_notification.send")


def test_listed_and_called_with_the_official_client(
    live_server: Any, token_for: Any, owner: Any, ops: Any, campaign: Any
) -> None:
    url = f"{live_server.url}/mcp"
    snapshot = {
        "subject": {"campaign_id": campaign.pk},
        "source_kind": "ad_platform",
        "source_name": "Ads manager",
        "date_from": "2026-05-01",
        "date_to": "2026-05-07",
        "metrics": {"clicks": 80, "unique_clicks": 70, "conversions": 4, "revenue": "1200.00"},
        "attribution": {"model": "last_touch", "click_window_hours": 120},
        "evidence": {"url": "https://ads.example.com/report/1", "sha256": "b" * 64},
        "idempotency_key": key("live"),
    }

    async def body(session: ClientSession) -> dict[str, Any]:
        return {
            "tools": await session.list_tools(),
            "record": await session.call_tool(TOOLS[0], snapshot),
            "impossible": await session.call_tool(
                TOOLS[0], {**snapshot, "metrics": {"clicks": 5, "unique_clicks": 6}, "idempotency_key": key("live")}
            ),
            "send": await session.call_tool(
                TOOLS[1],
                {
                    "kind": "poor_roi",
                    "subject": {"campaign_id": campaign.pk},
                    "title": "ROI below target",
                    "body": "Revenue HKD 1,200.00 on cost HKD 1,500.00 for 1-7 May.",
                    "idempotency_key": key("live"),
                },
            ),
            "phone": await session.call_tool(
                TOOLS[1],
                {
                    "kind": "poor_roi",
                    "subject": {"campaign_id": campaign.pk},
                    "title": "ROI below target",
                    "body": "Ask 9876 5432 why.",
                    "idempotency_key": key("live"),
                },
            ),
        }

    out = run(url, token_for(owner, "agent"), body)
    listed: dict[str, types.Tool] = {t.name: t for t in out["tools"].tools}
    for name in TOOLS:
        tool, entry = listed[name], catalogue()[name]
        assert entry["safety"]["en"] in (tool.description or "") and entry["safety"]["zh"] in (tool.description or "")
        assert tool.annotations is not None and tool.annotations.readOnlyHint is False
        assert "idempotency_key" in tool.inputSchema["required"]
    recorded = structured(out["record"])
    assert recorded["status"] == "executed" and recorded["result"]["snapshot"]["metrics"]["revenue"] == "1200.00"
    assert tool_error(out["impossible"])["field"] == "metrics.unique_clicks"
    sent = structured(out["send"])
    assert sent["status"] == "executed" and sent["result"]["recipients"] == ["owner1"]
    assert tool_error(out["phone"])["code"] == "notification_personal_data"
    assert PerformanceSnapshot.objects.count() == 1 and ReviewNotification.objects.count() == 1
