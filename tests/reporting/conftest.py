from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from campaigns.models import Campaign
from compliance.models import ActionType, ApprovalPolicy, Condition
from compliance.roles import Role
from tests.support.factories import ApprovalPolicyFactory, CampaignFactory, UserFactory


@pytest.fixture
def marketer(db: Any) -> Any:
    return UserFactory.create(roles=[Role.MARKETING])


_keys = itertools.count(1)
ACCEPT = "application/json, text/event-stream"


def key(prefix: str = "r") -> str:
    return f"{prefix}-reporting-{next(_keys):06d}"


@pytest.fixture(autouse=True)
def _evidence_dir(settings: Any, tmp_path: Any) -> None:
    settings.VAR_DIR = tmp_path / "var"


@pytest.fixture
def owner(make_user: Callable[..., Any]) -> Any:
    user = make_user(Role.MARKETING, username="owner1")
    user.email = "owner1@shop.example"
    user.save()
    return user


@pytest.fixture
def ops(make_user: Callable[..., Any]) -> Any:
    user = make_user(Role.OPERATIONS, username="ops1")
    user.email = "ops1@shop.example"
    user.save()
    return user


@pytest.fixture
def crm(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.CRM, username="crm1")


@pytest.fixture
def campaign(owner: Any) -> Campaign:
    return CampaignFactory.create(owner=owner, name="Spring sale")


@pytest.fixture
def snapshot_policy(roles: None) -> ApprovalPolicy:
    return ApprovalPolicyFactory.create(action=ActionType.SNAPSHOT_OVERWRITE, condition=Condition.OVERWRITES_EXISTING)


@pytest.fixture
def notify_policy(roles: None) -> ApprovalPolicy:
    return ApprovalPolicyFactory.create(action=ActionType.NOTIFICATION_SEND, condition=Condition.SENSITIVE_CONTENT)


@pytest.fixture
def mcp(token_for: Callable[..., str]) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    """Call a tool through /mcp as ``user``: the structured result, or {"error": {...}}."""
    tokens: dict[int, str] = {}

    def call(user: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if user.pk not in tokens:
            tokens[user.pk] = token_for(user, "agent")
        raw = Client(HTTP_AUTHORIZATION=f"Bearer {tokens[user.pk]}").post(
            "/mcp",
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}
            ),
            content_type="application/json",
            HTTP_ACCEPT=ACCEPT,
        )
        assert raw.status_code == 200, raw.content
        result = raw.json()["result"]
        if result["isError"]:
            assert "structuredContent" not in result
            return dict(json.loads(result["content"][0]["text"]))
        assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
        return dict(result["structuredContent"])

    return call


@pytest.fixture
def admin_client_for() -> Callable[[Any], Client]:
    def login(user: Any) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return login
