"""Retries: a stored preview of which failed messages may be resent (the resend from it is
``campaigns.services.resend``).

Eligible: failed or expired after a temporary problem (retries exhausted, undelivered
receipt, validity expired). Never: delivered, pending, maybe-delivered (unknown), hard
failures, invalid numbers, opted-out phones, withdrawn messages, messages already
resent, contacts now over a frequency cap. ``failed_messages.resend`` takes only the
preview id; it re-checks every message at execution and can only narrow the preview.

The preview is set-based like the dispatch: the rules are one SQL ``CASE``
(``campaigns.resend_rules``), their only home, evaluated in the database over the failed
messages in one query; the preview tallies the rows it gets back (it stores their ids anyway).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from campaigns.access import campaign_access
from campaigns.errors import CampaignErrorCode
from campaigns.models import SendBatch
from campaigns.resend_rules import (
    ELIGIBLE,
    PREVIEW_KIND,
    RESEND,
    quotes_for_countries,
    resend_reason,
)
from gateways.message_counts import state_counts
from gateways.models import MessageState, OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.previews import preview_store

MAX_PREVIEW = 100_000
FAILED = (MessageState.FAILED, MessageState.EXPIRED)


def retry_preview(*, actor: Actor, campaign_id: Any, batch_id: int | None = None) -> dict[str, Any]:
    if not actor.has_perm(RESEND):
        raise permission_denied(RESEND)
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    qs = OutboundMessage.objects.filter(batch__campaign=campaign, state__in=FAILED)
    if batch_id is not None:
        if not SendBatch.objects.filter(pk=batch_id, campaign=campaign).exists():
            raise ApplicationError(
                ErrorCode.NOT_FOUND,
                f"Batch {batch_id} is not a batch of campaign {campaign.pk}.",
                field="batch_id",
                hint="See sms_marketing.send_batches.list.",
            )
        qs = qs.filter(batch_id=batch_id)
    # The counters the database keeps per batch (gateways.message_counts), not a COUNT of messages.
    batch_ids = [batch_id] if batch_id is not None else list(campaign.batches.values_list("pk", flat=True))
    counted = state_counts(batch_ids)
    failed = sum(counted[s] for s in FAILED)
    if failed > MAX_PREVIEW:
        raise ApplicationError(
            CampaignErrorCode.TOO_MANY_FAILURES,
            f"More than {MAX_PREVIEW} failed messages; preview one batch at a time.",
            field="batch_id",
            hint="Pass batch_id (sms_marketing.send_batches.list).",
        )
    # The resend's own rules (one SQL CASE) classify every failed message in one query: the ids
    # come back anyway (the preview stores them), with each one's reason, country and segments, so
    # the rule (and its frequency-cap subqueries over the send history) runs once, not per figure.
    quotes = quotes_for_countries(campaign, set(qs.values_list("country", flat=True).distinct().order_by()))
    rows = qs.annotate(m_reason=resend_reason(quotes)).values_list("pk", "m_reason", "country", "segments")
    by_reason: dict[str, int] = {}
    eligible: list[int] = []
    chosen: dict[str, list[int]] = {}  # country -> [messages, segments]
    for pk, reason, country, segments in rows.order_by("pk"):
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if reason == ELIGIBLE:
            eligible.append(pk)
            entry = chosen.setdefault(country, [0, 0])
            entry[0] += 1
            entry[1] += segments
    excluded = {reason: n for reason, n in sorted(by_reason.items()) if reason != ELIGIBLE}
    per_country: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = {}
    for country, (n, n_segments) in sorted(chosen.items()):
        quote = quotes[country]
        cost = (quote.price_per_segment * n_segments).quantize(Decimal("0.01"))
        per_country[country] = {
            "country": country,
            "messages": n,
            "segments": n_segments,
            "gateway": quote.gateway_code,
            "price_per_segment": str(quote.price_per_segment),
            "currency": quote.currency,
            "estimated_cost": str(cost),
        }
        totals[quote.currency] = totals.get(quote.currency, Decimal(0)) + cost
    if batch_id is not None:
        counted = state_counts(campaign.batches.values_list("pk", flat=True))
    delivered = counted[MessageState.DELIVERED]
    final = delivered + sum(counted[s] for s in FAILED)
    rate = (delivered / final) if final else None
    with transaction.atomic():
        preview = preview_store(
            actor=actor,
            kind=PREVIEW_KIND,
            payload={"campaign_id": campaign.pk, "batch_id": batch_id, "message_ids": eligible},
            result={"eligible": len(eligible), "excluded": excluded, "estimated_cost": totals},
        )
    return {
        "retry_preview_id": str(preview.pk),
        "expires_at": preview.expires_at.isoformat(),
        "campaign_id": campaign.pk,
        "batch_id": batch_id,
        "failed": failed,
        "eligible": len(eligible),
        "excluded": excluded,
        "by_country": sorted(per_country.values(), key=lambda r: r["country"]),
        "estimated_cost": {k: str(v) for k, v in totals.items()},
        "expected": {
            "campaign_delivery_rate": round(rate, 4) if rate is not None else None,
            "expected_delivered": round(len(eligible) * rate) if rate is not None else None,
            "basis": "this campaign's delivered / (delivered + failed) so far",
        },
        "note": (
            "Excluded: delivered, pending, maybe-delivered, hard failures, invalid numbers, opt-outs, withdrawn, "
            "already resent, frequency-capped. Resend with sms_marketing.failed_messages.resend and this id only; "
            "every message is checked again then."
        ),
    }
