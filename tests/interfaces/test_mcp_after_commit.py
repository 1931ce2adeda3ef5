"""An MCP write that fails after its transaction committed says that it committed.

The handlers here stand in for a write tool's service: they write through ``run_idempotent``
(the record commits with the work) and then fail the way a real tool can after the commit.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import transaction

from smsplatform.kernel.idempotency import run_idempotent
from smsplatform.mcp import registry
from smsplatform.mcp.server import run_tool
from smsplatform.models import IdempotencyRecord

pytestmark = pytest.mark.django_db(transaction=True)

TOOL = "sms_marketing.contacts.opt_out"
ARGS = {"phone": "+85291234567", "idempotency_key": "after-commit-0001"}
EXECUTED = {"opt_out_id": 7, "suppressed": True, "effective_at": "2026-01-01T00:00:00+00:00"}


@pytest.fixture
def call(make_user: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    user = make_user(superuser=True)
    request = SimpleNamespace(user=user, auth=None)
    spec = registry.get_tool(TOOL)
    assert spec is not None

    def call(handler: Any, args: dict[str, Any] | None = None) -> dict[str, Any]:
        monkeypatch.setitem(registry._REGISTRY, TOOL, dataclasses.replace(spec, handler=handler))
        result = run_tool(TOOL, dict(args or ARGS), request)
        assert result.isError
        body = json.loads(result.content[0].text)  # type: ignore[union-attr]
        assert result.structuredContent is None
        return dict(body["error"])

    return call


def _write(actor: Any, args: dict[str, Any], then: Any = None, answer: dict[str, Any] | None = None) -> Any:
    def execute() -> dict[str, Any]:
        if then is not None:
            transaction.on_commit(then)
        return dict(answer or EXECUTED)

    return run_idempotent(
        actor=actor, key=args["idempotency_key"], operation="contacts.opt_out", payload=args, execute=execute
    )


def test_an_on_commit_step_that_fails_reports_the_committed_write(call: Any) -> None:
    def boom() -> None:
        raise RuntimeError("enqueue failed: broker unreachable")

    error = call(lambda actor, args: _write(actor, args, then=boom))
    assert error["code"] == "write_committed"
    assert error["field"] == "idempotency_key"
    assert "committed" in error["message"] and "rolled back" not in error["message"]
    assert TOOL in error["hint"] and "same idempotency_key" in error["hint"]
    assert error["details"] == {"committed": True, "idempotency_key": ARGS["idempotency_key"], "result": EXECUTED}
    assert "broker" not in json.dumps(error)
    assert IdempotencyRecord.objects.filter(key=ARGS["idempotency_key"]).count() == 1


def test_an_answer_outside_the_output_schema_after_the_write_reports_it_committed(call: Any) -> None:
    def wrong_shape(actor: Any, args: dict[str, Any]) -> dict[str, Any]:
        _write(actor, args)
        return {"unexpected": "shape"}

    error = call(wrong_shape)
    assert error["code"] == "write_committed"
    assert error["details"]["result"] == EXECUTED


def test_an_answer_that_cannot_be_serialised_after_the_write_reports_it_committed(
    call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unserialisable(result: dict[str, Any]) -> Any:
        raise TypeError("Object of type X is not JSON serializable")

    monkeypatch.setattr("smsplatform.mcp.server.success_result", unserialisable)
    error = call(lambda actor, args: _write(actor, args))
    assert error["code"] == "write_committed"
    assert "serializable" not in json.dumps(error)


def test_a_held_write_names_the_action_request_to_follow(call: Any) -> None:
    pending = {"status": "pending_approval", "action": "contacts.upsert", "action_request_id": 42}

    def boom() -> None:
        raise RuntimeError("notification failed")

    error = call(lambda actor, args: _write(actor, args, then=boom, answer=pending))
    assert error["code"] == "write_committed"
    assert "action_request_id 42" in error["hint"] and "sms_marketing.action_request.status" in error["hint"]


def test_a_failure_before_the_commit_still_says_rolled_back(call: Any) -> None:
    def fails_inside(actor: Any, args: dict[str, Any]) -> dict[str, Any]:
        def execute() -> dict[str, Any]:
            raise RuntimeError("constraint")

        return run_idempotent(
            actor=actor, key=args["idempotency_key"], operation="contacts.opt_out", payload=args, execute=execute
        )

    error = call(fails_inside)
    assert error["code"] == "internal_error"
    assert "rolled back" in error["message"]
    assert not IdempotencyRecord.objects.filter(key=ARGS["idempotency_key"]).exists()


def test_an_earlier_write_under_the_same_key_is_not_claimed_by_a_later_failure(call: Any) -> None:
    call(lambda actor, args: _write(actor, args, then=lambda: 1 / 0))

    def explode(actor: Any, args: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("unrelated failure before any write")

    error = call(explode)
    assert error["code"] == "internal_error"
