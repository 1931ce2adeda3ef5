"""Set-based helpers of the tick: a membership test that binds one array parameter on PostgreSQL
(``col = ANY(%s)``: compiling and sending 5,000 ``IN`` placeholders per query cost more than the
query), and the bulk insert of outbound messages (``INSERT ... SELECT FROM jsonb_to_recordset`` on
PostgreSQL: one statement per claim, its rows sent as one JSON document, instead of building a
model instance per row)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import BooleanField, F, Func

from campaigns.automations.flow_models import Enrolment
from gateways.models import MessageState, OutboundMessage


class AnyOf(Func):
    """``expression = ANY(values)`` on PostgreSQL, ``expression IN (values)`` elsewhere."""

    output_field = BooleanField()

    def __init__(self, expression: Any, values: Iterable[Any]) -> None:
        super().__init__(expression)
        self.values = list(values)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        lhs, params = compiler.compile(self.source_expressions[0])
        if not self.values:
            return "1 = 0", []
        if connection.vendor == "postgresql":
            if all(type(v) is int for v in self.values):
                # Ids as one array literal: psycopg's array dumper costs a Python call per element.
                return f"{lhs} = ANY(%s::bigint[])", [*params, "{" + ",".join(map(str, self.values)) + "}"]
            return f"{lhs} = ANY(%s)", [*params, self.values]
        return f"{lhs} IN ({', '.join(['%s'] * len(self.values))})", [*params, *self.values]


def any_of(field: str, values: Iterable[Any]) -> AnyOf:
    return AnyOf(F(field), values)


_TABLE = OutboundMessage._meta.db_table
_INSERT = f"""
INSERT INTO {_TABLE} (
    gateway_id, sender_id, purpose, state, quota_reference, request_receipt, attempts, next_attempt_at,
    error_code, error_reason, created_at, updated_at,
    destination, country, body, encoding, segments, cost, currency, reference, contact_id
)
SELECT %s, %s, %s, %s, %s, %s, 0, %s, '', '', %s, %s,
       u.destination, u.country, u.body, u.encoding, u.segments, u.cost, u.currency, u.reference, u.contact_id
FROM jsonb_to_recordset(%s::jsonb)
     AS u(destination text, country text, body text, encoding text, segments int, cost numeric, currency text,
          reference text, contact_id bigint)
RETURNING id
"""  # noqa: S608 - the table name is ours

COLUMNS = ("destination", "country", "body", "encoding", "segments", "cost", "currency", "reference", "contact_id")


def messages_insert(
    rows: Sequence[dict[str, Any]],
    *,
    gateway_id: int,
    sender_id: str,
    purpose: str,
    quota_reference: str,
    request_receipt: bool,
    now: datetime,
) -> list[int]:
    """Queue these messages (each row: COLUMNS); their ids. Runs in the caller's transaction."""
    if not rows:
        return []
    if connection.vendor == "postgresql":
        # One JSON document (json.dumps is C; psycopg's array dumper is Python, per element).
        document = json.dumps([{c: row[c] for c in COLUMNS} for row in rows], default=str)
        with connection.cursor() as cursor:
            scalars = [gateway_id, sender_id, purpose, MessageState.QUEUED.value, quota_reference, request_receipt]
            params: list[Any] = [*scalars, now, now, now, document]
            cursor.execute(_INSERT, params)
            return [r[0] for r in cursor.fetchall()]
    created = OutboundMessage.objects.bulk_create(
        [
            OutboundMessage(
                gateway_id=gateway_id,
                sender_id=sender_id,
                purpose=purpose,
                state=MessageState.QUEUED,
                quota_reference=quota_reference,
                request_receipt=request_receipt,
                next_attempt_at=now,
                created_at=now,
                **{c: row[c] for c in COLUMNS},
            )
            for row in rows
        ],
        batch_size=2000,
    )
    return [m.pk for m in created if m.pk]


def total_cost(rows: Sequence[dict[str, Any]]) -> Decimal:
    return sum((row["cost"] for row in rows), Decimal(0))


_ENROLMENT_COLUMNS = (
    ("flow_id", "bigint"),
    ("flow_version", "int"),
    ("event_id", "bigint"),
    ("contact_id", "bigint"),
    ("phone", "text"),
    ("reference", "text"),
    ("trigger_date", "date"),
    ("trigger_occurred_at", "timestamptz"),
    ("state", "text"),
    ("step_index", "int"),
    ("due_at", "timestamptz"),
    ("sent", "int"),
    ("reason", "text"),
    ("detail", "text"),
    ("entered_at", "timestamptz"),
    ("finished_at", "timestamptz"),
)


def enrolments_insert(rows: Sequence[dict[str, Any]]) -> None:
    """Insert enrolment rows (column -> value, the columns of _ENROLMENT_COLUMNS), skipping any a
    unique constraint already holds (ON CONFLICT DO NOTHING: a re-read or replayed event enrols
    nothing twice)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        Enrolment.objects.bulk_create([Enrolment(**row) for row in rows], batch_size=2000, ignore_conflicts=True)
        return
    names = ", ".join(name for name, _t in _ENROLMENT_COLUMNS)
    kinds = ", ".join(f"{name} {kind}" for name, kind in _ENROLMENT_COLUMNS)
    sql = (
        f"INSERT INTO {Enrolment._meta.db_table} ({names}) "  # noqa: S608 - our table and columns
        f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS u({kinds}) ON CONFLICT DO NOTHING"
    )
    # One JSON document (dates and times in ISO form with their offset, which the column types parse).
    document = json.dumps([{name: row[name] for name, _t in _ENROLMENT_COLUMNS} for row in rows], default=_json_value)
    with connection.cursor() as cursor:
        cursor.execute(sql, [document])


def _json_value(value: Any) -> Any:
    """json.dumps's fallback for the values JSON has no type for."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_RECENT = f"""
SELECT d.destination, m.purpose, m.created_at, m.reference
FROM unnest(%s::text[]) AS d(destination)
JOIN LATERAL (
    SELECT x.purpose, x.created_at, x.reference FROM {_TABLE} x
    WHERE x.destination = d.destination AND x.created_at >= %s AND x.state <> %s
) m ON TRUE
"""  # noqa: S608 - the table name is ours


def recent_messages(phones: Sequence[str], since: datetime) -> list[tuple[str, str, datetime, str]]:
    """(destination, purpose, created_at, reference) of the messages to these phones since
    ``since``, failed ones left out; one index probe per phone on PostgreSQL."""
    if not phones:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_RECENT, [list(phones), since, MessageState.FAILED.value])
            return [tuple(row) for row in cursor.fetchall()]
    return list(
        OutboundMessage.objects.filter(any_of("destination", phones), created_at__gte=since)
        .exclude(state=MessageState.FAILED)
        .values_list("destination", "purpose", "created_at", "reference")
    )
