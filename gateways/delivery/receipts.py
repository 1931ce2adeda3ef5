"""Delivery receipts: stored idempotently (duplicates and early ones included) and applied to
parts and messages, order-insensitively."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from gateways.adapters.base import ReceiptEvent
from gateways.delivery.rows import pg_cursor
from gateways.models import FINAL_MESSAGE_STATES, DeliveryReceipt, Gateway, MessagePart, MessageState, OutboundMessage
from smsplatform.operations.metrics import receipts_count

logger = logging.getLogger(__name__)
_encode_json_string = json.encoder.encode_basestring_ascii
_MESSAGES = OutboundMessage._meta.db_table
_PARTS = MessagePart._meta.db_table
_RECEIPTS = DeliveryReceipt._meta.db_table

# Receipts are bytes from outside: a real SMSC copies the message's first octets into the text
# form, in the message's own coding, so NUL bytes (UCS-2 Latin letters, a UDH, GSM '@') and
# octets that are not UTF-8 come with them. PostgreSQL refuses NUL in text and jsonb, so every
# string of a receipt is stored with its control characters written out as escapes.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}


def receipt_bytes_text(data: bytes) -> str:
    """Untrusted receipt octets as printable ASCII: anything else is written as ``\\xNN``."""
    return data.decode("ascii", "backslashreplace").translate(_CONTROL_ESCAPES)


def receipt_text_safe(value: str) -> str:
    """A receipt string as storable text: control characters (NUL included) escaped, lone
    surrogates (undecodable input) written as escapes."""
    if value.isprintable() and value.isascii():
        return value  # the common case, at no cost
    value = value.translate(_CONTROL_ESCAPES)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def receipt_raw_safe(raw: Any) -> Any:
    """``raw`` with every string in it (keys included) made storable (see receipt_text_safe)."""
    if isinstance(raw, str):
        return receipt_text_safe(raw)
    if isinstance(raw, dict):
        return {receipt_text_safe(str(k)): receipt_raw_safe(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple):
        return [receipt_raw_safe(v) for v in raw]
    if isinstance(raw, bytes | bytearray):
        return receipt_bytes_text(bytes(raw))
    return raw


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
        applied = receipts_ingest_in_transaction(gateway, events, now)
        if applied < len(events):
            # Parts recorded by a transaction still open now are applied once both committed
            # (outcomes_record does the same from its side: whichever commits last applies).
            unapplied = [e.provider_message_id for e in events]
            transaction.on_commit(lambda: receipts_apply_late(gateway, unapplied))
    receipts_count(gateway.code, (e.status for e in events))
    return {"received": len(events), "applied": applied}


def receipts_apply_late(gateway: Gateway, provider_ids: Sequence[str]) -> None:
    try:
        with transaction.atomic():
            receipts_apply(gateway=gateway, provider_ids=provider_ids)
    except Exception:  # the reconciler applies them later
        logger.exception("late receipt apply failed for %s", gateway.code)


def receipts_ingest_in_transaction(gateway: Gateway, events: Sequence[ReceiptEvent], now: Any) -> int:
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
    receipts_insert(gateway, rows, now)
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
    with pg_cursor() as cursor:
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
    receipts_insert(gateway, rows, now)
    if finished:
        _messages_roll_up(finished, now)
    return sum(1 for _event, applied_at in rows if applied_at is not None)


def _parts_lock(gateway: Gateway, provider_ids: set[str]) -> dict[str, list[Any]]:
    """provider id -> [part id, message id, state] for the parts of these ids, locked in id order."""
    if connection.vendor == "postgresql":
        with pg_cursor() as cursor:
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
            with pg_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_PARTS} SET state = %s, error_code = %s, receipt_at = %s "  # noqa: S608
                    "WHERE id = ANY(%b::bigint[])",
                    [state, error, now, ids],
                )
        else:
            MessagePart.objects.filter(pk__in=ids).update(state=state, error_code=error, receipt_at=now)


def _raw_json(raw: dict[str, Any]) -> str:
    if len(raw) == 1 and type(raw.get("text")) is str:  # the SMPP worker's receipts: skip the generic encoder
        return '{"text": ' + _encode_json_string(receipt_text_safe(raw["text"])) + "}"
    return json.dumps(receipt_raw_safe(raw))


def receipts_insert(gateway: Gateway, rows: list[tuple[ReceiptEvent, Any]], now: Any) -> None:
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
                        receipt_text_safe(event.provider_message_id),
                        str(event.status),
                        receipt_text_safe(event.provider_status)[:40],
                        receipt_text_safe(event.error_code)[:32],
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
                provider_message_id=receipt_text_safe(event.provider_message_id),
                status=event.status,
                provider_status=receipt_text_safe(event.provider_status)[:40],
                error_code=receipt_text_safe(event.error_code)[:32],
                occurred_at=event.occurred_at or now,
                received_at=now,
                applied_at=applied_at,
                raw=receipt_raw_safe(event.raw),
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
        with pg_cursor() as cursor:
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
        with pg_cursor() as cursor:
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
        key = parts_roll_up(part_states)
        if key[0] != MessageState.SUBMITTED:
            by_state.setdefault(key, []).append(message_id)
    for (state, error), ids in by_state.items():
        if connection.vendor == "postgresql":
            with pg_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_MESSAGES} SET state = %s, final_at = %s, error_code = %s "  # noqa: S608
                    "WHERE id = ANY(%b::bigint[]) AND state = 'submitted'",
                    [state, now, error[:32], ids],
                )
        else:
            OutboundMessage.objects.filter(pk__in=ids, state=MessageState.SUBMITTED).update(
                state=state, final_at=now, error_code=error[:32]
            )


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


def parts_roll_up(part_states: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """A message's (state, error_code) from its parts': delivered only when every part is."""
    if all(s == MessageState.DELIVERED for s, _ in part_states):
        return MessageState.DELIVERED.value, ""
    failed = [e for s, e in part_states if s == MessageState.FAILED]
    if failed:
        return MessageState.FAILED.value, (failed[0] or "undelivered")[:32]
    if any(s == MessageState.EXPIRED for s, _ in part_states):
        return MessageState.EXPIRED.value, "expired"
    return MessageState.SUBMITTED.value, ""  # some parts still pending: never 'delivered'
