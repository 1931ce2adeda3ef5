"""Reservations under real concurrency on PostgreSQL: serialised among themselves (the advisory
lock), exact against charges committing meanwhile, and never waiting on the account row a bind
worker's flush charges."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from gateways.models import Account, QuotaReservation, ReservationState
from gateways.quotas import account_instance, headroom, quota_consume, quota_reserve
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from tests.support.db import postgres_only, race

pytestmark = [pytest.mark.django_db(transaction=True), postgres_only]
SYSTEM = Actor.system("test")


def fund(balance: str, segments: int) -> None:
    account = account_instance()
    account.balance, account.monthly_quota_segments, account.segments_used = Decimal(balance), segments, 0
    account.save()


def reserve(reference: str, segments: int = 1, amount: str = "0.30") -> Any:
    with transaction.atomic():
        return quota_reserve(actor=SYSTEM, reference=reference, segments=segments, amount=Decimal(amount))


def test_thirty_concurrent_reservations_never_pass_the_balance() -> None:
    fund("3.00", 1000)  # room for exactly ten holds of 0.30

    results = race(30, lambda i: reserve(f"race:{i}"))

    held = [r for r in results if isinstance(r, QuotaReservation)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(held) == 10 and len(refused) == 20, results
    assert {e.code for e in refused} == {"balance_insufficient"}
    assert headroom().available_amount == Decimal("0.00")


def test_a_reservation_does_not_wait_for_a_charge_holding_the_account_row() -> None:
    """A flush's charge has updated the account and not committed yet (its row lock held): a
    reservation meanwhile completes at once, from the snapshot before the charge; after the commit
    the headroom is the same, as a charge only moves money from held to spent."""
    fund("100.00", 1000)
    reserve("campaign:1", segments=10, amount="3.00")
    charged, release = threading.Event(), threading.Event()

    def flush_charge() -> None:
        try:
            with transaction.atomic():
                quota_consume(actor=SYSTEM, reference="campaign:1", segments=10, amount=Decimal("3.00"))
                charged.set()
                release.wait(10)
        finally:
            connection.close()

    flusher = threading.Thread(target=flush_charge)
    flusher.start()
    try:
        assert charged.wait(10)
        began = time.monotonic()
        otp = reserve("message:otp", segments=1, amount="0.30")
        waited = time.monotonic() - began
    finally:
        release.set()
        flusher.join(10)
    assert waited < 1.0, f"the reservation waited {waited:.2f}s on the flush's account row lock"
    assert otp.state == ReservationState.HELD
    account = Account.objects.get()
    assert (account.balance, account.segments_used) == (Decimal("97.00"), 10)
    room = headroom()
    assert (room.available_amount, room.available_segments) == (Decimal("96.70"), 989)


def test_reservations_racing_charges_never_overspend() -> None:
    """Charges of a campaign's hold commit while one-by-one holds race for what is left: whatever
    the interleaving, the holds never pass the balance left after the campaign's full charge."""
    fund("10.00", 10_000)
    reserve("campaign:2", segments=20, amount="6.00")  # 4.00 left: thirteen holds of 0.30

    def one(i: int) -> Any:
        if i < 10:  # ten flushes, each charging a tenth of the campaign's hold
            with transaction.atomic():
                return quota_consume(actor=SYSTEM, reference="campaign:2", segments=2, amount=Decimal("0.60"))
        return reserve(f"otp:{i}")

    results = race(40, one)

    held = [r for r in results[10:] if isinstance(r, QuotaReservation)]
    assert len(held) == 13, results
    assert all(isinstance(r, QuotaReservation) for r in results[:10]), results[:10]
    account = Account.objects.get()
    assert account.balance == Decimal("4.00")
    assert headroom().available_amount == Decimal("0.10")
