"""Celery tasks of the OTP app: thin, named (STYLE 9)."""

from __future__ import annotations

from celery import shared_task

from campaigns.otp.abuse import otp_rate_counters_prune


@shared_task(name="otp.prune_rate_counters")
def prune_rate_counters() -> int:
    """Beat, hourly: delete the abuse counters' windows that no longer matter (one DELETE)."""
    return otp_rate_counters_prune()
