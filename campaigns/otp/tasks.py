"""Celery tasks of the OTP app."""

from __future__ import annotations

from celery import shared_task

from campaigns.otp.scrub import otp_bodies_scrub


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
