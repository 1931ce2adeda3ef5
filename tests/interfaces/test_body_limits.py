"""Huge or deeply nested bodies: 413 and 400 with the error shape on REST and /mcp, never a 500
(issue 14, item 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from compliance.roles import Role
from contacts.models import Contact
from smsplatform.api.parsers import MAX_JSON_DEPTH, json_depth_check
from smsplatform.kernel.errors import ApplicationError

pytestmark = pytest.mark.django_db
ACCEPT = "application/json, text/event-stream"


def nested(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def huge() -> str:
    return json.dumps({"phone": "+85291234567", "source": "x" * 3_000_000, "idempotency_key": "big-000001"})


def deep_text(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    error = body["error"]
    assert set(error) >= {"code", "message", "field", "hint"}, body
    return dict(error)


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM)


def test_rest_huge_body_is_413(api_for: Any, crm: Any) -> None:
    response = api_for(crm).post("/api/v1/contacts/", huge(), content_type="application/json")
    assert response.status_code == 413
    assert _shape(response.json())["code"] == "request_too_large"
    assert not Contact.objects.exists()


def test_rest_huge_form_body_is_413_too(api_for: Any, crm: Any) -> None:
    body = "source=" + "x" * 3_000_000
    response = api_for(crm).post("/api/v1/contacts/", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413 and _shape(response.json())["code"] == "request_too_large"


@pytest.mark.parametrize("text", [deep_text(), deep_text(900), json.dumps(nested(MAX_JSON_DEPTH + 1))])
def test_rest_deep_body_is_400(api_for: Any, crm: Any, text: str) -> None:
    response = api_for(crm).post("/api/v1/contacts/", text, content_type="application/json")
    assert response.status_code == 400
    error = _shape(response.json())
    assert error["code"] == "malformed_request" and "nested deeper" in error["message"]


def test_rest_nesting_within_the_limit_reaches_validation(api_for: Any, crm: Any) -> None:
    body = {"phone": "+85291234567", "source": "crm", "idempotency_key": "deep-ok-01", "tags": nested(10)}
    response = api_for(crm).post("/api/v1/contacts/", body, format="json")
    assert response.status_code == 400 and str(_shape(response.json())["field"]).startswith("tags")


def _mcp(token: str, body: str) -> Any:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}").post(
        "/mcp", body, content_type="application/json", HTTP_ACCEPT=ACCEPT
    )


def _call(arguments_json: str) -> str:
    return (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sms_marketing.contacts.search",'
        f'"arguments":{arguments_json}}}}}'
    )


def test_mcp_huge_body_is_413(token_for: Any, crm: Any) -> None:
    response = _mcp(token_for(crm), _call(json.dumps({"tag": "x" * 3_000_000})))
    assert response.status_code == 413
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32700
    assert body["error"]["data"]["code"] == "request_too_large" and "hint" in body["error"]["data"]


@pytest.mark.parametrize(
    "text",
    [deep_text(), _call('{"tag":' + deep_text(900) + "}"), _call(json.dumps({"tag": nested(MAX_JSON_DEPTH)}))],
)
def test_mcp_deep_body_is_400(token_for: Any, crm: Any, text: str) -> None:
    response = _mcp(token_for(crm), text)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == -32700 and body["error"]["data"]["code"] == "malformed_request"


def test_webhooks_refuse_a_huge_body_without_a_500(client: Client) -> None:
    response = client.post(
        "/hooks/simulator/receipts", "a=" + "x" * 3_000_000, content_type="application/x-www-form-urlencoded"
    )
    assert 400 <= response.status_code < 500


def test_the_depth_check_is_iterative_and_exact() -> None:
    json_depth_check(nested(MAX_JSON_DEPTH))
    with pytest.raises(ApplicationError):
        json_depth_check(nested(MAX_JSON_DEPTH + 1))
    wide = {"a": [[1] * 10_000 for _ in range(100)]}
    json_depth_check(wide)
