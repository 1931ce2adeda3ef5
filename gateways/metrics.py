"""The gateways' state for the operators' metrics (smsplatform.operations.metrics): queue depth
per gateway and lane, bind state, receipt lag."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from gateways.health import receipt_lag_check
from gateways.models import PRIORITY_PURPOSES, Gateway, MessageState, OutboundMessage, Provider
from gateways.selectors import bind_status

BIND_STATES = ("bound", "down", "no_worker")


def gateways_state() -> Iterator[GaugeMetricFamily]:
    codes = dict(Gateway.objects.values_list("id", "code"))
    depth = GaugeMetricFamily(
        "sms_queue_depth", "Messages waiting to be sent (or in submission), by gateway, lane and state",
        labels=["gateway", "lane", "state"],
    )  # fmt: skip
    rows = (
        OutboundMessage.objects.filter(state__in=[MessageState.QUEUED, MessageState.SUBMITTING, MessageState.UNKNOWN])
        .values("gateway_id", "purpose", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    totals: dict[tuple[str, str, str], int] = {}
    for row in rows:
        lane = "transactional" if row["purpose"] in PRIORITY_PURPOSES else "marketing"
        key = (codes.get(row["gateway_id"], str(row["gateway_id"])), lane, row["state"])
        totals[key] = totals.get(key, 0) + row["n"]
    for key, n in sorted(totals.items()):
        depth.add_metric(list(key), n)
    yield depth

    bind = GaugeMetricFamily(
        "sms_bind_state", "1 for the bind state an SMPP gateway is in", labels=["gateway", "state"]
    )
    for gateway in Gateway.objects.filter(enabled=True, provider=Provider.SMPP).prefetch_related("bind_workers"):
        state = (bind_status(gateway, gateway.bind_workers.all()) or {}).get("state")
        for candidate in BIND_STATES:
            bind.add_metric([gateway.code, candidate], 1.0 if state == candidate else 0.0)
    yield bind

    lag = GaugeMetricFamily(
        "sms_receipt_lag_seconds", "Age of the oldest message still waiting for its receipt", labels=["gateway"]
    )
    outstanding = GaugeMetricFamily(
        "sms_receipts_outstanding", "Submitted messages without a final receipt (capped)", labels=["gateway"]
    )
    for code, facts in receipt_lag_check().facts.get("gateways", {}).items():
        lag.add_metric([code], facts["oldest_seconds"])
        outstanding.add_metric([code], facts["outstanding"])
    yield lag
    yield outstanding
