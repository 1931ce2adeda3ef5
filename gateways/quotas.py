"""Balance, monthly quota and reservations. Nothing may be sent beyond quota or balance.

Reservations are serialised (on PostgreSQL by a transaction-level advisory lock of their own, on
SQLite by its single writer), so two dispatches racing for the last segments cannot both get them.
A reservation reads the account and the held sums in one statement, after that lock, and never
locks the account row: a charge moves the same amount from held to spent, so balance less held is
the same before and after it in any one snapshot, and an OTP's reservation never waits for a bind
worker's flush to commit its charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from gateways.charges import CHARGE_RULE
from gateways.errors import GatewayErrorCode
from gateways.models import Account, Gateway, QuotaReservation, ReservationState
from gateways.selectors import segment_prices
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.idempotency import run_idempotent
from smsplatform.kernel.roundtrips import Raw, statements_run

SEGMENT_RULES = {
    "GSM-7": {"single": 160, "per_part": 153, "unit": "septet"},
    "UCS-2": {"single": 70, "per_part": 67, "unit": "UTF-16 code unit"},
}


def account_instance() -> Account:
    account = Account.objects.filter(singleton=1).first()
    if account is None:
        from smsplatform.config_service import platform_config_data

        quota = platform_config_data()["quota"]
        account, _ = Account.objects.get_or_create(
            singleton=1,
            defaults={"currency": quota["currency"], "monthly_quota_segments": quota["monthly_quota_segments"]},
        )
    return account


@dataclass(frozen=True)
class Headroom:
    balance: Decimal
    reserved_amount: Decimal
    available_amount: Decimal
    quota_segments: int
    used_segments: int
    reserved_segments: int
    available_segments: int


def _held() -> tuple[int, Decimal]:
    # What is held is what was reserved and not yet consumed.
    agg = QuotaReservation.objects.filter(state=ReservationState.HELD).aggregate(
        s=Sum(F("segments") - F("settled_segments")), a=Sum(F("amount") - F("settled_amount"))
    )
    return int(agg["s"] or 0), Decimal(agg["a"] or 0)


def headroom(account: Account | None = None) -> Headroom:
    account = account or account_instance()
    return _headroom(account, *_held())


def _headroom(account: Account, held_segments: int, held_amount: Decimal) -> Headroom:
    return Headroom(
        balance=account.balance,
        reserved_amount=held_amount,
        available_amount=max(Decimal(0), account.balance - held_amount),
        quota_segments=account.monthly_quota_segments,
        used_segments=account.segments_used,
        reserved_segments=held_segments,
        available_segments=max(0, account.monthly_quota_segments - account.segments_used - held_segments),
    )


def quotas_get() -> dict[str, Any]:
    account = account_instance()
    room = headroom(account)
    countries = sorted({c for g in Gateway.objects.filter(enabled=True) for c in (g.countries or [])})
    prices = segment_prices(countries=countries)
    sendable = {}
    for country, quote in prices.items():
        by_money = int(room.available_amount // quote.price_per_segment) if quote.price_per_segment > 0 else None
        limits = [room.available_segments] + ([by_money] if by_money is not None else [])
        sendable[country] = {
            "gateway": quote.gateway_code,
            "price_per_segment": str(quote.price_per_segment),
            "currency": quote.currency,
            "estimated_sendable_segments": min(limits),
        }
    return {
        "currency": account.currency,
        "balance": str(room.balance),
        "reserved_amount": str(room.reserved_amount),
        "available_amount": str(room.available_amount),
        "monthly_quota_segments": room.quota_segments,
        "period_start": account.period_start.isoformat(),
        "used_segments": room.used_segments,
        "reserved_segments": room.reserved_segments,
        "available_segments": room.available_segments,
        "country_rates": sendable,
        "segment_billing": SEGMENT_RULES,
        "rate_limits": {
            g.code: {"max_rate_per_second": g.max_rate_per_second, "window_size": g.window_size}
            for g in Gateway.objects.filter(enabled=True)
        },
        "charge_rule": CHARGE_RULE,
        "note": (
            "Every segment of a multi-part message is billed. balance and used_segments move by charge_rule, "
            "the rule send_batches.list and delivery_status.get report charges by. Estimates use listed rates; "
            "the billed amount can differ. Nothing is sent beyond the available segments or amount."
        ),
    }


def quota_reserve(*, actor: Actor, reference: str, segments: int, amount: Decimal) -> QuotaReservation:
    """Hold segments and money for a dispatch; refuse when either would be exceeded.

    Runs inside the caller's transaction (the dispatch that needs it)."""
    if segments < 0 or amount < 0:
        raise ApplicationError(ErrorCode.INVALID_ARGUMENT, "A reservation cannot be negative.", field="segments")
    if connection.vendor == "postgresql":
        account, held = _reserve_read_postgresql(reference)
    else:
        # SQLite: one writer at a time; the lock is Django's no-op there, kept for other databases.
        found = Account.objects.select_for_update().filter(singleton=1).first()
        account = found if found is not None else Account.objects.select_for_update().get(pk=account_instance().pk)
        held = QuotaReservation.objects.filter(Q(state=ReservationState.HELD) | Q(reference=reference)).aggregate(
            s=Sum(F("segments") - F("settled_segments"), filter=Q(state=ReservationState.HELD)),
            a=Sum(F("amount") - F("settled_amount"), filter=Q(state=ReservationState.HELD)),
            existing=Max("pk", filter=Q(reference=reference)),
        )
    if held["existing"] is not None:
        return QuotaReservation.objects.get(pk=held["existing"])  # idempotent per reference
    room = _headroom(account, int(held["s"] or 0), Decimal(held["a"] or 0))
    if segments > room.available_segments:
        raise ApplicationError(
            GatewayErrorCode.QUOTA_EXCEEDED,
            f"{segments} segments needed, {room.available_segments} left in this month's quota.",
            field="segments",
            hint="Reduce the audience or raise the quota (sms_marketing.quotas.get shows the headroom).",
            details={"available_segments": room.available_segments},
        )
    if amount > room.available_amount:
        raise ApplicationError(
            GatewayErrorCode.BALANCE_INSUFFICIENT,
            f"{account.currency} {amount} needed, {account.currency} {room.available_amount} available.",
            field="amount",
            hint="Top up the balance or reduce the audience.",
            details={"available_amount": str(room.available_amount)},
        )
    reservation = QuotaReservation.objects.create(
        reference=reference, segments=segments, amount=amount, currency=account.currency
    )
    audit_record(
        actor=actor,
        action="quota.reserve",
        object_type="quota_reservation",
        object_id=reservation.pk,
        after={"reference": reference, "segments": segments, "amount": str(amount)},
    )
    return reservation


# pg_advisory_xact_lock key of reservations: any constant of ours ("quota" in ASCII).
RESERVE_LOCK = 0x71756F7461
_ACCOUNT, _RESERVATION = Account._meta.db_table, QuotaReservation._meta.db_table
_RESERVE_READ = (  # every column of the account (none deferred: one snapshot for all of it)
    f"SELECT a.*, h.s, h.a AS held_amount, h.existing FROM {_ACCOUNT} a, LATERAL ("  # noqa: S608 - our names
    "SELECT SUM(r.segments - r.settled_segments) FILTER (WHERE r.state = %s) AS s, "
    "SUM(r.amount - r.settled_amount) FILTER (WHERE r.state = %s) AS a, "
    "MAX(r.id) FILTER (WHERE r.reference = %s) AS existing "
    f"FROM {_RESERVATION} r WHERE r.state = %s OR r.reference = %s) h "
    "WHERE a.singleton = 1"
)
_HELD_COLUMNS = 3  # s, held_amount, existing: after the account's own


def _reserve_read_postgresql(reference: str) -> tuple[Account, dict[str, Any]]:
    """Take the reservations' lock (to the end of the caller's transaction), then read the account
    and what is held in one statement: one snapshot, taken after the lock, so every reservation
    committed before it is counted and a charge committing meanwhile is either wholly in it or not
    at all. The account row itself is not locked. The lock and the read are two statements sent in
    one round trip (smsplatform.kernel.roundtrips: the read's snapshot is still taken after the
    lock is granted)."""
    held_state = ReservationState.HELD.value
    lock = Raw("SELECT pg_advisory_xact_lock(%s)", [RESERVE_LOCK])
    read = Raw(_RESERVE_READ, [held_state, held_state, reference, held_state, reference])
    rows = statements_run([lock, read])[1]
    if not rows:  # the account is created on first use
        account_instance()
        rows = statements_run([read])[0]
    # By name: the table's column order need not be the model's (a column added by a later migration).
    columns = dict(zip(rows.columns[:-_HELD_COLUMNS], rows[0][:-_HELD_COLUMNS], strict=True))
    attnames = [field.attname for field in Account._meta.concrete_fields]
    account = Account.from_db(connection.alias, attnames, [columns[name] for name in attnames])
    held = dict(zip(("s", "a", "existing"), rows[0][-_HELD_COLUMNS:], strict=True))
    return account, held


def _account_charge(segments: int, amount: Decimal) -> None:
    """Move the account by a charge in one UPDATE (no read, no lock taken beforehand). Callers
    run it as their last statement before commit, so the account row lock it takes is held only
    for the commit (reservations do not take that lock: see _reserve_read_postgresql).
    Reservations are always locked before the account (here and in quota_consume), so no two
    charges deadlock."""
    Account.objects.filter(singleton=1).update(
        balance=F("balance") - amount, segments_used=F("segments_used") + segments, updated_at=timezone.now()
    )


def _close_if_done(reservation: QuotaReservation) -> None:
    if reservation.settled_segments >= reservation.segments and reservation.settled_amount >= reservation.amount:
        reservation.state = ReservationState.SETTLED if reservation.settled_segments else ReservationState.RELEASED
        reservation.closed_at = timezone.now()


def quota_hold_adjust(*, actor: Actor, reference: str, segments: int, amount: Decimal) -> QuotaReservation:
    """Grow (or shrink) a hold by what a provider billed beyond (or below) the estimate. The
    messages are already sent, so the hold follows the bill; called before their charge, it keeps
    the hold from closing early and the next charge from being refused."""
    reservation = QuotaReservation.objects.select_for_update().get(reference=reference)
    if reservation.state != ReservationState.HELD:
        return reservation
    reservation.segments = max(0, reservation.segments + segments)
    reservation.amount = max(Decimal(0), reservation.amount + amount)
    reservation.save()
    audit_record(
        actor=actor,
        action="quota.adjust",
        object_type="quota_reservation",
        object_id=reservation.pk,
        after={"reference": reference, "segments": segments, "amount": str(amount)},
        reason="The provider billed a different number of parts than estimated.",
    )
    return reservation


def quota_consume(*, actor: Actor, reference: str, segments: int, amount: Decimal) -> QuotaReservation:
    """Charge part of a hold for what was actually submitted (called once per flush, not per message)."""
    account_instance()  # the row exists (created on first use)
    reservation = QuotaReservation.objects.select_for_update().get(reference=reference)
    if reservation.state != ReservationState.HELD:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT, f"Reservation {reference} is {reservation.state}.", field="reference"
        )
    reservation.settled_segments += segments
    reservation.settled_amount += amount
    _close_if_done(reservation)
    reservation.save()
    audit_record(
        actor=actor,
        action="quota.consume",
        object_type="quota_reservation",
        object_id=reservation.pk,
        after={"reference": reference, "segments": segments, "amount": str(amount), "state": reservation.state},
    )
    _account_charge(segments, amount)  # last: the account row is locked only until commit
    return reservation


def quota_unhold(*, actor: Actor, reference: str, segments: int, amount: Decimal) -> QuotaReservation:
    """Give back part of a hold that will not be used (messages refused or cancelled)."""
    reservation = QuotaReservation.objects.select_for_update().get(reference=reference)
    if reservation.state != ReservationState.HELD:
        return reservation
    reservation.segments = max(0, reservation.segments - segments)
    reservation.amount = max(Decimal(0), reservation.amount - amount)
    _close_if_done(reservation)
    reservation.save()
    audit_record(
        actor=actor,
        action="quota.unhold",
        object_type="quota_reservation",
        object_id=reservation.pk,
        after={"reference": reference, "segments": segments, "amount": str(amount), "state": reservation.state},
    )
    return reservation


def _reservations_lock(references: list[str]) -> list[QuotaReservation]:
    # Locked in primary-key order, as every other multi-row lock here (no deadlock between flushes).
    return list(QuotaReservation.objects.select_for_update().filter(reference__in=references).order_by("pk"))


def quota_consume_many(*, actor: Actor, totals: Mapping[str, tuple[int, Decimal]]) -> int:
    """``quota_consume`` for many reservations at once (reference -> (segments, amount)): one lock
    of the account, one of the reservations, one write of each and one audit row summing them
    up. A bind worker's flush of one-by-one messages (each its own hold: test SMS, STOP replies,
    OTP, automations) charges thousands of holds; per hold, the account row lock and the audit
    row made it the bottleneck. Same rules as ``quota_consume``: a hold that is not held (or
    missing) refuses the whole charge. Returns how many reservations were charged."""
    totals = {ref: value for ref, value in totals.items() if ref}
    if len(totals) <= 1:
        for reference, (segments, amount) in totals.items():
            quota_consume(actor=actor, reference=reference, segments=segments, amount=amount)
        return len(totals)
    account_instance()  # the row exists (created on first use)
    references = sorted(totals)
    states = _reservation_states_lock(references)
    missing = [ref for ref in references if ref not in states]
    if missing:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT, f"Reservation {missing[0]} does not exist.", field="reference"
        )
    not_held = [ref for ref in references if states[ref] != ReservationState.HELD]
    if not_held:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT, f"Reservation {not_held[0]} is {states[not_held[0]]}.", field="reference"
        )
    total_segments = sum(segments for segments, _amount in totals.values())
    total_amount = sum((amount for _segments, amount in totals.values()), Decimal(0))
    if connection.vendor == "postgresql":
        closed = _consume_postgresql(references, totals)
    else:
        reservations = _reservations_lock(references)
        for reservation in reservations:
            segments, amount = totals[reservation.reference]
            reservation.settled_segments += segments
            reservation.settled_amount += amount
            _close_if_done(reservation)
        _reservations_write(reservations)
        closed = sum(1 for r in reservations if r.state != ReservationState.HELD)
    audit_record(
        actor=actor,
        action="quota.consume",
        object_type="quota_reservation",
        object_id="",
        after={
            "reservations": len(references),
            "segments": total_segments,
            "amount": str(total_amount),
            "closed": closed,
            "references": sorted(totals)[:1000],
        },
    )
    _account_charge(total_segments, total_amount)  # last: the account row is locked only until commit
    return len(references)


def _reservation_states_lock(references: list[str]) -> dict[str, str]:
    """reference -> state of these reservations, locked in primary-key order (no model instances)."""
    rows = (
        QuotaReservation.objects.select_for_update()
        .filter(reference__in=references)
        .order_by("pk")
        .values_list("reference", "state")
    )
    return dict(rows)


def _consume_postgresql(references: list[str], totals: Mapping[str, tuple[int, Decimal]]) -> int:
    """The charge of locked, held reservations in one statement; _close_if_done's rule in SQL.
    Returns how many closed."""
    table = QuotaReservation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS r SET settled_segments = r.settled_segments + v.s, "  # noqa: S608
            "settled_amount = r.settled_amount + v.a, "
            "state = CASE WHEN r.settled_segments + v.s >= r.segments AND r.settled_amount + v.a >= r.amount "
            "THEN (CASE WHEN r.settled_segments + v.s > 0 THEN %s ELSE %s END) ELSE r.state END, "
            "closed_at = CASE WHEN r.settled_segments + v.s >= r.segments AND r.settled_amount + v.a >= r.amount "
            "THEN %s ELSE r.closed_at END "
            "FROM unnest(%s::varchar[], %s::integer[], %s::numeric[]) AS v(ref, s, a) "
            "WHERE r.reference = v.ref AND r.state = %s RETURNING r.state",
            [
                ReservationState.SETTLED.value,
                ReservationState.RELEASED.value,
                timezone.now(),
                references,
                [totals[ref][0] for ref in references],
                [totals[ref][1] for ref in references],
                ReservationState.HELD.value,
            ],
        )
        return sum(1 for (state,) in cursor.fetchall() if state != ReservationState.HELD)


def quota_unhold_many(*, actor: Actor, totals: Mapping[str, tuple[int, Decimal]]) -> int:
    """``quota_unhold`` for many reservations at once (see quota_consume_many): holds no longer
    held are left as they are. One audit row sums the movement up."""
    totals = {ref: value for ref, value in totals.items() if ref}
    if len(totals) <= 1:
        for reference, (segments, amount) in totals.items():
            quota_unhold(actor=actor, reference=reference, segments=segments, amount=amount)
        return len(totals)
    reservations = [r for r in _reservations_lock(sorted(totals)) if r.state == ReservationState.HELD]
    total_segments, total_amount = 0, Decimal(0)
    for reservation in reservations:
        segments, amount = totals[reservation.reference]
        reservation.segments = max(0, reservation.segments - segments)
        reservation.amount = max(Decimal(0), reservation.amount - amount)
        _close_if_done(reservation)
        total_segments += segments
        total_amount += amount
    if not reservations:
        return 0
    _reservations_write(reservations)
    audit_record(
        actor=actor,
        action="quota.unhold",
        object_type="quota_reservation",
        object_id="",
        after={
            "reservations": len(reservations),
            "segments": total_segments,
            "amount": str(total_amount),
            "references": sorted(r.reference for r in reservations)[:1000],
        },
    )
    return len(reservations)


def _reservations_write(reservations: list[QuotaReservation]) -> None:
    """Write the reservations' held and settled figures and state back: on PostgreSQL one UPDATE
    joined to the new values as arrays (bulk_update's CASE per row grows with the square of the
    batch), elsewhere bulk_update."""
    if connection.vendor == "postgresql":
        table = QuotaReservation._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS r SET segments = v.segments, amount = v.amount, "  # noqa: S608
                "settled_segments = v.settled_segments, settled_amount = v.settled_amount, state = v.state, "
                "closed_at = v.closed_at FROM unnest(%s::bigint[], %s::integer[], %s::numeric[], %s::integer[], "
                "%s::numeric[], %s::varchar[], %s::timestamptz[]) "
                "AS v(id, segments, amount, settled_segments, settled_amount, state, closed_at) WHERE r.id = v.id",
                [
                    [r.pk for r in reservations],
                    [r.segments for r in reservations],
                    [r.amount for r in reservations],
                    [r.settled_segments for r in reservations],
                    [r.settled_amount for r in reservations],
                    [str(r.state) for r in reservations],
                    [r.closed_at for r in reservations],
                ],
            )
        return
    QuotaReservation.objects.bulk_update(
        reservations,
        ["segments", "amount", "settled_segments", "settled_amount", "state", "closed_at"],
        batch_size=1000,
    )


def quota_refund(*, actor: Actor, segments: int, amount: Decimal, reason: str) -> Account:
    """Give back what was charged for messages the gateway does not bill after all (expired
    without a receipt, on a gateway whose rule is 'refunded'): balance and used segments."""
    if segments < 0 or amount < 0:
        raise ApplicationError(ErrorCode.INVALID_ARGUMENT, "A refund cannot be negative.", field="amount")
    account = Account.objects.select_for_update().get(pk=account_instance().pk)
    before = {"balance": str(account.balance), "segments_used": account.segments_used}
    account.balance = account.balance + amount
    account.segments_used = max(0, account.segments_used - segments)
    account.save(update_fields=["balance", "segments_used", "updated_at"])
    audit_record(
        actor=actor,
        action="quota.refund",
        object_type="account",
        object_id=account.pk,
        before=before,
        after={"balance": str(account.balance), "segments_used": account.segments_used, "segments": segments},
        reason=reason,
    )
    return account


def quota_settle(*, actor: Actor, reference: str, segments: int, amount: Decimal) -> QuotaReservation:
    """Charge what was submitted and release the rest of the hold."""
    reservation = quota_consume(actor=actor, reference=reference, segments=segments, amount=amount)
    if reservation.state == ReservationState.HELD:
        remaining_segments = reservation.segments - reservation.settled_segments
        remaining_amount = reservation.amount - reservation.settled_amount
        reservation = quota_unhold(
            actor=actor, reference=reference, segments=remaining_segments, amount=remaining_amount
        )
    return reservation


def quota_release(*, actor: Actor, reference: str) -> QuotaReservation:
    """Release whatever is still held (cancel)."""
    reservation = QuotaReservation.objects.select_for_update().get(reference=reference)
    if reservation.state == ReservationState.HELD:
        reservation.state = ReservationState.RELEASED if not reservation.settled_segments else ReservationState.SETTLED
        reservation.closed_at = timezone.now()
        reservation.save()
        audit_record(actor=actor, action="quota.release", object_type="quota_reservation", object_id=reservation.pk)
    return reservation


# Operations funds the account (compliance/roles.py grants it); the admin's account page is read-only,
# so this permission only ever reaches the balance through this service.
TOP_UP_PERMISSION = "gateways.change_account"


def account_top_up(*, actor: Actor, amount: Decimal, reason: str, idempotency_key: str | None) -> dict[str, Any]:
    """Add ``amount`` to the balance, once per idempotency key, audited with before and after."""
    if not actor.has_perm(TOP_UP_PERMISSION):
        raise permission_denied(TOP_UP_PERMISSION, hint="Operations funds the account.")
    if amount <= 0:
        raise ApplicationError(ErrorCode.INVALID_ARGUMENT, "A top-up must be positive.", field="amount")

    def execute() -> dict[str, Any]:
        # The same row lock quota_reserve takes, so a top-up and a reservation never interleave.
        account = Account.objects.select_for_update().get(pk=account_instance().pk)
        before = str(account.balance)
        account.balance += amount
        account.save(update_fields=["balance", "updated_at"])
        audit_record(
            actor=actor,
            action="account.top_up",
            object_type="account",
            object_id=account.pk,
            before={"balance": before},
            after={"balance": str(account.balance)},
            reason=reason,
            idempotency_key=idempotency_key or "",
        )
        return {
            "account_id": account.pk,
            "currency": account.currency,
            "amount": str(amount),
            "balance_before": before,
            "balance": str(account.balance),
        }

    return run_idempotent(
        actor=actor,
        key=idempotency_key,
        operation="account.top_up",
        payload={"amount": str(amount), "reason": reason},
        execute=execute,
    )
