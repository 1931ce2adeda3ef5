"""Hypothesis drives every live MCP tool from its own input schema, valid and invalid.

Each call runs the whole tool path (permission, input validation, the service, the output
check) as the endpoint does, in process: at least 10,000 calls per run, as a privileged and
a low-privilege account. Every answer must be a tool result; none may be an internal error
(a server error); a refused call must leave every table as it was (no partial write), a read
must change nothing, and a write that executed must be audited. A few hundred raw JSON-RPC
bodies go through the /mcp view as well. The counts are printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.roles import Role
from smsplatform.mcp.registry import ToolSpec, registered_tools
from smsplatform.mcp.server import run_tool
from smsplatform.models import AuditLog
from tests.campaigns.conftest import crm, marketer, world
from tests.fuzz.schema_strategies import JSON, from_schema

__all__ = ["crm", "marketer", "world"]  # fixtures: real rows for the generated ids to hit

pytestmark = [pytest.mark.real_clients, pytest.mark.django_db]

MIN_CALLS = 10_000
# Per tool and account: 34 tools x 2 accounts x 150 = 10,200 tool calls.
EXAMPLES_PER_TOOL = int(os.environ.get("MCP_FUZZ_EXAMPLES", "150"))
# Stored previews are what a preview tool is for; they are the only rows a read may add.
PREVIEW_TABLES = {"smsplatform_preview"}


def arguments(spec: ToolSpec) -> st.SearchStrategy[Any]:
    """Valid arguments (from the schema: realistic ones and random ones), and invalid ones: a
    valid object with one field broken, dropped or added, or any JSON at all."""
    schema = spec.input_schema
    valid = from_schema(schema)
    props = sorted(schema.get("properties", {}))

    def broken(args: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
        args = dict(args)
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace" and props:
            args[data.draw(st.sampled_from(props))] = data.draw(JSON)
        elif action == "drop" and args:
            args.pop(data.draw(st.sampled_from(sorted(args))))
        else:
            args[data.draw(st.text(min_size=1, max_size=12))] = data.draw(JSON)
        return args

    invalid = st.builds(lambda a, d: broken(a, d), valid, st.data())
    realistic = from_schema(schema, realistic=True)
    anything = st.dictionaries(st.sampled_from([*props, "x"]), JSON, max_size=4)
    return st.one_of(realistic, realistic, valid, invalid, anything, JSON)


def table_counts() -> dict[str, int]:
    tables = sorted(m._meta.db_table for m in apps.get_models() if m._meta.managed)
    # Table names come from the models, quoted: one query for every count.
    counts = (f"(SELECT COUNT(*) FROM {connection.ops.quote_name(t)})" for t in tables)  # noqa: S608
    sql = "SELECT " + ", ".join(counts)
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return dict(zip(tables, row, strict=True))


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {t for t in before if before[t] != after[t]}


def test_every_tool_fuzzed_from_its_schema(world: dict[str, Any], make_user: Any) -> None:
    users = {"privileged": make_user(superuser=True), "low": make_user(Role.MARKETING)}
    stats: Counter[str] = Counter()
    problems: list[str] = []

    for spec in registered_tools():
        for who, user in users.items():
            fuzz_tool(spec, who, SimpleNamespace(user=user, auth=None), stats, problems)
            assert not problems, problems[:10]

    stats["http"] = jsonrpc_http_fuzz(users["privileged"])
    total = stats["calls"] + stats["http"]
    print(
        f"\nMCP fuzz: {total} calls ({stats['calls']} tool calls, {stats['http']} raw JSON-RPC), "
        f"{stats['ok']} ok ({stats['writes_ok']} writes: {stats['writes_audited']} audited, "
        f"{stats['writes_no_change']} no-op replays), {stats['errors']} tool errors, 0 server errors, "
        f"0 partial writes; codes: {dict(sorted((k, v) for k, v in stats.items() if k.startswith('error:')))}"
    )
    assert not problems, problems[:10]
    assert total >= MIN_CALLS or EXAMPLES_PER_TOOL < 150


def fuzz_tool(spec: ToolSpec, who: str, request: Any, stats: Counter[str], problems: list[str]) -> None:
    seen: set[tuple[str, str, Any]] = set()

    @settings(
        max_examples=EXAMPLES_PER_TOOL,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(args=arguments(spec))
    def call(args: Any) -> None:
        before = table_counts()
        result = run_tool(spec.name, args, request)
        after = table_counts()
        stats["calls"] += 1
        text = result.content[0].text  # type: ignore[union-attr]
        diff = changed(before, after)
        if result.isError:
            stats["errors"] += 1
            error = json.loads(text)["error"]
            stats[f"error:{error['code']}"] += 1
            if error["code"] in ("internal_error", "write_committed"):
                problems.append(f"{spec.name} as {who}: {error['code']} for {args!r}")
            if result.structuredContent is not None:
                problems.append(f"{spec.name}: error with structuredContent")
            if diff:
                problems.append(f"{spec.name} as {who}: refused call changed {sorted(diff)} for {args!r}")
            return
        stats["ok"] += 1
        if spec.read_only and diff - PREVIEW_TABLES:
            problems.append(f"{spec.name} (read) changed {sorted(diff)}")
        if not spec.read_only:
            stats["writes_ok"] += 1
            # A replayed key answers the first result and does nothing (hypothesis replays
            # examples), so only a key's first success must add its audit row.
            first = (who, spec.name, args.get("idempotency_key")) not in seen
            seen.add((who, spec.name, args.get("idempotency_key")))
            audited = after[AuditLog._meta.db_table] > before[AuditLog._meta.db_table]
            if first and not audited and diff:
                problems.append(
                    f"{spec.name}: a write changed {sorted(diff)} without an audit row, {args!r}: {text[:300]}"
                )
            stats["writes_audited" if audited else "writes_no_change"] += 1
        if spec.output_problem(result.structuredContent) is not None:
            problems.append(f"{spec.name}: output outside its schema")

    call()


def jsonrpc_http_fuzz(user: Any) -> int:
    """Raw bodies through the /mcp view: never a 5xx, always a JSON-RPC answer or 202."""
    from smsplatform.models import ApiToken

    _token, key = ApiToken.issue(user=user, name="fuzz")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT="application/json, text/event-stream")
    methods = st.sampled_from(["tools/call", "tools/list", "ping", "initialize", "nope", "", "resources/list"])
    message = st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2])},
        optional={"id": JSON, "method": methods | st.text(max_size=5), "params": JSON},
    )
    count = 0

    @settings(max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(message, st.lists(message, max_size=2), JSON))
    def post(body: Any) -> None:
        nonlocal count
        response = client.post("/mcp", json.dumps(body), content_type="application/json")
        count += 1
        assert response.status_code < 500, (body, response.content[:300])
        if response.status_code != 202:
            answer = json.loads(response.content)
            assert answer.get("jsonrpc") == "2.0" or "error" in answer, answer

    post()
    return count
