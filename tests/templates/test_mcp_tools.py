"""The five content tools through the official MCP client against a live server: every safety note."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from mcp import ClientSession, types

from compliance.roles import Role
from gateways.models import Gateway, GatewayRate
from smsplatform.mcp.catalogue import catalogue
from templates.models import ShortLink, Template, TemplateVersion
from tests.support.mcp import run, structured, tool_error
from tests.support.templates import MARKETING, OTP, UTM, content, key

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = {
    "sms_marketing.templates.list": ("read", True),
    "sms_marketing.templates.save": ("write", False),
    "sms_marketing.copy.fit_preview": ("preview", True),
    "sms_marketing.short_links.preview": ("preview", True),
    "sms_marketing.short_links.create": ("write", False),
}


@pytest.fixture
def mcp_url(live_server: Any) -> str:
    return f"{live_server.url}/mcp"


@pytest.fixture
def marketing_key(marketing: Any, token_for: Any) -> str:
    return token_for(marketing, "agent")


@pytest.fixture
def compliance_key(compliance: Any, token_for: Any) -> str:
    return token_for(compliance, "agent")


def call(name: str, args: dict[str, Any]) -> Any:
    async def body(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool(name, args)

    return body


def test_tools_are_listed_with_their_notes_and_hints(mcp_url: str, marketing_key: str) -> None:
    async def body(session: ClientSession) -> types.ListToolsResult:
        return await session.list_tools()

    tools = {tool.name: tool for tool in run(mcp_url, marketing_key, body).tools}
    for name, (kind, read_only) in TOOLS.items():
        tool = tools[name]
        entry = catalogue()[name]
        assert tool.annotations is not None and tool.annotations.readOnlyHint is read_only
        assert entry["kind"] == kind and entry["safety"]["zh"] in (tool.description or "")
        assert entry["safety"]["en"] in (tool.description or "")
        if kind == "write":
            assert "idempotency_key" in tool.inputSchema["required"]
    assert tools["sms_marketing.short_links.create"].inputSchema["required"] == [
        "short_link_preview_id",
        "idempotency_key",
    ]


def test_templates_over_mcp(mcp_url: str, marketing_key: str, compliance_key: str) -> None:
    save_args = content()

    async def marketer(session: ClientSession) -> dict[str, types.CallToolResult]:
        out = {
            "created": await session.call_tool(
                "sms_marketing.templates.save", {**save_args, "idempotency_key": "mcp-tpl-0001"}
            ),
            "replay": await session.call_tool(
                "sms_marketing.templates.save", {**save_args, "idempotency_key": "mcp-tpl-0001"}
            ),
            "no_chinese": await session.call_tool(
                "sms_marketing.templates.save",
                {
                    **content(name="No zh", body="【ShopHK】{{first_name}} sale! Reply STOP to opt out"),
                    "idempotency_key": key(),
                },
            ),
            "otp_url": await session.call_tool(
                "sms_marketing.templates.save",
                {**content(OTP, body="ShopHK code {{code}} https://shop.example.hk"), "idempotency_key": key()},
            ),
            "too_long": await session.call_tool(
                "sms_marketing.templates.save",
                {**content(name="Long", body="x" * 10_000, fields=[]), "idempotency_key": key()},
            ),
            "no_key": await session.call_tool("sms_marketing.templates.save", save_args),
            "list": await session.call_tool("sms_marketing.templates.list", {"include_versions": True}),
        }
        template_id = structured(out["created"])["result"]["template_id"]
        token = structured(out["created"])["result"]["base_version_token"]
        out["marketer_update"] = await session.call_tool(
            "sms_marketing.templates.save",
            {"template_id": template_id, "base_version_token": token, "max_segments": 2, "idempotency_key": key()},
        )
        out["fit"] = await session.call_tool(
            "sms_marketing.copy.fit_preview",
            {"template_id": template_id, "recipients": 1000, "countries": ["HK", "JP"]},
        )
        return out

    results = run(mcp_url, marketing_key, marketer)
    created = structured(results["created"])
    assert created["status"] == "executed" and created["result"]["version"] == 1
    assert structured(results["replay"]) == created and TemplateVersion.objects.count() == 1
    error = tool_error(results["no_chinese"])
    assert (error["code"], error["field"]) == ("template_missing_required_wording", "body")
    assert "Chinese unsubscribe statement" in error["hint"]
    assert tool_error(results["otp_url"])["code"] == "template_otp_promotional"
    assert tool_error(results["too_long"])["code"] == "text_too_long"
    missing_key = tool_error(results["no_key"])
    assert (missing_key["code"], missing_key["field"]) == ("validation_error", "idempotency_key")
    listed = structured(results["list"])
    assert listed["count"] == 1 and listed["templates"][0]["usable"] is True
    assert listed["templates"][0]["versions"][0]["version_id"] == created["result"]["version_id"]
    assert tool_error(results["marketer_update"])["code"] == "permission_denied"
    fit = structured(results["fit"])
    assert fit["longest"]["segments"] >= fit["given"]["segments"]
    assert [c["covered"] for c in fit["costs"]] == [False, False]  # no gateway yet: not covered, never 0

    template_id = created["result"]["template_id"]
    token = created["result"]["base_version_token"]
    dropped = MARKETING["body"].replace("回覆STOP退訂 ", "")

    async def compliance_session(session: ClientSession) -> dict[str, types.CallToolResult]:
        return {
            "drop_zh": await session.call_tool(
                "sms_marketing.templates.save",
                {"template_id": template_id, "base_version_token": token, "body": dropped, "idempotency_key": key()},
            ),
            "update": await session.call_tool(
                "sms_marketing.templates.save",
                {"template_id": template_id, "base_version_token": token, "max_segments": 2, "idempotency_key": key()},
            ),
            "stale": await session.call_tool(
                "sms_marketing.templates.save",
                {"template_id": template_id, "base_version_token": token, "max_segments": 4, "idempotency_key": key()},
            ),
        }

    results = run(mcp_url, compliance_key, compliance_session)
    assert tool_error(results["drop_zh"])["code"] == "template_missing_required_wording"
    assert structured(results["update"])["result"]["version"] == 2
    stale = tool_error(results["stale"])
    assert stale["code"] == "stale_version_token" and stale["details"]["current_version_token"].startswith("2.")
    assert Template.objects.get().version == 2


def test_fit_preview_prices_covered_countries(mcp_url: str, marketing_key: str) -> None:
    gateway = Gateway.objects.create(code="tpl-hk", name="HK route", provider="simulator", countries=["HK"])
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.25"))
    text = "ShopHK {{name}} spring sale https://shop.example.hk/spring-collection-2025?ref=sms 回覆STOP退訂 Reply STOP to opt out"
    args = {
        "text": text,
        "fields": [{"name": "name", "type": "name", "max_length": 10, "example": "Amy"}],
        "recipients": 500,
        "countries": ["HK", "SG"],
        "brand": "ShopHK",
    }
    fit = structured(run(mcp_url, marketing_key, call("sms_marketing.copy.fit_preview", args)))
    hk, sg = fit["costs"]
    assert hk["covered"] and Decimal(hk["cost_total"]) == Decimal("0.25") * hk["segments_billed"] * 500
    assert sg == {
        "country": "SG",
        "covered": False,
        "note": "No enabled gateway covers SG: it cannot be sent there, so it is not priced.",
    }
    assert (
        fit["short_links"]["urls_in_text"][0]["short_url_characters"]
        < fit["short_links"]["urls_in_text"][0]["characters"]
    )
    assert fit["required_wording_missing"] == []

    # {{link}} in free text: no declaration needed, counted as the short link it is sent as.
    landing = "https://shop.example.hk/spring-collection-2025?ref=sms"
    linked = structured(
        run(
            mcp_url,
            marketing_key,
            call(
                "sms_marketing.copy.fit_preview",
                {
                    "text": "ShopHK sale {{link}} Reply STOP",
                    "variables": {"link": landing},
                    "per_recipient_links": True,
                },
            ),
        )
    )
    short = "https://s.example.hk/s/XXXXXXXX/rrrrrrrr"
    assert linked["given"]["text"] == f"ShopHK sale {short} Reply STOP"
    assert linked["short_links"]["url_values_replaced"][0]["counted_as"] == short


def test_short_links_over_mcp(
    mcp_url: str, marketing_key: str, make_user: Any, token_for: Any, live_server: Any
) -> None:
    other_key = token_for(make_user(Role.MARKETING), "other-agent")
    others = structured(
        run(
            mcp_url,
            other_key,
            call("sms_marketing.short_links.preview", {"url": "https://shop.example.hk/", "utm": UTM}),
        )
    )

    async def body(session: ClientSession) -> dict[str, Any]:
        shown = await session.call_tool(
            "sms_marketing.short_links.preview", {"url": "https://shop.example.hk/spring", "utm": UTM}
        )
        pid = structured(shown)["short_link_preview_id"]
        return {
            "shown": shown,
            "created": await session.call_tool(
                "sms_marketing.short_links.create", {"short_link_preview_id": pid, "idempotency_key": "mcp-link-0001"}
            ),
            "replay": await session.call_tool(
                "sms_marketing.short_links.create", {"short_link_preview_id": pid, "idempotency_key": "mcp-link-0001"}
            ),
            "reused": await session.call_tool(
                "sms_marketing.short_links.create", {"short_link_preview_id": pid, "idempotency_key": key()}
            ),
            "forged": await session.call_tool(
                "sms_marketing.short_links.create",
                {"short_link_preview_id": str(uuid.uuid4()), "idempotency_key": key()},
            ),
            "foreign": await session.call_tool(
                "sms_marketing.short_links.create",
                {"short_link_preview_id": others["short_link_preview_id"], "idempotency_key": key()},
            ),
            "javascript": await session.call_tool(
                "sms_marketing.short_links.preview", {"url": "javascript:alert(1)", "utm": UTM}
            ),
            "shortener": await session.call_tool(
                "sms_marketing.short_links.preview", {"url": "https://bit.ly/x", "utm": UTM}
            ),
            "no_utm": await session.call_tool("sms_marketing.short_links.preview", {"url": "https://shop.example.hk/"}),
            "past": await session.call_tool(
                "sms_marketing.short_links.preview",
                {"url": "https://shop.example.hk/", "utm": UTM, "expires_at": "2020-01-01T00:00:00+08:00"},
            ),
            "extra_arg": await session.call_tool(
                "sms_marketing.short_links.create",
                {"short_link_preview_id": pid, "idempotency_key": key(), "url": "https://evil.example/"},
            ),
        }

    results = run(mcp_url, marketing_key, body)
    shown = structured(results["shown"])
    created = structured(results["created"])
    assert created["status"] == "executed" and created["result"]["target_url"] == shown["target_url"]
    assert structured(results["replay"]) == created
    assert tool_error(results["reused"])["code"] == "preview_already_used"
    assert tool_error(results["forged"])["code"] == "preview_not_found"
    assert tool_error(results["foreign"])["code"] == "preview_not_found"
    assert tool_error(results["javascript"])["code"] == "url_scheme_not_allowed"
    assert tool_error(results["shortener"])["code"] == "url_shortener"
    assert tool_error(results["no_utm"])["code"] == "utm_missing"
    assert tool_error(results["past"])["code"] == "expiry_invalid"
    extra = tool_error(results["extra_arg"])
    assert (extra["code"], extra["field"]) == ("validation_error", "url")  # a write cannot widen the preview
    assert ShortLink.objects.count() == 1

    # The link works on the live server and goes only to its stored target.
    response = httpx.get(f"{live_server.url}/s/{shown['code']}?next=https://evil.example/", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == shown["target_url"]


def test_sensitive_link_waits_for_approval(mcp_url: str, marketing_key: str, link_policy: Any) -> None:
    async def body(session: ClientSession) -> dict[str, Any]:
        shown = structured(
            await session.call_tool(
                "sms_marketing.short_links.preview", {"url": "https://shop.example.hk/checkout/payment", "utm": UTM}
            )
        )
        held = structured(
            await session.call_tool(
                "sms_marketing.short_links.create",
                {"short_link_preview_id": shown["short_link_preview_id"], "idempotency_key": key()},
            )
        )
        status = structured(
            await session.call_tool(
                "sms_marketing.action_request.status", {"action_request_id": held["action_request_id"]}
            )
        )
        return {"shown": shown, "held": held, "status": status}

    out = run(mcp_url, marketing_key, body)
    assert out["shown"]["sensitive"] is True
    assert out["held"]["status"] == "pending_approval" and out["held"]["required_role"] == "approver"
    assert out["status"]["state"] == "pending" and out["status"]["action"] == "short_link.create"
    assert not ShortLink.objects.exists()


def test_tools_need_their_permissions(mcp_url: str, nobody: Any, token_for: Any) -> None:
    async def body(session: ClientSession) -> list[types.CallToolResult]:
        return [
            await session.call_tool("sms_marketing.templates.list", {}),
            await session.call_tool("sms_marketing.copy.fit_preview", {"text": "hi"}),
            await session.call_tool("sms_marketing.short_links.preview", {"url": "https://shop.example.hk/"}),
        ]

    for result in run(mcp_url, token_for(nobody), body):
        assert tool_error(result)["code"] == "permission_denied"


def test_lone_surrogates_and_control_characters_over_raw_json_rpc(mcp_url: str, marketing_key: str) -> None:
    headers = {
        "Authorization": f"Bearer {marketing_key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    cases = {
        '"Hi \\ud800 there"': "lone_surrogate",
        '"Hi \\u0007 there"': "control_character",
        '""': "text_empty",
    }
    for text, code in cases.items():
        raw = (
            '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
            '{"name": "sms_marketing.copy.fit_preview", "arguments": {"text": ' + text + "}}}"
        )
        response = httpx.post(mcp_url, content=raw.encode(), headers=headers)
        assert response.status_code == 200
        result = json.loads(response.text)["result"]
        assert result["isError"] is True
        assert "structuredContent" not in result
        error = json.loads(result["content"][0]["text"])["error"]
        assert (error["code"], error["field"]) == (code, "text")
