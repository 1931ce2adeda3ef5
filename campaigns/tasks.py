"""Celery tasks of the campaigns app: thin, named, taking ids (STYLE 9)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from campaigns.dispatch import batches_advance, campaign_dispatch


@shared_task(name="campaigns.dispatch_campaign")
def dispatch_campaign(campaign_id: int, version: int) -> dict[str, Any]:
    """Run by the campaign's one-off beat entry, or by send_approved."""
    return campaign_dispatch(campaign_id=campaign_id, version=version)


@shared_task(name="campaigns.advance_batches")
def advance_batches() -> dict[str, int]:
    """Every few seconds: start due batches, submit for HTTP gateways, roll up completion."""
    return batches_advance()
