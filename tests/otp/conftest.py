"""Fixtures of the OTP tests: roles, a covered gateway, an approved template, an MCP call in process."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.otp.models import OtpTemplate
from campaigns.otp.services import otp_template_save
from compliance.roles import Role
from compliance.services import action_request_approve
from tests.support.actors import actor
from tests.support.factories import GatewayFactory, GatewayRateFactory, SenderIdFactory, account_fund

_keys = itertools.count(1)


def key() -> str:
    return f"otp-test-{next(_keys):06d}"


CONTENT: dict[str, Any] = {
    "name": "Login code",
    "purpose": "login",
    "body_en": "Your ShopHK code is {code}. Valid for {minutes} minutes.",
    "body_zh_hant": "你的ShopHK驗證碼是{code}，{minutes}分鐘內有效。",
    "code_length": 6,
    "alphabet": "digits",
    "allowed_countries": ["HK"],
    "sender_id": "#SHOPHK",
    "gateway": "otp-sim",
}


@pytest.fixture
def otp_gateway(db: Any) -> Any:
    gateway = GatewayFactory.create(
        code="otp-sim", countries=["HK"], priority=1, encodings=["GSM-7", "UCS-2"], settings={"receipt_latency_ms": 0}
    )
    GatewayRateFactory.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    GatewayRateFactory.create(gateway=gateway, country="SG", price_per_segment=Decimal("0.30"))
    SenderIdFactory.create(value="#SHOPHK")
    account_fund(balance=Decimal("1000"), monthly_quota_segments=100_000)
    return gateway


@pytest.fixture
def compliance(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.COMPLIANCE, username="compliance1")


@pytest.fixture
def tech(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.TECHNICAL, username="tech1")


@pytest.fixture
def approve(approver: Any) -> Callable[[int], dict[str, Any]]:
    def run(request_id: int) -> dict[str, Any]:
        return action_request_approve(actor=actor(approver), action_request_id=request_id, reason="ok")

    return run


@pytest.fixture
def make_template(
    compliance: Any, approve: Callable[[int], dict[str, Any]], otp_gateway: Any
) -> Callable[..., OtpTemplate]:
    def make(**changes: Any) -> OtpTemplate:
        held = otp_template_save(actor=actor(compliance), idempotency_key=key(), content={**CONTENT, **changes})
        assert held["status"] == "pending_approval"
        outcome = approve(held["action_request_id"])
        assert outcome["state"] == "executed", outcome
        return OtpTemplate.objects.get(name={**CONTENT, **changes}["name"])

    return make


@pytest.fixture
def template(make_template: Callable[..., OtpTemplate]) -> OtpTemplate:
    return make_template()


def mcp(client: APIClient, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """tools/call through the /mcp endpoint in process: the structured result, or {"error": ...}."""
    response = client.post(
        "/mcp",
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        ),
        content_type="application/json",
        HTTP_ACCEPT="application/json, text/event-stream",
    )
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    if result["isError"]:
        return dict(json.loads(result["content"][0]["text"]))
    return dict(result["structuredContent"])
