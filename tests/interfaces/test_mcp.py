"""The MCP endpoint, driven by the official MCP Python client against a live server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
from mcp import ClientSession, types

from compliance.models import ActionRequest
from compliance.roles import Role
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.mcp.catalogue import catalogue
from smsplatform.mcp.registry import registered_tools
from tests.support.actors import actor
from tests.support.mcp import run, structured, tool_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_gateways")]

EXPECTED_TOOLS = {
    "sms_marketing.config.get",
    "sms_marketing.approval_policies.list",
    "sms_marketing.owners.list",
    "sms_marketing.action_request.status",
    "sms_marketing.gateways.list",
    "sms_marketing.sender_ids.list",
    "sms_marketing.quotas.get",
    "sms_marketing.sender_id.apply",
}


@pytest.fixture
def mcp_url(live_server: Any) -> str:
    return f"{live_server.url}/mcp"


@pytest.fixture
def tech_key(technical: Any, token_for: Any) -> str:
    return token_for(technical, "agent")


def test_initialize_and_list_tools(mcp_url: str, tech_key: str) -> None:
    async def body(session: ClientSession) -> types.ListToolsResult:
        return await session.list_tools()

    tools = {tool.name: tool for tool in run(mcp_url, tech_key, body).tools}
    assert EXPECTED_TOOLS <= set(tools) == {spec.name for spec in registered_tools()}
    for name, tool in tools.items():
        entry = catalogue()[name]
        assert tool.annotations is not None
        assert tool.annotations.readOnlyHint is (entry["kind"] in {"read", "preview", "status"})
        # Only stopping a campaign cannot be undone; every other write is reversible or additive.
        assert tool.annotations.destructiveHint is (name == "sms_marketing.campaigns.cancel_schedule")
        assert tool.annotations.idempotentHint is True
        if entry["kind"] == "write":
            assert "idempotency_key" in tool.inputSchema["required"]
        assert tool.inputSchema["type"] == "object" and tool.inputSchema["additionalProperties"] is False
        assert tool.outputSchema and tool.outputSchema["type"] == "object"
        assert (
            tool.description and entry["safety"]["zh"] in tool.description and entry["safety"]["en"] in tool.description
        )
        assert tool.meta and tool.meta["sms_marketing/kind"] == entry["kind"]


def test_each_tool_returns_schema_valid_output(
    mcp_url: str, tech_key: str, technical: Any, approver: Any, config_policy: Any
) -> None:
    pending = platform_config_update(
        actor=actor(technical),
        changes={"default_gateway": "simulator"},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key="mcp-test-key-1",
    )

    async def body(session: ClientSession) -> dict[str, types.CallToolResult]:
        # The client validates structuredContent against each tool's outputSchema.
        return {
            "config": await session.call_tool("sms_marketing.config.get", {}),
            "policies": await session.call_tool("sms_marketing.approval_policies.list", {"action": "config.update"}),
            "owners": await session.call_tool("sms_marketing.owners.list", {"role": "approver"}),
            "status": await session.call_tool(
                "sms_marketing.action_request.status", {"action_request_id": pending["action_request_id"]}
            ),
        }

    results = run(mcp_url, tech_key, body)
    assert not any(r.isError for r in results.values())
    config = structured(results["config"])
    assert config["config"]["schedule"]["time_zone"] == "Asia/Hong_Kong" and config["base_version_token"]
    policies = structured(results["policies"])
    assert policies["count"] == 1 and policies["policies"][0]["approver_role"] == "approver"
    owners = structured(results["owners"])
    assert [o["username"] for o in owners["owners"]] == ["approver1"]
    assert "approve" in owners["owners"][0]["capabilities"]
    assert "phone" not in json.dumps(owners) and "email" not in json.dumps(owners)
    status = structured(results["status"])
    assert status["state"] == "pending" and status["requested_by"] == "tech"


def test_bad_arguments_unknown_tool_and_permission_are_structured_errors(
    mcp_url: str, make_user: Any, token_for: Any, tech_key: str
) -> None:
    async def body(session: ClientSession) -> list[types.CallToolResult]:
        return [
            await session.call_tool("sms_marketing.action_request.status", {"action_request_id": "seven"}),
            await session.call_tool("sms_marketing.action_request.status", {}),
            await session.call_tool("sms_marketing.config.get", {"surprise": 1}),
            await session.call_tool("sms_marketing.owners.list", {"role": "king"}),
            await session.call_tool("sms_marketing.no_such_tool.list", {}),
            await session.call_tool("sms_marketing.action_request.status", {"action_request_id": 999999}),
        ]

    wrong_type, missing, extra, bad_enum, unknown, absent = (tool_error(r) for r in run(mcp_url, tech_key, body))
    assert (wrong_type["code"], wrong_type["field"]) == ("validation_error", "action_request_id")
    assert (missing["code"], missing["field"]) == ("validation_error", "action_request_id")
    assert (extra["code"], extra["field"]) == ("validation_error", "surprise")
    assert (bad_enum["code"], bad_enum["field"]) == ("validation_error", "role")
    assert unknown["code"] == "unknown_tool" and "tools/list" in unknown["hint"]
    assert absent["code"] == "not_found" and absent["field"] == "action_request_id"

    nobody_key = token_for(make_user())  # an account with no role

    async def denied(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool("sms_marketing.config.get", {})

    error = tool_error(run(mcp_url, nobody_key, denied))
    assert error["code"] == "permission_denied" and "smsplatform.view_platformconfig" in error["message"]


def test_requests_of_others_are_invisible(
    mcp_url: str, make_user: Any, token_for: Any, technical: Any, config_policy: Any
) -> None:
    pending = platform_config_update(
        actor=actor(technical),
        changes={"default_gateway": "x"},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key="mcp-test-key-2",
    )
    marketer_key = token_for(make_user(Role.MARKETING))

    async def body(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool(
            "sms_marketing.action_request.status", {"action_request_id": pending["action_request_id"]}
        )

    assert tool_error(run(mcp_url, marketer_key, body))["code"] == "not_found"
    assert ActionRequest.objects.count() == 1


def test_refused_without_a_valid_token(mcp_url: str) -> None:
    async def body(session: ClientSession) -> None:
        return None

    for key in (None, "not-a-real-token"):
        with pytest.raises(Exception) as err:  # the client surfaces the HTTP 401, it does not hang
            run(mcp_url, key, body)
        assert "401" in repr(err.value) or "401" in str(getattr(err.value, "exceptions", ""))
    raw = httpx.post(
        mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "authentication_required"
    assert raw.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_refused(mcp_url: str, technical: Any) -> None:
    from django.utils import timezone

    from smsplatform.models import ApiToken

    token, key = ApiToken.issue(user=technical, name="to-revoke")
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    raw = httpx.post(
        mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"},
    )
    assert raw.status_code == 401


@pytest.mark.parametrize(
    ("content", "status", "rpc_code"),
    [
        (b"{not json", 400, -32700),
        (b"[]", 400, -32600),
        (b'"hello"', 400, -32600),
        (b'{"id": 1, "method": "tools/list"}', 400, -32600),
    ],
)
def test_malformed_requests_get_jsonrpc_errors(
    mcp_url: str, tech_key: str, content: bytes, status: int, rpc_code: int
) -> None:
    raw = httpx.post(
        mcp_url,
        content=content,
        headers={
            "Authorization": f"Bearer {tech_key}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    assert raw.status_code == status
    assert raw.json()["error"]["code"] == rpc_code


def _post(url: str, key: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        url,
        content=content,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )


def test_unknown_method_is_method_not_found(mcp_url: str, tech_key: str) -> None:
    for method in ("tools/explode", "", "initialize/extra", "x" * 500):
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method}).encode()
        raw = _post(mcp_url, tech_key, body)
        assert raw.status_code == 200
        assert raw.json()["id"] == 7 and raw.json()["error"]["code"] == -32601, method
    # A method the protocol defines and we do not serve (prompts: none registered) is not found.
    raw = _post(mcp_url, tech_key, b'{"jsonrpc": "2.0", "id": 8, "method": "completion/complete", "params": {}}')
    assert raw.status_code == 200 and "error" in raw.json()


@pytest.mark.parametrize("bad_id", ["null", "{}", '{"a": 1}', "[1]", "true", "1.5"])
def test_a_request_id_that_is_not_a_string_or_integer_is_refused(mcp_url: str, tech_key: str, bad_id: str) -> None:
    for method in ("tools/list", "tools/call"):
        content = f'{{"jsonrpc": "2.0", "id": {bad_id}, "method": "{method}", "params": {{}}}}'.encode()
        raw = _post(mcp_url, tech_key, content)
        # Not 202 and dropped: the client is told, with a null id since its id cannot be echoed.
        assert raw.status_code == 400, (bad_id, raw.status_code, raw.text)
        assert raw.json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": raw.json()["error"]["message"]},
        }


@pytest.mark.parametrize(
    "content",
    [
        b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]',
        b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]',
        b'[{"jsonrpc": "2.0", "method": "notifications/initialized"}]',
        b"[1, 2]",
    ],
)
def test_batches_get_one_jsonrpc_error_not_a_validation_dump(mcp_url: str, tech_key: str, content: bytes) -> None:
    raw = _post(mcp_url, tech_key, content)
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == -32600 and "batch" in raw.json()["error"]["message"]
    assert "pydantic" not in raw.text and "validation error" not in raw.text.lower()


@pytest.mark.parametrize(
    ("content", "rpc_code"),
    [
        (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": []}', -32602),
        (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x", "arguments": [1]}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 3, "method": 12}', -32600),
        (b'{"jsonrpc": "1.0", "id": 3, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 3, "result": {}, "error": {}}', -32600),
    ],
)
def test_malformed_params_and_envelopes(mcp_url: str, tech_key: str, content: bytes, rpc_code: int) -> None:
    raw = _post(mcp_url, tech_key, content)
    assert raw.status_code in (200, 400)
    assert raw.json()["error"]["code"] == rpc_code
    assert "pydantic" not in raw.text


def test_notifications_and_responses_are_accepted_without_an_answer(mcp_url: str, tech_key: str) -> None:
    for content in (
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        b'{"jsonrpc": "2.0", "method": "notifications/unknown_but_harmless"}',
        b'{"jsonrpc": "2.0", "id": "srv-1", "result": {}}',
    ):
        raw = _post(mcp_url, tech_key, content)
        assert raw.status_code == 202, (content, raw.text)


def test_origin_is_checked(mcp_url: str, tech_key: str, settings: Any) -> None:
    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    assert _post(mcp_url, tech_key, ping).status_code == 200  # no Origin: agents and SDK clients
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example", "http://localhost:6274"):
        raw = _post(mcp_url, tech_key, ping, Origin=origin)
        assert raw.status_code == 403, origin
        assert raw.json()["error"]["code"] == -32600 and "Origin" in raw.json()["error"]["message"]
    # Refused before authentication: a page on another site learns nothing about tokens either.
    assert httpx.post(mcp_url, content=ping, headers={"Origin": "https://evil.example"}).status_code == 403
    # Our own origin (a page we serve) passes while its Host is explicitly allowed; with
    # ALLOWED_HOSTS "*" a rebinding attacker's Host would match too, so it no longer does.
    own = mcp_url.removesuffix("/mcp")
    assert _post(mcp_url, tech_key, ping, Origin=own).status_code == 200
    rebound_host = own.replace("localhost", "evil.example")
    assert _post(mcp_url, tech_key, ping, Origin=rebound_host, Host=rebound_host.split("//")[1]).status_code >= 400
    settings.ALLOWED_HOSTS = ["*"]
    assert _post(mcp_url, tech_key, ping, Origin=own).status_code == 403
    settings.MCP_ALLOWED_ORIGINS = ["http://localhost:6274"]
    assert _post(mcp_url, tech_key, ping, Origin="http://localhost:6274").status_code == 200
    assert _post(mcp_url, tech_key, ping, Origin="http://localhost:6275").status_code == 403


def test_unsupported_protocol_version_header_is_refused_on_every_path(mcp_url: str, tech_key: str) -> None:
    for body in (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sms_marketing.config.get"}}',
    ):
        raw = _post(mcp_url, tech_key, body, **{"MCP-Protocol-Version": "1999-01-01"})
        assert raw.status_code == 400 and "1999-01-01" in raw.json()["error"]["message"]
        ok = _post(mcp_url, tech_key, body, **{"MCP-Protocol-Version": "2025-06-18"})
        assert ok.status_code == 200 and "result" in ok.json()


def test_server_info_names_the_app_and_its_version(mcp_url: str, tech_key: str) -> None:
    import tomllib
    from pathlib import Path

    import smsplatform

    async def body(session: ClientSession) -> types.InitializeResult:
        return await session.initialize()

    info = run(mcp_url, tech_key, body).serverInfo
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert info.name == "sms_marketing"
    assert info.version == smsplatform.__version__ == pyproject["project"]["version"]


def test_tool_call_fast_path_answers_like_the_sdk(mcp_url: str, tech_key: str) -> None:
    """tools/call is answered by our view; tools/list by the library. Same envelope both ways."""
    call = _post(
        mcp_url,
        tech_key,
        b'{"jsonrpc": "2.0", "id": "abc", "method": "tools/call", "params": {"name": "sms_marketing.config.get"}}',
    )
    assert call.status_code == 200 and call.headers["Content-Type"].startswith("application/json")
    answer = call.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == "abc"
    assert answer["result"]["isError"] is False
    assert json.loads(answer["result"]["content"][0]["text"]) == answer["result"]["structuredContent"]
    missing = _post(
        mcp_url,
        tech_key,
        b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "sms_marketing.nope"}}',
    ).json()
    assert missing["result"]["isError"] is True and "structuredContent" not in missing["result"]
    assert json.loads(missing["result"]["content"][0]["text"])["error"]["code"] == "unknown_tool"


def test_get_and_delete_are_405(mcp_url: str, tech_key: str) -> None:
    headers = {"Authorization": f"Bearer {tech_key}", "Accept": "text/event-stream"}
    for method in ("GET", "DELETE"):
        raw = httpx.request(method, mcp_url, headers=headers, timeout=5)
        assert raw.status_code == 405
        assert "POST" in raw.headers["Allow"] and "GET" not in raw.headers["Allow"]
        assert raw.json()["error"]["code"] == "method_not_allowed"


def test_unexpected_failures_never_leak_raw_text(technical: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from smsplatform.mcp import registry
    from smsplatform.mcp.server import run_tool

    spec = registry.get_tool("sms_marketing.config.get")
    assert spec is not None
    request = SimpleNamespace(user=technical, auth=None)

    def explode(actor: Any, args: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("secret internal detail /etc/passwd")

    def wrong_shape(actor: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {"unexpected": "shape"}

    for handler in (explode, wrong_shape):
        monkeypatch.setitem(registry._REGISTRY, spec.name, dataclasses.replace(spec, handler=handler))
        result = run_tool(spec.name, {}, request)
        assert result.isError
        error = tool_error(result)
        assert error["code"] == "internal_error"
        assert "secret" not in json.dumps(result.model_dump())
