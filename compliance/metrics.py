"""Approvals waiting, for the operators' metrics (smsplatform.operations.metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from compliance.models import ActionRequest, RequestState


def approvals_state() -> Iterator[GaugeMetricFamily]:
    pending = GaugeMetricFamily("sms_approvals_pending", "Action requests waiting for a decision", labels=["action"])
    oldest = GaugeMetricFamily(
        "sms_approvals_oldest_age_seconds", "Age of the oldest waiting action request", labels=["action"]
    )
    now = timezone.now()
    rows = (
        ActionRequest.objects.filter(state=RequestState.PENDING)
        .values("action")
        .annotate(n=Count("id"), first=Min("created_at"))
        .order_by()
    )
    for row in rows:
        pending.add_metric([row["action"]], row["n"])
        oldest.add_metric([row["action"]], (now - row["first"]).total_seconds())
    yield pending
    yield oldest
