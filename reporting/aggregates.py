"""The report aggregates, brought up to date incrementally (beat: reporting.refresh_aggregates).

Reports never scan messages. Four refreshes, each from its own high-water mark:

- messages: per send batch. A batch is re-aggregated while it has messages that are not final
  (queued, submitting, submitted, unknown) or is still sending; once every message is final the
  batch's rows stay as they are. A batch is at most ``size`` messages (1,000 by default), so a
  refresh during a 5,000 msg/s send re-reads a few recent batches, not the campaign.
- flow messages: per block of message ids (``FLOW_CHUNK_IDS`` ids) that holds messages of
  automation flows (batch NULL, reference ``automation:<flow>:<enrolment>:<step>``). New flow
  messages are found from an id cursor; a block is re-aggregated when new flow messages land in
  it, when receipts are applied to its flow messages, and while it has flow messages not yet final
  (the two newest blocks every FLOW_PENDING_RECHECK, older ones every PENDING_RECHECK, at most
  MAX_FLOW_RECHECKS_PER_RUN a run). Re-aggregating a block reads at most FLOW_CHUNK_IDS rows by
  primary key, never a whole flow.
- clicks: LinkClick is append-only; ids above the cursor are folded into hourly buckets and into
  per-recipient touches (human clicks only: a bot or link scanner never becomes a touch).
- opt-outs: each new STOP is attributed to the latest marketing message to that phone -- of a
  campaign or of an automation flow -- sent within ``reporting.opt_out_window_hours`` before it.
- conversions: each new commerce event re-attributes the conversion it belongs to (an order by
  its reference, its refunds included), see reporting.attribution.

Id cursors lag one run (``ReportCursor.seen``): ids are taken at INSERT but become visible at
COMMIT, so a row with a lower id may appear after a higher one; reading only up to the highest id
seen one run earlier gives such a transaction a whole interval to commit.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    DecimalField,
    Exists,
    F,
    Func,
    Max,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from campaigns.models import BatchState, SendBatch
from compliance.models import OptOut, OptOutReason
from gateways.charges import charged_q
from gateways.models import FINAL_MESSAGE_STATES, OutboundMessage
from reporting.models import (
    ReportBatchState,
    ReportClickBucket,
    ReportClickTouch,
    ReportCursor,
    ReportFlowChunk,
    ReportFlowMessageBucket,
    ReportMessageBucket,
    ReportOptOut,
)
from smsplatform.config_service import platform_config_data
from smsplatform.schedules import REPORT_REFRESH_SECONDS
from templates.models import DeviceClass, LinkClick, ShortLink

logger = logging.getLogger(__name__)

# Batches re-aggregated per run at most (oldest pending first); the rest wait for the next run.
MAX_BATCHES_PER_RUN = 400
# Batches with messages still pending are re-read at least this often even without receipts.
PENDING_RECHECK = timedelta(minutes=2)
PENDING_STATES = ("queued", "submitting", "submitted", "unknown")

_MONEY = DecimalField(max_digits=16, decimal_places=4)


def _cursor(name: str) -> ReportCursor:
    cursor, _ = ReportCursor.objects.select_for_update().get_or_create(name=name)
    return cursor


def _advance(cursor: ReportCursor, newest: int) -> tuple[int, int]:
    """The id range (low, high] to consume now; records ``newest`` for the next run."""
    low, high = cursor.position, max(cursor.seen, cursor.position)
    cursor.position, cursor.seen, cursor.refreshed_at = high, max(newest, high), timezone.now()
    cursor.save()
    return low, high


# --- messages --------------------------------------------------------------------------------


_RECEIPT_BATCHES = """
SELECT DISTINCT m.batch_id FROM gateways_deliveryreceipt r
JOIN gateways_messagepart p ON p.gateway_id = r.gateway_id AND p.provider_message_id = r.provider_message_id
JOIN gateways_outboundmessage m ON m.id = p.message_id
WHERE r.applied_at > %s AND m.batch_id IS NOT NULL
"""


def _batches_due(now: datetime, since: datetime | None) -> list[int]:
    """Batches never aggregated or still sending; batches with receipts applied since the last run
    (receipt_applied index); and, every PENDING_RECHECK, batches with messages still pending (an
    expiry or a reconciliation changes them without a receipt)."""
    known = ReportBatchState.objects.filter(batch_id=OuterRef("pk"))
    stale_pending = known.filter(pending__gt=0, refreshed_at__lt=now - PENDING_RECHECK)
    qs = (
        SendBatch.objects.filter(
            Q(state__in=[BatchState.WAITING, BatchState.SENDING]) | ~Exists(known) | Exists(stale_pending)
        )
        .exclude(state=BatchState.WAITING, not_before__gt=now)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    due = list(qs[:MAX_BATCHES_PER_RUN])
    if since is not None and len(due) < MAX_BATCHES_PER_RUN:
        with connection.cursor() as cursor:
            cursor.execute(_RECEIPT_BATCHES, [connection.ops.adapt_datetimefield_value(since)])
            due.extend(row[0] for row in cursor.fetchall() if row[0] not in set(due))
    return sorted(set(due))


def message_rows(batch_ids: list[int]) -> list[dict[str, Any]]:
    """The bucket rows of these batches, computed from their messages."""
    hour = TruncHour(Coalesce("final_at", "submitted_at", "created_at"))
    return [
        dict(row)
        for row in OutboundMessage.objects.filter(batch_id__in=batch_ids)
        .annotate(h=hour, campaign=F("batch__campaign_id"))
        .values("batch_id", "campaign", "h", "gateway_id", "country", "state", "error_code", "currency")
        .annotate(
            n=Count("id"),
            seg=Sum("segments"),
            est=Sum("cost"),
            billed=Sum(Case(When(charged_q(), then=F("cost")), default=Value(Decimal(0)), output_field=_MONEY)),
            newest=Max("final_at"),
        )
        .order_by()
    ]


def refresh_messages(*, now: datetime | None = None) -> int:
    """Re-aggregate the batches that may have changed; returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        cursor = _cursor("messages")
        # Receipts applied since a little before the last run (clocks of the workers that apply
        # receipts and of this task differ; re-reading a batch twice is harmless).
        since = cursor.refreshed_at - timedelta(seconds=10) if cursor.refreshed_at else None
        cursor.refreshed_at = now
        cursor.save()
    ids = _batches_due(now, since)
    if not ids:
        return 0
    rows = message_rows(ids)
    buckets = []
    per_batch: dict[int, dict[str, Any]] = {
        b: {"campaign": c, "messages": 0, "pending": 0, "newest": None}
        for b, c in SendBatch.objects.filter(pk__in=ids).values_list("pk", "campaign_id")
    }
    for r in rows:
        buckets.append(
            ReportMessageBucket(
                batch_id=r["batch_id"],
                campaign_id=r["campaign"],
                hour=r["h"],
                gateway_id=r["gateway_id"],
                country=r["country"],
                state=r["state"],
                error_code=r["error_code"],
                messages=r["n"],
                segments=r["seg"] or 0,
                cost_estimated=r["est"] or 0,
                cost_billed=r["billed"] or 0,
                currency=r["currency"],
            )
        )
        b = per_batch[r["batch_id"]]
        b["messages"] += r["n"]
        if r["state"] not in FINAL_MESSAGE_STATES:
            b["pending"] += r["n"]
        if r["newest"] is not None and (b["newest"] is None or r["newest"] > b["newest"]):
            b["newest"] = r["newest"]
    previous = {
        bid: (pending, changed)
        for bid, pending, changed in ReportBatchState.objects.filter(batch_id__in=ids).values_list(
            "batch_id", "pending", "changed_at"
        )
    }
    with transaction.atomic():
        ReportMessageBucket.objects.filter(batch_id__in=ids).delete()
        ReportMessageBucket.objects.bulk_create(buckets, batch_size=2000)
        ReportBatchState.objects.filter(batch_id__in=ids).delete()
        ReportBatchState.objects.bulk_create(
            [
                ReportBatchState(
                    batch_id=bid,
                    campaign_id=b["campaign"],
                    messages=b["messages"],
                    pending=b["pending"],
                    newest_final_at=b["newest"],
                    changed_at=(previous[bid][1] if bid in previous and previous[bid][0] == b["pending"] else now),
                    refreshed_at=now,
                )
                for bid, b in per_batch.items()
            ]
        )
    return len(ids)


# --- automation-flow messages ------------------------------------------------------------------

# Messages of automation flows carry no batch; their reference names the flow.
FLOW_REFERENCE_PREFIX = "automation:"
# Flow aggregates are recomputed per block of this many message ids (a send batch's role).
FLOW_CHUNK_IDS = 10_000
MAX_FLOW_CHUNKS_PER_RUN = 200
MAX_FLOW_RECHECKS_PER_RUN = 10
# Flow messages move from queued to submitted without a receipt; blocks with pending ones are
# re-read this often (flows send little, so these blocks are few: the newest ones).
FLOW_PENDING_RECHECK = timedelta(seconds=30)


def flow_messages_q() -> Q:
    return Q(batch__isnull=True, reference__startswith=FLOW_REFERENCE_PREFIX)


class FlowIdOf(Func):
    """The flow id of a flow message's reference, in the database: automation:<flow>:... -> <flow>
    (so a block is grouped by flow, not by each message's reference)."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(SUBSTRING(%(expressions)s FROM '^automation:([0-9]{1,18}):') AS BIGINT)"
        return self.as_sql(compiler, connection, template=template)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        n = len(FLOW_REFERENCE_PREFIX) + 1
        return self.as_sql(
            compiler,
            connection,
            template=f"CAST(SUBSTR(%(expressions)s, {n}, INSTR(SUBSTR(%(expressions)s, {n}), ':') - 1) AS INTEGER)",
        )


def flow_of_reference(reference: str) -> int | None:
    """automation:<flow>:<enrolment>:<step> -> flow id (None for anything else)."""
    parts = reference.split(":")
    if len(parts) != 4 or parts[0] != "automation" or not parts[1].isdigit():
        return None
    return int(parts[1])


_RECEIPT_FLOW_MESSAGES = """
SELECT DISTINCT m.id FROM gateways_deliveryreceipt r
JOIN gateways_messagepart p ON p.gateway_id = r.gateway_id AND p.provider_message_id = r.provider_message_id
JOIN gateways_outboundmessage m ON m.id = p.message_id
WHERE r.applied_at > %s AND m.batch_id IS NULL AND m.reference LIKE 'automation:%%'
"""


def flow_chunk_rows(chunk: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The bucket rows of one id block's flow messages, and its state (messages, pending, newest)."""
    low, high = chunk * FLOW_CHUNK_IDS, (chunk + 1) * FLOW_CHUNK_IDS
    hour = TruncHour(Coalesce("final_at", "submitted_at", "created_at"))
    charged = Case(When(charged_q(), then=F("cost")), default=Value(Decimal(0)), output_field=_MONEY)
    cells: dict[tuple[Any, ...], dict[str, Any]] = {}
    state: dict[str, Any] = {"messages": 0, "pending": 0, "newest": None}
    rows = (
        OutboundMessage.objects.filter(flow_messages_q(), id__gte=low, id__lt=high)
        .annotate(h=hour, flow=FlowIdOf("reference"))
        .values("flow", "h", "gateway_id", "country", "state", "error_code", "currency")
        .annotate(
            n=Count("id"),
            seg=Sum("segments"),
            est=Sum("cost"),
            billed=Sum(charged),
            newest=Max("final_at"),
        )
        .order_by()
    )
    for r in rows:
        if not r["flow"]:  # not automation:<digits>:... (never written by the engine)
            continue
        key = (r["flow"], r["h"], r["gateway_id"], r["country"], r["state"], r["error_code"], r["currency"])
        cell = cells.setdefault(key, {"n": 0, "seg": 0, "est": Decimal(0), "billed": Decimal(0)})
        cell["n"] += r["n"]
        cell["seg"] += r["seg"] or 0
        cell["est"] += r["est"] or 0
        cell["billed"] += r["billed"] or 0
        state["messages"] += r["n"]
        if r["state"] not in FINAL_MESSAGE_STATES:
            state["pending"] += r["n"]
        if r["newest"] is not None and (state["newest"] is None or r["newest"] > state["newest"]):
            state["newest"] = r["newest"]
    buckets = [
        {
            "flow_id": k[0],
            "hour": k[1],
            "gateway_id": k[2],
            "country": k[3],
            "state": k[4],
            "error_code": k[5],
            "currency": k[6],
            **v,
        }
        for k, v in cells.items()
    ]
    return buckets, state


def _flow_chunks_due(now: datetime, low: int, high: int, since: datetime | None) -> list[int]:
    """Blocks with new flow messages (ids in (low, high]), with receipts applied since the last
    run, and with flow messages still pending (the two newest blocks every FLOW_PENDING_RECHECK,
    older ones every PENDING_RECHECK)."""
    due: set[int] = set()
    if high > low:
        for pk in (
            OutboundMessage.objects.filter(flow_messages_q(), id__gt=low, id__lte=high)
            .values_list("id", flat=True)
            .order_by()
        ):
            due.add(pk // FLOW_CHUNK_IDS)
    # Pending blocks: the newest ones (where queued messages become submitted) every
    # FLOW_PENDING_RECHECK, older ones (messages waiting for a receipt that may never come; a
    # receipt marks its block anyway) every PENDING_RECHECK, as campaign batches.
    newest_chunk = ReportFlowChunk.objects.aggregate(m=Max("chunk"))["m"] or 0
    pending = ReportFlowChunk.objects.filter(pending__gt=0)
    due.update(
        pending.filter(chunk__gte=newest_chunk - 1, refreshed_at__lt=now - FLOW_PENDING_RECHECK).values_list(
            "chunk", flat=True
        )
    )
    # At most MAX_FLOW_RECHECKS_PER_RUN old blocks per run, the longest unread first: a block whose
    # messages never get a receipt must not make every run re-read the whole history.
    due.update(
        pending.filter(refreshed_at__lt=now - PENDING_RECHECK)
        .order_by("refreshed_at", "chunk")
        .values_list("chunk", flat=True)[:MAX_FLOW_RECHECKS_PER_RUN]
    )
    if since is not None:
        with connection.cursor() as cursor:
            cursor.execute(_RECEIPT_FLOW_MESSAGES, [connection.ops.adapt_datetimefield_value(since)])
            due.update(row[0] // FLOW_CHUNK_IDS for row in cursor.fetchall())
    return sorted(due)


def refresh_flow_messages(*, now: datetime | None = None) -> int:
    """Re-aggregate the id blocks whose flow messages may have changed; returns how many.

    Blocks beyond MAX_FLOW_CHUNKS_PER_RUN wait for the next run: the id cursor only moves past
    the new messages of the blocks refreshed (``position`` stays below the first block left)."""
    now = now or timezone.now()
    newest = OutboundMessage.objects.aggregate(m=Max("id"))["m"] or 0
    with transaction.atomic():
        cursor = _cursor("flow_messages")
        since = cursor.refreshed_at - timedelta(seconds=10) if cursor.refreshed_at else None
        low, high = cursor.position, max(cursor.seen, cursor.position)
        due = _flow_chunks_due(now, low, high, since)
        position = high
        if len(due) > MAX_FLOW_CHUNKS_PER_RUN:
            left = due[MAX_FLOW_CHUNKS_PER_RUN]
            due = due[:MAX_FLOW_CHUNKS_PER_RUN]
            position = max(low, min(high, left * FLOW_CHUNK_IDS - 1))
        cursor.position, cursor.seen, cursor.refreshed_at = position, max(newest, high), now
        cursor.save()
    if not due:
        return 0
    buckets: list[ReportFlowMessageBucket] = []
    states: list[ReportFlowChunk] = []
    for chunk in due:
        rows, state = flow_chunk_rows(chunk)
        buckets.extend(
            ReportFlowMessageBucket(
                chunk=chunk,
                flow_id=r["flow_id"],
                hour=r["hour"],
                gateway_id=r["gateway_id"],
                country=r["country"],
                state=r["state"],
                error_code=r["error_code"],
                messages=r["n"],
                segments=r["seg"],
                cost_estimated=r["est"],
                cost_billed=r["billed"],
                currency=r["currency"],
            )
            for r in rows
        )
        states.append(
            ReportFlowChunk(
                chunk=chunk,
                messages=state["messages"],
                pending=state["pending"],
                newest_final_at=state["newest"],
                refreshed_at=now,
            )
        )
    with transaction.atomic():
        ReportFlowMessageBucket.objects.filter(chunk__in=due).delete()
        ReportFlowMessageBucket.objects.bulk_create(buckets, batch_size=2000)
        ReportFlowChunk.objects.filter(chunk__in=due).delete()
        ReportFlowChunk.objects.bulk_create(states)
    return len(due)


# --- clicks ----------------------------------------------------------------------------------

_TOUCH_SQL = """
INSERT INTO {touch} (click_id, link_id, recipient_token, clicked_at, bot)
SELECT id, link_id, recipient_token, clicked_at, device_class = %s
FROM {click} WHERE id > %s AND id <= %s AND recipient_token IS NOT NULL
ON CONFLICT (click_id) DO NOTHING
"""


def refresh_clicks() -> int:
    """Fold new clicks into the hourly buckets and the touches; returns the clicks folded."""
    newest = LinkClick.objects.aggregate(m=Max("id"))["m"] or 0
    with transaction.atomic():
        cursor = _cursor("clicks")
        low, high = _advance(cursor, newest)
        if high <= low:
            return 0
        rows = list(
            LinkClick.objects.filter(id__gt=low, id__lte=high)
            .annotate(h=TruncHour("clicked_at"))
            .values("link_id", "h", "device_class")
            .annotate(n=Count("id"), u=Count("id", filter=Q(is_unique=True)))
            .order_by()
        )
        links = dict(ShortLink.objects.filter(pk__in={r["link_id"] for r in rows}).values_list("pk", "campaign_id"))
        existing = {
            (b.link_id, b.hour, b.device_class): b
            for b in ReportClickBucket.objects.select_for_update().filter(
                link_id__in=links, hour__in={r["h"] for r in rows}
            )
        }
        new, changed, total = [], [], 0
        for r in rows:
            total += r["n"]
            bucket = existing.get((r["link_id"], r["h"], r["device_class"]))
            if bucket is None:
                new.append(
                    ReportClickBucket(
                        link_id=r["link_id"],
                        campaign_id=links.get(r["link_id"]),
                        hour=r["h"],
                        device_class=r["device_class"],
                        clicks=r["n"],
                        unique_clicks=r["u"],
                    )
                )
            else:
                bucket.clicks += r["n"]
                bucket.unique_clicks += r["u"]
                changed.append(bucket)
        ReportClickBucket.objects.bulk_create(new, batch_size=2000)
        ReportClickBucket.objects.bulk_update(changed, ["clicks", "unique_clicks"], batch_size=2000)
        with connection.cursor() as db:
            db.execute(
                _TOUCH_SQL.format(touch=ReportClickTouch._meta.db_table, click=LinkClick._meta.db_table),
                [DeviceClass.BOT, low, high],
            )
    return total


# --- opt-outs --------------------------------------------------------------------------------


def refresh_opt_outs() -> int:
    """Attribute new STOPs to the marketing message (campaign or flow) before them; returns how
    many were attributed."""
    window = timedelta(hours=int(platform_config_data()["reporting"]["opt_out_window_hours"]))
    newest = OptOut.objects.aggregate(m=Max("id"))["m"] or 0
    with transaction.atomic():
        cursor = _cursor("opt_outs")
        low, high = _advance(cursor, newest)
        if high <= low:
            return 0
        rows = []
        for opt_out in OptOut.objects.filter(id__gt=low, id__lte=high, reason=OptOutReason.STOP).only(
            "id", "phone", "occurred_at"
        ):
            message = (
                OutboundMessage.objects.filter(
                    destination=opt_out.phone,
                    created_at__lte=opt_out.occurred_at,
                    created_at__gte=opt_out.occurred_at - window,
                )
                .filter(Q(batch__isnull=False) | flow_messages_q())
                .filter(charged_q())
                .order_by("-created_at", "-id")
                .values("id", "batch__campaign_id", "reference", "gateway_id", "country")
                .first()
            )
            if message is None:
                continue
            campaign_id = message["batch__campaign_id"]
            flow_id = None if campaign_id is not None else flow_of_reference(message["reference"])
            if campaign_id is None and flow_id is None:
                continue
            rows.append(
                ReportOptOut(
                    opt_out_id=opt_out.pk,
                    campaign_id=campaign_id,
                    flow_id=flow_id,
                    message_id=message["id"],
                    gateway_id=message["gateway_id"],
                    country=message["country"],
                    occurred_at=opt_out.occurred_at,
                    hour=opt_out.occurred_at.replace(minute=0, second=0, microsecond=0),
                )
            )
        ReportOptOut.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def refresh_all() -> dict[str, int]:
    """The beat task's body: every aggregate, each in its own transaction."""
    from reporting.attribution import refresh_conversions

    return {
        "batches": refresh_messages(),
        "flow_chunks": refresh_flow_messages(),
        "clicks": refresh_clicks(),
        "opt_outs": refresh_opt_outs(),
        "conversions": refresh_conversions(),
    }


def data_latency(campaign_id: int | None = None) -> dict[str, Any]:
    """How current the aggregates are: the answer every report carries."""
    cursors = {c.name: c for c in ReportCursor.objects.all()}
    states = ReportBatchState.objects.all()
    if campaign_id is not None:
        states = states.filter(campaign_id=campaign_id)
    s = states.aggregate(pending=Sum("pending"), refreshed=Max("refreshed_at"), newest=Max("newest_final_at"))
    clicks = ReportClickBucket.objects.all()
    if campaign_id is not None:
        clicks = clicks.filter(campaign_id=campaign_id)
    newest_click_hour = clicks.aggregate(m=Max("hour"))["m"]

    def at(value: Any) -> str | None:
        return value.isoformat() if value else None

    interval = REPORT_REFRESH_SECONDS
    return {
        "receipts_outstanding": int(s["pending"] or 0),
        "messages_refreshed_at": at(s["refreshed"]),
        "newest_receipt_at": at(s["newest"]),
        "newest_click_hour": at(newest_click_hour),
        "clicks_refreshed_at": at(cursors["clicks"].refreshed_at if "clicks" in cursors else None),
        "conversions_refreshed_at": at(cursors["conversions"].refreshed_at if "conversions" in cursors else None),
        "refresh_interval_seconds": interval,
        "note": (
            f"Aggregates are refreshed every {interval} s by the beat task reporting.refresh_aggregates; new rows "
            "are read one run after they appear (a transaction still open gets that long to commit), so figures "
            f"lag by up to about {2 * interval} s plus the refresh's own time."
        ),
    }


def flow_data_latency(flow_id: int) -> dict[str, Any]:
    """How current a flow's aggregates are (its messages are aggregated per id block)."""
    cursor = ReportCursor.objects.filter(name="flow_messages").first()
    chunks = ReportFlowChunk.objects.filter(
        chunk__in=ReportFlowMessageBucket.objects.filter(flow_id=flow_id).values("chunk")
    )
    pending = ReportFlowMessageBucket.objects.filter(flow_id=flow_id).exclude(state__in=FINAL_MESSAGE_STATES)
    s = chunks.aggregate(refreshed=Max("refreshed_at"), newest=Max("newest_final_at"))
    interval = REPORT_REFRESH_SECONDS

    def at(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "receipts_outstanding": int(pending.aggregate(n=Sum("messages"))["n"] or 0),
        "messages_refreshed_at": at(s["refreshed"]),
        "newest_receipt_at": at(s["newest"]),
        "flow_messages_cursor_at": at(cursor.refreshed_at if cursor else None),
        "refresh_interval_seconds": interval,
        "note": (
            f"Flow messages are aggregated every {interval} s by the beat task reporting.refresh_aggregates, per "
            f"block of {FLOW_CHUNK_IDS} message ids; new messages are read one run after they appear, and a "
            f"message that moves from queued to submitted without a receipt shows within "
            f"{int(FLOW_PENDING_RECHECK.total_seconds())} s more."
        ),
    }


def campaign_links(campaign_ids: set[int]) -> dict[int, int]:
    """campaign id -> its short link id."""
    from campaigns.models import Campaign

    return dict(
        Campaign.objects.filter(pk__in=campaign_ids, short_link__isnull=False).values_list("pk", "short_link_id")
    )
