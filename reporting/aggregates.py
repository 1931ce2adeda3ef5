"""The report aggregates, brought up to date incrementally (beat: reporting.refresh_aggregates).

Reports never scan messages. Four refreshes, each from its own high-water mark:

- messages: per send batch. A batch is re-aggregated while it has messages that are not final
  (queued, submitting, submitted, unknown) or is still sending; once every message is final the
  batch's rows stay as they are. A batch is at most ``size`` messages (1,000 by default), so a
  refresh during a 5,000 msg/s send re-reads a few recent batches, not the campaign.
- clicks: LinkClick is append-only; ids above the cursor are folded into hourly buckets and into
  per-recipient touches (human clicks only: a bot or link scanner never becomes a touch).
- opt-outs: each new STOP is attributed to the latest campaign message to that phone sent within
  ``reporting.opt_out_window_hours`` before it.
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
from django.db.models import Case, Count, DecimalField, Exists, F, Max, OuterRef, Q, Sum, Value, When
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
    """Attribute new STOPs to the campaign message before them; returns how many were attributed."""
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
                    batch__isnull=False,
                    created_at__lte=opt_out.occurred_at,
                    created_at__gte=opt_out.occurred_at - window,
                )
                .filter(charged_q())
                .order_by("-created_at", "-id")
                .values("id", "batch__campaign_id", "gateway_id", "country")
                .first()
            )
            if message is None:
                continue
            rows.append(
                ReportOptOut(
                    opt_out_id=opt_out.pk,
                    campaign_id=message["batch__campaign_id"],
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


def campaign_links(campaign_ids: set[int]) -> dict[int, int]:
    """campaign id -> its short link id."""
    from campaigns.models import Campaign

    return dict(
        Campaign.objects.filter(pk__in=campaign_ids, short_link__isnull=False).values_list("pk", "short_link_id")
    )
