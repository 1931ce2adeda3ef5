"""The resend is set-based: one INSERT ... SELECT from the preview, every rule re-applied in SQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import F, Sum
from django.test import TestCase
from django.utils import timezone

from campaigns.dispatch import batches_advance
from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from campaigns.resend_rules import ELIGIBLE, quotes_for_countries, resend_classified
from campaigns.retries import retry_preview
from campaigns.selectors import FAILED_AGAIN, HARD_FAILURE_HINT, delivery_status_get, resend_eligibility
from campaigns.services import campaign_create_draft, campaign_send_approved, failed_messages_resend
from compliance.models import OptOutReason
from contacts.optouts import opt_out_record
from gateways.frequency import frequency_windows
from gateways.models import MessagePurpose, MessageState, OutboundMessage, QuotaReservation
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import Preview
from tests.support.campaigns import PHONES, act, draft_data, key

pytestmark = pytest.mark.django_db

# Every query of a resend (governance, preview, rules, insert, quota, audit); the same for 10 or 200.
MAX_RESEND_QUERIES = 40
# delivery_status.get: the messages, their parts, the caps (configuration) and the resend verdicts.
MAX_STATUS_QUERIES = 4


def _sent_campaign(world: dict[str, Any], marketer: Any, approver_user: Any) -> int:
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    with TestCase.captureOnCommitCallbacks(execute=True):
        out = campaign_send_approved(
            actor=act(approver_user),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,
            idempotency_key=key(),
        )
    assert out["status"] == "executed", out
    batches_advance(budget_seconds=5)
    return int(draft["campaign_id"])


def _messages(campaign_id: int, specs: list[dict[str, Any]]) -> list[OutboundMessage]:
    """Campaign messages in its first batch, each from a spec over a failed, once-submitted default."""
    first = OutboundMessage.objects.filter(batch__campaign_id=campaign_id).order_by("pk").first()
    assert first is not None
    now = timezone.now()
    rows = [
        OutboundMessage(
            gateway=first.gateway,
            sender_id=first.sender_id,
            destination=spec.get("destination", f"+852930{n:05d}"),
            country=spec.get("country", "HK"),
            body=f"{first.body} #{n}",
            encoding=first.encoding,
            segments=spec.get("segments", 1 + n % 2),
            cost=first.cost,
            currency=first.currency,
            purpose=MessagePurpose.MARKETING,
            state=spec.get("state", MessageState.FAILED),
            reference=first.reference,
            quota_reference=first.quota_reference,
            error_code=spec.get("error_code", "001"),
            submitted_at=spec.get("submitted_at", now - timedelta(minutes=5)),
            batch_id=first.batch_id,
            contact_id=first.contact_id,
        )
        for n, spec in enumerate(specs)
    ]
    return OutboundMessage.objects.bulk_create(rows)


def test_resend_runs_a_constant_number_of_queries(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_assert_max_num_queries: Any
) -> None:
    campaign_id = _sent_campaign(world, marketer, approver_user)
    runs = []
    for n in (10, 200):
        # Both runs reopen a completed campaign (the first one left it sending).
        Campaign.objects.filter(pk=campaign_id).update(state=CampaignState.COMPLETED)
        originals = _messages(campaign_id, [{"destination": f"+85293{n:03d}{i:04d}"} for i in range(n)])
        preview = retry_preview(actor=act(marketer), campaign_id=campaign_id)
        with django_assert_max_num_queries(MAX_RESEND_QUERIES) as queries:
            out = failed_messages_resend(
                actor=act(marketer), retry_preview_id=preview["retry_preview_id"], idempotency_key=key()
            )
        assert out["status"] == "executed", out
        runs.append((originals, out["result"], [q["sql"] for q in queries.captured_queries]))
    (small, small_result, small_queries), (large, large_result, large_queries) = runs
    # The first preview also holds the simulator's undelivered message; the second only the new ones.
    assert small_result["resent"] == len(small) + 1
    assert large_result["resent"] == len(large) and large_result["excluded_at_execution"] == {}
    assert len(small_queries) == len(large_queries)
    inserts = [sql for sql in large_queries if sql.lstrip().startswith("INSERT INTO") and "outboundmessage" in sql]
    assert len(inserts) == 1 and "SELECT" in inserts[0], inserts
    # Copied from the rows in SQL, not sent from Python: no recipient's phone is a parameter.
    assert not any(m.destination in inserts[0] for m in large)

    # What the per-message version wrote, written in SQL.
    batch = SendBatch.objects.get(pk=large_result["batch_id"])
    assert batch.kind == BatchKind.RESEND and batch.size == len(large)
    assert batch.resend_of_id == large[0].batch_id and batch.quota_reference.endswith(f":resend:{batch.number}")
    resends = {m.resend_of_id: m for m in OutboundMessage.objects.filter(batch=batch)}
    assert set(resends) == {m.pk for m in large}
    price = Decimal("0.35")
    for original in large:
        new = resends[original.pk]
        assert (new.destination, new.body, new.segments, new.contact_id) == (
            original.destination,
            original.body,
            original.segments,
            original.contact_id,
        )
        assert new.state == MessageState.QUEUED and new.cost == price * original.segments
        assert (new.reference, new.quota_reference) == (batch.reference, batch.quota_reference)
        assert new.request_receipt is world["gateway"].receipts_supported and new.next_attempt_at is not None
        assert new.gateway_id == world["gateway"].pk and new.currency == "HKD"
    segments = sum(m.segments for m in large)
    reservation = QuotaReservation.objects.get(reference=batch.quota_reference)
    assert (reservation.segments, reservation.amount) == (segments, price * segments)
    assert large_result["estimated_cost"] == str((price * segments).quantize(Decimal("0.01")))
    assert large_result["currency"] == "HKD"
    assert Campaign.objects.get(pk=campaign_id).state == CampaignState.SENDING


def test_the_retry_preview_runs_a_constant_number_of_queries(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_assert_max_num_queries: Any
) -> None:
    """The preview classifies and costs in the database: 10 or 200 failures, the same queries, and
    its figures those of the rules."""
    campaign_id = _sent_campaign(world, marketer, approver_user)
    counts = []
    for n in (10, 200):
        _messages(campaign_id, [{"destination": f"+85294{n:03d}{i:04d}", "segments": 1} for i in range(n)])
        with django_assert_max_num_queries(MAX_RESEND_QUERIES) as queries:
            preview = retry_preview(actor=act(marketer), campaign_id=campaign_id)
        counts.append(len(queries.captured_queries))
        # The simulator's own undelivered message is eligible too.
        assert preview["eligible"] == preview["failed"] == {10: 11, 200: 211}[n]
        (hk,) = preview["by_country"]
        assert (hk["messages"], hk["segments"], hk["estimated_cost"]) == (
            preview["eligible"],
            OutboundMessage.objects.filter(batch__campaign_id=campaign_id, state=MessageState.FAILED).aggregate(
                s=Sum("segments")
            )["s"],
            preview["estimated_cost"]["HKD"],
        )
        stored = Preview.objects.get(pk=preview["retry_preview_id"])
        assert len(stored.payload["message_ids"]) == preview["eligible"]
    assert counts[0] == counts[1]


def test_the_resend_rule_on_the_documented_cases(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    """One rule (resend_rules.resend_reason), two readers: the preview and the resend classify with it
    set-based, delivery_status.get evaluates it for the messages it shows. Each documented case,
    in the rule's order (the first that applies wins), through both."""
    campaign_id = _sent_campaign(world, marketer, approver_user)
    per_day = next(w for w in frequency_windows() if w.name == "per_day").limit
    # (spec of a message, its reason in a resend, the detail delivery_status.get adds to it)
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({"state": MessageState.DELIVERED}, "delivered", None),
        ({"state": MessageState.QUEUED}, "pending", "not failed (yet); pending is not a failure"),
        ({"state": MessageState.SUBMITTED}, "pending", "not failed (yet); pending is not a failure"),
        ({"state": MessageState.UNKNOWN}, "maybe_delivered", "submission interrupted; never resent"),
        ({"destination": "+85293100001"}, "invalid_number", None),  # an opt-out for an invalid number, below
        ({"error_code": "invalid_destination"}, "invalid_number", None),
        ({"destination": "+85293100002"}, "opted_out", None),  # opted out, below
        ({"error_code": "suppressed"}, "opted_out", None),
        # Opted out wins over a later rule (a cancellation's withdrawal).
        ({"destination": "+85293100002", "error_code": "withdrawn"}, "opted_out", None),
        ({"error_code": "withdrawn"}, "withdrawn", "stopped by a cancellation"),
        ({"error_code": "rejected", "submitted_at": None}, "hard_failure", HARD_FAILURE_HINT),
        ({"error_code": "retries_exhausted", "submitted_at": None}, ELIGIBLE, None),  # never accepted, yet temporary
        ({"destination": "+85293100003"}, "already_resent", None),  # below
        # A resend copy that failed (below): the number failed twice; no third send, not "temporary".
        ({"destination": "+85293100005"}, "failed_again", FAILED_AGAIN),
        ({"destination": "+85293100006", "error_code": "retries_exhausted"}, "failed_again", FAILED_AGAIN),
        ({"destination": "+85293100004"}, "frequency_capped", None),  # at the daily cap, below
        # Expired was sent: it counts towards its own phone's cap (1 a day in this world).
        (
            {"state": MessageState.EXPIRED, "error_code": "expired"},
            "frequency_capped" if per_day <= 1 else ELIGIBLE,
            None,
        ),
        ({"country": "SG"}, "country_not_covered", None),  # eligible, but no gateway covers SG for a resend
        ({}, ELIGIBLE, None),
    ]
    messages = _messages(campaign_id, [spec for spec, _reason, _detail in cases])
    opt_out_record(actor=Actor.system("t"), phone="+85293100001", reason=OptOutReason.INVALID, source="sms")
    opt_out_record(actor=Actor.system("t"), phone="+85293100002", reason="stop", source="sms")
    resent = next(m for m in messages if m.destination == "+85293100003")
    _messages(campaign_id, [{"destination": "+85293199999", "state": MessageState.QUEUED}])
    OutboundMessage.objects.filter(destination="+85293199999").update(resend_of=resent)
    originals = _messages(campaign_id, [{"destination": "+85293100005"}, {"destination": "+85293100006"}])
    for original in originals:
        OutboundMessage.objects.filter(destination=original.destination).exclude(pk=original.pk).update(
            resend_of=original
        )
    _messages(campaign_id, [{"destination": "+85293100004", "state": MessageState.DELIVERED}] * per_day)
    expected = {m.pk: (reason, detail) for m, (_spec, reason, detail) in zip(messages, cases, strict=True)}

    # The set-based path (retry_preview, resend): coverage by a gateway's quotes is its last check.
    campaign = Campaign.objects.select_related("gateway").get(pk=campaign_id)
    quotes = quotes_for_countries(campaign, {m.country for m in messages})
    assert "SG" not in quotes
    in_resend = dict(resend_classified(campaign, list(expected), quotes).values_list("pk", F("m_reason")))
    assert in_resend == {pk: reason for pk, (reason, _detail) in expected.items()}

    # One message at a time, as delivery_status.get shows it: the same rule, without the coverage check.
    for pk, (reason, detail) in expected.items():
        reason = ELIGIBLE if reason == "country_not_covered" else reason
        verdict = {"eligible": reason == ELIGIBLE, "reason": reason} | ({"detail": detail} if detail else {})
        assert resend_eligibility(message_ids=[pk]) == {pk: verdict}

    # Only the campaign's own messages, only the ids given: never wider than the preview.
    outside = _messages(campaign_id, [{}])[0]
    OutboundMessage.objects.filter(pk=outside.pk).update(batch=None)  # not a message of this campaign
    ids = [m.pk for m in messages[:3]]
    assert set(resend_classified(campaign, [*ids, outside.pk], quotes).values_list("pk", flat=True)) == set(ids)


def test_delivery_status_runs_a_constant_number_of_queries(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_assert_max_num_queries: Any
) -> None:
    """The resend verdicts of the messages shown are one query, however many messages (up to the
    20 shown) and whatever their reasons."""
    campaign_id = _sent_campaign(world, marketer, approver_user)
    phone = "+85293200000"
    (first,) = _messages(campaign_id, [{"destination": phone}])
    counts = []
    with django_assert_max_num_queries(MAX_STATUS_QUERIES) as queries:
        one = delivery_status_get(actor=act(marketer), message_id=first.pk)
    counts.append(len(queries.captured_queries))
    assert one["messages"][0]["resend"] == {"eligible": True, "reason": ELIGIBLE}
    with django_assert_max_num_queries(MAX_STATUS_QUERIES) as queries:
        delivery_status_get(actor=act(marketer), phone=phone)
    counts.append(len(queries.captured_queries))

    # More messages than the 20 shown, in states with different verdicts; then the phone opts out.
    states = [MessageState.DELIVERED, MessageState.QUEUED, MessageState.UNKNOWN, MessageState.EXPIRED]
    _messages(campaign_id, [{"destination": phone, "state": states[i % 4]} for i in range(24)])
    with django_assert_max_num_queries(MAX_STATUS_QUERIES) as queries:
        many = delivery_status_get(actor=act(marketer), phone=phone)
    counts.append(len(queries.captured_queries))
    assert many["count"] == 20
    assert {m["resend"]["reason"] for m in many["messages"]} >= {"delivered", "pending", "maybe_delivered"}
    opt_out_record(actor=Actor.system("t"), phone=phone, reason="stop", source="sms")
    with django_assert_max_num_queries(MAX_STATUS_QUERIES) as queries:
        opted = delivery_status_get(actor=act(marketer), phone=phone)
    counts.append(len(queries.captured_queries))
    expired = [m["resend"] for m in opted["messages"] if m["state"] == MessageState.EXPIRED]
    assert expired and all(r == {"eligible": False, "reason": "opted_out"} for r in expired)
    assert len(set(counts)) == 1, counts


def test_nothing_left_to_resend_writes_nothing(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    campaign_id = _sent_campaign(world, marketer, approver_user)
    preview = retry_preview(actor=act(marketer), campaign_id=campaign_id)
    assert preview["eligible"] == 1  # the simulator's undelivered number
    opt_out_record(actor=Actor.system("t"), phone=PHONES["undelivered"], reason="stop", source="sms")
    with pytest.raises(ApplicationError) as err:
        failed_messages_resend(actor=act(marketer), retry_preview_id=preview["retry_preview_id"], idempotency_key=key())
    assert err.value.code == "nothing_to_resend" and err.value.details == {"excluded": {"opted_out": 1}}
    # The batch written before the INSERT found nothing is rolled back with the preview's use.
    assert not SendBatch.objects.filter(campaign_id=campaign_id, kind=BatchKind.RESEND).exists()
    assert not OutboundMessage.objects.filter(resend_of__isnull=False).exists()
    assert Preview.objects.get(pk=preview["retry_preview_id"]).consumed_at is None
    assert not QuotaReservation.objects.filter(reference__contains=":resend:").exists()
