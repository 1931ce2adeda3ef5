"""Recording what a gateway answered: parts with their provider ids, retries with back-off,
fail-over to the fallback, quota consumed or released, receipts that came with the answer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.db import connection, transaction
from django.utils import timezone

from gateways.adapters.base import ReceiptEvent, SendOutcome
from gateways.delivery.receipts import (
    parts_roll_up,
    receipts_apply,
    receipts_apply_late,
    receipts_ingest_in_transaction,
    receipts_insert,
)
from gateways.delivery.rows import QuotaHolder, pg_cursor, quota_totals
from gateways.failover import FAIL_OVER_CODES, fallback_usable, messages_fail_over_eligible
from gateways.models import FINAL_MESSAGE_STATES, Gateway, MessagePart, MessageState, OutboundMessage, QuotaReservation
from gateways.quotas import quota_consume_many, quota_hold_adjust, quota_unhold_many
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.operations.metrics import outcomes_count, receipts_count

MAX_ATTEMPTS = 5
_MESSAGES = OutboundMessage._meta.db_table
_PARTS = MessagePart._meta.db_table


class MessageLike(QuotaHolder, Protocol):
    """What recording an outcome reads of a message (an OutboundMessage or a ClaimedMessage)."""

    @property
    def pk(self) -> Any: ...
    @property
    def attempts(self) -> int: ...
    @property
    def country(self) -> str: ...


def outcomes_record(
    *,
    actor: Actor,
    gateway: Gateway,
    messages: Sequence[MessageLike],
    outcomes: Sequence[SendOutcome],
    receipts: Iterable[ReceiptEvent] = (),
) -> dict[str, int]:
    """Write what the gateway answered, in bulk. Parts get their provider ids; receipts that
    arrived before the submit answer are applied now.

    ``receipts``: receipts the caller holds (a bind worker gets most of them milliseconds after
    the answer). Those for parts recorded here are folded in as the parts are written -- one
    write per message instead of three -- and stored as applied; the others go through
    ``receipts_ingest`` in the same transaction."""
    now = timezone.now()
    counts = {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}
    pending: dict[str, list[ReceiptEvent]] = {}
    for event in sorted(receipts, key=lambda e: e.occurred_at or now):
        pending.setdefault(event.provider_message_id, []).append(event)
    pending_all = list(pending.values())  # for the receipts metric (pending is consumed below)
    parts: list[tuple[int, int, str, str, str, Any]] = []
    folded: list[ReceiptEvent] = []
    accepted_groups: dict[tuple[str, str], list[int]] = {}
    charged: list[MessageLike] = []  # a message that may have been sent is charged: the gateway may bill it
    refused: list[MessageLike] = []
    rebilled: list[tuple[int, int, int]] = []  # (message, our parts, the provider's billed parts)
    adjust: dict[str, tuple[int, Decimal]] = {}  # reservation -> what the provider billed beyond our estimate
    unreachable: list[tuple[MessageLike, SendOutcome]] = []  # temporary: the gateway could not be reached
    with transaction.atomic():
        for message, outcome in zip(messages, outcomes, strict=True):
            counts[outcome.kind] += 1
            if outcome.kind == "accepted":
                part_states: list[tuple[str, str]] = []
                for number, pid in enumerate(outcome.provider_ids, start=1):
                    state, error, receipt_at = MessageState.SUBMITTED.value, "", None
                    events = pending.pop(pid, None)
                    if events:
                        for event in events:
                            if state in FINAL_MESSAGE_STATES:
                                break  # the first final state wins
                            state, error, receipt_at = str(event.status), event.error_code[:32], now
                        folded.extend(events)
                    parts.append((message.pk, number, pid, state, error, receipt_at))
                    part_states.append((state, error))
                accepted_groups.setdefault(parts_roll_up(part_states), []).append(message.pk)
                if outcome.billed_segments and outcome.billed_segments != message.segments:
                    rebilled.append((message.pk, message.segments, outcome.billed_segments))
                    charge = _rebilled(message, outcome.billed_segments)
                    extra_parts, extra_amount = adjust.get(message.quota_reference, (0, Decimal(0)))
                    adjust[message.quota_reference] = (
                        extra_parts + charge.segments - message.segments,
                        extra_amount + charge.cost - message.cost,
                    )
                    message = charge
                charged.append(message)
            elif outcome.kind == "temporary":
                if gateway.fallback_id and outcome.code in FAIL_OVER_CODES:
                    unreachable.append((message, outcome))  # the fallback may take it: decided below
                elif _retry_later(message, outcome, now):
                    refused.append(message)
            elif outcome.kind == "unknown":
                OutboundMessage.objects.filter(pk=message.pk).update(
                    state=MessageState.UNKNOWN, error_code=outcome.code[:32], error_reason=outcome.reason[:300]
                )
                charged.append(message)
            else:
                _fail(message.pk, outcome.code, outcome.reason, now)
                refused.append(message)
        if unreachable:
            counts["failed_over"] = _unreachable_fail_over(gateway, unreachable, refused, now)
        if accepted_groups:
            _accepted_write(accepted_groups, now)
            _parts_insert(gateway, parts)
            if folded:
                receipts_insert(gateway, [(event, now) for event in folded], now)
            # Receipts stored before these parts existed (they beat the submit answer).
            written = [p[2] for p in parts]
            receipts_apply(gateway=gateway, provider_ids=written)
            # A receipt ingested while these parts are not committed yet cannot see them and is
            # stored unapplied: apply again once they are visible to everyone.
            transaction.on_commit(lambda: receipts_apply_late(gateway, written))
        leftovers = [event for events in pending.values() for event in events]
        if leftovers and receipts_ingest_in_transaction(gateway, leftovers, now) < len(leftovers):
            late = [event.provider_message_id for event in leftovers]  # parts another transaction writes
            transaction.on_commit(lambda: receipts_apply_late(gateway, late))
        if rebilled:
            audit_record(
                actor=actor,
                action="messages.rebilled",
                object_type="gateway",
                object_id=str(gateway.pk),
                after={"messages": [{"id": m, "estimated": e, "billed": b} for m, e, b in rebilled[:1000]]},
                reason="The provider split these messages into a different number of parts than estimated; "
                "they are charged as the provider bills them.",
            )
        for reference, (segments, amount) in adjust.items():
            if QuotaReservation.objects.filter(reference=reference).exists():
                quota_hold_adjust(actor=actor, reference=reference, segments=segments, amount=amount)
        # One quota movement per flush, not per message nor per reservation: one-by-one messages
        # each have a hold of their own (gateways.quotas.quota_consume_many). The charge is the
        # flush's last statement: it locks the account row (an OTP's reservation waits on it)
        # only until the commit.
        quota_unhold_many(actor=actor, totals=quota_totals(refused))
        quota_consume_many(actor=actor, totals=quota_totals(charged))
    outcomes_count(gateway.code, counts)
    receipts_count(gateway.code, (e.status for events in pending_all for e in events))
    return counts


def _retry_later(message: MessageLike, outcome: SendOutcome, now: Any) -> bool:
    """A temporary failure: back to the queue with a back-off, or failed once the attempts are
    spent (True: its quota hold is to be released)."""
    if message.attempts >= MAX_ATTEMPTS:
        _fail(message.pk, "retries_exhausted", f"{outcome.code}: {outcome.reason}", now)
        return True
    OutboundMessage.objects.filter(pk=message.pk).update(
        state=MessageState.QUEUED,
        next_attempt_at=now + timedelta(seconds=outcome.retry_after * (2 ** (message.attempts - 1))),
        error_code=outcome.code,
        error_reason=outcome.reason[:300],
    )
    return False


def _unreachable_fail_over(
    gateway: Gateway, unreachable: list[tuple[MessageLike, SendOutcome]], refused: list[MessageLike], now: Any
) -> int:
    """Messages the gateway could not be reached for: those its fallback may take over
    (gateways.failover, the rule the bind worker's fail-over applies too) are queued there at
    once; the others wait to be retried here. Returns how many failed over."""
    fallback = fallback_usable(gateway)
    eligible = messages_fail_over_eligible(
        gateway=gateway, fallback=fallback, message_ids=[message.pk for message, _outcome in unreachable]
    )
    groups: dict[tuple[str, str], list[int]] = {}
    for message, outcome in unreachable:
        if message.pk in eligible:
            groups.setdefault((outcome.code, outcome.reason), []).append(message.pk)
        elif _retry_later(message, outcome, now):
            refused.append(message)
    for (code, reason), ids in groups.items():
        OutboundMessage.objects.filter(pk__in=ids).update(
            state=MessageState.QUEUED,
            gateway=fallback,
            next_attempt_at=None,
            error_code=code,
            error_reason=f"failed over from {gateway.code}: {reason}"[:300],
        )
    return len(eligible)


class _Charge(NamedTuple):
    pk: int
    attempts: int
    country: str
    quota_reference: str
    segments: int
    cost: Decimal


def _rebilled(message: MessageLike, billed: int) -> _Charge:
    """The provider billed ``billed`` parts: the message's parts and cost follow (same price per part)."""
    per_part = message.cost / message.segments if message.segments else Decimal(0)
    cost = (per_part * billed).quantize(Decimal("0.0001"))
    OutboundMessage.objects.filter(pk=message.pk).update(segments=billed, cost=cost)
    return _Charge(message.pk, message.attempts, message.country, message.quota_reference, billed, cost)


def _accepted_write(groups: dict[tuple[str, str], list[int]], now: Any) -> None:
    """Accepted messages: submitted (or already final when their receipts came with the answer)."""
    for (state, error), ids in groups.items():
        final_at = now if state in FINAL_MESSAGE_STATES else None
        if connection.vendor == "postgresql":
            with pg_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_MESSAGES} SET state = %s, submitted_at = %s, final_at = %s, "  # noqa: S608
                    "error_code = %s, error_reason = '' WHERE id = ANY(%b::bigint[])",
                    [state, now, final_at, error, ids],
                )
        else:
            OutboundMessage.objects.filter(pk__in=ids).update(
                state=state, submitted_at=now, final_at=final_at, error_code=error, error_reason=""
            )


def _parts_insert(gateway: Gateway, parts: list[tuple[int, int, str, str, str, Any]]) -> None:
    if connection.vendor == "postgresql":
        columns = "message_id, part_number, provider_message_id, gateway_id, state, error_code, receipt_at"
        stamps: dict[Any, str | None] = {None: None}
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {_PARTS} ({columns}) FROM STDIN") as copy:
            write = copy.write_row
            gateway_id = gateway.pk
            for message_id, number, pid, state, error, receipt_at in parts:
                stamp = stamps.get(receipt_at)
                if stamp is None and receipt_at is not None:
                    stamp = stamps[receipt_at] = receipt_at.isoformat()
                write((message_id, number, pid, gateway_id, state, error, stamp))
        return
    MessagePart.objects.bulk_create(
        [
            MessagePart(
                message_id=message_id,
                part_number=number,
                provider_message_id=pid,
                gateway=gateway,
                state=state,
                error_code=error,
                receipt_at=receipt_at,
            )
            for message_id, number, pid, state, error, receipt_at in parts
        ],
        batch_size=1000,
    )


def _fail(message_id: int, code: str, reason: str, now: Any) -> None:
    OutboundMessage.objects.filter(pk=message_id).update(
        state=MessageState.FAILED, error_code=code[:32], error_reason=reason[:300], final_at=now
    )
