"""Validation errors speak our words, name the field and never quote the input back: MCP tool
arguments (jsonschema) and pydantic-validated inputs (issue 14, item 7)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.registry import load_tools
from tests.support.actors import actor

SECRET = "ZZ-input-echo-9f3b"  # appears in an error only if the input is quoted back
LIBRARY_WORDS = (
    "is not of type",
    "required property",
    "Additional properties",
    "should be",
    "Input should",
    "String should",
    "Value error",
)


def _check(exc: ApplicationError) -> None:
    text = f"{exc.message} {exc.details}"
    assert SECRET not in text, text
    assert not any(words in text for words in LIBRARY_WORDS), text


@pytest.mark.parametrize(
    ("tool", "arguments", "field", "wording"),
    [
        ("sms_marketing.contacts.get", {"contact_id": SECRET}, "contact_id", "must be a whole number"),
        ("sms_marketing.contacts.get", {}, "contact_id", "is required"),
        ("sms_marketing.contacts.get", {"contact_id": 1, SECRET: 1}, SECRET, "is not an argument"),
        ("sms_marketing.contacts.upsert", {"source": SECRET * 20, "idempotency_key": "k" * 10}, "source", "at most"),
        ("sms_marketing.opt_outs.list", {"reason": SECRET}, "reason", "must be one of"),
    ],
)
def test_mcp_argument_errors(tool: str, arguments: dict[str, Any], field: str, wording: str) -> None:
    with pytest.raises(ApplicationError) as err:
        load_tools()[tool].validate_input(arguments)
    assert err.value.field == field and wording in err.value.message, err.value.message
    if field != SECRET:
        _check(err.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tool=st.sampled_from(sorted(load_tools())),
    value=st.one_of(st.just(SECRET), st.integers(), st.lists(st.just(SECRET), max_size=2), st.just({"k": SECRET})),
)
def test_property_no_tool_quotes_a_bad_argument_back(tool: str, value: Any) -> None:
    spec = load_tools()[tool]
    names = sorted(spec.input_schema.get("properties", {})) or ["anything"]
    for name in names:
        try:
            spec.validate_input({name: value})
        except ApplicationError as exc:
            _check(exc)


@pytest.mark.django_db
def test_pydantic_errors_are_ours(technical: Any) -> None:
    token = platform_config_get()["base_version_token"]
    schedule = platform_config_get()["config"]["schedule"]
    schedule["quiet_hours"]["HK"]["start"] = SECRET
    with pytest.raises(ApplicationError) as err:
        platform_config_update(
            actor=actor(technical), changes={"schedule": schedule}, base_version_token=token, idempotency_key="pyd-0001"
        )
    assert err.value.field == "changes.schedule.quiet_hours.HK.start", err.value.field
    assert "wrong format" in err.value.message, err.value.message
    _check(err.value)
