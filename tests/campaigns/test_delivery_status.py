"""delivery_status.get: by campaign or batch with paging, failure reasons in words, updated_at that
moves with every state change; the same answers over MCP and REST."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import TestCase

from campaigns.dispatch import batches_advance, campaign_dispatch
from campaigns.models import Campaign
from campaigns.selectors import delivery_status_get, send_batches_list
from campaigns.services import campaign_create_draft, campaign_send_approved
from gateways.failure_reasons import MAP_CAUSES, failure_reason
from gateways.models import MessageState, OutboundMessage
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.server import run_tool
from tests.support.campaigns import PHONES, act, draft_data, key

pytestmark = pytest.mark.django_db


def _campaign(world: dict[str, Any], marketer: Any, approver_user: Any, *, send: bool = True) -> int:
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    out = campaign_send_approved(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        confirm=True,
        idempotency_key=key(),
    )
    assert out["status"] == "executed", out
    cid = int(draft["campaign_id"])
    campaign_dispatch(campaign_id=cid, version=Campaign.objects.get(pk=cid).version)
    if send:
        with TestCase.captureOnCommitCallbacks(execute=True):
            for _ in range(3):
                batches_advance(budget_seconds=5)
    return cid


def test_a_campaigns_messages_page_by_page_and_its_failures(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    cid = _campaign(world, marketer, approver_user)
    ids = sorted(OutboundMessage.objects.filter(batch__campaign_id=cid).values_list("pk", flat=True), reverse=True)
    assert len(ids) == 4
    seen, before = [], None
    while True:
        page = delivery_status_get(actor=act(marketer), campaign_id=cid, limit=3, before_id=before)
        seen += [m["message_id"] for m in page["messages"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == ids  # every message once, newest first

    failed = delivery_status_get(actor=act(marketer), campaign_id=cid, state="failed")
    (message,) = failed["messages"]
    assert message["error_code"] == "001" and message["failure_reason"] == MAP_CAUSES["001"]
    assert failed["next_before_id"] is None
    batch_id = OutboundMessage.objects.get(pk=message["message_id"]).batch_id
    by_batch = delivery_status_get(actor=act(marketer), batch_id=batch_id, state="failed")
    assert [m["message_id"] for m in by_batch["messages"]] == [message["message_id"]]

    # send_batches.list says the same in words, and where the message ids are.
    report = send_batches_list(actor=act(marketer), campaign_id=cid)
    summary = [e for b in report["batches"] for e in b["error_summary"]]
    assert summary == [{"error_code": "001", "failure_reason": MAP_CAUSES["001"], "count": 1}]
    assert "sms_marketing.delivery_status.get" in report["note"]


def test_bad_combinations_are_refused_with_a_field(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    cid = _campaign(world, marketer, approver_user, send=False)
    some = OutboundMessage.objects.filter(batch__campaign_id=cid).first()
    assert some is not None
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "message_id"),
        ({"message_id": some.pk, "campaign_id": cid}, "message_id"),
        ({"campaign_id": cid, "state": "lost"}, "state"),
        ({"campaign_id": cid, "limit": 0}, "limit"),
        ({"campaign_id": cid, "limit": 101}, "limit"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ApplicationError) as err:
            delivery_status_get(actor=act(marketer), **kwargs)
        assert (err.value.code, err.value.field) == ("validation_error", field), kwargs
    with pytest.raises(ApplicationError) as err:
        delivery_status_get(actor=act(marketer), message_id=10**9)
    assert err.value.code == "not_found" and "delivery_status.get" in str(err.value.hint)
    with pytest.raises(ApplicationError) as err:
        delivery_status_get(actor=act(marketer), campaign_id=10**9)
    assert err.value.code == "not_found"


def test_updated_at_moves_with_every_state_change(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    cid = _campaign(world, marketer, approver_user, send=False)
    message = OutboundMessage.objects.get(batch__campaign_id=cid, destination=PHONES["undelivered"])
    queued_at = message.updated_at
    time.sleep(0.01)
    with TestCase.captureOnCommitCallbacks(execute=True):
        for _ in range(3):
            batches_advance(budget_seconds=5)
    message.refresh_from_db()
    assert message.state == MessageState.FAILED and message.updated_at > queued_at
    # A bulk update (the delivery layer's way) moves it too; one that changes nothing does not.
    failed_at = message.updated_at
    time.sleep(0.01)
    OutboundMessage.objects.filter(pk=message.pk).update(state=MessageState.EXPIRED, error_code="expired")
    message.refresh_from_db()
    assert message.updated_at > failed_at
    expired_at = message.updated_at
    OutboundMessage.objects.filter(pk=message.pk).update(state=MessageState.EXPIRED)
    message.refresh_from_db()
    assert message.updated_at == expired_at
    shown = delivery_status_get(actor=act(marketer), message_id=message.pk)["messages"][0]
    assert shown["updated_at"] == expired_at.isoformat()


def test_failure_reasons_per_provider() -> None:
    assert failure_reason(provider="smpp", code="001") == MAP_CAUSES["001"]
    assert failure_reason(provider="simulator", code="1") == MAP_CAUSES["001"]
    assert "Unreachable destination handset" in failure_reason(provider="twilio", code="30003")
    assert "Unreachable destination handset" in failure_reason(provider="twilio", code="twilio_30003")
    assert "ESME_RINVDSTADR" in failure_reason(provider="smpp", code="smpp_0x0b")
    assert "NACK" in failure_reason(provider="kannel", code="smsc_reject")
    assert failure_reason(provider="smpp", code="001", reason="the SMSC's words") == "the SMSC's words"
    assert failure_reason(provider="smpp", code="") == ""
    assert "error 777" in failure_reason(provider="smpp", code="777")


def test_over_mcp_and_rest(world: dict[str, Any], marketer: Any, approver_user: Any, api_for: Any) -> None:
    cid = _campaign(world, marketer, approver_user)
    request = SimpleNamespace(user=marketer, auth=None)
    result = run_tool("sms_marketing.delivery_status.get", {"campaign_id": cid, "state": "failed"}, request)
    assert not result.isError, result
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["count"] == 1 and body["messages"][0]["failure_reason"] == MAP_CAUSES["001"]
    paged = run_tool("sms_marketing.delivery_status.get", {"campaign_id": cid, "limit": 2}, request)
    assert json.loads(paged.content[0].text)["next_before_id"] is not None  # type: ignore[union-attr]
    rest = api_for(marketer).get(f"/api/v1/delivery-status/?campaign_id={cid}&state=failed&limit=5")
    assert rest.status_code == 200, rest.content
    assert rest.json()["messages"][0]["message_id"] == body["messages"][0]["message_id"]
    bad = api_for(marketer).get(f"/api/v1/delivery-status/?campaign_id={cid}&state=lost")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "state"
