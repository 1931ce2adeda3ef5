"""The delivery layer: queue, submit at most once, ingest receipts and inbound SMS.

State machine of OutboundMessage:
    queued -> submitting -> submitted -> delivered | failed | expired
    submitting -> unknown   (worker died mid-submit: reconciled, never resent)
    queued -> failed        (permanent refusal, or retries exhausted)
The claim queued -> submitting is committed before the gateway is called, so a message
is handed to a gateway at most once whatever crashes afterwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, CharField, Exists, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from gateways.adapters.base import InboundEvent, OutgoingSms, ReceiptEvent, SendOutcome, adapter_for
from gateways.errors import GatewayErrorCode
from gateways.failover import FAIL_OVER_CODES, fail_over_eligible, fallback_usable, messages_fail_over_eligible
from gateways.models import (
    FINAL_MESSAGE_STATES,
    DeliveryReceipt,
    Gateway,
    InboundMessage,
    MessagePart,
    MessagePurpose,
    MessageState,
    OutboundMessage,
    QuotaReservation,
    ReservationState,
)
from gateways.quotas import quota_consume, quota_hold_adjust, quota_reserve, quota_unhold
from gateways.rules import sender_id_check_usable
from gateways.selectors import segment_prices
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.phones import phone_parse
from smsplatform.kernel.segments import SegmentInputError, count_segments, count_segments_clusters

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
_MESSAGES = OutboundMessage._meta.db_table
_PARTS = MessagePart._meta.db_table
_RECEIPTS = DeliveryReceipt._meta.db_table
_encode_json_string = json.encoder.encode_basestring_ascii


def _pg_cursor() -> Any:
    """A server-side-binding psycopg cursor on Django's connection (same transaction): id and
    provider-id lists go as one binary array parameter (``= ANY(%b)``), not as thousands of
    client-side quoted literals."""
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


SUBMITTING_TIMEOUT = timedelta(minutes=5)

# Handlers for inbound SMS (the STOP/START keyword handler, contacts/keywords.py, registers here from contacts/apps.py).
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
        raise ApplicationError(GatewayErrorCode.BODY_EMPTY, "The message is empty.", field="body")
    quote = segment_prices(countries=[phone.country], gateway_code=gateway_code).get(phone.country)
    if quote is None:
        raise ApplicationError(
            GatewayErrorCode.COUNTRY_NOT_COVERED,
            f"No enabled gateway{f' {gateway_code!r}' if gateway_code else ''} delivers to {phone.country}.",
            field="gateway" if gateway_code else "destination",
            hint="See sms_marketing.gateways.list for coverage.",
        )
    gateway = Gateway.objects.get(code=quote.gateway_code)
    if encoding not in (gateway.encodings or ["GSM-7", "UCS-2"]):
        raise ApplicationError(
            GatewayErrorCode.ENCODING_NOT_SUPPORTED, f"{gateway.code} cannot send {encoding}.", field="body"
        )
    sender_id_check_usable(value=sender_id, country=phone.country)
    if quote.keeps_clusters:
        # The provider splits the message itself, never inside a grapheme cluster (Twilio).
        segments = count_segments_clusters(body)[2]
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
        transaction.on_commit(lambda: message_submit_enqueue(gateway_id, message_ids))
    return message


def message_submit_enqueue(gateway_id: int, message_ids: list[int]) -> None:
    """Hand queued messages to their gateway's sender: a Celery submit task, or nothing for a
    gateway whose bind worker claims queued messages itself. Call it after the commit that
    queued them (transaction.on_commit)."""
    from gateways.tasks import submit_messages

    gateway = Gateway.objects.get(pk=gateway_id)
    if adapter_for(gateway).sends_from_worker:
        return  # the SMPP worker picks queued messages up itself
    submit_messages.delay(gateway_id, message_ids)


# --- submitting -----------------------------------------------------------------------


class ClaimedMessage(NamedTuple):
    """A claimed message as the bind worker needs it: no model instance on the hot path."""

    pk: int
    sender_id: str
    destination: str
    body: str
    encoding: str
    segments: int
    cost: Decimal
    country: str
    purpose: str
    quota_reference: str
    request_receipt: bool
    attempts: int  # including this attempt


class _QuotaHolder(Protocol):
    """What a quota movement reads of a message: its reservation, parts and cost."""

    @property
    def quota_reference(self) -> str: ...
    @property
    def segments(self) -> int: ...
    @property
    def cost(self) -> Decimal: ...


class MessageLike(_QuotaHolder, Protocol):
    """What recording an outcome reads of a message (an OutboundMessage or a ClaimedMessage)."""

    @property
    def pk(self) -> Any: ...
    @property
    def attempts(self) -> int: ...
    @property
    def country(self) -> str: ...


class _HeldRow(NamedTuple):
    """A message's quota hold as read from its row (id, quota reference, segments, cost)."""

    pk: int
    quota_reference: str
    segments: int
    cost: Decimal


_CLAIM_COLUMNS = (
    "id",
    "sender_id",
    "destination",
    "body",
    "encoding",
    "segments",
    "cost",
    "country",
    "purpose",
    "quota_reference",
    "request_receipt",
    "attempts",
)


def messages_claim(
    *, gateway_id: int, message_ids: Sequence[int] | None = None, limit: int = 500, actor: Actor | None = None
) -> list[OutboundMessage]:
    """queued -> submitting, committed before any gateway call (at most once).

    Marketing messages to a number with an active opt-out are not claimed: they fail as
    'suppressed' in the same transaction and their quota hold is released."""
    with transaction.atomic():
        claimed = _claim(gateway_id=gateway_id, message_ids=message_ids, limit=limit, actor=actor).messages
        if not claimed:
            return []
        return list(OutboundMessage.objects.filter(pk__in=[m.pk for m in claimed]).order_by("pk"))


class ClaimResult(NamedTuple):
    messages: list[ClaimedMessage]  # queued -> submitting, in id order
    suppressed: int  # queued -> failed (active opt-out)
    last_id: int  # the highest id taken either way (0 when none)


def messages_claim_rows(
    *,
    gateway_id: int,
    limit: int = 2000,
    actor: Actor | None = None,
    after_id: int = 0,
    countries: Sequence[str] | None = None,
    on_claim: Callable[[list[int]], Any] | None = None,
) -> ClaimResult:
    """The bind worker's claim: the same rules as ``messages_claim``, rows instead of model
    instances.

    ``after_id``: start after this id. Rows claimed earlier leave dead entries at the front of
    the queue's index until vacuum removes them; a worker that resumes after its last claim
    does not walk them again on every claim. It must still come back to 0 (retries and
    requeued messages sit behind the cursor): see BindWorker._claim.

    ``countries``: only messages to these countries (a fail-over takes only what its fallback
    covers). ``on_claim``: called with the claimed ids inside the claim's transaction, before it
    commits (the bind worker journals them: see gateways.smpp.journal)."""
    return _claim(
        gateway_id=gateway_id,
        message_ids=None,
        limit=limit,
        actor=actor,
        after_id=after_id,
        countries=countries,
        on_claim=on_claim,
    )


def _claim(
    *,
    gateway_id: int,
    message_ids: Sequence[int] | None,
    limit: int,
    actor: Actor | None,
    after_id: int = 0,
    countries: Sequence[str] | None = None,
    on_claim: Callable[[list[int]], Any] | None = None,
) -> ClaimResult:
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            rows = _claim_postgresql(gateway_id, message_ids, limit, now, after_id, countries)
        else:
            rows = _claim_orm(gateway_id, message_ids, limit, now, after_id, countries)
        claimed: list[ClaimedMessage] = []
        suppressed: list[_HeldRow] = []
        for row in rows:
            if row[-1] is None:
                claimed.append(ClaimedMessage._make(row[:-1]))
            else:  # (id, quota_reference, segments, cost)
                suppressed.append(_HeldRow(row[0], row[9], row[5], row[6]))
        if suppressed:
            _suppressed_release(actor or Actor.system("messages_claim"), suppressed)
        if on_claim is not None and claimed:
            on_claim([m.pk for m in claimed])
    claimed.sort()
    return ClaimResult(claimed, len(suppressed), max((row[0] for row in rows), default=0))


def _suppressed_reason(opt_out_id: Any, reason: Any, source: Any) -> str:
    return f"Opt-out #{opt_out_id} ({reason}, {source}) is active for this number: not sent."[:300]


def _claim_postgresql(
    gateway_id: int,
    message_ids: Sequence[int] | None,
    limit: int,
    now: Any,
    after_id: int,
    countries: Sequence[str] | None = None,
) -> list[tuple[Any, ...]]:
    # 1. Pick in id order with SKIP LOCKED (concurrent workers take disjoint rows), looking up an
    #    active opt-out for marketing messages on its partial index.
    # 2. Move the picked rows by primary key (an array parameter: an index scan whatever the
    #    table's statistics say, even right after a bulk dispatch) to 'submitting' -- or, when
    #    opted out, straight to 'failed': the opt-out wins at claim time.
    from compliance.models import OptOut

    only = "AND m.id = ANY(%(ids)s)" if message_ids is not None else ""
    if countries is not None:
        only += " AND m.country = ANY(%(countries)s)"
    pick = f"""
        SELECT m.id, o.id, o.reason, o.source
        FROM {_MESSAGES} m
        LEFT JOIN LATERAL (
            SELECT x.id, x.reason, x.source FROM {OptOut._meta.db_table} x
            WHERE m.purpose = %(marketing)s AND x.phone = m.destination AND x.lifted_at IS NULL
            ORDER BY x.occurred_at DESC, x.id DESC LIMIT 1
        ) o ON TRUE
        WHERE m.gateway_id = %(gateway)s AND m.state = %(queued)s
          AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= %(now)s) AND m.id > %(after)s {only}
        ORDER BY m.id
        LIMIT %(limit)s
        FOR NO KEY UPDATE OF m SKIP LOCKED
    """  # noqa: S608 (table names are ours)
    params = {
        "gateway": gateway_id,
        "queued": MessageState.QUEUED.value,
        "marketing": MessagePurpose.MARKETING.value,
        "now": now,
        "limit": limit,
        "after": after_id,
        "ids": list(message_ids or []),
        "countries": list(countries or []),
    }
    with _pg_cursor() as cursor:
        cursor.execute(pick, params)
        picked = cursor.fetchall()
        if not picked:
            return []
        send = [row[0] for row in picked if row[1] is None]
        blocked = [row for row in picked if row[1] is not None]
        returning = ", ".join(_CLAIM_COLUMNS)
        rows: list[tuple[Any, ...]] = []
        if send:
            cursor.execute(
                f"UPDATE {_MESSAGES} SET state = %s, submit_started_at = %s, attempts = attempts + 1 "  # noqa: S608
                f"WHERE id = ANY(%b::bigint[]) RETURNING {returning}, NULL",
                [MessageState.SUBMITTING.value, now, send],
            )
            rows.extend(cursor.fetchall())
        if blocked:
            cursor.execute(
                f"UPDATE {_MESSAGES} m SET state = %s, final_at = %s, error_code = 'suppressed', "  # noqa: S608
                "error_reason = v.reason FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) AS v(id, optout, reason) "
                f"WHERE m.id = v.id RETURNING {', '.join(f'm.{c}' for c in _CLAIM_COLUMNS)}, v.optout",
                [
                    MessageState.FAILED.value,
                    now,
                    [row[0] for row in blocked],
                    [row[1] for row in blocked],
                    [_suppressed_reason(row[1], row[2], row[3]) for row in blocked],
                ],
            )
            rows.extend(cursor.fetchall())
    return rows


def _claim_orm(
    gateway_id: int,
    message_ids: Sequence[int] | None,
    limit: int,
    now: Any,
    after_id: int,
    countries: Sequence[str] | None = None,
) -> list[tuple[Any, ...]]:
    """The portable claim (SQLite: one writer at a time, so no row locks are needed)."""
    from compliance.models import OptOut

    active = OptOut.objects.filter(phone=OuterRef("destination"), lifted_at__isnull=True).order_by(
        "-occurred_at", "-pk"
    )
    qs = OutboundMessage.objects.filter(gateway_id=gateway_id, state=MessageState.QUEUED, pk__gt=after_id).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    if message_ids is not None:
        qs = qs.filter(pk__in=list(message_ids))
    if countries is not None:
        qs = qs.filter(country__in=list(countries))
    rows = list(
        qs.select_for_update(skip_locked=True)
        .order_by("pk")
        .annotate(
            optout_id=Case(
                When(purpose=MessagePurpose.MARKETING, then=Subquery(active.values("pk")[:1])),
                default=Value(None),
                output_field=BigIntegerField(),
            )
        )
        .values_list(*_CLAIM_COLUMNS, "optout_id")[:limit]
    )
    if not rows:
        return []
    ids = [r[0] for r in rows if r[-1] is None]
    if ids:
        OutboundMessage.objects.filter(pk__in=ids).update(
            state=MessageState.SUBMITTING, submit_started_at=now, attempts=F("attempts") + 1
        )
    blocked = [(r[0], r[-1]) for r in rows if r[-1] is not None]  # (message, its active opt-out)
    if blocked:
        opt_outs = {
            pk: _suppressed_reason(pk, reason, source)
            for pk, reason, source in OptOut.objects.filter(pk__in={o for _m, o in blocked}).values_list(
                "pk", "reason", "source"
            )
        }
        _suppressed_write([(m, opt_outs[o]) for m, o in blocked if o in opt_outs], now)
    attempts = _CLAIM_COLUMNS.index("attempts")
    return [(*r[:attempts], r[attempts] + 1, *r[attempts + 1 :]) if r[-1] is None else r for r in rows]


def messages_suppress_claimed(*, actor: Actor, suppressions: Sequence[tuple[int, int, str, str]]) -> int:
    """Claimed marketing messages that no gateway has been given yet, whose number opted out after
    the claim: failed as 'suppressed' (never sent) and their quota hold released.
    ``suppressions``: (message id, opt-out id, its reason, its source). Only 'submitting' rows move."""
    now = timezone.now()
    reasons: dict[int, str] = {}
    for message_id, opt_out_id, reason, source in suppressions:
        reasons.setdefault(message_id, _suppressed_reason(opt_out_id, reason, source))
    withdrawn: list[_HeldRow] = []
    with transaction.atomic():
        for chunk in _chunks(sorted(reasons), 5_000):
            # Locked in id order, then moved in one UPDATE: exactly the rows read here move (a
            # concurrent reconciler waits, then finds them failed).
            rows = [
                _HeldRow._make(row)
                for row in OutboundMessage.objects.select_for_update(of=("self",))
                .filter(pk__in=chunk, state=MessageState.SUBMITTING, purpose=MessagePurpose.MARKETING)
                .order_by("pk")
                .values_list("pk", "quota_reference", "segments", "cost")
            ]
            _suppressed_write(
                [(row.pk, reasons[row.pk]) for row in rows],
                now,
                state=MessageState.SUBMITTING,
                purpose=MessagePurpose.MARKETING,
            )
            withdrawn.extend(rows)
        if withdrawn:
            _suppressed_release(actor, withdrawn, reason="Opt-out committed after the claim, before the send.")
    return len(withdrawn)


def _suppressed_write(messages: Sequence[tuple[int, str]], now: Any, **only: Any) -> None:
    """Fail these messages as 'suppressed', each with its reason (message id, reason), those of
    them matching ``only``: one UPDATE, the reasons in a CASE with a branch per distinct reason
    (one per opt-out), far fewer than the messages."""
    if not messages:
        return
    by_reason: dict[str, list[int]] = {}
    for message_id, reason in messages:
        by_reason.setdefault(reason, []).append(message_id)
    OutboundMessage.objects.filter(pk__in=[message_id for message_id, _reason in messages], **only).update(
        state=MessageState.FAILED,
        final_at=now,
        error_code="suppressed",
        error_reason=Case(
            *(When(pk__in=ids, then=Value(reason)) for reason, ids in by_reason.items()),
            default=F("error_reason"),
            output_field=CharField(),
        ),
    )


def _suppressed_release(
    actor: Actor, suppressed: Sequence[_HeldRow], reason: str = "Active opt-out at claim time."
) -> None:
    """Give back the quota held for suppressed messages: one movement per reservation."""
    totals = _totals(suppressed)
    existing = set(QuotaReservation.objects.filter(reference__in=list(totals)).values_list("reference", flat=True))
    for reference in sorted(existing):
        segments, amount = totals[reference]
        quota_unhold(actor=actor, reference=reference, segments=segments, amount=amount)
    audit_record(
        actor=actor,
        action="messages.suppressed",
        object_type="outbound_message",
        after={"ids": [s.pk for s in suppressed][:1000], "count": len(suppressed)},
        reason=reason,
    )


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
                accepted_groups.setdefault(_roll_up(part_states), []).append(message.pk)
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
                _insert_receipts(gateway, [(event, now) for event in folded], now)
            # Receipts stored before these parts existed (they beat the submit answer).
            written = [p[2] for p in parts]
            receipts_apply(gateway=gateway, provider_ids=written)
            # A receipt ingested while these parts are not committed yet cannot see them and is
            # stored unapplied: apply again once they are visible to everyone.
            transaction.on_commit(lambda: _receipts_apply_late(gateway, written))
        leftovers = [event for events in pending.values() for event in events]
        if leftovers and _receipts_ingest(gateway, leftovers, now) < len(leftovers):
            late = [event.provider_message_id for event in leftovers]  # parts another transaction writes
            transaction.on_commit(lambda: _receipts_apply_late(gateway, late))
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
        # One quota movement per reservation per flush, not per message.
        for reference, (segments, amount) in _totals(charged).items():
            quota_consume(actor=actor, reference=reference, segments=segments, amount=amount)
        for reference, (segments, amount) in _totals(refused).items():
            quota_unhold(actor=actor, reference=reference, segments=segments, amount=amount)
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


def _unknown_charge(actor: Actor, rows: Iterable[tuple[int, str, int, Decimal]]) -> None:
    """Messages turned 'unknown' may have been sent: charge their holds, one movement per
    reservation (as outcomes_record does for an 'unknown' answer). ``rows``: (id, quota
    reference, segments, cost)."""
    totals = _totals(_HeldRow._make(row) for row in rows if row[1])
    if not totals:
        return
    held = set(
        QuotaReservation.objects.filter(reference__in=list(totals), state=ReservationState.HELD).values_list(
            "reference", flat=True
        )
    )
    for reference in sorted(held):
        segments, amount = totals[reference]
        quota_consume(actor=actor, reference=reference, segments=segments, amount=amount)


def receipts_apply_pending(*, limit: int = 5000) -> int:
    """Apply stored-unapplied receipts whose parts exist (a safety net for the receipt race)."""
    part = MessagePart.objects.filter(
        gateway_id=OuterRef("gateway_id"), provider_message_id=OuterRef("provider_message_id")
    )
    pending = list(
        DeliveryReceipt.objects.filter(applied_at__isnull=True)
        .filter(Exists(part))
        .order_by("pk")
        .values_list("gateway_id", "provider_message_id")[:limit]
    )
    by_gateway: dict[int, set[str]] = {}
    for gateway_id, pid in pending:
        by_gateway.setdefault(gateway_id, set()).add(pid)
    applied = 0
    for gateway_id, pids in sorted(by_gateway.items()):
        with transaction.atomic():
            applied += receipts_apply(gateway=Gateway.objects.get(pk=gateway_id), provider_ids=sorted(pids))
    return applied


def _roll_up(part_states: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """A message's (state, error_code) from its parts': delivered only when every part is."""
    if all(s == MessageState.DELIVERED for s, _ in part_states):
        return MessageState.DELIVERED.value, ""
    failed = [e for s, e in part_states if s == MessageState.FAILED]
    if failed:
        return MessageState.FAILED.value, (failed[0] or "undelivered")[:32]
    if any(s == MessageState.EXPIRED for s, _ in part_states):
        return MessageState.EXPIRED.value, "expired"
    return MessageState.SUBMITTED.value, ""  # some parts still pending: never 'delivered'


def _accepted_write(groups: dict[tuple[str, str], list[int]], now: Any) -> None:
    """Accepted messages: submitted (or already final when their receipts came with the answer)."""
    for (state, error), ids in groups.items():
        final_at = now if state in FINAL_MESSAGE_STATES else None
        if connection.vendor == "postgresql":
            with _pg_cursor() as cursor:
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


def _totals(messages: Iterable[_QuotaHolder]) -> dict[str, tuple[int, Decimal]]:
    """Segments and amount per reservation: quota moves once per reservation, not per message."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for m in messages:
        segments, amount = totals.get(m.quota_reference, (0, Decimal(0)))
        totals[m.quota_reference] = (segments + m.segments, amount + m.cost)
    return totals


def _fail(message_id: int, code: str, reason: str, now: Any) -> None:
    OutboundMessage.objects.filter(pk=message_id).update(
        state=MessageState.FAILED, error_code=code[:32], error_reason=reason[:300], final_at=now
    )


def messages_submit(*, actor: Actor, gateway_id: int, message_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Claim, send through the adapter, record (for HTTP and in-process adapters)."""
    gateway = Gateway.objects.get(pk=gateway_id)
    adapter = adapter_for(gateway)
    if adapter.sends_from_worker:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT, f"{gateway.code} is sent by its bind worker.", field="gateway"
        )
    with transaction.atomic():
        rows, suppressed, _last = _claim(gateway_id=gateway_id, message_ids=message_ids, limit=500, actor=actor)
        claimed = list(OutboundMessage.objects.filter(pk__in=[m.pk for m in rows]).order_by("pk")) if rows else []
    empty = {"accepted": 0, "temporary": 0, "permanent": 0, "failed_over": 0, "unknown": 0}
    if not claimed:
        return {**empty, "suppressed": suppressed} if suppressed else empty
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
    if suppressed:
        counts["suppressed"] = suppressed
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


# --- receipts -----------------------------------------------------------------------------


def receipts_ingest(*, gateway: Gateway, events: Iterable[ReceiptEvent]) -> dict[str, int]:
    """Store every receipt (duplicates and early ones included) and apply those whose part is known.

    Set-based: one locking SELECT of the parts, one INSERT (COPY on PostgreSQL) of the
    receipts, one UPDATE of the parts and one roll-up of their messages (on PostgreSQL each a
    single statement). A receipt whose part is not recorded yet (it beat the submit answer) is
    stored unapplied and applied when the part is recorded (outcomes_record -> receipts_apply)."""
    now = timezone.now()
    events = sorted(events, key=lambda e: e.occurred_at or now)
    if not events:
        return {"received": 0, "applied": 0}
    with transaction.atomic():
        applied = _receipts_ingest(gateway, events, now)
        if applied < len(events):
            # Parts recorded by a transaction still open now are applied once both committed
            # (outcomes_record does the same from its side: whichever commits last applies).
            unapplied = [e.provider_message_id for e in events]
            transaction.on_commit(lambda: _receipts_apply_late(gateway, unapplied))
    return {"received": len(events), "applied": applied}


def _receipts_apply_late(gateway: Gateway, provider_ids: Sequence[str]) -> None:
    try:
        with transaction.atomic():
            receipts_apply(gateway=gateway, provider_ids=provider_ids)
    except Exception:  # the reconciler applies them later
        logger.exception("late receipt apply failed for %s", gateway.code)


def _receipts_ingest(gateway: Gateway, events: Sequence[ReceiptEvent], now: Any) -> int:
    """``receipts_ingest`` inside the caller's transaction; ``events`` in the order they apply."""
    if connection.vendor == "postgresql":
        return _receipts_ingest_postgresql(gateway, events, now)
    parts = _parts_lock(gateway, {e.provider_message_id for e in events})
    changed: dict[int, tuple[str, str, int]] = {}
    rows = []
    applied = 0
    for event in events:
        part = parts.get(event.provider_message_id)
        rows.append((event, now if part is not None else None))
        if part is None:
            continue
        applied += 1
        if part[2] in FINAL_MESSAGE_STATES:
            continue  # the first final state wins; later or duplicate receipts change nothing
        # Every receipt state ranks at or above 'submitted', the only state a part has before.
        part[2] = str(event.status)
        changed[part[0]] = (part[2], event.error_code[:32], part[1])
    _insert_receipts(gateway, rows, now)
    if changed:
        _parts_update(changed, now)
        _messages_roll_up({message_id for _s, _e, message_id in changed.values()}, now)
    return applied


def _receipts_ingest_postgresql(gateway: Gateway, events: Sequence[ReceiptEvent], now: Any) -> int:
    # What each part ends up as, in Python: its first final receipt, else its last one. The
    # UPDATE then only touches parts not final yet; row locks and PostgreSQL's re-check of that
    # condition make the first final state win against a concurrent ingestion too.
    effective: dict[str, tuple[str, str]] = {}
    for event in events:
        current = effective.get(event.provider_message_id)
        if current is None or current[0] not in FINAL_MESSAGE_STATES:
            effective[event.provider_message_id] = (str(event.status), event.error_code[:32])
    groups: dict[tuple[str, str], list[str]] = {}
    for pid, key in effective.items():
        groups.setdefault(key, []).append(pid)
    matched: set[str] = set()
    finished: set[int] = set()
    with _pg_cursor() as cursor:
        for (state, error), pids in groups.items():
            cursor.execute(
                f"UPDATE {_PARTS} SET state = %s, error_code = %s, receipt_at = %s "  # noqa: S608
                "WHERE gateway_id = %s AND provider_message_id = ANY(%b::varchar[]) "
                "AND state NOT IN ('delivered', 'failed', 'expired') RETURNING provider_message_id, message_id",
                [state, error, now, gateway.pk, pids],
            )
            for pid, message_id in cursor.fetchall():
                matched.add(pid)
                if state in FINAL_MESSAGE_STATES:
                    finished.add(message_id)
        missing = [pid for pid in effective if pid not in matched]
        if missing:  # duplicates of receipts already applied, or parts not recorded yet
            cursor.execute(
                f"SELECT provider_message_id, state FROM {_PARTS} "  # noqa: S608
                "WHERE gateway_id = %s AND provider_message_id = ANY(%b::varchar[])",
                [gateway.pk, missing],
            )
            # Only parts already final are duplicates; a part that is not final was committed
            # by another transaction after the UPDATE above: leave its receipt unapplied for
            # the post-commit apply rather than mark it applied without applying it.
            matched.update(pid for pid, state in cursor.fetchall() if state in FINAL_MESSAGE_STATES)
    rows = [(event, now if event.provider_message_id in matched else None) for event in events]
    _insert_receipts(gateway, rows, now)
    if finished:
        _messages_roll_up(finished, now)
    return sum(1 for _event, applied_at in rows if applied_at is not None)


def _parts_lock(gateway: Gateway, provider_ids: set[str]) -> dict[str, list[Any]]:
    """provider id -> [part id, message id, state] for the parts of these ids, locked in id order."""
    if connection.vendor == "postgresql":
        with _pg_cursor() as cursor:
            cursor.execute(
                f"SELECT id, message_id, provider_message_id, state FROM {_PARTS} "  # noqa: S608
                "WHERE gateway_id = %s AND provider_message_id = ANY(%b::varchar[]) ORDER BY id FOR UPDATE",
                [gateway.pk, list(provider_ids)],
            )
            return {pid: [pk, message_id, state] for pk, message_id, pid, state in cursor.fetchall()}
    return {
        pid: [pk, message_id, state]
        for pk, message_id, pid, state in MessagePart.objects.select_for_update()
        .filter(gateway=gateway, provider_message_id__in=provider_ids)
        .order_by("pk")
        .values_list("pk", "message_id", "provider_message_id", "state")
    }


def _parts_update(changed: dict[int, tuple[str, str, int]], now: Any) -> None:
    # One UPDATE per (state, error) group, by primary key: far cheaper than a CASE per row,
    # and an index probe whatever the size of the table.
    groups: dict[tuple[str, str], list[int]] = {}
    for pk, (state, error, _message_id) in changed.items():
        groups.setdefault((state, error), []).append(pk)
    for (state, error), ids in groups.items():
        if connection.vendor == "postgresql":
            with _pg_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_PARTS} SET state = %s, error_code = %s, receipt_at = %s "  # noqa: S608
                    "WHERE id = ANY(%b::bigint[])",
                    [state, error, now, ids],
                )
        else:
            MessagePart.objects.filter(pk__in=ids).update(state=state, error_code=error, receipt_at=now)


def _raw_json(raw: dict[str, Any]) -> str:
    if len(raw) == 1 and type(raw.get("text")) is str:  # the SMPP worker's receipts: skip the generic encoder
        return '{"text": ' + _encode_json_string(raw["text"]) + "}"
    return json.dumps(raw)


def _insert_receipts(gateway: Gateway, rows: list[tuple[ReceiptEvent, Any]], now: Any) -> None:
    if connection.vendor == "postgresql":
        # COPY: the cheapest way to land thousands of rows in PostgreSQL.
        columns = (
            "gateway_id, provider_message_id, status, provider_status, error_code, occurred_at, received_at, "
            "applied_at, raw"
        )
        gateway_id = gateway.pk
        # Timestamps as ISO text: psycopg formats a datetime in Python, a str in C.
        stamp = now.isoformat()
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {_RECEIPTS} ({columns}) FROM STDIN") as copy:
            write = copy.write_row
            for event, applied_at in rows:
                write(
                    (
                        gateway_id,
                        event.provider_message_id,
                        str(event.status),
                        event.provider_status[:40],
                        event.error_code[:32],
                        event.occurred_at.isoformat() if event.occurred_at else stamp,
                        stamp,
                        stamp if applied_at is not None else None,
                        _raw_json(event.raw),
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
    if connection.vendor == "postgresql":
        # Usually nothing: one probe for the whole flush.
        with _pg_cursor() as cursor:
            cursor.execute(
                f"SELECT id, provider_message_id, status, error_code FROM {_RECEIPTS} "  # noqa: S608
                "WHERE gateway_id = %s AND applied_at IS NULL AND provider_message_id = ANY(%b::varchar[]) "
                "ORDER BY occurred_at, id",
                [gateway.pk, list(set(provider_ids))],
            )
            receipts = cursor.fetchall()
    else:
        receipts = list(
            DeliveryReceipt.objects.filter(
                gateway=gateway, provider_message_id__in=set(provider_ids), applied_at__isnull=True
            )
            .order_by("occurred_at", "pk")
            .values_list("pk", "provider_message_id", "status", "error_code")
        )
    if not receipts:
        return 0
    parts = _parts_lock(gateway, {r[1] for r in receipts})
    applied_ids: list[int] = []
    changed: dict[int, tuple[str, str, int]] = {}
    for pk, pid, status, error in receipts:
        part = parts.get(pid)
        if part is None:
            continue  # arrived before the submit answer; applied when the part is recorded
        applied_ids.append(pk)
        if part[2] in FINAL_MESSAGE_STATES:
            continue
        part[2] = status
        changed[part[0]] = (status, error[:32], part[1])
    if changed:
        _parts_update(changed, now)
        _messages_roll_up({message_id for _s, _e, message_id in changed.values()}, now)
    DeliveryReceipt.objects.filter(pk__in=applied_ids).update(applied_at=now)
    return len(applied_ids)


def _messages_roll_up(message_ids: set[int], now: Any) -> None:
    """Submitted messages whose parts all reached a final state take the message's final state.

    The parts are read (one index scan) and rolled up here; the messages are then updated by
    primary key per resulting state -- plans that do not depend on fresh table statistics."""
    if connection.vendor == "postgresql":
        with _pg_cursor() as cursor:
            cursor.execute(
                f"SELECT message_id, state, error_code FROM {_PARTS} "  # noqa: S608
                "WHERE message_id = ANY(%b::bigint[]) ORDER BY message_id, part_number",
                [list(message_ids)],
            )
            rows = cursor.fetchall()
    else:
        rows = list(
            MessagePart.objects.filter(message_id__in=message_ids)
            .order_by("message_id", "part_number")
            .values_list("message_id", "state", "error_code")
        )
    states: dict[int, list[tuple[str, str]]] = {}
    for message_id, state, error in rows:
        states.setdefault(message_id, []).append((state, error))
    by_state: dict[tuple[str, str], list[int]] = {}
    for message_id, part_states in states.items():
        key = _roll_up(part_states)
        if key[0] != MessageState.SUBMITTED:
            by_state.setdefault(key, []).append(message_id)
    for (state, error), ids in by_state.items():
        if connection.vendor == "postgresql":
            with _pg_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_MESSAGES} SET state = %s, final_at = %s, error_code = %s "  # noqa: S608
                    "WHERE id = ANY(%b::bigint[]) AND state = 'submitted'",
                    [state, now, error[:32], ids],
                )
        else:
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
        for chunk in _chunks(sorted(message_ids), 10_000):
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
        for chunk in _chunks(sorted(message_ids), 10_000):
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


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
