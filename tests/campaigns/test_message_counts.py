"""The per-batch message counters the database keeps (gateways.message_counts, issue 19) agree with
a real COUNT over the messages after every step of a campaign's life: the dispatch, the claim and
submits, receipts, failures, a resend, a cancellation's withdrawal, direct bulk updates and deletes,
and the fold. The tools read the counters: their figures are compared with COUNTs as well."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Max, Sum
from django.test import TestCase

from campaigns.dispatch import batches_advance, campaign_stop
from campaigns.models import Campaign, SendBatch
from campaigns.progress import campaign_progress, campaigns_progress, send_batches_progress
from campaigns.retries import retry_preview
from campaigns.selectors import campaign_get, campaign_progress_get, send_batches_list
from campaigns.services import (
    campaign_create_draft,
    campaign_send_approved,
    campaign_update,
    failed_messages_resend,
)
from gateways.charges import charged_q
from gateways.message_counts import batch_message_counts, message_counts_fold, message_counts_rebuild
from gateways.models import BatchMessageCount, MessageState, OutboundMessage
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db(transaction=False)


def counted(batch_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The figures by a COUNT over the messages themselves (what the selectors did before)."""
    out: dict[int, dict[str, Any]] = {}
    rows = (
        OutboundMessage.objects.filter(batch_id__in=batch_ids)
        .values_list("batch_id", "state", "gateway_id", "error_code")
        .annotate(n=Count("id"), amount=Sum("cost", filter=charged_q()))
        .order_by()
    )
    for batch_id, state, gateway_id, error, n, amount in rows:
        entry = out.setdefault(
            batch_id,
            {"states": dict.fromkeys(MessageState.values, 0), "gateways": set(), "errors": {}, "charged": Decimal(0)},
        )
        entry["states"][state] += n
        entry["gateways"].add(gateway_id)
        entry["charged"] += amount or 0
        if error:
            entry["errors"][(gateway_id, error)] = entry["errors"].get((gateway_id, error), 0) + n
    return out


def assert_counters_match(campaign_id: int) -> None:
    batch_ids = list(SendBatch.objects.filter(campaign_id=campaign_id).values_list("pk", flat=True))
    expected = counted(batch_ids)
    got = batch_message_counts(batch_ids)
    assert set(got) == set(expected)
    for batch_id, entry in expected.items():
        figures = got[batch_id]
        assert figures.states == entry["states"], batch_id
        assert figures.gateways == entry["gateways"]
        assert figures.errors == entry["errors"]
        assert figures.charged.quantize(Decimal("0.0001")) == entry["charged"].quantize(Decimal("0.0001"))
    # The progress readers, campaign-wide and per batch.
    total = dict.fromkeys(MessageState.values, 0)
    for entry in expected.values():
        for state, n in entry["states"].items():
            total[state] += n
    assert campaign_progress(campaign_id) == {**total, "total": sum(total.values())}
    if expected:
        assert campaigns_progress([campaign_id]) == {campaign_id: total}
    assert send_batches_progress(batch_ids) == {b: e["states"] for b, e in expected.items()}


def _send(world: dict[str, Any], marketer: Any, approver_user: Any, **changes: Any) -> int:
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    cid = int(draft["campaign_id"])
    token = draft["base_version_token"]
    if changes:
        campaign_update(
            actor=act(marketer), campaign_id=cid, base_version_token=token, changes=changes, idempotency_key=key()
        )
        token = campaign_get(actor=act(marketer), campaign_id=cid)["base_version_token"]
    with TestCase.captureOnCommitCallbacks(execute=True):  # the dispatch runs on commit (eager)
        sent = campaign_send_approved(
            actor=act(approver_user), campaign_id=cid, base_version_token=token, confirm=True, idempotency_key=key()
        )
    assert sent["status"] == "executed", sent
    return cid


def test_counters_follow_dispatch_submits_receipts_failures_and_a_resend(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    cid = _send(world, marketer, approver_user)
    assert OutboundMessage.objects.filter(batch__campaign_id=cid).exists()
    assert_counters_match(cid)  # the dispatch's INSERT ... SELECT
    batches_advance(budget_seconds=5)  # claim, submit, receipts (eager): delivered and one failure
    assert_counters_match(cid)
    batches_advance(budget_seconds=5)
    assert_counters_match(cid)
    progress = campaign_progress(cid)
    assert progress["delivered"] == 3 and progress["failed"] == 1, progress

    # The tool outputs: the same figures as a COUNT.
    report = send_batches_list(actor=act(marketer), campaign_id=cid)
    by_count = counted([b["batch_id"] for b in report["batches"]])
    for b in report["batches"]:
        states = by_count.get(b["batch_id"], {"states": dict.fromkeys(MessageState.values, 0)})["states"]
        assert b["by_state"] == states
        assert b["delivered"] == states["delivered"]
        assert b["failed"] == states["failed"] + states["expired"]
    charged = OutboundMessage.objects.filter(charged_q(), batch__campaign_id=cid).aggregate(s=Sum("cost"))["s"]
    assert Decimal(report["charged_total"]) == Decimal(charged).quantize(Decimal("0.0001"))
    latest = OutboundMessage.objects.filter(batch__campaign_id=cid).aggregate(at=Max("updated_at"))["at"]
    assert max(b["updated_at"] for b in report["batches"]) <= latest.isoformat()
    assert campaign_progress_get(actor=act(marketer), campaign_id=cid)["progress"] == campaign_progress(cid)

    preview = retry_preview(actor=act(marketer), campaign_id=cid)
    assert (
        preview["failed"]
        == OutboundMessage.objects.filter(
            batch__campaign_id=cid, state__in=[MessageState.FAILED, MessageState.EXPIRED]
        ).count()
    )
    assert preview["expected"]["campaign_delivery_rate"] == 0.75
    resent = failed_messages_resend(
        actor=act(marketer), retry_preview_id=preview["retry_preview_id"], idempotency_key=key()
    )
    assert resent["status"] == "executed", resent
    assert_counters_match(cid)  # the resend's batch and its queued copy
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    assert_counters_match(cid)


def test_counters_follow_bulk_updates_deletes_withdrawal_and_the_fold(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    cid = _send(world, marketer, approver_user, batch_size=1, batch_interval_seconds=3600)
    messages = OutboundMessage.objects.filter(batch__campaign_id=cid)
    first, second, *_ = list(messages.order_by("pk"))
    # Whatever path writes: ORM update(), save(), raw SQL, a delete, a batch move.
    messages.filter(pk=first.pk).update(state=MessageState.SUBMITTING)
    assert_counters_match(cid)
    second.state, second.error_code = MessageState.FAILED, "rejected"
    second.save()
    assert_counters_match(cid)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gateways_outboundmessage SET state = %s, submitted_at = created_at, cost = cost + 1 WHERE id = %s",
            [MessageState.SUBMITTED, first.pk],
        )
    assert_counters_match(cid)
    messages.filter(pk=first.pk).update(attempts=3)  # no figure moves: nothing written
    assert_counters_match(cid)
    # A cancellation withdraws what is still queued.
    assert messages.filter(state=MessageState.QUEUED).exists()
    stopped = campaign_stop(actor=act(approver_user), campaign=Campaign.objects.get(pk=cid), reason="test")
    assert stopped["withdrawn_messages"] > 0
    assert_counters_match(cid)
    OutboundMessage.objects.filter(pk=second.pk).delete()
    assert_counters_match(cid)
    # Messages of no batch (OTP, tests) are not counted.
    rows_before = BatchMessageCount.objects.count()
    OutboundMessage.objects.filter(pk=first.pk).update(batch=None)
    assert_counters_match(cid)
    OutboundMessage.objects.filter(pk=first.pk).update(state=MessageState.DELIVERED)
    assert BatchMessageCount.objects.count() >= rows_before

    # The fold sums each key's rows into one; the figures do not move.
    before = {b: f.states for b, f in batch_message_counts(SendBatch.objects.values_list("pk", flat=True)).items()}
    message_counts_fold()
    after = {b: f.states for b, f in batch_message_counts(SendBatch.objects.values_list("pk", flat=True)).items()}
    assert before == after
    assert_counters_match(cid)
    keys = BatchMessageCount.objects.values("batch_id", "gateway_id", "state", "error_code", "charged")
    assert keys.annotate(n=Count("id")).filter(n__gt=1).count() == 0  # one row per key
    assert not BatchMessageCount.objects.filter(n=0, cost=0).exists()
    # A rebuild from the messages gives the same figures.
    message_counts_rebuild()
    assert_counters_match(cid)


def test_send_batches_list_pages_by_batch_number_and_totals_the_whole_campaign(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    from smsplatform.kernel.errors import ApplicationError

    cid = _send(world, marketer, approver_user, batch_size=1, batch_interval_seconds=0)
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    whole = send_batches_list(actor=act(marketer), campaign_id=cid)
    assert whole["count"] == 4 and "next_after_number" not in whole  # the tool's output as before
    first = send_batches_list(actor=act(marketer), campaign_id=cid, limit=3)
    assert [b["number"] for b in first["batches"]] == [1, 2, 3] and first["next_after_number"] == 3
    rest = send_batches_list(actor=act(marketer), campaign_id=cid, limit=3, after_number=3)
    assert [b["number"] for b in rest["batches"]] == [4] and rest["next_after_number"] is None
    assert first["batches"] + rest["batches"] == whole["batches"]
    assert first["charged_total"] == rest["charged_total"] == whole["charged_total"] != "0.0000"
    for bad in ({"limit": 0}, {"limit": "3"}, {"after_number": -1}, {"limit": True}):
        with pytest.raises(ApplicationError) as err:
            send_batches_list(actor=act(marketer), campaign_id=cid, **bad)
        assert err.value.field == next(iter(bad))
