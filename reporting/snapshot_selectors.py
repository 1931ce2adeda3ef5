"""Reads of performance snapshots, for reports that show them beside computed figures.

A snapshot never changes a computed figure: reports call ``snapshots_for`` and put each snapshot
next to their own numbers with ``snapshot_differences``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from reporting.models import SNAPSHOT_AMOUNTS, SNAPSHOT_COUNTS, SNAPSHOT_METRICS, PerformanceSnapshot


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def snapshot_dict(snapshot: PerformanceSnapshot) -> dict[str, Any]:
    """A snapshot as the tools, the REST API and reports show it (no file path, no e-mail)."""
    metrics: dict[str, Any] = {name: getattr(snapshot, name) for name in SNAPSHOT_COUNTS}
    metrics.update({name: _amount(getattr(snapshot, name)) for name in SNAPSHOT_AMOUNTS})
    return {
        "snapshot_id": snapshot.pk,
        "key": snapshot.key,
        "version": snapshot.version,
        "is_current": snapshot.is_current,
        "subject": {"kind": snapshot.subject_kind, "campaign_id": snapshot.campaign_id, "flow_id": snapshot.flow_id},
        "source": {"kind": snapshot.source_kind, "name": snapshot.source_name},
        "date_from": snapshot.date_from.isoformat(),
        "date_to": snapshot.date_to.isoformat(),
        "gateway": snapshot.gateway_code or None,
        "attribution": snapshot.attribution,
        "metrics": metrics,
        "currency": snapshot.currency,
        "gateway_performance": snapshot.gateway_performance,
        "evidence": {
            "kind": snapshot.evidence_kind,
            "name": snapshot.evidence_name or None,
            "size": snapshot.evidence_size,
            "url": snapshot.evidence_url or None,
            "sha256": snapshot.evidence_sha256,
            # A file's hash is computed here; a link's is what its recorder stated (never fetched).
            "hash_verified": snapshot.evidence_hash_verified,
        },
        "note": snapshot.note,
        "recorded_by": snapshot.recorded_by.username,
        "recorded_at": snapshot.recorded_at.isoformat(),
        "channel": snapshot.actor_channel,
        "action_request_id": snapshot.action_request_id,
        "superseded_at": snapshot.superseded_at.isoformat() if snapshot.superseded_at else None,
    }


def snapshots_query(
    *,
    campaign_id: int | None = None,
    flow_id: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    include_superseded: bool = False,
) -> QuerySet[PerformanceSnapshot]:
    qs = PerformanceSnapshot.objects.select_related("recorded_by")
    if not include_superseded:
        qs = qs.filter(is_current=True)
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    if flow_id is not None:
        qs = qs.filter(flow_id=flow_id)
    # Overlapping the asked range: a snapshot of 1-31 May belongs beside a report of 10-20 May.
    if date_from is not None:
        qs = qs.filter(date_to__gte=date_from)
    if date_to is not None:
        qs = qs.filter(date_from__lte=date_to)
    return qs.order_by("date_from", "source_kind", "source_name", "gateway_code", "-version")


def snapshots_for(
    *,
    campaign_id: int | None = None,
    flow_id: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[dict[str, Any]]:
    """The current snapshots of a campaign or flow overlapping the date range. The caller has
    already checked that its actor may see the subject (campaign_access)."""
    if campaign_id is None and flow_id is None:
        return []
    return [
        snapshot_dict(s)
        for s in snapshots_query(campaign_id=campaign_id, flow_id=flow_id, date_from=date_from, date_to=date_to)
    ]


def snapshot_versions(key: str) -> list[dict[str, Any]]:
    """Every version recorded under one key, newest first (nothing is ever removed)."""
    return [
        snapshot_dict(s)
        for s in PerformanceSnapshot.objects.select_related("recorded_by").filter(key=key).order_by("-version")
    ]


def _number(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _out(value: Decimal, integral: bool) -> int | str:
    return int(value) if integral else f"{value:.2f}"


def snapshot_differences(snapshot: dict[str, Any], computed: dict[str, Any]) -> dict[str, Any]:
    """Per metric: the snapshot's value, the computed value and the difference (snapshot - computed),
    plus the relative difference against the computed figure. ``snapshot`` is a ``snapshots_for``
    row (or its ``metrics``); ``computed`` maps metric names to the report's own figures (numbers
    or decimal strings). A metric missing on either side has a null difference: nothing is guessed."""
    values = snapshot.get("metrics", snapshot)
    out: dict[str, Any] = {}
    for name in SNAPSHOT_METRICS:
        if name not in values and name not in computed:
            continue
        integral = name in SNAPSHOT_COUNTS
        mine, theirs = _number(values.get(name)), _number(computed.get(name))
        row: dict[str, Any] = {
            "snapshot": None if mine is None else _out(mine, integral),
            "computed": None if theirs is None else _out(theirs, integral),
            "difference": None,
            "relative": None,
        }
        if mine is not None and theirs is not None:
            row["difference"] = _out(mine - theirs, integral)
            if theirs != 0:
                row["relative"] = f"{(mine - theirs) / theirs:.4f}"
        out[name] = row
    return out
