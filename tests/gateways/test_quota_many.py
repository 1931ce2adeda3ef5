"""quota_consume_many / quota_unhold_many: a flush of one-by-one messages (each its own hold)
moves quota with one lock, one write and one audit row -- by exactly the rules of the
per-reservation quota_consume / quota_unhold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateways.models import QuotaReservation, ReservationState
from gateways.quotas import (
    account_instance,
    quota_consume,
    quota_consume_many,
    quota_reserve,
    quota_unhold,
    quota_unhold_many,
)
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")


@pytest.fixture(autouse=True)
def funded() -> None:
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("1000"), 100_000
    account.save()


def holds(prefix: str, n: int, segments: int = 2, amount: str = "0.60") -> list[str]:
    refs = [f"{prefix}:{i}" for i in range(n)]
    for ref in refs:
        quota_reserve(actor=SYSTEM, reference=ref, segments=segments, amount=Decimal(amount))
    return refs


def snapshot(refs: list[str]) -> list[tuple[int, Decimal, int, Decimal, str, bool]]:
    rows = QuotaReservation.objects.filter(reference__in=refs).order_by("reference")
    return [
        (r.segments, r.amount, r.settled_segments, r.settled_amount, r.state, r.closed_at is not None) for r in rows
    ]


def movements(refs: list[str]) -> dict[str, tuple[int, Decimal]]:
    # all, a part, and one charged twice over two flushes below
    return {ref: ((2, Decimal("0.60")) if i % 3 else (1, Decimal("0.30"))) for i, ref in enumerate(refs)}


def test_consume_many_moves_exactly_what_one_by_one_would() -> None:
    one, many = holds("one", 9), holds("many", 9)
    account = account_instance()
    before = (account.balance, account.segments_used)
    for ref, (segments, amount) in movements(one).items():
        quota_consume(actor=SYSTEM, reference=ref, segments=segments, amount=amount)
    after_one = account_instance()
    spent_one = (before[0] - after_one.balance, after_one.segments_used - before[1])
    audits = AuditLog.objects.filter(action="quota.consume").count()
    assert quota_consume_many(actor=SYSTEM, totals=movements(many)) == 9
    after_many = account_instance()
    assert (after_one.balance - after_many.balance, after_many.segments_used - after_one.segments_used) == spent_one
    assert snapshot(many) == snapshot(one)
    assert AuditLog.objects.filter(action="quota.consume").count() == audits + 1  # one row for the flush
    states = {s[4] for s in snapshot(many)}
    assert states == {ReservationState.HELD, ReservationState.SETTLED}


def test_consume_many_refuses_the_whole_charge_for_a_hold_that_is_not_held() -> None:
    refs = holds("x", 4)
    quota_consume(actor=SYSTEM, reference=refs[2], segments=2, amount=Decimal("0.60"))  # now settled
    before_rows, balance = snapshot(refs), account_instance().balance
    with pytest.raises(ApplicationError) as raised:
        quota_consume_many(actor=SYSTEM, totals={ref: (1, Decimal("0.30")) for ref in refs})
    assert "settled" in raised.value.message
    assert snapshot(refs) == before_rows and account_instance().balance == balance
    with pytest.raises(ApplicationError):
        quota_consume_many(actor=SYSTEM, totals={refs[0]: (1, Decimal("0.3")), "missing": (1, Decimal("0.3"))})


def test_unhold_many_matches_unhold_and_leaves_closed_holds_alone() -> None:
    one, many = holds("u1", 6), holds("u2", 6)
    for refs in (one, many):
        quota_consume(actor=SYSTEM, reference=refs[0], segments=1, amount=Decimal("0.30"))
        quota_unhold(actor=SYSTEM, reference=refs[5], segments=2, amount=Decimal("0.60"))  # released
    for ref, (segments, amount) in movements(one).items():
        quota_unhold(actor=SYSTEM, reference=ref, segments=segments, amount=amount)
    audits = AuditLog.objects.filter(action="quota.unhold").count()
    assert quota_unhold_many(actor=SYSTEM, totals=movements(many)) == 5  # the released one is skipped
    assert snapshot(many) == snapshot(one)
    assert AuditLog.objects.filter(action="quota.unhold").count() == audits + 1
    assert {s[4] for s in snapshot(many)} == {
        ReservationState.HELD,
        ReservationState.SETTLED,
        ReservationState.RELEASED,
    }


def test_the_account_row_is_charged_last_and_never_read_under_lock() -> None:
    """A flush's charge takes the account row lock with its last statement (one UPDATE), and never
    reads the account under a lock: the lock is held only for the commit (reservations do not wait
    on it at all: tests/gateways/test_quota_concurrency.py)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    refs = holds("last", 3)
    for totals in (movements(refs), {refs[0]: (1, Decimal("0.30"))}):
        with CaptureQueriesContext(connection) as ctx:
            quota_consume_many(actor=SYSTEM, totals=totals)
        statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
        touching = [i for i, sql in enumerate(statements) if "gateways_account" in sql and "UPDATE" in sql]
        assert touching == [len(statements) - 1], statements
        assert not any("FOR UPDATE" in sql and "gateways_account" in sql for sql in statements)
    account = account_instance()
    assert account.segments_used == 2 + 2 + 1 + 1 and account.balance == Decimal("1000") - Decimal("1.80")
