"""The OpenAPI document states the responses the API really gives and no empty enum values;
empty enum query values are refused (issue 14, item 7)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from compliance.roles import Role
from smsplatform.api.schema import GOVERNED_OPERATIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return dict(SchemaGenerator().get_schema(request=None, public=True))


def _operations(schema: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (path, method, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_every_operation_documents_its_error_responses(schema: dict[str, Any]) -> None:
    for op_id, (_path, method, op) in _operations(schema).items():
        expected = {"200", "400", "404", "500"} | ({"401", "403"} if op_id != "health" else set())
        if method != "get":
            expected |= {"409", "413"}
        if op_id in GOVERNED_OPERATIONS:
            expected |= {"202"}
        assert expected <= set(op["responses"]), (op_id, sorted(op["responses"]))


def test_the_governed_operations_are_exactly_those_that_can_be_held(schema: dict[str, Any]) -> None:
    found = set()
    for views in ROOT.glob("*/api/views.py"):
        text = views.read_text()
        for match in re.finditer(r'operation_id="([a-z_]+)"(.*?)(?=operation_id=|\Z)', text, re.S):
            if "governed_response(" in match.group(2) or "_governed_write(" in match.group(2):
                found.add(match.group(1))
    assert found == GOVERNED_OPERATIONS
    assert set(_operations(schema)) >= GOVERNED_OPERATIONS


def test_no_enum_offers_an_empty_value(schema: dict[str, Any]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "enum" in node:
                assert "" not in node["enum"] and None not in node["enum"], where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(schema, "")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/opt-outs/?reason=", "reason"),
        ("/api/v1/campaigns/?state=", "state"),
        ("/api/v1/templates/?language=", "language"),
        ("/api/v1/templates/?purpose=", "purpose"),
        ("/api/v1/approval-policies/?action=", "action"),
        ("/api/v1/owners/?role=", "role"),
    ],
)
def test_an_empty_enum_query_value_is_refused(api_for: Any, make_user: Any, url: str, field: str) -> None:
    client = api_for(make_user(Role.TECHNICAL, Role.COMPLIANCE, Role.MARKETING, Role.CRM, Role.APPROVER))
    response = client.get(url)
    assert response.status_code == 400 and response.json()["error"]["field"] == field, response.content
    assert client.get(url.rstrip("=").rsplit("?", 1)[0]).status_code == 200  # left out: all


@pytest.mark.django_db
def test_the_statuses_the_api_answers_are_documented(
    schema: dict[str, Any], api_for: Any, make_user: Any, marketing: Any
) -> None:
    operations = _operations(schema)
    checks = [
        ("opt_outs_list", APIClient().get("/api/v1/opt-outs/")),
        ("contacts_upsert", api_for(marketing).post("/api/v1/contacts/", {}, format="json")),
        ("contacts_get", api_for(marketing).get("/api/v1/contacts/999999/")),
        (
            "contacts_upsert",
            api_for(make_user(Role.CRM)).post(
                "/api/v1/contacts/", '{"source": "' + "x" * 3_000_000 + '"}', content_type="application/json"
            ),
        ),
        ("campaigns_list", api_for(marketing).get("/api/v1/campaigns/?state=")),
    ]
    for op_id, response in checks:
        assert str(response.status_code) in operations[op_id][2]["responses"], (op_id, response.status_code)
    assert [r.status_code for _op, r in checks] == [401, 403, 404, 413, 400]
