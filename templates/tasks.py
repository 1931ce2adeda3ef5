"""Celery tasks of the templates app."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from templates.models import ClickSpoolSegment
from templates.short_links.clicks import drain_spool

# A ledger row outlives its segment file only when a drain died between deleting the file and
# the row; after a day no drain can still be holding that file.
LEDGER_KEEP = timedelta(days=1)


@shared_task(name="templates.drain_click_spool")
def drain_click_spool() -> int:
    """Write click spool segments whose web process died (the web workers write their own,
    and each other's, as they go: this is the backstop for a machine whose workers are gone);
    returns the clicks written. Runs where the web tier's SMS_CLICK_SPOOL_DIR is."""
    written = drain_spool()
    ClickSpoolSegment.objects.filter(written_at__lt=timezone.now() - LEDGER_KEEP).delete()
    return written
