"""Schemathesis over the OpenAPI document, against a live server, with two tokens.

Every operation, positive and negative cases, as a privileged account and as a low-privilege
one (marketing): never a 5xx; a refused request answers the one error shape and changes no
table (no partial write). The counts are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from compliance.roles import Role
from tests.campaigns import conftest as campaign_conftest
from tests.campaigns.conftest import crm, marketer
from tests.fuzz.test_mcp_fuzz import changed, table_counts

__all__ = ["crm", "marketer"]

pytestmark = [pytest.mark.real_clients, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "6"))


@pytest.fixture
def world(marketer: Any, crm: Any, known_gateways: None) -> dict[str, Any]:
    """The campaign tests' world (stored rows built by factories, so it needs no transaction of its
    own in a live-server test)."""
    return dict(campaign_conftest.world.__wrapped__(marketer, crm, known_gateways))  # type: ignore[attr-defined]


def test_openapi_fuzz_with_two_tokens(live_server: Any, world: dict[str, Any], make_user: Any, token_for: Any) -> None:
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    tokens = {
        "privileged": token_for(make_user(superuser=True), "fuzz-admin"),
        "low": token_for(make_user(Role.MARKETING), "fuzz-low"),
    }
    stats: Counter[str] = Counter()
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert operations

    for operation in operations:
        for who, token in tokens.items():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_operation(operation, mode, who, token, live_server.url, stats, problems)
                assert not problems, problems[:5]

    print(
        f"\nOpenAPI fuzz: {stats['calls']} requests over {len(operations)} operations x 2 tokens, "
        f"{stats['2xx']} 2xx, {stats['4xx']} 4xx, 0 5xx, 0 partial writes; statuses: "
        f"{dict(sorted((k, v) for k, v in stats.items() if k.startswith('status:')))}"
    )
    assert stats["calls"] >= len(operations) * 2


def fuzz_operation(
    operation: Any, mode: GenerationMode, who: str, token: str, base_url: str, stats: Counter[str], problems: list[str]
) -> None:
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        before = table_counts()
        try:
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        except ValueError:  # a generated header value the HTTP client itself refuses to send
            stats["unsendable"] += 1
            return
        after = table_counts()
        stats["calls"] += 1
        stats[f"status:{response.status_code}"] += 1
        label = f"{operation.method.upper()} {operation.path} as {who} ({mode.value})"
        if response.status_code >= 500:
            problems.append(
                f"{label}: {response.status_code} {response.text[:200]} for body {case.body!r:.500} query {case.query!r:.200}"
            )
        elif response.status_code >= 400:
            stats["4xx"] += 1
            if "json" in response.headers.get("Content-Type", ""):
                error = response.json().get("error") if isinstance(response.json(), dict) else None
                if not (isinstance(error, dict) and {"code", "message"} <= set(error)):
                    problems.append(f"{label}: {response.status_code} without the error shape: {response.text[:200]}")
            if changed(before, after):
                problems.append(
                    f"{label}: refused with {response.status_code} but changed {sorted(changed(before, after))}"
                )
        else:
            stats["2xx"] += 1

    try:
        run()
    except Unsatisfiable:  # nothing to break (a negative case for an operation without inputs)
        stats["no_cases"] += 1
