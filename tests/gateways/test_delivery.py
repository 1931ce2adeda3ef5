"""The delivery layer: queue, submit at most once, receipts, inbound, faults by prefix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from gateways.adapters.base import InboundEvent, ReceiptEvent, SendOutcome
from gateways.delivery.claim import messages_claim
from gateways.delivery.inbound import INBOUND_HANDLERS, inbound_receive
from gateways.delivery.outcomes import outcomes_record
from gateways.delivery.queue import gateway_test_sms, messages_submit
from gateways.delivery.receipts import receipts_ingest
from gateways.delivery.reconcile import messages_reconcile
from gateways.models import (
    Account,
    DeliveryReceipt,
    Gateway,
    MessagePart,
    MessageState,
    OutboundMessage,
    Provider,
    QuotaReservation,
    ReservationState,
)
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from tests.support.actors import actor
from tests.support.delivery import SYSTEM, queue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
CHINESE_200 = ("親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。" * 6)[:200]


@pytest.fixture
def operator(make_user: Any) -> Any:
    return make_user("operations")


def submit(gateway: Gateway) -> dict[str, int]:
    return messages_submit(actor=SYSTEM, gateway_id=gateway.pk)


def test_test_sms_goes_end_to_end_and_is_charged(
    sim: Gateway, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Submission is enqueued after commit; tasks run inline in tests.
    with django_capture_on_commit_callbacks(execute=True):
        message = gateway_test_sms(
            actor=actor(operator),
            gateway_code="sim-hk",
            destination="91234567",
            body="Gateway check",
            sender_id="#SHOPHK",
        )
    message.refresh_from_db()
    assert message.destination == "+85291234567" and message.state == MessageState.DELIVERED
    assert message.parts.get().state == MessageState.DELIVERED
    assert Account.objects.get().balance == Decimal("99.7000")
    assert QuotaReservation.objects.get(reference=f"message:{message.pk}").state == ReservationState.SETTLED
    assert AuditLog.objects.filter(action="gateway.test_sms", user=operator).exists()


def test_test_sms_needs_the_permission(sim: Gateway, marketing: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        gateway_test_sms(
            actor=actor(marketing), gateway_code="sim-hk", destination="91234567", body="x", sender_id="#SHOPHK"
        )
    assert err.value.code == "permission_denied"
    assert not OutboundMessage.objects.exists()


def test_chinese_200_chars_is_three_parts_each_with_a_receipt(sim: Gateway) -> None:
    message = queue("+85291234567", CHINESE_200)
    assert (message.encoding, message.segments, message.cost) == ("UCS-2", 3, Decimal("0.9000"))
    submit(sim)
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert list(message.parts.order_by("part_number").values_list("part_number", flat=True)) == [1, 2, 3]


def test_invalid_destination_fails_permanently_and_releases_quota(sim: Gateway) -> None:
    message = queue("+85259000123")
    assert submit(sim)["permanent"] == 1
    message.refresh_from_db()
    assert (message.state, message.error_code) == (MessageState.FAILED, "invalid_destination")
    assert QuotaReservation.objects.get().state == ReservationState.RELEASED
    assert Account.objects.get().balance == Decimal("100")


def test_throttled_backs_off_then_succeeds(sim: Gateway) -> None:
    message = queue("+85259001123")
    assert submit(sim)["temporary"] == 1
    message.refresh_from_db()
    assert message.state == MessageState.QUEUED and message.next_attempt_at is not None and message.attempts == 1
    assert submit(sim) == {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}  # backing off
    for expected in ("temporary", "accepted"):
        OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
        assert submit(sim)[expected] == 1
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED and message.attempts == 3


def test_undelivered_and_missing_receipts(sim: Gateway) -> None:
    undelivered, silent = queue("+85259002123"), queue("+85259003123")
    submit(sim)
    undelivered.refresh_from_db()
    silent.refresh_from_db()
    assert undelivered.state == MessageState.FAILED and undelivered.error_code == "001"
    assert silent.state == MessageState.SUBMITTED  # pending is never reported as delivered


def test_link_down_fails_over_to_the_fallback(sim: Gateway) -> None:
    backup = Gateway.objects.create(code="backup", name="b", provider=Provider.SIMULATOR, countries=["HK"], priority=9)
    sim.fallback = backup
    sim.save()
    message = queue("+85259004123")
    assert submit(sim)["failed_over"] == 1
    message.refresh_from_db()
    assert message.gateway == backup and message.state == MessageState.QUEUED


def test_a_message_is_claimed_once(sim: Gateway) -> None:
    message = queue("+85291234567")
    assert [m.pk for m in messages_claim(gateway_id=sim.pk)] == [message.pk]
    assert messages_claim(gateway_id=sim.pk) == []


def test_interrupted_submission_becomes_unknown_and_is_not_resent(sim: Gateway) -> None:
    from datetime import timedelta

    message = queue("+85291234567")
    messages_claim(gateway_id=sim.pk)  # the worker "dies" here, after the claim
    assert messages_reconcile(actor=SYSTEM, older_than=timedelta(0)) == 1
    message.refresh_from_db()
    assert message.state == MessageState.UNKNOWN
    assert submit(sim)["accepted"] == 0
    assert not MessagePart.objects.exists()


def test_receipts_duplicates_out_of_order_and_before_the_submit_answer(sim: Gateway) -> None:
    message = queue("+85259003999", "x" * 200)  # two parts, no simulated receipts
    claimed = messages_claim(gateway_id=sim.pk)
    early = ReceiptEvent("p-2", MessageState.DELIVERED, "DELIVRD")
    receipts_ingest(gateway=sim, events=[early, early])  # before the submit answer: kept, not applied
    assert DeliveryReceipt.objects.filter(applied_at__isnull=True).count() == 2
    outcomes_record(actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.accepted(["p-1", "p-2"])])
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED  # one part still pending
    receipts_ingest(gateway=sim, events=[ReceiptEvent("p-1", MessageState.DELIVERED, "DELIVRD")])
    receipts_ingest(gateway=sim, events=[ReceiptEvent("p-1", MessageState.SUBMITTED, "ENROUTE")])  # late, stale
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert set(message.parts.values_list("state", flat=True)) == {MessageState.DELIVERED}
    assert DeliveryReceipt.objects.filter(applied_at__isnull=True).count() == 0


def test_one_failed_part_fails_the_message(sim: Gateway) -> None:
    message = queue("+85259003998", "y" * 200)
    claimed = messages_claim(gateway_id=sim.pk)
    outcomes_record(actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.accepted(["q-1", "q-2"])])
    receipts_ingest(
        gateway=sim,
        events=[
            ReceiptEvent("q-1", MessageState.DELIVERED, "DELIVRD"),
            ReceiptEvent("q-2", MessageState.FAILED, "UNDELIV", "005"),
        ],
    )
    message.refresh_from_db()
    assert (message.state, message.error_code) == (MessageState.FAILED, "005")


def test_unknown_receipt_is_kept_not_lost(sim: Gateway) -> None:
    result = receipts_ingest(gateway=sim, events=[ReceiptEvent("nobody", MessageState.DELIVERED, "DELIVRD")])
    assert result == {"received": 1, "applied": 0}
    assert DeliveryReceipt.objects.get().provider_message_id == "nobody"


@pytest.mark.parametrize(
    ("destination", "body", "sender", "code", "field"),
    [
        ("12", "hi", "#SHOPHK", "phone_invalid", "destination"),
        ("+852 1234", "hi", "#SHOPHK", "phone_invalid", "destination"),
        ("+6591234567", "hi", "#SHOPHK", "country_not_covered", "gateway"),
        ("+85291234567", "", "#SHOPHK", "body_empty", "body"),
        ("+85291234567", "bad \ud800 text", "#SHOPHK", "lone_surrogate", "body"),
        ("+85291234567", "ctl \x07", "#SHOPHK", "control_character", "body"),
        ("+85291234567", "hi", "#NOTREG", "sender_id_unknown", "sender_id"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    sim: Gateway, destination: str, body: str, sender: str, code: str, field: str
) -> None:
    with pytest.raises(ApplicationError) as err:
        queue(destination, body, sender)
    assert (err.value.code, err.value.field) == (code, field)
    assert not OutboundMessage.objects.exists() and not QuotaReservation.objects.exists()


def test_quota_exceeded_refuses_the_message(sim: Gateway) -> None:
    Account.objects.update(balance=Decimal("0.10"))
    with pytest.raises(ApplicationError) as err:
        queue("+85291234567")
    assert err.value.code == "balance_insufficient"
    assert not OutboundMessage.objects.exists()


def test_inbound_is_stored_once_and_handed_to_handlers(sim: Gateway) -> None:
    seen: list[str] = []

    def handler(message: Any) -> dict[str, Any]:
        seen.append(message.body)
        return {"keyword": message.body.strip().upper()}

    INBOUND_HANDLERS.append(handler)
    try:
        event = InboundEvent(source="+85291234567", destination="#SHOPHK", body="STOP", provider_message_id="mo-1")
        stored = inbound_receive(gateway=sim, events=[event, event])
    finally:
        INBOUND_HANDLERS.remove(handler)
    assert len(stored) == 1 and seen == ["STOP"]
    results: Any = stored[0].handler_result
    assert results["handler"] == {"keyword": "STOP"}
    # The compliance keyword handler (registered by the contacts app) opted the number out.
    assert results["inbound_keyword_handler"]["opt_out"]["suppressed"] is True


def test_callbacks_refuse_unknown_gateways_and_unsupported_providers(sim: Gateway) -> None:
    client = Client()
    assert client.post("/hooks/nope/receipts", {}).status_code == 404
    refused = client.post("/hooks/sim-hk/receipts", {"id": "x"})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_supported"
    assert not DeliveryReceipt.objects.exists()


def test_unknown_outcome_is_never_resent_and_is_charged(sim: Gateway) -> None:
    message = queue("+85291234567")
    claimed = messages_claim(gateway_id=sim.pk)
    outcomes_record(
        actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.unknown("submit_unknown", "no answer")]
    )
    message.refresh_from_db()
    assert message.state == MessageState.UNKNOWN
    assert submit(sim)["accepted"] == 0
    assert Account.objects.get().balance == Decimal("100") - message.cost


@pytest.mark.django_db(transaction=True)
def test_an_opt_out_committed_after_queueing_wins_at_claim_time(sim: Gateway) -> None:
    from contacts.optouts import opt_out_record

    marketing = queue("+85291230001", purpose="marketing")
    transactional = queue("+85291230001", purpose="otp")  # OTP, the catalogue's exception: still sent
    other = queue("+85291230002", purpose="marketing")
    lifted = queue("+85291230003", purpose="marketing")
    with transaction.atomic():  # committed after queueing, before any claim
        opted = opt_out_record(actor=SYSTEM, phone="+85291230001", reason="stop", source="sms:sim-hk")
        old = opt_out_record(actor=SYSTEM, phone="+85291230003", reason="web", source="web_form")
    from compliance.models import OptOut

    OptOut.objects.filter(pk=old["opt_out_id"]).update(lifted_at=timezone.now())
    counts = submit(sim)
    assert counts["suppressed"] == 1 and counts["accepted"] == 3
    marketing.refresh_from_db()
    assert (marketing.state, marketing.error_code, marketing.attempts) == (MessageState.FAILED, "suppressed", 0)
    assert (
        f"#{opted['opt_out_id']} (stop, sms:sim-hk)" in marketing.error_reason and "+852" not in marketing.error_reason
    )
    assert marketing.final_at is not None and marketing.submit_started_at is None
    assert not marketing.parts.exists()
    for message in (transactional, other, lifted):
        message.refresh_from_db()
        assert message.state == MessageState.DELIVERED
    # The suppressed message's hold is given back; nothing of it is charged.
    assert QuotaReservation.objects.get(reference=marketing.quota_reference).state == ReservationState.RELEASED
    assert Account.objects.get().balance == Decimal("100") - 3 * marketing.cost
    after: Any = AuditLog.objects.get(action="messages.suppressed").after
    assert after["ids"] == [marketing.pk]
    assert submit(sim) == {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}


def test_suppression_releases_one_hold_per_reservation(sim: Gateway) -> None:
    from contacts.optouts import opt_out_record

    first, second = queue("+85291230004", purpose="marketing"), queue("+85291230004", purpose="marketing")
    QuotaReservation.objects.filter(reference=second.quota_reference).delete()
    OutboundMessage.objects.filter(pk=second.pk).update(quota_reference=first.quota_reference)
    QuotaReservation.objects.filter(reference=first.quota_reference).update(segments=2, amount=2 * first.cost)
    with transaction.atomic():
        opt_out_record(actor=SYSTEM, phone="+85291230004", reason="stop", source="sms:sim-hk")
    assert messages_claim(gateway_id=sim.pk) == []
    assert set(OutboundMessage.objects.values_list("error_code", flat=True)) == {"suppressed"}
    reservation = QuotaReservation.objects.get(reference=first.quota_reference)
    assert (reservation.segments, reservation.state) == (0, ReservationState.RELEASED)
    assert AuditLog.objects.filter(action="quota.unhold").count() == 1


def test_receipts_held_by_the_caller_are_folded_into_the_answer(sim: Gateway) -> None:
    single, double = queue("+85259003001"), queue("+85259003002", "z" * 200)
    claimed = messages_claim(gateway_id=sim.pk)
    delivered = ReceiptEvent("a-1", MessageState.DELIVERED, "DELIVRD")
    counts = outcomes_record(
        actor=SYSTEM,
        gateway=sim,
        messages=claimed,
        outcomes=[SendOutcome.accepted(["a-1"]), SendOutcome.accepted(["b-1", "b-2"])],
        receipts=[
            delivered,
            delivered,  # a duplicate
            ReceiptEvent("b-1", MessageState.DELIVERED, "DELIVRD"),
            ReceiptEvent("elsewhere", MessageState.DELIVERED, "DELIVRD"),  # no such part: kept, unapplied
        ],
    )
    assert counts["accepted"] == 2
    single.refresh_from_db()
    double.refresh_from_db()
    assert single.state == MessageState.DELIVERED and single.submitted_at and single.final_at
    assert double.state == MessageState.SUBMITTED and double.final_at is None  # b-2 pending
    assert dict(MessagePart.objects.values_list("provider_message_id", "state")) == {
        "a-1": MessageState.DELIVERED,
        "b-1": MessageState.DELIVERED,
        "b-2": MessageState.SUBMITTED,
    }
    assert DeliveryReceipt.objects.count() == 4
    assert list(
        DeliveryReceipt.objects.filter(applied_at__isnull=True).values_list("provider_message_id", flat=True)
    ) == ["elsewhere"]
    receipts_ingest(gateway=sim, events=[ReceiptEvent("b-2", MessageState.FAILED, "UNDELIV", "005")])
    double.refresh_from_db()
    assert (double.state, double.error_code) == (MessageState.FAILED, "005")
    assert Account.objects.get().balance == Decimal("100") - single.cost - double.cost
