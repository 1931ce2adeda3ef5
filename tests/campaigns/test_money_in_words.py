"""Amounts reach people and agents with their currency, never as a Python dict repr: the one-line
summaries of held writes (action_request.status, the approval queue) and money_text itself."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from campaigns.services import campaign_create_draft, campaign_send_approved
from compliance.models import ActionType
from compliance.selectors import action_request_status
from contacts.services import segment_create, segment_preview
from smsplatform.kernel.money import money_text
from tests.support.campaigns import act, draft_data, key, policy

pytestmark = pytest.mark.django_db


def test_money_text() -> None:
    assert money_text({"HKD": "26.6"}) == "HKD 26.60"
    assert money_text({"USD": Decimal("1"), "HKD": "2.345"}) == "HKD 2.35 + USD 1.00"
    assert money_text("3.5", "HKD") == "HKD 3.50"
    assert money_text(None) == money_text({}) == money_text("n/a") == "unknown"


def _summary(answer: dict[str, Any], actor: Any) -> str:
    assert answer["status"] == "pending_approval", answer
    return str(action_request_status(actor=actor, action_request_id=answer["action_request_id"])["summary"])


def test_held_writes_say_their_cost_with_its_currency(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    policy(ActionType.CAMPAIGN_SEND)
    policy(ActionType.SEGMENT_CREATE)
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        idempotency_key=key(),
    )
    preview = segment_preview(actor=act(marketer), criteria={"audiences": [world["audience"].pk]})
    segment = segment_create(
        actor=act(marketer), segment_preview_id=preview["segment_preview_id"], name="Again", idempotency_key=key()
    )
    for summary in (_summary(held, act(marketer)), _summary(segment, act(marketer))):
        assert "cost HKD " in summary and "{" not in summary and "'" not in summary.split(":", 1)[1], summary


def test_cost_preview_amounts_carry_their_currency(world: dict[str, Any], marketer: Any) -> None:
    from campaigns.selectors import cost_preview

    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    preview = cost_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    assert set(preview["estimated_cost"]) == {"HKD"}
    assert preview["budget"]["currency"] == "HKD" and preview["quota"]["currency"] == "HKD"


def test_refusals_say_amounts_with_their_currency(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    from smsplatform.kernel.errors import ApplicationError

    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world, budget="0.10"), idempotency_key=key())[
        "result"
    ]
    with pytest.raises(ApplicationError) as err:
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,
            idempotency_key=key(),
        )
    assert err.value.code == "over_budget", err.value
    assert "above the campaign budget HKD 0.10" in err.value.message and "cost HKD " in err.value.message
