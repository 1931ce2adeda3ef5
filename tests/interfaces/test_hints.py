"""Hints point somewhere real: every tool a hint names exists, and the owners.list hint is true.

The scan reads the source of every app: each ``sms_marketing.<group>.<verb>`` in any string must be
a tool of the MCP registry; in hint and note texts (``hint=`` arguments, ``"hint"``/``"note"``
entries) a bare ``<group>.<verb>`` whose group is a tool group must be a tool, a configuration
key or a permission. Then the permission_denied hint is checked against the roles and owners.list.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from compliance.roles import ROLE_PERMISSIONS, Role
from compliance.selectors import owners_list
from smsplatform.config_schema import PlatformConfigData
from smsplatform.kernel.errors import permission_denied
from smsplatform.mcp.registry import load_tools
from smsplatform.mcp.server import run_tool

ROOT = Path(__file__).resolve().parents[2]
APPS = ["smsplatform", "compliance", "gateways", "contacts", "templates", "campaigns", "reporting"]
FULL = re.compile(r"sms_marketing\.[a-z_]+\.[a-z_]+")
BARE = re.compile(r"(?<![\w/.])([a-z_]+)\.([a-z_]+)(?![\w/(])")
HINT_KEYS = {"hint", "note"}


def _strings(node: ast.AST) -> list[tuple[str, int]]:
    """The text of a string or f-string expression (its literal parts), with its line."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [(node.value, node.lineno)]
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        return [(text, node.lineno)]
    if isinstance(node, ast.BinOp):
        return _strings(node.left) + _strings(node.right)
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def _sources() -> list[tuple[Path, ast.Module]]:
    out = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                out.append((path, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def every_string() -> list[tuple[str, str]]:
    return [
        (text, f"{path.relative_to(ROOT)}:{line}")
        for path, tree in _sources()
        for node in ast.walk(tree)
        for text, line in _strings(node)
    ]


def hint_strings() -> list[tuple[str, str]]:
    """Texts given as a hint or a note: ``hint=...`` keywords and ``{"hint": ...}`` entries."""
    found: list[tuple[str, str]] = []
    for path, tree in _sources():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg in HINT_KEYS:
                values.append(node.value)
            if isinstance(node, ast.Dict):
                values += [
                    v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and k.value in HINT_KEYS
                ]
            found += [(text, f"{where}:{line}") for value in values for text, line in _strings(value)]
    return found


def _config_keys() -> set[str]:
    keys = set()
    for section, info in PlatformConfigData.model_fields.items():
        model = info.annotation
        for name in getattr(model, "model_fields", {}):
            keys.add(f"{section}.{name}")
    return keys


def test_every_full_tool_name_in_the_code_is_a_registered_tool() -> None:
    tools = set(load_tools())
    named = [(m.group(0), where) for text, where in every_string() for m in FULL.finditer(text)]
    assert len({name for name, _ in named}) > 20  # the scan sees the code's many references
    unknown = [(name, where) for name, where in named if name not in tools]
    assert not unknown, f"hints name tools that do not exist: {unknown}"


def test_bare_tool_names_in_hints_are_tools() -> None:
    tools = {name.removeprefix("sms_marketing.") for name in load_tools()}
    groups = {name.split(".")[0] for name in tools}
    permissions = {p for perms in ROLE_PERMISSIONS.values() for p in perms}
    allowed = tools | _config_keys() | permissions
    hints = hint_strings()
    assert len(hints) > 50
    unknown = [
        (m.group(0), where)
        for text, where in hints
        for m in BARE.finditer(text.replace("sms_marketing.", ""))
        if m.group(1) in groups and m.group(0) not in allowed
    ]
    assert not unknown, f"hints name tools that do not exist: {unknown}"


def test_the_scan_catches_a_tool_that_does_not_exist() -> None:
    tools = set(load_tools())
    assert "sms_marketing.config.update" not in tools
    assert next(m.group(0) for m in FULL.finditer("Change it with sms_marketing.config.update.")) not in tools
    tree = ast.parse('raise ApplicationError("x", "y", hint="Use send_batches.lst for ids.")')
    texts = [t for node in ast.walk(tree) if isinstance(node, ast.keyword) for t, _ in _strings(node.value)]
    assert [m.group(0) for t in texts for m in BARE.finditer(t)] == ["send_batches.lst"]


def _roles_in(hint: str) -> list[str]:
    match = re.search(r"Roles that grant it: ([a-z_, ]+)\.", hint)
    return match.group(1).split(", ") if match else []


@pytest.mark.django_db
def test_the_permission_denied_hint_names_roles_owners_list_shows(make_user: Any) -> None:
    """For every permission a tool checks: the hint names exactly the roles that grant it, each a
    valid owners.list filter, and owners.list with it lists an account that holds the permission."""
    holders = {role: make_user(role, username=f"holder-{role.value}") for role in Role}
    for spec in load_tools().values():
        hint = str(permission_denied(spec.permission).hint)
        named = _roles_in(hint)
        granting = [r.value for r in Role if spec.permission in ROLE_PERMISSIONS[r]]
        assert named == granting, (spec.name, hint)
        if not named:
            assert "No platform role grants it" in hint and "owners.list" not in hint
            continue
        assert f'sms_marketing.owners.list {{"role": "{named[0]}"}}' in hint
        for role in named:
            listed = {o["username"] for o in owners_list(role=role)}
            assert holders[Role(role)].username in listed
            assert holders[Role(role)].has_perm(spec.permission), (spec.name, role)
        for role in set(Role) - {Role(r) for r in named}:
            user = type(holders[role]).objects.get(pk=holders[role].pk)  # a fresh permission cache
            assert not user.has_perm(spec.permission), (spec.name, role)


@pytest.mark.django_db
def test_the_hint_reaches_mcp_and_rest_clients(make_user: Any, api_for: Any) -> None:
    """A refused call carries the roles on each interface: an approver upserting a contact."""
    user = make_user(Role.APPROVER)
    result = run_tool("sms_marketing.contacts.upsert", {"phone": "+85291234567"}, SimpleNamespace(user=user, auth=None))
    error = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    assert error["code"] == "permission_denied" and _roles_in(error["hint"]) == ["crm"], error
    assert 'sms_marketing.owners.list {"role": "crm"}' in error["hint"]
    response = api_for(user).post("/api/v1/contacts/", {"phone": "+85291234567"}, format="json")
    assert response.status_code == 403, response.content
    assert _roles_in(response.json()["error"]["hint"]) == ["crm"]
