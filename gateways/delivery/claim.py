"""The claim: queued -> submitting, committed before any gateway call (at most once), with
the opt-out re-checked at claim time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, CharField, F, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from gateways.delivery.rows import HeldRow, chunks, pg_cursor, quota_totals
from gateways.models import PRIORITY_PURPOSES, MessagePurpose, MessageState, OutboundMessage, QuotaReservation
from gateways.quotas import quota_unhold_many
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record

_MESSAGES = OutboundMessage._meta.db_table
# The reference of a STOP/START/HELP confirmation (contacts/keywords.py): with OTP, the only
# messages the opt-out re-check at claim time lets through (see message_queue) -- OTP only past
# opt-outs the person can lift (a STOP); a hard block (compliance.models.HARD_BLOCK_REASONS)
# stops an OTP at claim time too.
KEYWORD_REPLY_REFERENCE = "keyword:"
# Withdrawn when an opt-out lands after their claim, before the send (the bind worker's watch):
# every purpose but OTP and transactional, whose keyword replies a claimed row cannot tell
# apart (the claim re-checked those already).
WITHDRAWN_AFTER_CLAIM = (MessagePurpose.MARKETING.value, MessagePurpose.TEST.value)


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

    Messages (all but OTP and keyword replies) to a number with an active opt-out are not claimed: they fail as
    'suppressed' in the same transaction and their quota hold is released; so do OTP messages to a number
    with an active hard block (blocked, invalid, complaint). Priority rows (PRIORITY_PURPOSES) come first."""
    with transaction.atomic():
        claimed = messages_claim_result(
            gateway_id=gateway_id, message_ids=message_ids, limit=limit, actor=actor
        ).messages
        if not claimed:
            return []
        return list(OutboundMessage.objects.filter(pk__in=[m.pk for m in claimed]).order_by("pk"))


class ClaimResult(NamedTuple):
    messages: list[ClaimedMessage]  # queued -> submitting: priority rows first, each lane in id order
    suppressed: int  # queued -> failed (active opt-out)
    last_id: int  # the highest id the in-order pick took either way (0 when none): the cursor's next start


def messages_claim_rows(
    *,
    gateway_id: int,
    limit: int = 2000,
    actor: Actor | None = None,
    after_id: int = 0,
    countries: Sequence[str] | None = None,
    on_claim: Callable[[list[int]], Any] | None = None,
    priority_only: bool = False,
    priority_grace: timedelta | None = None,
) -> ClaimResult:
    """The bind worker's claim: the same rules as ``messages_claim``, rows instead of model
    instances.

    Priority rows (PRIORITY_PURPOSES) are taken first, from the start of the queue whatever
    ``after_id`` says (a small partial index: msg_priority_queued), then the rest in id order
    after ``after_id``. ``priority_only``: only the first (the bind worker's every-pass claim: an
    OTP never waits for the campaign rows it already holds, and the priority lane's own worker).
    ``priority_grace``: the bulk lane's worker (gateways split into lanes, see
    gateways.smpp.worker): the priority rows are left to the priority lane's worker unless they
    have been queued longer than this (that worker is down or behind), and the in-order pick
    takes no priority row.

    ``after_id``: start after this id. Rows claimed earlier leave dead entries at the front of
    the queue's index until vacuum removes them; a worker that resumes after its last claim
    does not walk them again on every claim. It must still come back to 0 (retries and
    requeued messages sit behind the cursor): see BindWorker._claim.

    ``countries``: only messages to these countries (a fail-over takes only what its fallback
    covers). ``on_claim``: called with the claimed ids inside the claim's transaction, before it
    commits (the bind worker journals them: see gateways.smpp.journal)."""
    return messages_claim_result(
        gateway_id=gateway_id,
        message_ids=None,
        limit=limit,
        actor=actor,
        after_id=after_id,
        countries=countries,
        on_claim=on_claim,
        priority_only=priority_only,
        priority_grace=priority_grace,
    )


def messages_claim_result(
    *,
    gateway_id: int,
    message_ids: Sequence[int] | None,
    limit: int,
    actor: Actor | None,
    after_id: int = 0,
    countries: Sequence[str] | None = None,
    on_claim: Callable[[list[int]], Any] | None = None,
    priority_only: bool = False,
    priority_grace: timedelta | None = None,
) -> ClaimResult:
    """The claim itself (messages_claim, messages_claim_rows and messages_submit all come here):
    claimed rows (the priority lane's first), how many were suppressed, and the highest id the
    in-order pick took.

    Two picks in one transaction: the priority lane (PRIORITY_PURPOSES, on its partial index,
    from the start of the queue), then -- unless ``priority_only`` -- the rest of the limit in id
    order after ``after_id``. Only the second moves the cursor (``last_id``): a priority row newer
    than campaign rows not claimed yet must not carry the cursor past them."""
    now = timezone.now()
    claim = _claim_postgresql if connection.vendor == "postgresql" else _claim_orm
    waited = None if priority_grace is None else now - priority_grace
    with transaction.atomic():
        rows = claim(gateway_id, message_ids, limit, now, 0, countries, priority=True, queued_before=waited)
        first = len(rows)
        if not priority_only and first < limit:
            rows += claim(
                gateway_id, message_ids, limit - first, now, after_id, countries, bulk=priority_grace is not None
            )
        claimed: list[ClaimedMessage] = []
        suppressed: list[HeldRow] = []
        for row in rows:
            if row[-1] is None:
                claimed.append(ClaimedMessage._make(row[:-1]))
            else:  # (id, quota_reference, segments, cost)
                suppressed.append(HeldRow(row[0], row[9], row[5], row[6]))
        if suppressed:
            _suppressed_release(actor or Actor.system("messages_claim"), suppressed)
        if on_claim is not None and claimed:
            on_claim([m.pk for m in claimed])
    lane = set(PRIORITY_PURPOSES)
    claimed.sort(key=lambda m: (m.purpose not in lane, m.pk))
    return ClaimResult(claimed, len(suppressed), max((row[0] for row in rows[first:]), default=0))


def _suppressed_reason(opt_out_id: Any, reason: Any, source: Any) -> str:
    return f"Opt-out #{opt_out_id} ({reason}, {source}) is active for this number: not sent."[:300]


def _claim_postgresql(
    gateway_id: int,
    message_ids: Sequence[int] | None,
    limit: int,
    now: Any,
    after_id: int,
    countries: Sequence[str] | None = None,
    *,
    priority: bool = False,
    queued_before: datetime | None = None,
    bulk: bool = False,
) -> list[tuple[Any, ...]]:
    # 1. Pick in id order with SKIP LOCKED (concurrent workers take disjoint rows), looking up an
    #    active opt-out (for all but OTP and keyword replies; for OTP, a hard block) on its
    #    partial index.
    # 2. Move the picked rows by primary key (an array parameter: an index scan whatever the
    #    table's statistics say, even right after a bulk dispatch) to 'submitting' -- or, when
    #    opted out, straight to 'failed': the opt-out wins at claim time.
    # ``priority``: only the priority lane, with the partial index's own predicate written out as
    # literals (our constants) so the planner proves it and walks msg_priority_queued;
    # ``queued_before``: only those queued before then. ``bulk``: no priority row.
    from compliance.models import HARD_BLOCK_REASONS, OptOut

    only = "AND m.id = ANY(%(ids)s)" if message_ids is not None else ""
    if countries is not None:
        only += " AND m.country = ANY(%(countries)s)"
    lane = ", ".join(f"'{purpose}'" for purpose in PRIORITY_PURPOSES)
    if priority:
        state = f"m.state = '{MessageState.QUEUED.value}' AND m.purpose IN ({lane})"
        if queued_before is not None:
            state += " AND m.created_at <= %(queued_before)s"
    else:
        state = "m.state = %(queued)s"
        if bulk:
            state += f" AND m.purpose NOT IN ({lane})"
    pick = f"""
        SELECT m.id, o.id, o.reason, o.source
        FROM {_MESSAGES} m
        LEFT JOIN LATERAL (
            SELECT x.id, x.reason, x.source FROM {OptOut._meta.db_table} x
            WHERE m.reference NOT LIKE %(keyword_reply)s
              AND (m.purpose <> %(otp)s OR x.reason = ANY(%(hard)s))
              AND x.phone = m.destination AND x.lifted_at IS NULL
            ORDER BY x.occurred_at DESC, x.id DESC LIMIT 1
        ) o ON TRUE
        WHERE m.gateway_id = %(gateway)s AND {state}
          AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= %(now)s) AND m.id > %(after)s {only}
        ORDER BY m.id
        LIMIT %(limit)s
        FOR NO KEY UPDATE OF m SKIP LOCKED
    """  # noqa: S608 (table names and lane values are ours)
    params = {
        "gateway": gateway_id,
        "queued": MessageState.QUEUED.value,
        "otp": MessagePurpose.OTP.value,
        "hard": [str(reason) for reason in HARD_BLOCK_REASONS],
        "keyword_reply": f"{KEYWORD_REPLY_REFERENCE}%",
        "now": now,
        "limit": limit,
        "after": after_id,
        "ids": list(message_ids or []),
        "countries": list(countries or []),
        "queued_before": queued_before,
    }
    with pg_cursor() as cursor:
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
    *,
    priority: bool = False,
    queued_before: datetime | None = None,
    bulk: bool = False,
) -> list[tuple[Any, ...]]:
    """The portable claim (SQLite: one writer at a time, so no row locks are needed)."""
    from compliance.models import HARD_BLOCK_REASONS, OptOut

    active = OptOut.objects.filter(phone=OuterRef("destination"), lifted_at__isnull=True).order_by(
        "-occurred_at", "-pk"
    )
    qs = OutboundMessage.objects.filter(gateway_id=gateway_id, state=MessageState.QUEUED, pk__gt=after_id).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    if priority:
        qs = qs.filter(purpose__in=PRIORITY_PURPOSES)
        if queued_before is not None:
            qs = qs.filter(created_at__lte=queued_before)
    elif bulk:
        qs = qs.exclude(purpose__in=PRIORITY_PURPOSES)
    if message_ids is not None:
        qs = qs.filter(pk__in=list(message_ids))
    if countries is not None:
        qs = qs.filter(country__in=list(countries))
    rows = list(
        qs.select_for_update(skip_locked=True)
        .order_by("pk")
        .annotate(
            optout_id=Case(
                When(Q(reference__startswith=KEYWORD_REPLY_REFERENCE), then=Value(None)),
                When(
                    Q(purpose=MessagePurpose.OTP),
                    then=Subquery(active.filter(reason__in=HARD_BLOCK_REASONS).values("pk")[:1]),
                ),
                default=Subquery(active.values("pk")[:1]),
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
    """Claimed marketing and test messages that no gateway has been given yet, whose number opted out after
    the claim: failed as 'suppressed' (never sent) and their quota hold released.
    ``suppressions``: (message id, opt-out id, its reason, its source). Only 'submitting' rows move."""
    now = timezone.now()
    reasons: dict[int, str] = {}
    for message_id, opt_out_id, reason, source in suppressions:
        reasons.setdefault(message_id, _suppressed_reason(opt_out_id, reason, source))
    withdrawn: list[HeldRow] = []
    with transaction.atomic():
        for chunk in chunks(sorted(reasons), 5_000):
            # Locked in id order, then moved in one UPDATE: exactly the rows read here move (a
            # concurrent reconciler waits, then finds them failed).
            rows = [
                HeldRow._make(row)
                for row in OutboundMessage.objects.select_for_update(of=("self",))
                .filter(pk__in=chunk, state=MessageState.SUBMITTING, purpose__in=WITHDRAWN_AFTER_CLAIM)
                .order_by("pk")
                .values_list("pk", "quota_reference", "segments", "cost")
            ]
            _suppressed_write(
                [(row.pk, reasons[row.pk]) for row in rows],
                now,
                state=MessageState.SUBMITTING,
                purpose__in=WITHDRAWN_AFTER_CLAIM,
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
    actor: Actor, suppressed: Sequence[HeldRow], reason: str = "Active opt-out at claim time."
) -> None:
    """Give back the quota held for suppressed messages: one movement per reservation."""
    totals = quota_totals(suppressed)
    existing = set(QuotaReservation.objects.filter(reference__in=list(totals)).values_list("reference", flat=True))
    quota_unhold_many(actor=actor, totals={reference: totals[reference] for reference in existing})
    audit_record(
        actor=actor,
        action="messages.suppressed",
        object_type="outbound_message",
        after={"ids": [s.pk for s in suppressed][:1000], "count": len(suppressed)},
        reason=reason,
    )
