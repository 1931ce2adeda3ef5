"""The templates REST API under /api/v1/: same services, same error shape, same rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from templates.models import ShortLink, Template
from tests.support.rest import error_of
from tests.support.templates import MARKETING, OTP, UTM, content, key

pytestmark = pytest.mark.django_db


def post_template(api: Any, data: dict[str, Any]) -> Any:
    return api.post("/api/v1/templates/", {**data, "idempotency_key": key()}, format="json")


def test_create_list_get_and_update(api_for: Any, marketing: Any, compliance: Any) -> None:
    response = post_template(api_for(marketing), content())
    assert response.status_code == 200, response.json()
    saved = response.json()["result"]
    listing = api_for(marketing).get("/api/v1/templates/?purpose=marketing").json()
    assert listing["count"] == 1 and listing["templates"][0]["version_id"] == saved["version_id"]
    detail = api_for(compliance).get(f"/api/v1/templates/{saved['template_id']}/").json()
    assert detail["versions"][0]["version"] == 1
    update = {"max_segments": 2, "base_version_token": detail["base_version_token"], "idempotency_key": key()}
    response = api_for(compliance).put(f"/api/v1/templates/{saved['template_id']}/", update, format="json")
    assert response.status_code == 200 and response.json()["result"]["version"] == 2
    stale = api_for(compliance).put(
        f"/api/v1/templates/{saved['template_id']}/", {**update, "idempotency_key": key()}, format="json"
    )
    assert stale.status_code == 409 and error_of(stale)["details"]["current_version_token"].startswith("2.")


def test_rules_as_structured_errors(api_for: Any, marketing: Any) -> None:
    api = api_for(marketing)
    no_en = post_template(api, content(body="【ShopHK】{{first_name}} 春季優惠 回覆STOP退訂"))
    assert no_en.status_code == 400
    error = error_of(no_en)
    assert (error["code"], error["field"]) == ("template_missing_required_wording", "body")
    assert "English unsubscribe statement" in error["hint"] and error["details"]["missing"] == ["unsubscribe_en"]
    otp = post_template(api, content(OTP, body="ShopHK {{code}} 全場8折"))
    assert error_of(otp)["code"] == "template_otp_promotional"
    long = post_template(api, content(body="x" * 10_000, fields=[]))
    assert (error_of(long)["code"], error_of(long)["field"]) == ("text_too_long", "body")
    bad_field = post_template(api, content(fields=[{"name": "first_name", "type": "nope", "max_length": 3}]))
    assert bad_field.status_code == 400 and error_of(bad_field)["field"].startswith("fields.0")
    assert not Template.objects.exists()


def test_lone_surrogate_in_raw_json(api_for: Any, marketing: Any) -> None:
    raw = '{"text": "Hi \\udc00", "recipients": 1}'
    response = api_for(marketing).generic("POST", "/api/v1/copy/fit-preview/", raw, content_type="application/json")
    # DRF's CharField refuses it before the service (the service says lone_surrogate over MCP).
    error = error_of(response)
    assert response.status_code == 400 and error["field"] == "text" and "Surrogate" in error["message"]
    control = api_for(marketing).post("/api/v1/copy/fit-preview/", {"text": "Hi \x07"}, format="json")
    assert (error_of(control)["code"], error_of(control)["field"]) == ("control_character", "text")


def test_marketing_cannot_change_templates(api_for: Any, marketing: Any) -> None:
    saved = post_template(api_for(marketing), content()).json()["result"]
    response = api_for(marketing).put(
        f"/api/v1/templates/{saved['template_id']}/",
        {"max_segments": 2, "base_version_token": saved["base_version_token"], "idempotency_key": key()},
        format="json",
    )
    assert response.status_code == 403 and error_of(response)["code"] == "permission_denied"


def test_sensitive_save_answers_202(api_for: Any, marketing: Any, template_policy: Any) -> None:
    response = post_template(api_for(marketing), content())
    assert response.status_code == 202 and response.json()["status"] == "pending_approval"


def test_fit_preview(api_for: Any, marketing: Any) -> None:
    api = api_for(marketing)
    body = {"text": MARKETING["body"], "variables": {"first_name": "Amy"}, "recipients": 100, "countries": ["HK"]}
    out = api.post("/api/v1/copy/fit-preview/", body, format="json")
    assert out.status_code == 200 and out.json()["given"]["encoding"] == "UCS-2"
    bad = api.post("/api/v1/copy/fit-preview/", {"text": "x" * 10_000}, format="json")
    assert bad.status_code == 400 and error_of(bad)["code"] == "text_too_long"
    empty = api.post("/api/v1/copy/fit-preview/", {"text": ""}, format="json")
    assert error_of(empty)["code"] == "text_empty"
    # {{link}} in free text needs no declaration; a given URL is counted as the short link.
    linked = api.post(
        "/api/v1/copy/fit-preview/",
        {
            "text": "Sale {{link}}",
            "variables": {"link": "https://shop.example.hk/" + "a" * 80},
            "per_recipient_links": False,
        },
        format="json",
    )
    assert linked.status_code == 200, linked.content
    assert linked.json()["given"]["text"] == "Sale https://s.example.hk/s/XXXXXXXX"


def test_short_links(api_for: Any, marketing: Any, make_user: Any, link_policy: Any) -> None:
    api = api_for(marketing)
    shown = api.post("/api/v1/short-links/preview/", {"url": "https://shop.example.hk/a", "utm": UTM}, format="json")
    assert shown.status_code == 200
    pid = shown.json()["short_link_preview_id"]
    created = api.post("/api/v1/short-links/", {"short_link_preview_id": pid, "idempotency_key": key()}, format="json")
    assert created.status_code == 200 and created.json()["result"]["code"] == shown.json()["code"]
    again = api.post("/api/v1/short-links/", {"short_link_preview_id": pid, "idempotency_key": key()}, format="json")
    assert again.status_code == 409 and error_of(again)["code"] == "preview_already_used"
    forged = api.post(
        "/api/v1/short-links/", {"short_link_preview_id": str(uuid.uuid4()), "idempotency_key": key()}, format="json"
    )
    assert forged.status_code == 404 and error_of(forged)["code"] == "preview_not_found"
    for url, code in [
        ("javascript:alert(1)", "url_scheme_not_allowed"),
        ("http://10.0.0.1/", "url_ip_literal"),
        ("https://xn--80ak6aa92e.com/", "url_lookalike_domain"),
        ("https://user@shop.example.hk/", "url_credentials"),
        ("https://tinyurl.com/x", "url_shortener"),
    ]:
        response = api.post("/api/v1/short-links/preview/", {"url": url, "utm": UTM}, format="json")
        assert response.status_code == 400 and error_of(response)["code"] == code, url
    sensitive = api.post(
        "/api/v1/short-links/preview/", {"url": "https://shop.example.hk/pay", "utm": UTM}, format="json"
    ).json()
    held = api.post(
        "/api/v1/short-links/",
        {"short_link_preview_id": sensitive["short_link_preview_id"], "idempotency_key": key()},
        format="json",
    )
    assert held.status_code == 202 and held.json()["status"] == "pending_approval"
    assert ShortLink.objects.count() == 1
    nobody = api_for(make_user())
    assert nobody.post("/api/v1/short-links/preview/", {"url": "https://a.hk/"}, format="json").status_code == 403


def test_authentication_and_schema(api_for: Any, marketing: Any) -> None:
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/templates/").status_code == 401
    schema = api_for(marketing).get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for operation in ("templates_list", "templates_save_version", "copy_fit_preview", "short_links_create"):
        assert operation in text
    assert api_for(marketing).get("/api/v1/templates/999999/").status_code == 404
    assert api_for(marketing).get("/api/v1/templates/?purpose=spam").status_code == 400
