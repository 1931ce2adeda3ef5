"""Progress figures: messages per state of a campaign or of the batches on a page, read from the
counters the database keeps per batch (``gateways.message_counts``): a few counter rows per
batch, whatever the number of messages (issue 19), the same figures as a COUNT over them."""

from __future__ import annotations

from collections.abc import Iterable

from campaigns.models import SendBatch
from gateways.message_counts import batch_message_counts, state_counts
from gateways.models import MessageState


def campaigns_progress(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Messages per state for each campaign that has any (a list page): two small queries."""
    batches = dict(SendBatch.objects.filter(campaign_id__in=list(campaign_ids)).values_list("pk", "campaign_id"))
    progress: dict[int, dict[str, int]] = {}
    for batch_id, figures in batch_message_counts(batches).items():
        states = progress.setdefault(batches[batch_id], dict.fromkeys(MessageState.values, 0))
        for state, n in figures.states.items():
            states[state] += n
    return progress


def send_batches_progress(batch_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Messages per state for each batch that has any (a list page)."""
    return {batch_id: figures.states for batch_id, figures in batch_message_counts(batch_ids).items()}


def campaign_progress(campaign_id: int) -> dict[str, int]:
    out = state_counts(SendBatch.objects.filter(campaign_id=campaign_id).values_list("pk", flat=True))
    out["total"] = sum(out.values())
    return out
