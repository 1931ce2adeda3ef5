"""Queueing and submitting: validate and queue a message with its quota held, hand queued
messages to their gateway's sender, and the claim -> send -> record path for HTTP and
in-process adapters."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NoReturn

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet

from compliance.models import HARD_BLOCK_REASONS, OptOut
from compliance.optouts import active_opt_outs
from gateways.adapters.base import OutgoingSms, adapter_for
from gateways.delivery.claim import messages_claim_result
from gateways.delivery.outcomes import outcomes_record
from gateways.errors import GatewayErrorCode
from gateways.models import PRIORITY_PURPOSES, Gateway, MessagePurpose, OutboundMessage, SenderId
from gateways.quotas import quota_reserve
from gateways.rules import sender_id_check_found
from gateways.selectors import segment_quotes, segment_rates
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.content import promotion_found
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.phones import phone_mask, phone_parse
from smsplatform.kernel.roundtrips import fetch_together
from smsplatform.kernel.segments import SegmentInputError, count_segments, count_segments_clusters

logger = logging.getLogger(__name__)


def message_queue(
    *,
    actor: Actor,
    gateway_code: str | None,
    sender_id: str,
    destination: str,
    body: str,
    purpose: str,
    reference: str = "",
    keyword_reply: bool = False,
    hold: bool = True,
    quota_reference: str = "",
) -> OutboundMessage:
    """Validate and queue one message with its quota held. Runs inside the caller's transaction.

    ``quota_reference``: the name of its quota reservation, unique to this message, when the
    caller has one before the insert (an OTP: its verification and send number); otherwise the
    reservation is named after the message's id, which takes an UPDATE after the insert.

    ``hold=False``: the caller holds the quota itself later in the same transaction, with
    ``message_hold`` (an OTP does it last: the account row lock the hold takes is then held only
    to its commit, not across its other writes). Until held, the message may not commit.

    Every send obeys the suppression list (the catalogue: a hard limit before sending that no
    flow but OTP overrides). OTP overrides only what the person can lift (a STOP: they have just
    asked for the code); a hard block (blocked, invalid number, complaint) refuses an OTP too
    (docs/OTP.md, "STOP and OTP"; the claim checks both again). The one other exception is
    ``keyword_reply``: the confirmation answered to the person's own STOP/START/HELP, which
    carriers require and which goes to a number that has just opted out. Test and OTP messages
    carry no promotion (no outside link, no discount wording): neither passes the consent and
    footer rules marketing does."""
    phone = phone_parse(destination, field="destination")
    # The suppression list, the rates and the sender ID in one round trip (smsplatform.kernel.roundtrips).
    reasons = HARD_BLOCK_REASONS if purpose == MessagePurpose.OTP else None
    checks_opt_out = purpose == MessagePurpose.OTP or not keyword_reply
    opt_outs, rates, senders = fetch_together(
        opt_out_query(phone.e164, reasons=reasons) if checks_opt_out else OptOut.objects.none(),
        segment_rates(countries=[phone.country], gateway_code=gateway_code),
        SenderId.objects.filter(value=sender_id)[:1],
    )
    if opt_outs:
        opt_out_raise(phone.e164, opt_outs[0])
    if purpose in (MessagePurpose.TEST, MessagePurpose.OTP):
        found = promotion_found(body)
        if found:
            raise ApplicationError(
                GatewayErrorCode.BODY_PROMOTIONAL,
                f"A {purpose} SMS carries no promotion; found {', '.join(found[:3])}.",
                field="body",
                hint="Send plain text without links or offers; promotions go out as a campaign.",
            )
    try:
        encoding, _units, segments = count_segments(body)
    except SegmentInputError as exc:
        raise ApplicationError(exc.code, exc.message, field="body") from None
    if not body.strip():
        raise ApplicationError(GatewayErrorCode.BODY_EMPTY, "The message is empty.", field="body")
    quote = segment_quotes(rates).get(phone.country)
    if quote is None:
        raise ApplicationError(
            GatewayErrorCode.COUNTRY_NOT_COVERED,
            f"No enabled gateway{f' {gateway_code!r}' if gateway_code else ''} delivers to {phone.country}.",
            field="gateway" if gateway_code else "destination",
            hint="See sms_marketing.gateways.list for coverage.",
        )
    gateway = quote.gateway or Gateway.objects.get(code=quote.gateway_code)
    if encoding not in (gateway.encodings or ["GSM-7", "UCS-2"]):
        raise ApplicationError(
            GatewayErrorCode.ENCODING_NOT_SUPPORTED, f"{gateway.code} cannot send {encoding}.", field="body"
        )
    sender_id_check_found(value=sender_id, country=phone.country, found=senders[0] if senders else None)
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
        quota_reference=quota_reference,
        request_receipt=gateway.receipts_supported,
    )
    if not quota_reference:
        message.quota_reference = f"message:{message.pk}"
        OutboundMessage.objects.filter(pk=message.pk).update(quota_reference=message.quota_reference)
    if hold:
        message_hold(actor=actor, message=message)
    return message


def message_hold(*, actor: Actor, message: OutboundMessage) -> None:
    """Hold the quota of a message queued with ``message_queue(hold=False)``: refused (and the
    caller's transaction with it) beyond quota or balance."""
    quota_reserve(actor=actor, reference=message.quota_reference, segments=message.segments, amount=message.cost)


def opt_out_query(phone: str, *, reasons: Sequence[str] | None = None) -> QuerySet[OptOut]:
    """The latest active opt-out of ``phone`` (STOP, blocked, invalid, complaint), or of one of
    ``reasons`` when given (OTP: the hard blocks): at most one row."""
    active = active_opt_outs().filter(phone=phone)
    if reasons is not None:
        active = active.filter(reason__in=list(reasons))
    return active.order_by("-occurred_at", "-pk")[:1]


def opt_out_raise(phone: str, opt_out: OptOut) -> NoReturn:
    """The refusal of a send to ``phone``, which ``opt_out`` suppresses."""
    raise ApplicationError(
        GatewayErrorCode.DESTINATION_OPTED_OUT,
        f"{phone_mask(phone)} is on the suppression list ({opt_out.reason}): nothing is sent to it.",
        field="destination",
        hint="See sms_marketing.opt_outs.list; only the person's START (or recorded consent) lifts it.",
    )


def gateway_test_sms(
    *, actor: Actor, gateway_code: str, destination: str, body: str, sender_id: str
) -> OutboundMessage:
    """The admin's 'send a test SMS': the full path through the real adapter, under the rules
    every send obeys (message_queue: the suppression list, no promotion)."""
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


def worker_wake_channel(gateway_id: int) -> str:
    """The PostgreSQL LISTEN/NOTIFY channel a gateway's bind worker listens on (its priority thread)."""
    return f"sms_worker_wake_{int(gateway_id)}"


def worker_wake(gateway_id: int) -> None:
    """Ring the gateway's bind worker: on PostgreSQL a NOTIFY its priority thread LISTENs for, so
    a message queued for it is claimed at once instead of at the next poll. Inside a transaction
    the notification goes out when it commits (never before the rows are visible); elsewhere (SQLite)
    nothing: the worker's poll finds the message."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [worker_wake_channel(gateway_id)])


def bulk_yield_channel(gateway_code: str) -> str:
    """The channel a gateway's bulk-lane worker LISTENs on for bulk_yield (a code too long for a
    channel name is hashed)."""
    name = f"sms_bulk_yield_{gateway_code}"
    if len(name.encode()) > 63:
        name = "sms_bulk_yield_" + hashlib.sha256(gateway_code.encode()).hexdigest()[:32]
    return name


def bulk_yield(gateway_code: str) -> None:
    """Tell the gateway's bulk-lane worker that a priority message is being made right now: it holds
    its campaign work back until the priority lane has written it to the SMSC (bulk_yield_release),
    for the gateway's ``bulk_yield_ms`` at most (see gateways.smpp.worker, LANES), so
    the request and its code get the CPU, the database and the SMSC first. PostgreSQL, outside a
    transaction (a NOTIFY inside one would go out at its commit); anything else: nothing. Never
    fails the send: a lost hint costs latency, not a message."""
    if connection.vendor != "postgresql" or connection.in_atomic_block or not gateway_code:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [bulk_yield_channel(gateway_code)])
    except DatabaseError:
        logger.warning("bulk_yield(%s) failed", gateway_code, exc_info=True)


YIELD_RELEASE_PREFIX = "sent:"


def bulk_yield_release(gateway_code: str, codes: int, *, cursor: Any) -> None:
    """The priority lane has written ``codes`` codes to the SMSC: the bulk-lane worker ends its
    yield once every code it yielded for is out (``sent:<n>`` on the bulk_yield channel). Sent by
    the priority worker on a connection of its own (``cursor``: anything with ``execute``)."""
    cursor.execute(
        "SELECT pg_notify(%s, %s)", [bulk_yield_channel(gateway_code), f"{YIELD_RELEASE_PREFIX}{int(codes)}"]
    )


def message_submit_on_commit(gateway: Gateway, message_ids: list[int]) -> None:
    """Hand messages queued in the current transaction to their gateway's sender when it commits.
    A bind worker's gateway on PostgreSQL: the wake-up NOTIFY goes in the transaction itself, and
    PostgreSQL delivers it at the commit, with the rows visible (one round trip fewer after the
    commit, on a code's way to the SMSC); anything else: message_submit_enqueue after the commit
    (the submit task must find the messages queued, and a rollback must send nothing)."""
    if connection.vendor == "postgresql" and connection.in_atomic_block and adapter_for(gateway).sends_from_worker:
        worker_wake(gateway.pk)
        return
    ids = list(message_ids)
    transaction.on_commit(lambda: message_submit_enqueue(gateway.pk, ids, gateway=gateway))


def message_submit_enqueue(gateway_id: int, message_ids: list[int], *, gateway: Gateway | None = None) -> None:
    """Hand queued messages to their gateway's sender: a Celery submit task, or nothing for a
    gateway whose bind worker claims queued messages itself. Call it after the commit that
    queued them (transaction.on_commit). ``gateway``: the row, when the caller has it (an OTP's
    path saves the read: one round trip less between its commit and the bind worker's wake-up).

    The priority lane (OTP, transactional, test: PRIORITY_PURPOSES) goes to its own Celery queue
    (settings.SMS_PRIORITY_QUEUE), which workers consume ahead of the default one; the rest of
    the ids to the default queue."""
    from gateways.tasks import submit_messages

    if gateway is None or gateway.pk != gateway_id:
        gateway = Gateway.objects.get(pk=gateway_id)
    if adapter_for(gateway).sends_from_worker:
        worker_wake(gateway_id)  # the SMPP worker picks queued messages up itself, woken for them
        return
    priority = set(
        OutboundMessage.objects.filter(pk__in=message_ids, purpose__in=PRIORITY_PURPOSES).values_list("pk", flat=True)
    )
    if priority:
        submit_messages.apply_async(
            args=(gateway_id, [pk for pk in message_ids if pk in priority]), queue=settings.SMS_PRIORITY_QUEUE
        )
    rest = [pk for pk in message_ids if pk not in priority]
    if rest:
        submit_messages.delay(gateway_id, rest)


def messages_submit(*, actor: Actor, gateway_id: int, message_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Claim, send through the adapter, record (for HTTP and in-process adapters)."""
    gateway = Gateway.objects.get(pk=gateway_id)
    adapter = adapter_for(gateway)
    if adapter.sends_from_worker:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT, f"{gateway.code} is sent by its bind worker.", field="gateway"
        )
    with transaction.atomic():
        rows, suppressed, _last = messages_claim_result(
            gateway_id=gateway_id, message_ids=message_ids, limit=500, actor=actor
        )
        # In the claim's order: the priority lane first.
        by_pk = OutboundMessage.objects.in_bulk([m.pk for m in rows]) if rows else {}
        claimed = [by_pk[m.pk] for m in rows]
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
