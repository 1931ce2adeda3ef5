"""Retention (PDPO, data protection principle 2: personal data kept no longer than its purpose
needs). Each app registers what it keeps and how to purge it; a beat task runs every purge in
small batches, each its own short transaction, so no lock is held long and a send running beside
it is not slowed. Aggregates (reports, counters) are not touched, and the audit log is never
purged by this: it is the record of who did what and stays append-only.

Periods come from settings (``SMS_RETENTION_DAYS``; environment ``SMS_RETENTION_<KIND>_DAYS``);
0 keeps a kind for ever."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

# purge(cutoff, batch_size) -> rows purged in one batch (0 when nothing older is left)
Purge = Callable[[datetime, int], int]


@dataclass(frozen=True)
class RetentionKind:
    name: str
    description: str
    purge: Purge


_KINDS: dict[str, RetentionKind] = {}


def retention_register(name: str, description: str, purge: Purge) -> None:
    """Register a kind of kept personal data (apps call this from ``ready()``)."""
    _KINDS[name] = RetentionKind(name, description, purge)


def retention_kinds() -> list[RetentionKind]:
    return [_KINDS[k] for k in sorted(_KINDS)]


def retention_days(name: str) -> int:
    return int(settings.SMS_RETENTION_DAYS.get(name, 0))


def retention_purge(
    *, now: datetime | None = None, batch_size: int | None = None, time_budget: float | None = None
) -> dict[str, Any]:
    """Purge every kind past its period, batch by batch, until done or the time budget is spent
    (the next run continues). Answers what was purged, per kind; audited once per run."""
    from smsplatform.kernel.actor import Actor
    from smsplatform.kernel.audit import audit_record

    now = now or timezone.now()
    size = batch_size or settings.SMS_RETENTION_BATCH_SIZE
    budget = settings.SMS_RETENTION_TIME_BUDGET_SECONDS if time_budget is None else time_budget
    started = time.monotonic()
    purged: dict[str, int] = {}
    finished: dict[str, bool] = {}
    for kind in retention_kinds():
        days = retention_days(kind.name)
        if days <= 0:
            continue
        cutoff = now - timedelta(days=days)
        total, done = 0, False
        while time.monotonic() - started < budget:
            count = kind.purge(cutoff, size)
            total += count
            if count < size:
                done = True
                break
        purged[kind.name], finished[kind.name] = total, done
    result = {"purged": purged, "finished": finished, "seconds": round(time.monotonic() - started, 3)}
    if any(purged.values()):
        audit_record(
            actor=Actor.system("smsplatform.retention_purge"),
            action="retention.purge",
            object_type="retention",
            object_id="",
            after={"purged": purged, "periods_days": {k: retention_days(k) for k in purged}},
        )
        logger.info("retention purge: %s", purged)
    return result


def id_window_purge(
    *,
    model: Any,
    time_field: str,
    cutoff: datetime,
    size: int,
    cursor: str,
    update: dict[str, Any] | None = None,
) -> int:
    """One batch: the next ``size`` rows after the kind's cursor (primary-key order, so a batch
    is an index range, never a scan of what earlier runs already purged); those older than
    ``cutoff`` are deleted, or updated with ``update`` (a body blanked,
    the row kept for its counts). The cursor stops before the first row still inside its
    period: ids grow with time, so what follows it is newer. Answers the rows handled; fewer than
    ``size`` means nothing older is left for now."""
    from django.db import transaction

    from smsplatform.models import RetentionCursor

    with transaction.atomic():
        mark, _ = RetentionCursor.objects.select_for_update().get_or_create(name=cursor)
        window = list(model.objects.filter(pk__gt=mark.last_id).order_by("pk").values_list("pk", time_field)[:size])
        expired: list[int] = []
        for pk, at in window:
            if at is not None and at >= cutoff:
                break
            expired.append(pk)
        if not expired:
            return 0
        rows = model.objects.filter(pk__in=expired)
        if update is None:
            rows.delete()
        else:
            rows.update(**update)
        mark.last_id = expired[-1]
        mark.save(update_fields=["last_id"])
    return len(expired) if len(expired) == len(window) else min(len(expired), size - 1)
