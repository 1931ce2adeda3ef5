"""Messages whose send was interrupted: reconciled to 'unknown' (never resent), requeued when
never written to a gateway, or moved to the gateway's fallback."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from gateways.delivery.queue import message_submit_enqueue
from gateways.delivery.rows import HeldRow, chunks, quota_totals
from gateways.failover import fail_over_eligible
from gateways.models import Gateway, MessageState, OutboundMessage, QuotaReservation, ReservationState
from gateways.quotas import quota_consume_many
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record

SUBMITTING_TIMEOUT = timedelta(minutes=5)


def _unknown_charge(actor: Actor, rows: Iterable[tuple[int, str, int, Decimal]]) -> None:
    """Messages turned 'unknown' may have been sent: charge their holds, one movement per
    reservation (as outcomes_record does for an 'unknown' answer). ``rows``: (id, quota
    reference, segments, cost)."""
    totals = quota_totals(HeldRow._make(row) for row in rows if row[1])
    if not totals:
        return
    held = set(
        QuotaReservation.objects.filter(reference__in=list(totals), state=ReservationState.HELD).values_list(
            "reference", flat=True
        )
    )
    quota_consume_many(actor=actor, totals={reference: totals[reference] for reference in held})


def messages_reconcile(*, actor: Actor, older_than: timedelta = SUBMITTING_TIMEOUT) -> int:
    """Messages stuck in 'submitting' (their worker died) become 'unknown', never resent."""
    cutoff = timezone.now() - older_than
    with transaction.atomic():
        rows = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(state=MessageState.SUBMITTING, submit_started_at__lt=cutoff)
            .order_by("pk")
            .values_list("pk", "quota_reference", "segments", "cost")
        )
        stuck = [r[0] for r in rows]
        if stuck:
            OutboundMessage.objects.filter(pk__in=stuck).update(
                state=MessageState.UNKNOWN,
                error_code="submit_interrupted",
                error_reason="The submitting worker stopped before recording the gateway's answer.",
            )
            _unknown_charge(actor, rows)
            audit_record(
                actor=actor,
                action="messages.reconcile",
                object_type="outbound_message",
                after={"unknown": stuck[:1000], "count": len(stuck)},
            )
    return len(stuck)


def messages_mark_unknown(*, actor: Actor, message_ids: Sequence[int], reason: str) -> int:
    """Messages whose submission may or may not have reached the gateway: never resent."""
    with transaction.atomic():
        rows = list(
            OutboundMessage.objects.select_for_update()
            .filter(pk__in=list(message_ids), state=MessageState.SUBMITTING)
            .order_by("pk")
            .values_list("pk", "quota_reference", "segments", "cost")
        )
        count = OutboundMessage.objects.filter(pk__in=[r[0] for r in rows], state=MessageState.SUBMITTING).update(
            state=MessageState.UNKNOWN, error_code="submit_interrupted", error_reason=reason[:300]
        )
        _unknown_charge(actor, rows)
        audit_record(
            actor=actor,
            action="messages.unknown",
            object_type="outbound_message",
            after={"ids": list(message_ids)[:1000], "count": count, "reason": reason},
        )
    return count


def messages_requeue(*, actor: Actor, message_ids: Sequence[int]) -> int:
    """Messages claimed but never written to any gateway: safe to send later. The claim's
    attempt did not happen, so it is not counted."""
    count = 0
    with transaction.atomic():
        for chunk in chunks(sorted(message_ids), 10_000):
            count += OutboundMessage.objects.filter(pk__in=chunk, state=MessageState.SUBMITTING).update(
                state=MessageState.QUEUED, submit_started_at=None, attempts=Greatest(F("attempts") - 1, 0)
            )
        if count:
            audit_record(
                actor=actor,
                action="messages.requeue",
                object_type="outbound_message",
                after={"ids": list(message_ids)[:1000], "count": count},
            )
    return count


def messages_fail_over(
    *, actor: Actor, gateway: Gateway, fallback: Gateway, message_ids: Sequence[int], reason: str
) -> list[int]:
    """Claimed messages go to ``gateway``'s fallback (its link is down): queued there at once,
    their attempt not counted. Only 'submitting' rows the fallback may take over move
    (gateways.failover: the rule outcomes_record applies too). Returns the ids moved, in order."""
    moved: list[int] = []
    eligible = fail_over_eligible(gateway=gateway, fallback=fallback)
    with transaction.atomic():
        for chunk in chunks(sorted(message_ids), 10_000):
            # Locked in id order (a concurrent reconciler waits, then finds them moved).
            ids = list(
                OutboundMessage.objects.select_for_update(of=("self",))
                .filter(eligible, pk__in=chunk, state=MessageState.SUBMITTING)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if not ids:
                continue
            OutboundMessage.objects.filter(pk__in=ids).update(
                state=MessageState.QUEUED,
                gateway=fallback,
                submit_started_at=None,
                next_attempt_at=None,
                attempts=Greatest(F("attempts") - 1, 0),
                error_code="failed_over",
                error_reason=f"failed over from {gateway.code}: {reason}"[:300],
            )
            moved.extend(ids)
        if moved:
            audit_record(
                actor=actor,
                action="messages.fail_over",
                object_type="gateway",
                object_id=str(gateway.pk),
                after={"to": fallback.code, "ids": moved[:1000], "count": len(moved), "reason": reason},
            )
            fallback_id, ids = fallback.pk, list(moved)
            transaction.on_commit(lambda: message_submit_enqueue(fallback_id, ids))
    return moved
