"""Celery tasks of the OTP app: thin, named (STYLE 9)."""

from __future__ import annotations

from celery import shared_task

from campaigns.otp.abuse import otp_rate_counters_prune
from campaigns.otp.scrub import otp_bodies_scrub


@shared_task(name="otp.prune_rate_counters")
def prune_rate_counters() -> int:
    """Beat, hourly: delete the abuse counters' windows that no longer matter (one DELETE)."""
    return otp_rate_counters_prune()


@shared_task(name="otp.scrub_codes")
def scrub_codes() -> int:
    """Beat: rewrite the bodies of OTP messages past the queue with their code masked."""
    total = 0
    for _batch in range(20):  # bounded: the next beat run carries on
        done = otp_bodies_scrub()
        total += done
        if done == 0:
            break
    return total
