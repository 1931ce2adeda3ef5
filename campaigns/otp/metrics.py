"""The OTP abuse defence for the operators' metrics (smsplatform.operations.metrics): refusals in
the last hour by what refused them, and the active SMS-pumping blocks by reason."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from campaigns.otp.abuse import rate_limit_refusals
from campaigns.otp.models import PumpingBlock


def otp_abuse_state() -> Iterator[GaugeMetricFamily]:
    refused = GaugeMetricFamily(
        "sms_otp_refusals_last_hour",
        "OTP sends refused this hour, by what refused them (phone, client_ip, token, country, blocked, denied)",
        labels=["scope"],
    )
    for scope, n in rate_limit_refusals(hours=1).items():
        refused.add_metric([scope], n)
    yield refused
    blocks = GaugeMetricFamily("sms_otp_pumping_blocks_active", "Active SMS-pumping blocks", labels=["reason"])
    rows = PumpingBlock.objects.filter(lifted_at__isnull=True).values("reason").annotate(n=Count("id")).order_by()
    for row in rows:
        blocks.add_metric([row["reason"]], row["n"])
    yield blocks
