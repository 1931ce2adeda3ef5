"""Every error code an app raises is listed in its enum (``<app>/errors.py``) or the kernel's.

The scan reads each app's source: string literals given as the code to ``ApplicationError``,
``SegmentInputError`` or a helper whose first parameter is ``code`` (``_error(code, ...)``),
and ``<Enum>.MEMBER`` references to an error enum. A code added without its enum member fails
here, so the lists in the generated tool reference (docs/MCP_TOOLS.md) cannot drift.
"""

from __future__ import annotations

import ast
import importlib
from enum import StrEnum
from pathlib import Path

import pytest

from smsplatform.kernel.errors import ErrorCode
from smsplatform.mcp.registry import error_code_enums

ROOT = Path(__file__).resolve().parents[2]
APPS = ["smsplatform", "compliance", "gateways", "contacts", "templates", "campaigns"]
RAISERS = {"ApplicationError", "SegmentInputError"}


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _code_helpers(tree: ast.Module) -> set[str]:
    """Functions of a module whose first parameter is the code."""
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.args.args
        and node.args.args[0].arg == "code"
    }


def _literals(node: ast.expr | None) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _app_sources(app: str) -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


def scan(app: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Literal codes and ``Enum.MEMBER`` references found in an app, each with where they occur."""
    sources = _app_sources(app)
    helpers = {name: _code_helpers(tree) for name, (_path, tree) in sources.items()}
    literals: dict[str, list[str]] = {}
    members: dict[str, list[str]] = {}
    for module, (path, tree) in sources.items():
        callees = RAISERS | helpers[module]
        for node in ast.walk(tree):
            # a code helper imported from another module of the same app
            if isinstance(node, ast.ImportFrom) and node.module in helpers:
                callees |= {alias.asname or alias.name for alias in node.names if alias.name in helpers[node.module]}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _callee(node) not in callees:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "code"), None)
            for code in _literals(arg):
                literals.setdefault(code, []).append(where)
            if (
                isinstance(arg, ast.Attribute)
                and isinstance(arg.value, ast.Name)
                and arg.value.id.endswith("ErrorCode")
            ):
                members.setdefault(f"{arg.value.id}.{arg.attr}", []).append(where)
    return literals, members


def _enums() -> dict[str, type[StrEnum]]:
    enums: list[type[StrEnum]] = [ErrorCode, *error_code_enums().values()]
    return {enum.__name__: enum for enum in enums}


@pytest.mark.parametrize("app", APPS)
def test_every_code_an_app_raises_is_in_its_enum_or_the_kernels(app: str) -> None:
    own = error_code_enums().get(app)
    allowed = {c.value for c in ErrorCode} | {c.value for c in (own or [])}
    literals, _members = scan(app)
    missing = {code: where for code, where in literals.items() if code not in allowed}
    assert not missing, f"add these codes to {app}/errors.py (or the kernel's ErrorCode): {missing}"


@pytest.mark.parametrize("app", APPS)
def test_enum_members_used_exist(app: str) -> None:
    enums = _enums()
    _literals_found, members = scan(app)
    unknown = {}
    for ref, where in members.items():
        enum_name, member = ref.split(".")
        if enum_name in enums and member not in enums[enum_name].__members__:
            unknown[ref] = where
    assert not unknown, unknown


def test_each_app_has_an_error_enum_beside_its_services() -> None:
    enums = error_code_enums()
    # Nested apps (campaigns.automations, campaigns.otp) list their own codes; their sources are
    # scanned with their parent's.
    assert set(APPS) - {"smsplatform"} <= set(enums)
    assert all(app.split(".")[0] in APPS for app in enums), set(enums)
    for app, enum in enums.items():
        assert enum.__module__ == f"{app}.errors"
        assert importlib.import_module(f"{app}.errors")


def test_app_codes_do_not_shadow_shared_codes() -> None:
    shared = {c.value for c in ErrorCode}
    for app, enum in error_code_enums().items():
        assert not shared & {c.value for c in enum}, app


def test_the_scan_sees_literal_codes() -> None:
    literals, _ = scan("smsplatform")
    assert "control_character" in literals
    members = scan("templates")[1]
    assert "TemplateErrorCode.NAME_TAKEN" in members
    assert "CampaignErrorCode.NOTHING_TO_RESEND" in scan("campaigns")[1]


@pytest.mark.parametrize("app", ["compliance", "gateways", "contacts", "templates", "campaigns"])
def test_apps_raise_their_codes_as_enum_members(app: str) -> None:
    """An app's raise sites name their codes through its enum (or the kernel's), never as a
    string: a typo in a member is an AttributeError at import, a typo in a string a new code."""
    literals, _ = scan(app)
    assert not literals, f"use the enum members for: {literals}"


def test_every_listed_app_code_is_raised_somewhere() -> None:
    """No stale entries: the reference lists only codes a client can receive."""
    raised: set[str] = set()
    referenced: set[str] = set()
    for app in APPS:
        literals, members = scan(app)
        raised |= set(literals)
        referenced |= set(members)
    for app, enum in error_code_enums().items():
        stale = [c.value for c in enum if c.value not in raised and f"{enum.__name__}.{c.name}" not in referenced]
        assert not stale, f"{app}/errors.py lists codes nothing raises: {stale}"
