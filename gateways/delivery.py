"""The delivery layer: queue, submit at most once, ingest receipts and inbound SMS.

State machine of OutboundMessage:
    queued -> submitting -> submitted -> delivered | failed | expired
    submitting -> unknown   (worker died mid-submit: reconciled, never resent)
    queued -> failed        (permanent refusal, or retries exhausted)
The claim queued -> submitting is committed before the gateway is called, so a message
is handed to a gateway at most once whatever crashes afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gateways.adapters.base import InboundEvent, OutgoingSms, ReceiptEvent, SendOutcome, adapter_for
from gateways.models import (
    FINAL_MESSAGE_STATES,
    DeliveryReceipt,
    Gateway,
    InboundMessage,
    MessagePart,
    MessagePurpose,
    MessageState,
    OutboundMessage,
)
from gateways.phones import phone_parse
from gateways.quotas import quota_consume, quota_reserve, quota_unhold
from gateways.rules import sender_id_check_usable
from gateways.selectors import segment_prices
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError
from templates.segments import SegmentInputError, count_segments

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
SUBMITTING_TIMEOUT = timedelta(minutes=5)

# Handlers for inbound SMS (the compliance keyword handler registers here).
InboundHandler = Callable[[InboundMessage], dict[str, Any] | None]
INBOUND_HANDLERS: list[InboundHandler] = []


def register_inbound_handler(handler: InboundHandler) -> InboundHandler:
    INBOUND_HANDLERS.append(handler)
    return handler


# --- queueing ---------------------------------------------------------------------


def message_queue(
    *,
    actor: Actor,
    gateway_code: str | None,
    sender_id: str,
    destination: str,
    body: str,
    purpose: str,
    reference: str = "",
) -> OutboundMessage:
    """Validate and queue one message with its quota held. Runs inside the caller's transaction."""
    phone = phone_parse(destination, field="destination")
    try:
        encoding, _units, segments = count_segments(body)
    except SegmentInputError as exc:
        raise ApplicationError(exc.code, exc.message, field="body") from None
    if not body.strip():
        raise ApplicationError("body_empty", "The message is empty.", field="body")
    quote = segment_prices(countries=[phone.country], gateway_code=gateway_code).get(phone.country)
    if quote is None:
        raise ApplicationError(
            "country_not_covered",
            f"No enabled gateway{f' {gateway_code!r}' if gateway_code else ''} delivers to {phone.country}.",
            field="gateway" if gateway_code else "destination",
            hint="See sms_marketing.gateways.list for coverage.",
        )
    gateway = Gateway.objects.get(code=quote.gateway_code)
    if encoding not in (gateway.encodings or ["GSM-7", "UCS-2"]):
        raise ApplicationError("encoding_not_supported", f"{gateway.code} cannot send {encoding}.", field="body")
    sender_id_check_usable(value=sender_id, country=phone.country)
    cost = (quote.price_per_segment * segments).quantize(Decimal("0.0001"))
    message = OutboundMessage.objects.create(
        gateway=gateway,
        sender_id=sender_id,
        destination=phone.e164,
        country=phone.country,
        body=body,
        encoding=encoding,
        segments=segments,
        cost=cost,
        currency=quote.currency,
        purpose=purpose,
        reference=reference,
        quota_reference="",
        request_receipt=gateway.receipts_supported,
    )
    message.quota_reference = f"message:{message.pk}"
    OutboundMessage.objects.filter(pk=message.pk).update(quota_reference=message.quota_reference)
    quota_reserve(actor=actor, reference=message.quota_reference, segments=segments, amount=cost)
    return message


def gateway_test_sms(
    *, actor: Actor, gateway_code: str, destination: str, body: str, sender_id: str
) -> OutboundMessage:
    """The admin's 'send a test SMS': the full path through the real adapter."""
    if not actor.has_perm("gateways.send_test_sms"):
        from smsplatform.kernel.errors import permission_denied

        raise permission_denied("gateways.send_test_sms")
    with transaction.atomic(durable=True):
        message = message_queue(
            actor=actor,
            gateway_code=gateway_code,
            sender_id=sender_id,
            destination=destination,
            body=body,
            purpose=MessagePurpose.TEST,
            reference="test",
        )
        audit_record(
            actor=actor,
            action="gateway.test_sms",
            object_type="outbound_message",
            object_id=message.pk,
            after={"gateway": gateway_code, "segments": message.segments, "cost": str(message.cost)},
        )
        message_ids = [message.pk]
        gateway_id = message.gateway_id
        transaction.on_commit(lambda: _enqueue_submit(gateway_id, message_ids))
    return message


def _enqueue_submit(gateway_id: int, message_ids: list[int]) -> None:
    from gateways.tasks import submit_messages

    gateway = Gateway.objects.get(pk=gateway_id)
    if adapter_for(gateway).sends_from_worker:
        return  # the SMPP worker picks queued messages up itself
    submit_messages.delay(gateway_id, message_ids)


# --- submitting -----------------------------------------------------------------------


def messages_claim(
    *, gateway_id: int, message_ids: Sequence[int] | None = None, limit: int = 500
) -> list[OutboundMessage]:
    """queued -> submitting, committed before any gateway call (at most once)."""
    now = timezone.now()
    with transaction.atomic():
        qs = OutboundMessage.objects.filter(gateway_id=gateway_id, state=MessageState.QUEUED).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        )
        if message_ids is not None:
            qs = qs.filter(pk__in=list(message_ids))
        # SKIP LOCKED: concurrent workers take disjoint messages, in id order.
        claimed = list(qs.select_for_update(skip_locked=True).order_by("pk")[:limit])
        if not claimed:
            return []
        ids = [m.pk for m in claimed]
        OutboundMessage.objects.filter(pk__in=ids).update(
            state=MessageState.SUBMITTING, submit_started_at=now, attempts=F("attempts") + 1
        )
        for m in claimed:
            m.state, m.submit_started_at, m.attempts = MessageState.SUBMITTING, now, m.attempts + 1
    return claimed


def outcomes_record(
    *, actor: Actor, gateway: Gateway, messages: Sequence[OutboundMessage], outcomes: Sequence[SendOutcome]
) -> dict[str, int]:
    """Write what the gateway answered, in bulk. Parts get their provider ids; receipts that
    arrived before the submit answer are applied now."""
    now = timezone.now()
    counts = {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}
    parts: list[MessagePart] = []
    maybe_sent: list[OutboundMessage] = []
    accepted_ids: list[int] = []
    refused: list[OutboundMessage] = []
    with transaction.atomic():
        for message, outcome in zip(messages, outcomes, strict=True):
            counts[outcome.kind] += 1
            if outcome.kind == "accepted":
                accepted_ids.append(message.pk)
                parts.extend(
                    MessagePart(message=message, part_number=i, provider_message_id=pid, gateway=gateway)
                    for i, pid in enumerate(outcome.provider_ids, start=1)
                )
            elif outcome.kind == "temporary":
                fallback = (
                    gateway.fallback
                    if gateway.fallback_id and outcome.code in {"gateway_unavailable", "link_down"}
                    else None
                )
                if fallback is not None and fallback.enabled and message.country in (fallback.countries or []):
                    OutboundMessage.objects.filter(pk=message.pk).update(
                        state=MessageState.QUEUED,
                        gateway=fallback,
                        next_attempt_at=None,
                        error_code=outcome.code,
                        error_reason=f"failed over from {gateway.code}: {outcome.reason}"[:300],
                    )
                    counts["failed_over"] += 1
                elif message.attempts >= MAX_ATTEMPTS:
                    _fail(message, "retries_exhausted", f"{outcome.code}: {outcome.reason}", now)
                    refused.append(message)
                else:
                    OutboundMessage.objects.filter(pk=message.pk).update(
                        state=MessageState.QUEUED,
                        next_attempt_at=now + timedelta(seconds=outcome.retry_after * (2 ** (message.attempts - 1))),
                        error_code=outcome.code,
                        error_reason=outcome.reason[:300],
                    )
            elif outcome.kind == "unknown":
                OutboundMessage.objects.filter(pk=message.pk).update(
                    state=MessageState.UNKNOWN, error_code=outcome.code[:32], error_reason=outcome.reason[:300]
                )
                maybe_sent.append(message)
            else:
                _fail(message, outcome.code, outcome.reason, now)
                refused.append(message)
        if accepted_ids:
            OutboundMessage.objects.filter(pk__in=accepted_ids).update(
                state=MessageState.SUBMITTED, submitted_at=now, error_code="", error_reason=""
            )
            MessagePart.objects.bulk_create(parts, batch_size=1000)
            receipts_apply(gateway=gateway, provider_ids=[p.provider_message_id for p in parts])
        # One quota movement per reservation per flush, not per message.
        accepted = set(accepted_ids)
        # A message that may have been sent is charged: the gateway may bill it.
        charged = [m for m in messages if m.pk in accepted] + maybe_sent
        for reference, (segments, amount) in _totals(charged).items():
            quota_consume(actor=actor, reference=reference, segments=segments, amount=amount)
        for reference, (segments, amount) in _totals(refused).items():
            quota_unhold(actor=actor, reference=reference, segments=segments, amount=amount)
    return counts


def _totals(messages: Iterable[OutboundMessage]) -> dict[str, tuple[int, Decimal]]:
    totals: dict[str, tuple[int, Decimal]] = {}
    for m in messages:
        segments, amount = totals.get(m.quota_reference, (0, Decimal(0)))
        totals[m.quota_reference] = (segments + m.segments, amount + m.cost)
    return totals


def _fail(message: OutboundMessage, code: str, reason: str, now: Any) -> None:
    OutboundMessage.objects.filter(pk=message.pk).update(
        state=MessageState.FAILED, error_code=code[:32], error_reason=reason[:300], final_at=now
    )


def messages_submit(*, actor: Actor, gateway_id: int, message_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Claim, send through the adapter, record (for HTTP and in-process adapters)."""
    gateway = Gateway.objects.get(pk=gateway_id)
    adapter = adapter_for(gateway)
    if adapter.sends_from_worker:
        raise ApplicationError("invalid_argument", f"{gateway.code} is sent by its bind worker.", field="gateway")
    claimed = messages_claim(gateway_id=gateway_id, message_ids=message_ids)
    if not claimed:
        return {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}
    batch = [
        OutgoingSms(m.pk, m.sender_id, m.destination, m.body, m.encoding, m.segments, m.request_receipt, m.attempts)
        for m in claimed
    ]
    try:
        outcomes = adapter.send(batch)
    except Exception:
        # The gateway may or may not have taken them: leave them 'submitting' for the
        # reconciler (-> unknown). Never resend blindly.
        logger.exception("adapter %s failed mid-batch", gateway.code)
        raise
    counts = outcomes_record(actor=actor, gateway=gateway, messages=claimed, outcomes=outcomes)
    if gateway.provider == "simulator" and counts["accepted"]:
        from gateways.tasks import simulator_receipts

        simulator_receipts.apply_async(
            args=(gateway.pk, [m.pk for m, o in zip(claimed, outcomes, strict=True) if o.kind == "accepted"]),
            countdown=adapter.receipt_latency_seconds,  # type: ignore[attr-defined]
        )
    return counts


def messages_reconcile(*, actor: Actor, older_than: timedelta = SUBMITTING_TIMEOUT) -> int:
    """Messages stuck in 'submitting' (their worker died) become 'unknown', never resent."""
    cutoff = timezone.now() - older_than
    with transaction.atomic():
        stuck = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(state=MessageState.SUBMITTING, submit_started_at__lt=cutoff)
            .values_list("pk", flat=True)
        )
        if stuck:
            OutboundMessage.objects.filter(pk__in=stuck).update(
                state=MessageState.UNKNOWN,
                error_code="submit_interrupted",
                error_reason="The submitting worker stopped before recording the gateway's answer.",
            )
            audit_record(
                actor=actor,
                action="messages.reconcile",
                object_type="outbound_message",
                after={"unknown": stuck[:1000], "count": len(stuck)},
            )
    return len(stuck)


# --- receipts -----------------------------------------------------------------------------

_RANK = {MessageState.SUBMITTED: 0, MessageState.DELIVERED: 2, MessageState.FAILED: 2, MessageState.EXPIRED: 2}


def receipts_ingest(*, gateway: Gateway, events: Iterable[ReceiptEvent]) -> dict[str, int]:
    """Store every receipt (duplicates and early ones included) and apply those whose part is known.

    Set-based: one locking SELECT of the parts, one INSERT (COPY on PostgreSQL) of the
    receipts, one UPDATE per resulting (state, error) group, one roll-up of the messages.
    A receipt whose part is not recorded yet (it beat the submit answer) is stored unapplied
    and applied when the part is recorded (outcomes_record -> receipts_apply)."""
    events = sorted(events, key=lambda e: e.occurred_at or timezone.now())
    if not events:
        return {"received": 0, "applied": 0}
    now = timezone.now()
    with transaction.atomic():
        parts: dict[str, list[Any]] = {
            pid: [pk, message_id, state]
            for pk, message_id, pid, state in MessagePart.objects.select_for_update()
            .filter(gateway=gateway, provider_message_id__in={e.provider_message_id for e in events})
            .values_list("pk", "message_id", "provider_message_id", "state")
        }
        changed: dict[int, tuple[str, str, int]] = {}
        rows = []
        applied = 0
        for event in events:
            part = parts.get(event.provider_message_id)
            rows.append((event, now if part is not None else None))
            if part is None:
                continue
            applied += 1
            pk, message_id, state = part
            if state in FINAL_MESSAGE_STATES:
                continue  # the first final state wins; later or duplicate receipts change nothing
            if _RANK.get(MessageState(event.status), 0) >= _RANK.get(MessageState(state), 0):
                part[2] = event.status
                changed[pk] = (event.status, event.error_code[:32], message_id)
        _insert_receipts(gateway, rows, now)
        groups: dict[tuple[str, str], list[int]] = {}
        for pk, (state, error, _message_id) in changed.items():
            groups.setdefault((state, error), []).append(pk)
        for (state, error), ids in groups.items():
            MessagePart.objects.filter(pk__in=ids).update(state=state, error_code=error, receipt_at=now)
        if changed:
            _messages_roll_up({message_id for _s, _e, message_id in changed.values()}, now)
    return {"received": len(events), "applied": applied}


def _insert_receipts(gateway: Gateway, rows: list[tuple[ReceiptEvent, Any]], now: Any) -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        import json

        # COPY: the cheapest way to land thousands of rows in PostgreSQL.
        columns = (
            "gateway_id, provider_message_id, status, provider_status, error_code, occurred_at, received_at, "
            "applied_at, raw"
        )
        with connection.cursor() as cursor:
            raw_cursor = cursor.cursor
            with raw_cursor.copy(f"COPY {DeliveryReceipt._meta.db_table} ({columns}) FROM STDIN") as copy:
                for event, applied_at in rows:
                    copy.write_row(
                        (
                            gateway.pk,
                            event.provider_message_id,
                            event.status,
                            event.provider_status[:40],
                            event.error_code[:32],
                            event.occurred_at or now,
                            now,
                            applied_at,
                            json.dumps(event.raw),
                        )
                    )
        return
    DeliveryReceipt.objects.bulk_create(
        [
            DeliveryReceipt(
                gateway=gateway,
                provider_message_id=event.provider_message_id,
                status=event.status,
                provider_status=event.provider_status[:40],
                error_code=event.error_code[:32],
                occurred_at=event.occurred_at or now,
                received_at=now,
                applied_at=applied_at,
                raw=event.raw,
            )
            for event, applied_at in rows
        ],
        batch_size=2000,
    )


def receipts_apply(*, gateway: Gateway, provider_ids: Sequence[str]) -> int:
    """Apply unapplied receipts for these provider ids to their parts and messages.

    Idempotent and order-insensitive: a part's first final state wins, intermediate states
    never overwrite a final one, and a message is delivered only when every part is."""
    if not provider_ids:
        return 0
    now = timezone.now()
    receipts = list(
        DeliveryReceipt.objects.filter(
            gateway=gateway, provider_message_id__in=set(provider_ids), applied_at__isnull=True
        ).order_by("occurred_at", "pk")
    )
    if not receipts:
        return 0
    parts = {
        p.provider_message_id: p
        for p in MessagePart.objects.select_for_update().filter(
            gateway=gateway, provider_message_id__in={r.provider_message_id for r in receipts}
        )
    }
    applied_ids, changed_parts = [], {}
    for receipt in receipts:
        part = parts.get(receipt.provider_message_id)
        if part is None:
            continue  # arrived before the submit answer; applied when the part is recorded
        applied_ids.append(receipt.pk)
        if part.state in FINAL_MESSAGE_STATES:
            continue
        if _RANK.get(MessageState(receipt.status), 0) >= _RANK.get(MessageState(part.state), 0):
            part.state, part.error_code, part.receipt_at = receipt.status, receipt.error_code, receipt.occurred_at
            changed_parts[part.pk] = part
    if changed_parts:
        # One UPDATE per (state, error) group: far cheaper than a CASE per row.
        groups: dict[tuple[str, str], list[int]] = {}
        for part in changed_parts.values():
            groups.setdefault((part.state, part.error_code), []).append(part.pk)
        for (state, error), ids in groups.items():
            MessagePart.objects.filter(pk__in=ids).update(state=state, error_code=error, receipt_at=now)
        _messages_roll_up({p.message_id for p in changed_parts.values()}, now)
    DeliveryReceipt.objects.filter(pk__in=applied_ids).update(applied_at=now)
    return len(applied_ids)


def _messages_roll_up(message_ids: set[int], now: Any) -> None:
    states: dict[int, list[tuple[str, str]]] = {}
    for message_id, state, error in MessagePart.objects.filter(message_id__in=message_ids).values_list(
        "message_id", "state", "error_code"
    ):
        states.setdefault(message_id, []).append((state, error))
    by_state: dict[tuple[str, str], list[int]] = {}
    for message_id, part_states in states.items():
        values = [s for s, _ in part_states]
        if all(s == MessageState.DELIVERED for s in values):
            key = (MessageState.DELIVERED, "")
        elif any(s == MessageState.FAILED for s in values):
            key = (MessageState.FAILED, next(e for s, e in part_states if s == MessageState.FAILED) or "undelivered")
        elif any(s == MessageState.EXPIRED for s in values):
            key = (MessageState.EXPIRED, "expired")
        else:
            continue  # some parts still pending: the message stays submitted, never 'delivered'
        by_state.setdefault(key, []).append(message_id)
    for (state, error), ids in by_state.items():
        OutboundMessage.objects.filter(pk__in=ids, state=MessageState.SUBMITTED).update(
            state=state, final_at=now, error_code=error[:32]
        )


# --- inbound ------------------------------------------------------------------------------------


def inbound_receive(*, gateway: Gateway, events: Iterable[InboundEvent]) -> list[InboundMessage]:
    """Store mobile-originated SMS (idempotent per provider id) and hand each to the handlers."""
    stored: list[InboundMessage] = []
    for event in events:
        with transaction.atomic():
            if event.provider_message_id:
                message, created = InboundMessage.objects.get_or_create(
                    gateway=gateway,
                    provider_message_id=event.provider_message_id,
                    defaults={"source": event.source, "destination": event.destination, "body": event.body},
                )
                if not created:
                    continue
            else:
                message = InboundMessage.objects.create(
                    gateway=gateway, source=event.source, destination=event.destination, body=event.body
                )
            results = {}
            for handler in INBOUND_HANDLERS:
                outcome = handler(message)
                if outcome:
                    results[getattr(handler, "__name__", "handler")] = outcome
            message.handled_at = timezone.now()
            message.handler_result = results
            message.save(update_fields=["handled_at", "handler_result"])
            stored.append(message)
    return stored


def messages_mark_unknown(*, actor: Actor, message_ids: Sequence[int], reason: str) -> int:
    """Messages whose submission may or may not have reached the gateway: never resent."""
    with transaction.atomic():
        count = OutboundMessage.objects.filter(pk__in=list(message_ids), state=MessageState.SUBMITTING).update(
            state=MessageState.UNKNOWN, error_code="submit_interrupted", error_reason=reason[:300]
        )
        audit_record(
            actor=actor,
            action="messages.unknown",
            object_type="outbound_message",
            after={"ids": list(message_ids)[:1000], "count": count, "reason": reason},
        )
    return count


def messages_requeue(*, actor: Actor, message_ids: Sequence[int]) -> int:
    """Messages claimed but never written to any gateway: safe to send later."""
    with transaction.atomic():
        return OutboundMessage.objects.filter(pk__in=list(message_ids), state=MessageState.SUBMITTING).update(
            state=MessageState.QUEUED, submit_started_at=None
        )
