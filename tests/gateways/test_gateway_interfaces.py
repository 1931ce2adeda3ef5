"""gateways.list, sender_ids.list, quotas.get, sender_id.apply through MCP and REST."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.roles import Role
from gateways.models import SenderIdApplication
from tests.support.gateways import application
from tests.support.mcp import run, structured, tool_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_gateways")]


def test_tools_over_mcp(live_server: Any, make_user: Any, token_for: Any, marketing: Any) -> None:
    url = f"{live_server.url}/mcp"
    officer_key = token_for(make_user(Role.COMPLIANCE))
    marketer_key = token_for(marketing)

    async def officer(session: Any) -> dict[str, Any]:
        return {
            "gateways": await session.call_tool("sms_marketing.gateways.list", {}),
            "senders": await session.call_tool("sms_marketing.sender_ids.list", {"country": "HK"}),
            "quotas": await session.call_tool("sms_marketing.quotas.get", {}),
            "apply": await session.call_tool(
                "sms_marketing.sender_id.apply", {**application(), "idempotency_key": "mcp-sid-0001"}
            ),
            "bad": await session.call_tool(
                "sms_marketing.sender_id.apply",
                {**application(sender_id="#HSBCHK"), "idempotency_key": "mcp-sid-0002"},
            ),
            "no_key": await session.call_tool("sms_marketing.sender_id.apply", application()),
        }

    results = run(url, officer_key, officer)
    assert structured(results["gateways"])["count"] >= 1
    assert "#SHOPHK" in {s["value"] for s in structured(results["senders"])["sender_ids"]}
    assert "available_segments" in structured(results["quotas"])
    applied = structured(results["apply"])
    assert applied["status"] == "executed" and applied["result"]["sender_id"] == "#SHOPNEW"
    assert tool_error(results["bad"])["code"] == "sender_id_impersonation"
    assert tool_error(results["no_key"])["field"] == "idempotency_key"

    async def marketer(session: Any) -> Any:
        return await session.call_tool(
            "sms_marketing.sender_id.apply", {**application(), "idempotency_key": "mcp-sid-3"}
        )

    assert tool_error(run(url, marketer_key, marketer))["code"] == "permission_denied"
    assert SenderIdApplication.objects.count() == 1


def test_rest(api_for: Any, make_user: Any, marketing: Any) -> None:
    officer = api_for(make_user(Role.COMPLIANCE))
    assert officer.get("/api/v1/gateways/").status_code == 200
    assert officer.get("/api/v1/quotas/").status_code == 200
    assert officer.get("/api/v1/sender-ids/?country=HK").status_code == 200
    assert officer.get("/api/v1/sender-ids/?country=hk").json()["error"]["field"] == "country"
    created = officer.post("/api/v1/sender-ids/", {**application(), "idempotency_key": "rest-sid-0001"}, format="json")
    assert created.status_code == 200, created.json()
    refused = officer.post(
        "/api/v1/sender-ids/", {**application(regions=["SG"]), "idempotency_key": "rest-sid-0002"}, format="json"
    )
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "regions"
    denied = api_for(marketing).post(
        "/api/v1/sender-ids/", {**application(), "idempotency_key": "x" * 10}, format="json"
    )
    assert denied.status_code == 403
