"""Messages whose send was interrupted: reconciled to 'unknown' (never resent), requeued when
never written to a gateway, or moved to the gateway's fallback."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from gateways.delivery.queue import message_submit_enqueue
from gateways.delivery.rows import HeldRow, chunks, quota_totals
from gateways.failover import fail_over_eligible
from gateways.models import Gateway, MessagePart, MessageState, OutboundMessage, QuotaReservation, ReservationState
from gateways.quotas import quota_consume_many, quota_refund
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record

SUBMITTING_TIMEOUT = timedelta(minutes=5)
# How long a submitted message waits for its receipt before it is 'expired' (per gateway:
# settings["validity_seconds"]; Jasmin's dlr_expiry defaults to a day, Twilio's validity period
# is 1..36,000 s). settings["expired_billing"]: "charged" (the default: the SMSC accepted the
# message and bills it) or "refunded" (the gateway does not bill what it never confirmed).
RECEIPT_VALIDITY_SECONDS = 86_400
EXPIRED_BILLING = ("charged", "refunded")
EXPIRE_CHUNK = 5_000


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


def gateway_validity(gateway: Gateway) -> tuple[int, str]:
    """(validity seconds, billing rule) of a gateway's settings, defaults applied; 0 disables."""
    cfg = gateway.settings or {}
    try:
        seconds = int(cfg.get("validity_seconds", RECEIPT_VALIDITY_SECONDS))
    except (TypeError, ValueError):
        seconds = RECEIPT_VALIDITY_SECONDS
    billing = str(cfg.get("expired_billing", "charged"))
    return max(0, seconds), billing if billing in EXPIRED_BILLING else "charged"


def messages_expire(*, actor: Actor, now: datetime | None = None) -> int:
    """Submitted messages whose receipt never came within their gateway's validity period become
    'expired' (final: never resent, counted as expired wherever states are counted); their parts
    still waiting too. Billed per the gateway's rule: charged (nothing to do: the charge was taken
    when the SMSC accepted them) or refunded. Returns how many expired."""
    now = now or timezone.now()
    total = 0
    for gateway in Gateway.objects.order_by("pk"):
        seconds, billing = gateway_validity(gateway)
        if not seconds:
            continue
        cutoff = now - timedelta(seconds=seconds)
        while True:
            with transaction.atomic():
                # Locked in id order, skipping rows a receipt is being applied to right now.
                rows = list(
                    OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(gateway=gateway, state=MessageState.SUBMITTED, submitted_at__lt=cutoff)
                    .order_by("pk")
                    .values_list("pk", "segments", "cost")[:EXPIRE_CHUNK]
                )
                if not rows:
                    break
                ids = [r[0] for r in rows]
                reason = f"No delivery receipt within the gateway's validity period ({seconds} s)."
                OutboundMessage.objects.filter(pk__in=ids, state=MessageState.SUBMITTED).update(
                    state=MessageState.EXPIRED, final_at=now, error_code="receipt_timeout", error_reason=reason
                )
                MessagePart.objects.filter(message_id__in=ids, state=MessageState.SUBMITTED).update(
                    state=MessageState.EXPIRED, error_code="receipt_timeout"
                )
                segments = sum(r[1] for r in rows)
                amount = sum((r[2] for r in rows), Decimal(0))
                if billing == "refunded":
                    quota_refund(actor=actor, segments=segments, amount=amount, reason=reason)
                audit_record(
                    actor=actor,
                    action="messages.expired",
                    object_type="gateway",
                    object_id=str(gateway.pk),
                    after={"ids": ids[:1000], "count": len(ids), "billing": billing, "validity_seconds": seconds},
                    reason=reason,
                )
                total += len(ids)
            if len(rows) < EXPIRE_CHUNK:
                break
    return total
