"""The two OTP tools through the official MCP client against a live server: listed with their
catalogue notes and hints, and otp.send answering without the code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import ClientSession, types

from campaigns.otp import services
from campaigns.otp.models import OtpTemplate
from smsplatform.mcp.catalogue import catalogue
from tests.otp.conftest import key
from tests.support.mcp import run, structured, tool_error

pytestmark = pytest.mark.django_db(transaction=True)


def test_otp_tools_over_the_official_client(
    live_server: Any, template: OtpTemplate, tech: Any, token_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "code_generate", lambda *, length, alphabet: "731902")
    url, token = f"{live_server.url}/mcp", token_for(tech, "agent")

    async def body(session: ClientSession) -> tuple[Any, ...]:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        listed = await session.call_tool("sms_marketing.otp_templates.list", {})
        sent = await session.call_tool(
            "sms_marketing.otp.send", {"template_id": template.pk, "phone": "+85291234567", "idempotency_key": key()}
        )
        refused = await session.call_tool(
            "sms_marketing.otp.send", {"template_id": template.pk, "phone": "+6581234567", "idempotency_key": key()}
        )
        return tools, listed, sent, refused

    tools, listed, sent, refused = run(url, token, body)
    for name, read_only in (("sms_marketing.otp_templates.list", True), ("sms_marketing.otp.send", False)):
        tool: types.Tool = tools[name]
        assert tool.annotations is not None and tool.annotations.readOnlyHint is read_only
        assert catalogue()[name]["safety"]["zh"] in (tool.description or "")
    assert "idempotency_key" in tools["sms_marketing.otp.send"].inputSchema["required"]
    assert structured(listed)["templates"][0]["usable"] is True
    answer = structured(sent)
    assert answer["status"] == "executed" and answer["result"]["phone"] == "+852****4567"
    assert tool_error(refused)["code"] == "otp_country_not_allowed"
    assert "731902" not in json.dumps(answer) and "731902" not in json.dumps(listed.structuredContent)
