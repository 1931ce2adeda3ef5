"""The alert beat: watch recent campaigns against the thresholds of the ``alerts`` configuration and
notify the people responsible, once per condition per campaign per window.

Figures come from grouped SQL aggregates (messages per state and their cost from
``gateways.OutboundMessage``; opt-outs recorded after the dispatch by people the campaign messaged,
from ``compliance.OptOut``), one query each for every watched campaign together.

Once per window is a unique constraint on (kind, campaign, window start) of ``AlertFiring``: the row
is inserted in the transaction that writes the notification, so two beats (or a beat and a
re-delivered task) racing on the same condition leave one row and one notification; the loser's
insert fails and it moves on.

Poor ROI needs attributed revenue, which the conversion attribution of the reporting app computes;
it is read through ``roi_source_register`` (a hook the attribution code registers). Until a source is
registered the ROI condition is not evaluated, and the beat's result says so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from campaigns.models import Campaign
from gateways.models import MessageState, OutboundMessage
from reporting.models import AlertFiring, NotificationKind, NotificationOrigin
from reporting.notifications import Subject, notification_deliver_rows, notification_dict, responsible_users
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record

TASK_NAME = "reporting.raise_alerts"

# {campaign id: {"revenue": Decimal, "cost": Decimal, "currency": str}} for the campaigns asked.
RoiSource = Callable[[list[int]], dict[int, dict[str, Any]]]
_roi_source: RoiSource | None = None


def roi_source_register(source: RoiSource | None) -> None:
    """Where attributed revenue per campaign comes from (conversion attribution registers it)."""
    global _roi_source
    _roi_source = source


def window_start(now: datetime, hours: int) -> datetime:
    """The start of the fixed window holding ``now`` (windows are aligned on the epoch, in UTC)."""
    size = hours * 3600
    stamp = int(now.timestamp())
    return datetime.fromtimestamp(stamp - stamp % size, tz=UTC)


def campaign_figures(campaign_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per campaign: messages, delivered, failed (failed + expired), final, cost per currency, and
    opt-outs after the dispatch by people it messaged. Three grouped queries in all."""
    out: dict[int, dict[str, Any]] = {
        cid: {"messages": 0, "delivered": 0, "failed": 0, "final": 0, "cost": {}, "opt_outs": 0} for cid in campaign_ids
    }
    failed_states = [MessageState.FAILED, MessageState.EXPIRED]
    rows = (
        OutboundMessage.objects.filter(batch__campaign_id__in=campaign_ids)
        .values("batch__campaign_id")
        .annotate(
            messages=Count("id"),
            delivered=Count("id", filter=Q(state=MessageState.DELIVERED)),
            failed=Count("id", filter=Q(state__in=failed_states)),
        )
        .order_by()
    )
    for row in rows:
        figures = out[row["batch__campaign_id"]]
        figures.update(messages=row["messages"], delivered=row["delivered"], failed=row["failed"])
        figures["final"] = row["delivered"] + row["failed"]
    for cid, currency, cost in (
        OutboundMessage.objects.filter(batch__campaign_id__in=campaign_ids)
        .values_list("batch__campaign_id", "currency")
        .annotate(total=Sum("cost"))
        .order_by()
    ):
        out[cid]["cost"][currency] = cost or Decimal(0)
    # An opt-out counts for a campaign when the person it messaged opted out after its dispatch.
    for cid, n in (
        OutboundMessage.objects.filter(
            batch__campaign_id__in=campaign_ids,
            contact__opt_outs__occurred_at__gte=F("batch__campaign__dispatched_at"),
        )
        .values_list("batch__campaign_id")
        .annotate(n=Count("contact_id", distinct=True))
        .order_by()
    ):
        out[cid]["opt_outs"] = n
    return out


def _rate(part: int, whole: int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")) if whole else Decimal(0)


def conditions(
    campaign: Campaign, figures: dict[str, Any], roi: dict[str, Any] | None, cfg: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    """The alert conditions a campaign meets: (kind, a one-line summary, the figures behind it)."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    minimum = int(cfg["min_messages"])
    estimate = {
        k: Decimal(str(v)) for k, v in ((campaign.estimate or {}).get("cost") or {}).items() if v not in (None, "")
    }
    factor = Decimal(str(cfg["cost_anomaly_factor"]))
    for currency, actual in sorted(figures["cost"].items()):
        expected = estimate.get(currency)
        if expected and expected > 0 and actual > expected * factor:
            found.append(
                (
                    NotificationKind.COST_ANOMALY,
                    f"cost {actual:.2f} {currency} is {actual / expected:.2f}x the estimate "
                    f"of {expected:.2f} {currency}",
                    {
                        "currency": currency,
                        "actual": f"{actual:.2f}",
                        "estimate": f"{expected:.2f}",
                        "factor": str(factor),
                    },
                )
            )
            break
    if figures["delivered"] >= minimum:
        rate = _rate(figures["opt_outs"], figures["delivered"])
        if rate > Decimal(str(cfg["optout_spike_rate"])):
            found.append(
                (
                    NotificationKind.OPTOUT_SPIKE,
                    f"{figures['opt_outs']} opt-outs after {figures['delivered']} delivered ({rate:.2%})",
                    {"opt_outs": figures["opt_outs"], "delivered": figures["delivered"], "rate": str(rate)},
                )
            )
    if figures["final"] >= minimum:
        rate = _rate(figures["failed"], figures["final"])
        if rate > Decimal(str(cfg["delivery_failure_rate"])):
            found.append(
                (
                    NotificationKind.DELIVERY_FAILURES,
                    f"{figures['failed']} of {figures['final']} final messages failed or expired ({rate:.2%})",
                    {"failed": figures["failed"], "final": figures["final"], "rate": str(rate)},
                )
            )
    if roi is not None:
        cost, revenue = Decimal(str(roi.get("cost") or 0)), Decimal(str(roi.get("revenue") or 0))
        if cost > 0 and figures["final"] >= minimum:
            ratio = (revenue / cost).quantize(Decimal("0.01"))
            if ratio < Decimal(str(cfg["poor_roi_threshold"])):
                currency = roi.get("currency", "")
                found.append(
                    (
                        NotificationKind.POOR_ROI,
                        f"attributed revenue {revenue:.2f} {currency} on cost {cost:.2f} {currency} (ROI {ratio})",
                        {"revenue": f"{revenue:.2f}", "cost": f"{cost:.2f}", "ratio": str(ratio)},
                    )
                )
    return found


def _fire(
    *, actor: Actor, campaign: Campaign, kind: str, summary: str, figures: dict[str, Any], start: datetime, bulk: int
) -> dict[str, Any] | None:
    subject = Subject("campaign", campaign=campaign)
    with transaction.atomic(durable=True):
        try:
            # The once-per-window guarantee: the constraint, inside this transaction, decides.
            with transaction.atomic():
                firing = AlertFiring.objects.create(kind=kind, campaign=campaign, window_start=start, figures=figures)
        except IntegrityError:
            return None
        users = responsible_users(subject, kind)
        if len(users) > bulk:
            # The beat never sends a bulk notification: the owner and approvers only.
            users = responsible_users(subject, kind, direct_only=True)
        label = NotificationKind(kind).label
        notification = notification_deliver_rows(
            actor=actor,
            kind=kind,
            subject=subject,
            title=f"{label}: {campaign.name}"[:200],
            body=(
                f"{label} on campaign #{campaign.pk} {campaign.name}: {summary}.\n"
                f"Window from {start:%Y-%m-%d %H:%M %Z}. Check the campaign's report and "
                "sms_marketing.delivery_status.get before acting."
            ),
            user_ids=sorted(users),
            external=[],
            origin=NotificationOrigin.ALERT,
        )
        firing.notification = notification
        firing.save(update_fields=["notification"])
        out = notification_dict(notification)
        audit_record(
            actor=actor,
            action="review_notification.alert",
            object_type="review_notification",
            object_id=notification.pk,
            after={**out, "figures": figures, "window_start": start.isoformat()},
        )
        return out


def alerts_raise(*, now: datetime | None = None) -> dict[str, Any]:
    """Evaluate every watched campaign and raise what is due. Returns what was sent and skipped."""
    cfg = platform_config_data()["alerts"]
    if not cfg["enabled"]:
        return {"enabled": False, "sent": [], "campaigns": 0}
    now = now or timezone.now()
    start = window_start(now, int(cfg["window_hours"]))
    campaigns = list(
        Campaign.objects.filter(dispatched_at__gte=now - timedelta(days=int(cfg["lookback_days"])))
        .select_related("owner")
        .order_by("pk")
    )
    ids = [c.pk for c in campaigns]
    figures = campaign_figures(ids) if ids else {}
    roi = _roi_source(ids) if (_roi_source is not None and ids) else {}
    actor = Actor.system(TASK_NAME)
    sent: list[dict[str, Any]] = []
    repeated = 0
    for campaign in campaigns:
        for kind, summary, facts in conditions(campaign, figures[campaign.pk], roi.get(campaign.pk), cfg):
            done = _fire(
                actor=actor,
                campaign=campaign,
                kind=kind,
                summary=summary,
                figures=facts,
                start=start,
                bulk=int(cfg["bulk_recipients"]),
            )
            if done is None:
                repeated += 1
            else:
                sent.append(done)
    return {
        "enabled": True,
        "window_start": start.isoformat(),
        "campaigns": len(campaigns),
        "sent": sent,
        "already_sent_this_window": repeated,
        "roi_evaluated": _roi_source is not None,
    }
