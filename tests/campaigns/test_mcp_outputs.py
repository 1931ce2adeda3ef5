"""Every campaign MCP tool's answer matches the output schema it advertises (else MCP reports an
internal error): the twelve tools run in process on one campaign, from draft to resend."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import TestCase
from django.utils import timezone
from jsonschema import Draft202012Validator

from campaigns.dispatch import batches_advance
from smsplatform.mcp.registry import registered_tools
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db


def _call(name: str, user: Any, args: dict[str, Any]) -> dict[str, Any]:
    spec = next(s for s in registered_tools() if s.name == name)
    out = spec.handler(act(user), dict(args))
    errors = sorted(Draft202012Validator(spec.output_schema).iter_errors(out), key=str)
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"
    return dict(out)


def test_every_campaign_tool_output_matches_its_schema(
    world: dict[str, Any], marketer: Any, approver_user: Any, schedule_policy: Any
) -> None:
    data = draft_data(world)
    created = _call("sms_marketing.campaigns.create_draft", marketer, {**data, "idempotency_key": key()})
    cid = created["result"]["campaign_id"]
    _call("sms_marketing.campaigns.list", marketer, {})
    got = _call("sms_marketing.campaigns.get", marketer, {"campaign_id": cid})
    _call("sms_marketing.cost_preview", marketer, {"campaign_id": cid})
    updated = _call(
        "sms_marketing.campaigns.update",
        marketer,
        {
            "campaign_id": cid,
            "base_version_token": got["base_version_token"],
            "changes": {"send_goal": "More visits"},
            "idempotency_key": key(),
        },
    )
    token = updated["result"]["base_version_token"]
    send_at = (timezone.now() + timedelta(days=1)).isoformat()
    held = _call(
        "sms_marketing.campaigns.schedule",
        marketer,
        {"campaign_id": cid, "base_version_token": token, "send_at": send_at, "idempotency_key": key()},
    )
    assert held["status"] == "pending_approval"
    with TestCase.captureOnCommitCallbacks(execute=True):
        _call(
            "sms_marketing.campaigns.send_approved",
            approver_user,
            {"campaign_id": cid, "base_version_token": token, "confirm": True, "idempotency_key": key()},
        )
    batches_advance(budget_seconds=5)
    _call("sms_marketing.campaigns.get", marketer, {"campaign_id": cid})
    batches = _call("sms_marketing.send_batches.list", marketer, {"campaign_id": cid})
    assert batches["batches"]
    _call("sms_marketing.delivery_status.get", marketer, {"phone": "+85259002001"})
    retry = _call("sms_marketing.failed_messages.retry_preview", marketer, {"campaign_id": cid})
    _call(
        "sms_marketing.failed_messages.resend",
        marketer,
        {"retry_preview_id": retry["retry_preview_id"], "idempotency_key": key()},
    )
    _call(
        "sms_marketing.campaigns.cancel_schedule",
        marketer,
        {"campaign_id": cid, "reason": "Stop the resend", "idempotency_key": key()},
    )


def test_mcp_refuses_a_free_copy_part_limit_outside_1_to_10(world: dict[str, Any], marketer: Any) -> None:
    """Both layers: the advertised input schema, and the service behind the handler."""
    from smsplatform.kernel.errors import ApplicationError

    spec = next(s for s in registered_tools() if s.name == "sms_marketing.campaigns.create_draft")
    args = {**draft_data(world), "idempotency_key": key(), "max_segments": 11}
    assert any(e.absolute_path and e.absolute_path[0] == "max_segments" for e in spec.input_validator.iter_errors(args))
    with pytest.raises(ApplicationError) as caught:
        spec.handler(act(marketer), dict(args))
    assert caught.value.field == "max_segments"
