"""REST API under /api/v1/: same services, one error shape, OpenAPI."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from compliance.roles import Role
from smsplatform.models import AuditLog, PlatformConfig
from tests.support.rest import error_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def test_config_read_and_update(api_for: Any, technical: Any) -> None:
    api = api_for(technical)
    got = api.get("/api/v1/config/").json()
    response = api.patch(
        "/api/v1/config/",
        {
            "changes": {"default_sender_id": "#SHOP"},
            "base_version_token": got["base_version_token"],
            "idempotency_key": "rest-key-00001",
            "reason": "registered",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["result"]["version"] == 2
    entry = AuditLog.objects.get(action="config.update")
    assert entry.channel == "api" and entry.token_name.startswith("test-token")


def test_update_held_for_approval_answers_202(
    api_for: Any, technical: Any, config_policy: Any, config_token: str
) -> None:
    response = api_for(technical).patch(
        "/api/v1/config/",
        {
            "changes": {"default_gateway": "sim"},
            "base_version_token": config_token,
            "idempotency_key": "rest-key-00002",
        },
        format="json",
    )
    assert response.status_code == 202
    request_id = response.json()["action_request_id"]
    status = api_for(technical).get(f"/api/v1/action-requests/{request_id}/").json()
    assert status["state"] == "pending" and status["required_role"] == "approver"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"base_version_token": "x", "idempotency_key": "rest-key-0003"}, "changes", "validation_error"),
        (
            {
                "changes": {"schedule": {"time_zone": "Nowhere/City"}},
                "base_version_token": "TOKEN",
                "idempotency_key": "rest-key-0004",
            },
            "changes.schedule.time_zone",
            "validation_error",
        ),
        (
            {
                "changes": {"default_gateway": "a"},
                "base_version_token": "1.0000000000000000",
                "idempotency_key": "rest-key-0005",
            },
            "base_version_token",
            "validation_error",
        ),
        (
            {"changes": {"default_gateway": "a"}, "base_version_token": "TOKEN", "idempotency_key": "no"},
            "idempotency_key",
            "validation_error",
        ),
    ],
)
def test_bad_input_is_a_structured_400(
    api_for: Any, technical: Any, config_token: str, body: dict[str, Any], field: str, code: str
) -> None:
    if body.get("base_version_token") == "TOKEN":
        body["base_version_token"] = config_token
    response = api_for(technical).patch("/api/v1/config/", body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert PlatformConfig.objects.get().version == 1


def test_update_refuses_undeclared_fields_naming_them(api_for: Any, technical: Any, config_token: str) -> None:
    body = {
        "changes": {"default_gateway": "a"},
        "base_version_token": config_token,
        "idempotency_key": "rest-key-0008",
        "reasons": "misspelt",
    }
    response = api_for(technical).patch("/api/v1/config/", body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("validation_error", "reasons")
    assert "reasons" in error["message"] and "reason" in error["hint"]
    assert PlatformConfig.objects.get().version == 1


def test_stale_token_is_409_with_current_token(api_for: Any, technical: Any, config_token: str) -> None:
    api = api_for(technical)
    body = {"changes": {"default_gateway": "a"}, "base_version_token": config_token, "idempotency_key": "rest-key-0006"}
    assert api.patch("/api/v1/config/", body, format="json").status_code == 200
    body = {**body, "idempotency_key": "rest-key-0007", "changes": {"default_gateway": "b"}}
    response = api.patch("/api/v1/config/", body, format="json")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "stale_version_token" and error["details"]["current_version_token"].startswith("2.")


def test_malformed_json_is_a_structured_400(api_for: Any, technical: Any) -> None:
    response = api_for(technical).generic("PATCH", "/api/v1/config/", "{oops", content_type="application/json")
    assert response.status_code == 400 and error_of(response)["code"] == "malformed_request"


def test_authentication_and_permissions(api_for: Any, marketing: Any) -> None:
    anonymous = APIClient().get("/api/v1/config/")
    assert anonymous.status_code == 401 and error_of(anonymous)["code"] == "authentication_required"
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer nope")
    assert bad.get("/api/v1/config/").status_code == 401
    api = api_for(marketing)
    assert api.get("/api/v1/config/").status_code == 200
    denied = api.patch("/api/v1/config/", {}, format="json")
    assert denied.status_code == 403 and error_of(denied)["code"] == "permission_denied"


def test_lists(api_for: Any, approver: Any, config_policy: Any) -> None:
    api = api_for(approver)
    policies = api.get("/api/v1/approval-policies/?action=config.update").json()
    assert policies["count"] == 1
    owners = api.get(f"/api/v1/owners/?role={Role.APPROVER}").json()
    assert owners["owners"][0]["username"] == "approver1"
    bad = api.get("/api/v1/owners/?role=king")
    assert bad.status_code == 400 and error_of(bad)["field"] == "role"


def test_unknown_endpoint_and_request_are_json_404(api_for: Any, technical: Any) -> None:
    api = api_for(technical)
    assert error_of(api.get("/api/v1/action-requests/12345/"))["code"] == "not_found"
    missing = api.get("/api/v1/nothing-here/")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


def test_openapi_and_docs(api_for: Any, technical: Any, client: Any) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/config/", "/api/v1/owners/", "/api/v1/approval-policies/"} <= set(paths)
    assert client.get("/api/docs/").status_code == 200


def test_health(client: Any) -> None:
    assert client.get("/api/v1/health/").json() == {"status": "ok"}
