"""Progress figures: messages per state of a campaign or of the batches on a page, each one
grouped query (no per-row counting)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count

from gateways.models import MessageState, OutboundMessage


def _progress(key: str, ids: Iterable[int]) -> dict[int, dict[str, int]]:
    progress: dict[int, dict[str, int]] = {}
    for group, msg_state, n in (
        OutboundMessage.objects.filter(**{f"{key}__in": list(ids)})
        .values_list(key, "state")
        .annotate(n=Count("id"))
        .order_by()
    ):
        progress.setdefault(group, dict.fromkeys(MessageState.values, 0))[msg_state] = n
    return progress


def campaigns_progress(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Messages per state for each campaign that has any, in one grouped query (a list page)."""
    return _progress("batch__campaign_id", campaign_ids)


def send_batches_progress(batch_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Messages per state for each batch that has any, in one grouped query (a list page)."""
    return _progress("batch_id", batch_ids)


def campaign_progress(campaign_id: int) -> dict[str, int]:
    rows = (
        OutboundMessage.objects.filter(batch__campaign_id=campaign_id)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    out = dict.fromkeys(MessageState.values, 0)
    for state, n in rows:
        out[state] = n
    out["total"] = sum(out.values())
    return out
