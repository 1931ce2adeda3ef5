"""Receipts racing the submit answer, and quota holds of messages turned 'unknown'."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from gateways.adapters.base import ReceiptEvent, SendOutcome
from gateways.delivery.claim import messages_claim
from gateways.delivery.outcomes import outcomes_record
from gateways.delivery.receipts import receipts_apply_pending, receipts_ingest
from gateways.delivery.reconcile import messages_mark_unknown, messages_reconcile
from gateways.models import Account, DeliveryReceipt, Gateway, MessageState, QuotaReservation, ReservationState
from tests.support.db import postgres_only
from tests.support.delivery import SYSTEM, queue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def test_a_receipt_stored_while_the_parts_are_uncommitted_is_applied_on_commit(
    sim: Gateway,
    django_capture_on_commit_callbacks: Any,
) -> None:
    message = queue("+85291234567")
    claimed = messages_claim(gateway_id=sim.pk)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outcomes_record(actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.accepted(["r-1"])])
        # What a concurrent ingestion that could not see the uncommitted part stores.
        DeliveryReceipt.objects.create(
            gateway=sim, provider_message_id="r-1", status=MessageState.DELIVERED, provider_status="DELIVRD"
        )
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert not DeliveryReceipt.objects.filter(applied_at__isnull=True).exists()


def test_the_reconciler_applies_unapplied_receipts_whose_parts_exist(sim: Gateway) -> None:
    message = queue("+85291234567")
    claimed = messages_claim(gateway_id=sim.pk)
    outcomes_record(actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.accepted(["r-2"])])
    DeliveryReceipt.objects.create(
        gateway=sim, provider_message_id="r-2", status=MessageState.DELIVERED, provider_status="DELIVRD"
    )
    DeliveryReceipt.objects.create(
        gateway=sim, provider_message_id="nobody", status=MessageState.DELIVERED, provider_status="DELIVRD"
    )
    assert receipts_apply_pending() == 1
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert list(
        DeliveryReceipt.objects.filter(applied_at__isnull=True).values_list("provider_message_id", flat=True)
    ) == ["nobody"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_receipt_race_with_a_real_concurrent_ingestion(sim: Gateway) -> None:
    message = queue("+85291234567")
    claimed = messages_claim(gateway_id=sim.pk)
    results: list[Any] = []

    def ingest() -> None:
        try:
            results.append(
                receipts_ingest(gateway=sim, events=[ReceiptEvent("r-3", MessageState.DELIVERED, "DELIVRD")])
            )
        finally:
            connection.close()

    with transaction.atomic():
        outcomes_record(actor=SYSTEM, gateway=sim, messages=claimed, outcomes=[SendOutcome.accepted(["r-3"])])
        thread = threading.Thread(target=ingest)  # its own connection: cannot see the part yet
        thread.start()
        thread.join(timeout=30)
    assert results == [{"received": 1, "applied": 0}]
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert not DeliveryReceipt.objects.filter(applied_at__isnull=True).exists()


@pytest.mark.parametrize("how", ["mark_unknown", "reconcile"])
def test_messages_turned_unknown_consume_their_hold(sim: Gateway, how: str) -> None:
    first, second = queue("+85291234567"), queue("+85291234568", "z" * 200)
    claimed = messages_claim(gateway_id=sim.pk)
    assert len(claimed) == 2
    if how == "mark_unknown":
        assert messages_mark_unknown(actor=SYSTEM, message_ids=[first.pk, second.pk], reason="killed") == 2
    else:
        assert messages_reconcile(actor=SYSTEM, older_than=timedelta(0)) == 2
    for message in (first, second):
        message.refresh_from_db()
        assert message.state == MessageState.UNKNOWN
        reservation = QuotaReservation.objects.get(reference=message.quota_reference)
        assert reservation.state != ReservationState.HELD
        assert reservation.settled_amount == message.cost
    assert Account.objects.get().balance == Decimal("100") - first.cost - second.cost
    # Idempotent: nothing left 'submitting', nothing charged twice.
    assert messages_mark_unknown(actor=SYSTEM, message_ids=[first.pk, second.pk], reason="again") == 0
    assert Account.objects.get().balance == Decimal("100") - first.cost - second.cost
