"""Tool schemas say what the tools enforce, in constructs every MCP client takes (issue 14, item 9).

Type arrays ({"type": ["string", "null"]}) are refused by strict ajv and several agent clients:
none may reach tools/list. The rules the services enforce (a search criterion, exactly one of
message_id or phone, the configured UTM keys) are stated in the input schemas, and every call
that breaks them is still refused by the service with its coded error, naming the field."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from smsplatform.mcp.registry import portable, registered_tools, type_arrays
from smsplatform.mcp.server import run_tool
from tests.support.templates import config_change

pytestmark = pytest.mark.django_db


def advertised(name: str) -> dict[str, Any]:
    spec = next(s for s in registered_tools() if s.name == name)
    return spec.as_mcp_tool().inputSchema


def accepts(schema: dict[str, Any], arguments: dict[str, Any]) -> bool:
    return Draft202012Validator(schema).is_valid(arguments)


def call_error(user: Any, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(name, arguments, SimpleNamespace(user=user, auth=None))
    assert result.isError and result.structuredContent is None
    return dict(json.loads(result.content[0].text)["error"])  # type: ignore[union-attr]


def test_no_type_arrays_in_any_advertised_schema() -> None:
    for spec in registered_tools():
        tool = spec.as_mcp_tool()
        assert type_arrays(tool.inputSchema) == [], spec.name
        assert type_arrays(tool.outputSchema) == [], spec.name
        Draft202012Validator.check_schema(tool.inputSchema)


def test_portable_keeps_what_a_type_array_allowed() -> None:
    schema = {
        "type": ["string", "integer", "null"],
        "maxLength": 3,
        "minimum": 2,
        "description": "d",
        "enum": ["ab", 5, None, "abcd", 1],
    }
    out = portable({"type": "object", "properties": {"x": schema}})
    x = out["properties"]["x"]
    assert type_arrays(out) == [] and x["description"] == "d" and "type" not in x
    values: list[Any] = ["ab", 5, None, "abcd", 1, 2.5, [], "zz"]
    for value in values:
        assert Draft202012Validator(schema).is_valid(value) == Draft202012Validator(x).is_valid(value), value
    assert portable({"type": ["integer"]}) == {"type": "integer"}


def test_contacts_search_needs_a_criterion(technical: Any, make_user: Any) -> None:
    schema = advertised("sms_marketing.contacts.search")
    assert not accepts(schema, {}) and not accepts(schema, {"limit": 5})
    assert accepts(schema, {"tag": "vip"}) and accepts(schema, {"opted_out": False, "limit": 5})
    user = make_user(superuser=True)
    for arguments in ({}, {"limit": 5}):
        error = call_error(user, "sms_marketing.contacts.search", arguments)
        assert error["code"] != "validation_error" or error["field"], error
        assert "criterion" in error["message"]


def test_delivery_status_needs_one_message_or_one_list(make_user: Any) -> None:
    schema = advertised("sms_marketing.delivery_status.get")
    assert not accepts(schema, {}) and not accepts(schema, {"state": "failed"})
    assert not accepts(schema, {"message_id": 1, "phone": "+85291234567"})
    assert not accepts(schema, {"message_id": 1, "campaign_id": 2})
    assert accepts(schema, {"message_id": 1}) and accepts(schema, {"phone": "+85291234567", "campaign_id": 2})
    assert accepts(schema, {"campaign_id": 2, "state": "failed"}) and accepts(schema, {"batch_id": 3})
    user = make_user(superuser=True)
    for arguments, words in (({}, "Give message_id"), ({"message_id": 1, "phone": "+85291234567"}, "alone")):
        error = call_error(user, "sms_marketing.delivery_status.get", arguments)
        assert error["field"] == "message_id" and words in error["message"]


def test_short_links_preview_states_the_configured_utm_keys(technical: Any, make_user: Any) -> None:
    url = "https://shop.example.hk/sale"
    all_three = {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "x"}
    config_change(technical, short_links={"required_utm": ["utm_source", "utm_medium", "utm_campaign"]})
    schema = advertised("sms_marketing.short_links.preview")
    assert not accepts(schema, {"url": url})
    assert not accepts(schema, {"url": url, "utm": {"utm_source": "sms"}})
    assert accepts(schema, {"url": url, "utm": all_three})
    # A key already in the URL's query counts, as it does for the preview.
    assert accepts(schema, {"url": url + "?utm_source=sms", "utm": {"utm_medium": "sms", "utm_campaign": "x"}})
    user = make_user(superuser=True)
    error = call_error(user, "sms_marketing.short_links.preview", {"url": url, "utm": {"utm_source": "sms"}})
    assert (error["code"], error["field"]) == ("utm_missing", "utm")

    config_change(technical, short_links={"required_utm": ["utm_campaign"]})
    schema = advertised("sms_marketing.short_links.preview")
    assert accepts(schema, {"url": url, "utm": {"utm_campaign": "x"}})
    assert not accepts(schema, {"url": url, "utm": {"utm_source": "sms"}})
    config_change(technical, short_links={"required_utm": []})
    assert accepts(advertised("sms_marketing.short_links.preview"), {"url": url})


def test_nul_in_any_argument_is_a_validation_error_not_a_database_failure(make_user: Any) -> None:
    """PostgreSQL text cannot hold NUL (the fuzzer found templates.list failing on it)."""
    user = make_user(superuser=True)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("sms_marketing.templates.list", {"name_contains": "a\x00b"}, "name_contains"),
        ("sms_marketing.contacts.search", {"tag": "\x00"}, "tag"),
        ("sms_marketing.segments.preview", {"criteria": {"tags": {"any": ["x\x00"]}}}, "criteria.tags.any.0"),
        ("sms_marketing.short_links.preview", {"url": "https://shop.example.hk/\x00"}, "url"),
    ]
    for name, arguments, field in cases:
        error = call_error(user, name, arguments)
        assert (error["code"], error["field"]) == ("validation_error", field), (name, error)
        assert "NUL" in error["message"]
