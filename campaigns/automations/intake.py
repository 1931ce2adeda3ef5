"""The commerce events intake: signed batches from the business's systems.

``event_source_authenticate`` checks a request's source and signature (Stripe-style:
``t=<unix>,v1=<hex hmac-sha256(secret, f"{t}.{raw body}")>``, the timestamp within
``SMS_EVENTS_SIGNATURE_TOLERANCE_SECONDS``, constant-time compare, the previous secret accepted
during its grace period). ``events_ingest`` validates each event, resolves contacts set-based
(one query for the phones, one for the external ids), and writes every accepted event of the
batch in one transaction with one bulk insert (ON CONFLICT DO NOTHING on (source, event id)).

A retried batch stores nothing twice: an event whose (source, event id) is stored answers
``duplicate`` (with ``payload_differs`` when its content changed). Replaying a captured request
inside the tolerance window therefore writes nothing; after it, the request is refused.

Events of paid orders, refunds, appointments and ready pickups also keep the contact's customer
facts current (``contacts.CustomerFact``, by (kind, reference)): that is where contacts keep
their dates (last purchase, appointment time), and what segments filter on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from campaigns.automations.errors import AutomationErrorCode
from campaigns.automations.models import (
    MONEY_TYPES,
    ORDER_TYPES,
    CommerceEvent,
    EventSource,
    EventType,
)
from contacts.models import Contact, CustomerFact, FactKind
from contacts.services import customer_facts_upsert
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.phones import phone_parse

MAX_EVENTS = 1000

# Sent after the transaction that stored new events commits (never for duplicates or refusals):
# ``source`` (EventSource), ``event_pks`` (the new CommerceEvent ids, ascending) and
# ``event_types`` (id -> type). The priority tick starts from it (campaigns.automations.tasks:
# a transactional flow's event is sent at once, not at the next beat tick); a receiver that fails
# does not undo the stored events (they are committed). Scanning by id instead needs care: ids are
# allocated before commit, so concurrent batches commit them out of order.
events_ingested = Signal()
SOURCE_HEADER = "X-Event-Source"
SIGNATURE_HEADER = "X-Event-Signature"

# Already E.164: looked up as is (contacts store E.164), parsed only when it is not found.
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,99}$")
_CHANNEL = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")
_MAX_AMOUNT = Decimal("999999999999.99")

# The fields an event may carry, with their longest value; everything else is kept in payload.
_TEXT_FIELDS = {
    "event_id": 100,
    "type": 30,
    "name": 100,
    "phone": 32,
    "external_id": 100,
    "order_id": 100,
    "reference": 100,
    "refund_of": 100,
    "coupon_code": 50,
    "channel": 20,
    "click_token": 32,
    "link_code": 16,
    "currency": 3,
}
_KNOWN = frozenset(_TEXT_FIELDS) | {"occurred_at", "amount", "appointment_at", "pickup_at"}
# Plain strings: comparing with an enum member costs ~10x a str comparison, per event.
_TYPES = frozenset(str(kind) for kind in EventType.values)
_REQUIRES_REFERENCE = frozenset(str(kind) for kind in ORDER_TYPES - {EventType.ORDER_REFUNDED})
_MONEY = frozenset(str(kind) for kind in MONEY_TYPES)
_CUSTOM = str(EventType.CUSTOM.value)
_REFUNDED = str(EventType.ORDER_REFUNDED.value)
_NEEDS_APPOINTMENT_AT = frozenset({str(EventType.APPOINTMENT_BOOKED.value), str(EventType.APPOINTMENT_CHANGED.value)})


def _tolerance() -> int:
    return int(getattr(settings, "SMS_EVENTS_SIGNATURE_TOLERANCE_SECONDS", 300))


# --- the request's signature ----------------------------------------------------------------------


def signature_header_build(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Event-Signature`` value a source sends for ``body`` (for clients, tests, benches)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _auth_error(code: AutomationErrorCode, message: str, hint: str) -> ApplicationError:
    return ApplicationError(code, message, field=SIGNATURE_HEADER, hint=hint)


def event_source_authenticate(*, source_code: str | None, signature: str | None, body: bytes) -> EventSource:
    """The enabled source that signed ``body``, or an error (answered 401 by the endpoint)."""
    if not source_code:
        raise ApplicationError(
            AutomationErrorCode.EVENT_SOURCE_UNKNOWN,
            "The request names no event source.",
            field=SOURCE_HEADER,
            hint=f"Send the source's code in the {SOURCE_HEADER} header (the admin lists event sources).",
        )
    source = EventSource.objects.filter(code=source_code[:64], enabled=True).first()
    if source is None:
        raise ApplicationError(
            AutomationErrorCode.EVENT_SOURCE_UNKNOWN,
            "No enabled event source has this code.",
            field=SOURCE_HEADER,
            hint="An administrator creates or enables the source in the admin (Automations > Event sources).",
        )
    if not signature:
        raise _auth_error(
            AutomationErrorCode.SIGNATURE_MISSING,
            "The request is not signed.",
            f'Send {SIGNATURE_HEADER}: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the source\'s secret>.',
        )
    timestamp: int | None = None
    candidates: list[str] = []
    for part in signature.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and _HEX_DIGEST.match(value) and len(candidates) < 5:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise _auth_error(
            AutomationErrorCode.SIGNATURE_INVALID,
            "The signature header is malformed.",
            f"Expected t=<unix time>,v1=<hex digest> in {SIGNATURE_HEADER}.",
        )
    if abs(time.time() - timestamp) > _tolerance():
        raise _auth_error(
            AutomationErrorCode.SIGNATURE_EXPIRED,
            f"The signature's timestamp is more than {_tolerance()} s from the server's time.",
            "Sign each request when sending it (a replayed request is refused); check the sender's clock (NTP).",
        )
    signed = f"{timestamp}.".encode() + body
    for secret in source.secrets_accepted():
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        # Constant-time per candidate, and every candidate compared (no early exit).
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return source
    raise _auth_error(
        AutomationErrorCode.SIGNATURE_INVALID,
        "The signature does not match the body.",
        "Sign the raw body bytes as sent, with the source's current secret (rotated secrets expire after 48 h).",
    )


# --- one event ----------------------------------------------------------------------------------


@dataclass
class _Refusal(Exception):
    reason: str
    field: str
    message: str


def _refuse(code: AutomationErrorCode | ErrorCode, field: str, message: str) -> _Refusal:
    return _Refusal(str(code), field, message)


def _datetime(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_INVALID, field, "an ISO 8601 date-time with a time zone")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_INVALID, field, "an ISO 8601 date-time with a time zone")
    return parsed


def _amount(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _refuse(AutomationErrorCode.AMOUNT_INVALID, field, 'a decimal number (a string such as "120.50")')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _refuse(AutomationErrorCode.AMOUNT_INVALID, field, "a decimal number") from None
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        raise _refuse(AutomationErrorCode.AMOUNT_INVALID, field, f"between 0 and {_MAX_AMOUNT}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise _refuse(AutomationErrorCode.AMOUNT_INVALID, field, "at most 2 decimals")
    return amount


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _canonical_hash(event: dict[str, Any], where: str) -> str:
    """sha256 of the event as canonical JSON; refuses what PostgreSQL cannot store (a NUL
    character, a lone surrogate), which would otherwise fail the whole batch."""
    text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        raise _refuse(ErrorCode.LONE_SURROGATE, where, "a string holds a lone surrogate (invalid Unicode)") from None
    # json escapes NUL as \u0000: a cheap filter, then the exact check.
    if "\\u0000" in text and _has_nul(event):
        raise _refuse(ErrorCode.CONTROL_CHARACTER, where, "a string holds a NUL character")
    return hashlib.sha256(encoded).hexdigest()


def _event_parse(event: Any, where: str, now: datetime, oldest: datetime, latest: datetime) -> dict[str, Any]:
    """The row of one event, or a ``_Refusal`` naming the field at fault. No query."""
    if not isinstance(event, dict):
        raise _refuse(AutomationErrorCode.EVENT_INVALID, where, "each event is a JSON object")
    payload_hash = _canonical_hash(event, where)
    # The event's own keys (a handful), not every known field.
    for name, value in event.items():
        longest = _TEXT_FIELDS.get(name)
        if longest is not None and value is not None and (not isinstance(value, str) or len(value) > longest):
            raise _refuse(AutomationErrorCode.EVENT_FIELD_INVALID, f"{where}.{name}", f"a string of at most {longest}")
    event_id = (event.get("event_id") or "").strip()
    if not event_id:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.event_id", "the source's id of the event")
    kind = event.get("type")
    if not kind:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.type", "the event's type")
    if kind not in _TYPES:
        raise _refuse(AutomationErrorCode.EVENT_TYPE_UNKNOWN, f"{where}.type", f"one of {', '.join(EventType.values)}")
    name = event.get("name") or ""
    if kind == _CUSTOM:
        if not name:
            raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.name", "a custom event's name")
        if not _NAME.match(name):
            raise _refuse(
                AutomationErrorCode.EVENT_FIELD_INVALID, f"{where}.name", "lower case letters, digits and _ . : -"
            )
    if event.get("occurred_at") is None:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.occurred_at", "when the event happened")
    occurred = _datetime(event["occurred_at"], f"{where}.occurred_at")
    if occurred > latest:
        raise _refuse(AutomationErrorCode.EVENT_IN_FUTURE, f"{where}.occurred_at", "in the future")
    if occurred < oldest:
        raise _refuse(
            AutomationErrorCode.EVENT_TOO_OLD,
            f"{where}.occurred_at",
            f"older than the retention ({settings.SMS_EVENTS_RETENTION_DAYS} days): it would be purged at once",
        )
    if not event.get("phone") and not event.get("external_id"):
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.phone", "phone or external_id")
    reference = event.get("order_id") or event.get("reference") or ""
    refund_of = event.get("refund_of") or ""
    if kind in _REQUIRES_REFERENCE and not reference:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.order_id", "the order's id")
    if kind == _REFUNDED and not refund_of:
        if not reference:
            raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.refund_of", "the refunded order's id")
        refund_of = reference
    amount = None
    if event.get("amount") is not None:
        amount = _amount(event["amount"], f"{where}.amount")
    currency = event.get("currency") or ""
    if kind in _MONEY and amount is None:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.amount", "the amount")
    if currency and not _CURRENCY.match(currency):
        raise _refuse(AutomationErrorCode.CURRENCY_INVALID, f"{where}.currency", "an ISO 4217 code such as HKD")
    if amount is not None and not currency:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.currency", "the amount's currency")
    channel = event.get("channel") or ""
    if channel and not _CHANNEL.match(channel):
        raise _refuse(AutomationErrorCode.EVENT_FIELD_INVALID, f"{where}.channel", "lower case, e.g. sms, email, web")
    appointment_at = None
    if event.get("appointment_at") is not None:
        appointment_at = _datetime(event["appointment_at"], f"{where}.appointment_at")
    elif kind in _NEEDS_APPOINTMENT_AT:
        raise _refuse(AutomationErrorCode.EVENT_FIELD_REQUIRED, f"{where}.appointment_at", "the appointment's time")
    pickup_at = _datetime(event["pickup_at"], f"{where}.pickup_at") if event.get("pickup_at") is not None else None
    return {
        "event_id": event_id,
        "type": kind,
        "name": name if kind == _CUSTOM else "",
        "occurred_at": occurred,
        "order_ref": reference,
        "amount": amount,
        "currency": currency,
        "refund_of": refund_of,
        "coupon_code": event.get("coupon_code") or "",
        "channel": channel,
        "click_token": event.get("click_token") or "",
        "link_code": event.get("link_code") or "",
        "appointment_at": appointment_at,
        "pickup_at": pickup_at,
        "payload": {key: value for key, value in event.items() if key not in _KNOWN},
        "payload_hash": payload_hash,
    }


# --- contacts, set-based ----------------------------------------------------------------------------


def _contacts_resolve(parsed: dict[int, dict[str, Any]], events: list[Any], refusals: dict[int, _Refusal]) -> None:
    """Set ``contact_id`` and ``phone`` on each parsed row, or move it to ``refusals``: one query
    for the phones, one for the external ids, whatever the batch's size."""
    phones: dict[int, str] = {}
    for index in parsed:
        raw = events[index].get("phone")
        if not raw:
            continue
        if _E164.match(raw):
            phones[index] = raw
            continue
        try:
            phones[index] = phone_parse(raw, field=f"events.{index}.phone").e164
        except ApplicationError as exc:
            refusals[index] = _refuse(ErrorCode.PHONE_INVALID, f"events.{index}.phone", exc.message)
    external = {index: events[index]["external_id"] for index in parsed if events[index].get("external_id")}
    by_phone: dict[str, int] = {}
    by_external: dict[str, int] = {}
    if phones:
        by_phone = dict(Contact.objects.filter(phone__in=set(phones.values())).values_list("phone", "pk"))
    if external:
        # crm_key <> '' repeats the condition of the partial unique index (uniq_contact_crm_key), so
        # the planner can use it.
        by_external = dict(
            Contact.objects.filter(crm_key__in=set(external.values())).exclude(crm_key="").values_list("crm_key", "pk")
        )
    for index, row in parsed.items():
        if index in refusals:
            continue
        phone = phones.get(index)
        via_phone = by_phone.get(phone) if phone else None
        via_external = by_external.get(external[index]) if index in external else None
        if phone and via_phone is None:
            # Not stored as given: an invalid number says so, a valid one is an unknown contact.
            try:
                phone_parse(phone, field=f"events.{index}.phone")
            except ApplicationError as exc:
                refusals[index] = _refuse(ErrorCode.PHONE_INVALID, f"events.{index}.phone", exc.message)
                continue
        if via_phone is not None and via_external is not None and via_phone != via_external:
            refusals[index] = _refuse(
                AutomationErrorCode.CONTACT_MISMATCH,
                f"events.{index}.external_id",
                "the phone and the external id name different contacts",
            )
            continue
        contact_id = via_external or via_phone
        if contact_id is None:
            field = "external_id" if index in external else "phone"
            refusals[index] = _refuse(
                AutomationErrorCode.CONTACT_UNKNOWN,
                f"events.{index}.{field}",
                "no contact has this " + ("external id (crm_key)" if field == "external_id" else "phone number"),
            )
            continue
        row["contact_id"] = contact_id
        row["phone"] = phone or ""
        row["external_id"] = external.get(index, "")


# --- the batch --------------------------------------------------------------------------------------


def _batch_error(events: Any) -> ApplicationError | None:
    if not isinstance(events, list) or not events:
        return ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "events must be a non-empty list of event objects.",
            field="events",
            hint='Send {"events": [{"event_id": ..., "type": ..., "occurred_at": ..., "phone": ...}, ...]}.',
        )
    if len(events) > MAX_EVENTS:
        return ApplicationError(
            AutomationErrorCode.EVENT_BATCH_TOO_LARGE,
            f"A batch holds at most {MAX_EVENTS:,} events; this one has {len(events):,}. Nothing was stored.",
            field="events",
            hint=f"Split the events into batches of {MAX_EVENTS:,} and send each (a resent event is a duplicate).",
        )
    return None


def events_ingest(*, source: EventSource, events: Any, now: datetime | None = None) -> dict[str, Any]:
    """Validate and store a batch of events of ``source``: all accepted events in one transaction
    (nothing is half written), each answered accepted / duplicate / refused {reason, field}.

    Queries per batch: one for the phones, one for the external ids, the insert (which returns
    the rows it inserted), one for the stored hashes of the duplicates when there are any, and the
    customer facts' two when the batch updates any."""
    error = _batch_error(events)
    if error is not None:
        raise error
    now = now or timezone.now()
    oldest = now - timedelta(days=settings.SMS_EVENTS_RETENTION_DAYS)
    latest = now + timedelta(seconds=settings.SMS_EVENTS_FUTURE_SKEW_SECONDS)
    refusals: dict[int, _Refusal] = {}
    parsed: dict[int, dict[str, Any]] = {}
    for index, event in enumerate(events):
        try:
            parsed[index] = _event_parse(event, f"events.{index}", now, oldest, latest)
        except _Refusal as refusal:
            refusals[index] = refusal
    _contacts_resolve(parsed, events, refusals)
    # The same event id twice in one batch: the same content is a duplicate, another is refused.
    first_of: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for index, row in parsed.items():
        if index in refusals:
            continue
        earlier = first_of.get(row["event_id"])
        if earlier is None:
            first_of[row["event_id"]] = index
        elif parsed[earlier]["payload_hash"] == row["payload_hash"]:
            repeats[index] = earlier
        else:
            refusals[index] = _refuse(
                AutomationErrorCode.EVENT_ID_REPEATED,
                f"events.{index}.event_id",
                f"event_id repeats events.{earlier} with other content",
            )
    with transaction.atomic():
        # PostgreSQL: inserted first (ON CONFLICT DO NOTHING), then the stored hashes of the events
        # it did not insert (stored before, or by a concurrent batch that won the race on the key):
        # a batch of new events reads nothing back. Unless its first event is stored already (a
        # retried batch, one probe): then the stored ones are read first and not sent again.
        # Elsewhere always read first (the ORM insert reads its rows back by received_at, which a
        # stored event may share).
        ids = list(first_of)
        stored = _stored_hashes(source, ids[:1]) if connection.vendor == "postgresql" else {}
        if stored or connection.vendor != "postgresql":
            stored = _stored_hashes(source, ids)
        new = [parsed[index] for event_id, index in first_of.items() if event_id not in stored]
        inserted = _events_insert(source, new, now) if new else {}
        lost = [row["event_id"] for row in new if row["event_id"] not in inserted]
        stored.update(_stored_hashes(source, lost))
        facts_changed = _customer_facts_update([row for row in new if row["event_id"] in inserted])
        results = _results(events, parsed, refusals, repeats, stored, inserted)
        counts = {
            status: sum(1 for result in results if result["status"] == status)
            for status in ("accepted", "duplicate", "refused")
        }
        if inserted:
            pks = sorted(inserted.values())
            types = {inserted[row["event_id"]]: row["type"] for row in new if row["event_id"] in inserted}
            transaction.on_commit(
                lambda: events_ingested.send(sender=EventSource, source=source, event_pks=pks, event_types=types)
            )
            audit_record(
                actor=Actor(user=None, channel=Channel.API, token_name=f"event_source:{source.code}"),
                action="commerce_events.ingest",
                object_type="event_source",
                object_id=source.pk,
                after={**counts, "customer_facts": facts_changed},
            )
    return {"source": source.code, "received": len(events), **counts, "results": results}


# The columns events_ingest writes, in the order of the PostgreSQL insert's arrays.
_COLUMNS = [
    ("event_id", "text"),
    ("type", "text"),
    ("name", "text"),
    ("contact_id", "bigint"),
    ("phone", "text"),
    ("external_id", "text"),
    ("occurred_at", "timestamptz"),
    ("order_ref", "text"),
    ("amount", "numeric"),
    ("currency", "text"),
    ("refund_of", "text"),
    ("coupon_code", "text"),
    ("channel", "text"),
    ("click_token", "text"),
    ("link_code", "text"),
    ("appointment_at", "timestamptz"),
    ("pickup_at", "timestamptz"),
    ("payload", "jsonb"),
    ("payload_hash", "text"),
]


def _stored_hashes(source: EventSource, event_ids: list[str]) -> dict[str, str]:
    """event id -> payload hash of the source's stored events among ``event_ids`` (one query)."""
    if not event_ids:
        return {}
    if connection.vendor == "postgresql":
        # An array literal: the planner sees its values and walks uniq_event_source_event_id once
        # per id, however many events the source has (a JSON set-returning function here was
        # planned as a hash join over all of them).
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT event_id, payload_hash FROM {CommerceEvent._meta.db_table} "  # noqa: S608 - our names only
                "WHERE source_id = %s AND event_id = ANY(%s::text[])",
                [source.pk, event_ids],
            )
            return dict(cursor.fetchall())
    return dict(
        CommerceEvent.objects.filter(source=source, event_id__in=event_ids).values_list("event_id", "payload_hash")
    )


def _json_default(value: Any) -> Any:
    """json.dumps' fallback (called only for what JSON has no type for)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _events_insert(source: EventSource, rows: list[dict[str, Any]], now: datetime) -> dict[str, int]:
    """Insert the rows (ON CONFLICT (source, event id) DO NOTHING); event id -> primary key of
    the rows this statement inserted. PostgreSQL: one INSERT ... SELECT FROM json_to_recordset(<the rows as one JSON
    text>) RETURNING, whatever the batch's size (bulk_create's 20,000 parameters, or arrays,
    cost ~10x more in Python). Other databases: bulk_create, then the rows stamped with this
    batch's received_at."""
    if connection.vendor == "postgresql":
        names = ", ".join(name for name, _ in _COLUMNS)
        definition = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
        # The rows as they are: their keys are the columns (json_to_recordset reads the named ones;
        # copying 19 keys per row into a new dict cost more than the extra bytes).
        document = json.dumps(rows, default=_json_default)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {CommerceEvent._meta.db_table} (source_id, received_at, {names}) "  # noqa: S608 - our names only
                f"SELECT %s, %s, {names} FROM json_to_recordset(%s::json) AS u({definition}) "
                "ON CONFLICT (source_id, event_id) DO NOTHING RETURNING event_id, id",
                [source.pk, now, document],
            )
            return dict(cursor.fetchall())
    CommerceEvent.objects.bulk_create(
        [CommerceEvent(source=source, received_at=now, **row) for row in rows],
        batch_size=MAX_EVENTS,
        ignore_conflicts=True,
    )
    return dict(
        CommerceEvent.objects.filter(
            source=source, event_id__in=[row["event_id"] for row in rows], received_at=now
        ).values_list("event_id", "pk")
    )


def _echo(value: Any) -> str | None:
    """An event id as the answer may repeat it: a string that encodes (a lone surrogate does not)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def _results(
    events: list[Any],
    parsed: dict[int, dict[str, Any]],
    refusals: dict[int, _Refusal],
    repeats: dict[int, int],
    stored: dict[str, str],
    inserted: dict[str, int],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        event_id = _echo(event.get("event_id")) if isinstance(event, dict) else None
        refusal = refusals.get(index)
        if refusal is not None:
            results.append(
                {
                    "index": index,
                    "event_id": event_id,
                    "status": "refused",
                    "reason": refusal.reason,
                    "field": refusal.field,
                    "message": refusal.message,
                }
            )
            continue
        row = parsed[index]
        if index in repeats:
            results.append(
                {"index": index, "event_id": row["event_id"], "status": "duplicate", "payload_differs": False}
            )
        elif row["event_id"] in inserted:
            results.append({"index": index, "event_id": row["event_id"], "status": "accepted"})
        else:
            differs = stored.get(row["event_id"]) != row["payload_hash"]
            results.append(
                {"index": index, "event_id": row["event_id"], "status": "duplicate", "payload_differs": differs}
            )
    return results


# --- customer facts (the contact's dates) -----------------------------------------------------------

# event type -> (fact kind, fact status, the row's reference field)
_FACTS: dict[str, tuple[str, str, str]] = {
    EventType.ORDER_PAID: (FactKind.ORDER, "paid", "order_ref"),
    EventType.ORDER_REFUNDED: (FactKind.ORDER, "refunded", "refund_of"),
    EventType.PAYMENT_RECEIVED: (FactKind.PAYMENT, "received", "order_ref"),
    EventType.APPOINTMENT_BOOKED: (FactKind.APPOINTMENT, "booked", "order_ref"),
    EventType.APPOINTMENT_CHANGED: (FactKind.APPOINTMENT, "changed", "order_ref"),
    EventType.APPOINTMENT_CANCELLED: (FactKind.APPOINTMENT, "cancelled", "order_ref"),
    EventType.PICKUP_READY: (FactKind.PICKUP, "ready", "order_ref"),
}
# A status change only: the fact keeps its amount, date and contact (a refund's amount is not
# the order's; a cancelled appointment keeps its time).
_STATUS_ONLY = frozenset({EventType.ORDER_REFUNDED, EventType.APPOINTMENT_CANCELLED})


def _customer_facts_update(rows: Iterable[dict[str, Any]]) -> int:
    """Keep the contacts' customer facts current from this batch's new events: a paid order (the
    last purchase date), a refund (status refunded: not a purchase), a payment, an appointment
    (its time in due_at) and a ready pickup. Per (kind, reference) the latest event wins, also
    against an event stored before (out-of-order batches never move a fact back). Events without
    a reference change no fact."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        mapping = _FACTS.get(row["type"])
        if mapping is None or not row[mapping[2]]:
            continue
        key = (str(mapping[0]), row[mapping[2]])
        if key not in latest or latest[key]["occurred_at"] <= row["occurred_at"]:
            latest[key] = row
    if not latest:
        return 0
    if connection.vendor == "postgresql":
        return _customer_facts_update_sql(latest)
    existing: dict[tuple[str, str], CustomerFact] = {}
    for kind in {kind for kind, _ in latest}:
        refs = [ref for k, ref in latest if k == kind]
        for fact in CustomerFact.objects.filter(kind=kind, external_id__in=refs).only(
            "pk", "kind", "external_id", "occurred_at", "data"
        ):
            existing[(fact.kind, fact.external_id)] = fact
    upserts: list[CustomerFact] = []
    status_changes: list[CustomerFact] = []
    for key, row in latest.items():
        kind, status, _ = _FACTS[row["type"]]
        current = existing.get(key)
        stamp = row["occurred_at"].isoformat()
        if current is not None:
            previous = str((current.data or {}).get("event_occurred_at") or "")
            if previous and datetime.fromisoformat(previous) > row["occurred_at"]:
                continue  # a later event already set this fact
        if row["type"] in _STATUS_ONLY:
            if current is not None:
                current.status = status
                current.data = {**(current.data or {}), "event_occurred_at": stamp, "event_type": row["type"]}
                status_changes.append(current)
            continue
        upserts.append(
            CustomerFact(
                contact_id=row["contact_id"],
                kind=kind,
                external_id=key[1],
                status=status,
                amount=row["amount"],
                currency=row["currency"],
                offer_code=row["coupon_code"],
                occurred_at=row["occurred_at"],
                due_at=row["appointment_at"] or row["pickup_at"],
                data={"event_occurred_at": stamp, "event_type": row["type"]},
                ingested_at=timezone.now(),
            )
        )
    if upserts:
        customer_facts_upsert(upserts)
    if status_changes:
        CustomerFact.objects.bulk_update(status_changes, ["status", "data"])
    return len(upserts) + len(status_changes)


_FACT_TABLE = CustomerFact._meta.db_table
_FACT_RECORD = (
    "contact_id bigint, kind text, external_id text, status text, amount numeric, currency text, "
    "offer_code text, occurred_at timestamptz, due_at timestamptz, data jsonb"
)
# The stored fact's event time; a fact no event set (the CRM's) is older than any event.
_FACT_STAMP = "COALESCE((f.data->>'event_occurred_at')::timestamptz, '-infinity'::timestamptz)"
_FACTS_UPSERT = (
    f"INSERT INTO {_FACT_TABLE} AS f (contact_id, kind, external_id, status, amount, currency, offer_code, "  # noqa: S608 - our names only
    "occurred_at, due_at, data, ingested_at) "
    "SELECT contact_id, kind, external_id, status, amount, currency, offer_code, occurred_at, due_at, data, %s "
    f"FROM json_to_recordset(%s::json) AS u({_FACT_RECORD}) "
    "ON CONFLICT (kind, external_id) DO UPDATE SET contact_id = EXCLUDED.contact_id, status = EXCLUDED.status, "
    "amount = EXCLUDED.amount, currency = EXCLUDED.currency, offer_code = EXCLUDED.offer_code, "
    "occurred_at = EXCLUDED.occurred_at, due_at = EXCLUDED.due_at, data = EXCLUDED.data, "
    "ingested_at = EXCLUDED.ingested_at "
    f"WHERE {_FACT_STAMP} <= EXCLUDED.occurred_at"
)
_FACTS_STATUS = (
    f"UPDATE {_FACT_TABLE} AS f SET status = u.status, "  # noqa: S608 - our names only
    "data = COALESCE(f.data, '{}'::jsonb) || u.data "
    f"FROM json_to_recordset(%s::json) AS u({_FACT_RECORD}) "
    f"WHERE f.kind = u.kind AND f.external_id = u.external_id AND {_FACT_STAMP} <= u.occurred_at"
)


def _customer_facts_update_sql(latest: dict[tuple[str, str], dict[str, Any]]) -> int:
    """PostgreSQL: the same rules as the ORM path in at most two statements (an upsert and a
    status update), the out-of-order guard in their WHERE clauses; no read first."""
    upserts: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    for (kind, reference), row in latest.items():
        _, status, _ = _FACTS[row["type"]]
        record = {
            "contact_id": row["contact_id"],
            "kind": kind,
            "external_id": reference,
            "status": status,
            "amount": row["amount"],
            "currency": row["currency"],
            "offer_code": row["coupon_code"],
            # A status change compares with the stored event time through occurred_at.
            "occurred_at": row["occurred_at"],
            "due_at": row["appointment_at"] or row["pickup_at"],
            "data": {"event_occurred_at": row["occurred_at"].isoformat(), "event_type": row["type"]},
        }
        (statuses if row["type"] in _STATUS_ONLY else upserts).append(record)
    changed = 0
    with connection.cursor() as cursor:
        if upserts:
            cursor.execute(_FACTS_UPSERT, [timezone.now(), json.dumps(upserts, default=_json_default)])
            changed += cursor.rowcount
        if statuses:
            cursor.execute(_FACTS_STATUS, [json.dumps(statuses, default=_json_default)])
            changed += cursor.rowcount
    return changed
