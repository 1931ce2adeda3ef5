"""Retries: a stored preview of which failed messages may be resent, and the resend from it.

Eligible: failed or expired after a temporary problem (retries exhausted, undelivered
receipt, validity expired). Never: delivered, pending, maybe-delivered (unknown), hard
failures, invalid numbers, opted-out phones, withdrawn messages, messages already
resent, contacts now over a frequency cap. ``failed_messages.resend`` takes only the
preview id; it re-checks every message at execution and can only narrow the preview.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from campaigns.selectors import _campaign, resend_eligibility
from compliance.governance import GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from contacts.models import OptOut, OptOutReason
from gateways.models import Gateway, MessagePurpose, MessageState, OutboundMessage
from gateways.selectors import segment_prices
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.previews import preview_consume, preview_store
from smsplatform.models import Preview

RESEND = "campaigns.resend_messages"
PREVIEW_KIND = "failed_messages.retry"
MAX_PREVIEW = 100_000
FAILED = (MessageState.FAILED, MessageState.EXPIRED)


def eligibility_context(messages: Sequence[OutboundMessage]) -> Callable[[OutboundMessage], dict[str, Any]]:
    """Everything resend_eligibility needs for these messages, in a few set-based queries."""
    from compliance.frequency import frequency_capped_destinations

    phones = {m.destination for m in messages}
    suppressed: dict[str, str] = {}
    for phone, reason in OptOut.objects.filter(phone__in=phones, lifted_at__isnull=True).values_list("phone", "reason"):
        if suppressed.get(phone) != OptOutReason.INVALID:
            suppressed[phone] = "invalid" if reason == OptOutReason.INVALID else str(reason)
    capped: set[str] = set()
    for qs in frequency_capped_destinations(purpose=MessagePurpose.MARKETING).values():
        capped |= set(qs.filter(destination__in=phones).values_list("destination", flat=True))
    resent = set(
        OutboundMessage.objects.filter(resend_of__in=[m.pk for m in messages]).values_list("resend_of_id", flat=True)
    )

    def context(m: OutboundMessage) -> dict[str, Any]:
        return {
            "now_suppressed": suppressed.get(m.destination),
            "capped": m.destination in capped,
            "resent": m.pk in resent,
        }

    return context


def _classify(messages: Sequence[OutboundMessage]) -> tuple[list[OutboundMessage], dict[str, int]]:
    context = eligibility_context(messages)
    eligible: list[OutboundMessage] = []
    excluded: dict[str, int] = {}
    for m in messages:
        verdict = resend_eligibility(m, **context(m))
        if verdict["eligible"]:
            eligible.append(m)
        else:
            excluded[verdict["reason"]] = excluded.get(verdict["reason"], 0) + 1
    return eligible, excluded


def _quotes(campaign: Campaign, countries: set[str]) -> dict[str, Any]:
    return segment_prices(countries=sorted(countries), gateway_code=campaign.gateway.code if campaign.gateway else None)


def _costing(campaign: Campaign, eligible: Sequence[OutboundMessage]) -> tuple[dict[str, Any], list[str]]:
    quotes = _quotes(campaign, {m.country for m in eligible})
    per_country: dict[str, dict[str, Any]] = {}
    uncovered: list[str] = []
    for m in eligible:
        quote = quotes.get(m.country)
        if quote is None:
            uncovered.append(m.country)
            continue
        row = per_country.setdefault(
            m.country,
            {
                "country": m.country,
                "messages": 0,
                "segments": 0,
                "gateway": quote.gateway_code,
                "price_per_segment": str(quote.price_per_segment),
                "currency": quote.currency,
                "estimated_cost": Decimal(0),
            },
        )
        row["messages"] += 1
        row["segments"] += m.segments
        row["estimated_cost"] += quote.price_per_segment * m.segments
    for row in per_country.values():
        row["estimated_cost"] = str(row["estimated_cost"].quantize(Decimal("0.01")))
    return per_country, sorted(set(uncovered))


def retry_preview(*, actor: Actor, campaign_id: Any, batch_id: int | None = None) -> dict[str, Any]:
    if not actor.has_perm(RESEND):
        raise permission_denied(RESEND)
    campaign = _campaign(actor, campaign_id)
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
    failed = list(qs.order_by("pk")[: MAX_PREVIEW + 1])
    if len(failed) > MAX_PREVIEW:
        raise ApplicationError(
            "too_many_failures",
            f"More than {MAX_PREVIEW} failed messages; preview one batch at a time.",
            field="batch_id",
            hint="Pass batch_id (sms_marketing.send_batches.list).",
        )
    eligible, excluded = _classify(failed)
    per_country, uncovered = _costing(campaign, eligible)
    if uncovered:
        excluded["country_not_covered"] = sum(1 for m in eligible if m.country in uncovered)
        eligible = [m for m in eligible if m.country not in uncovered]
    totals: dict[str, Decimal] = {}
    for row in per_country.values():
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["estimated_cost"])
    delivered = OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.DELIVERED).count()
    final = OutboundMessage.objects.filter(
        batch__campaign=campaign, state__in=[*FAILED, MessageState.DELIVERED]
    ).count()
    rate = (delivered / final) if final else None
    with transaction.atomic():
        preview = preview_store(
            actor=actor,
            kind=PREVIEW_KIND,
            payload={"campaign_id": campaign.pk, "batch_id": batch_id, "message_ids": [m.pk for m in eligible]},
            result={"eligible": len(eligible), "excluded": excluded, "estimated_cost": totals},
        )
    return {
        "retry_preview_id": str(preview.pk),
        "expires_at": preview.expires_at.isoformat(),
        "campaign_id": campaign.pk,
        "batch_id": batch_id,
        "failed": len(failed),
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


def _preview_row(actor: Actor, preview_id: Any, *, lock: bool) -> Preview:
    try:
        pid = uuid.UUID(str(preview_id))
    except ValueError:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "retry_preview_id is not a preview id.",
            field="retry_preview_id",
            hint="Call sms_marketing.failed_messages.retry_preview first.",
        ) from None
    qs = Preview.objects.select_for_update() if lock else Preview.objects.all()
    preview = qs.filter(pk=pid, user=actor.user, kind=PREVIEW_KIND).first()
    if preview is None:
        raise ApplicationError(
            ErrorCode.PREVIEW_NOT_FOUND,
            f"No retry preview {pid} of yours exists.",
            field="retry_preview_id",
            hint="Call sms_marketing.failed_messages.retry_preview and pass the id it returns.",
        )
    if preview.consumed_at is not None:
        raise ApplicationError(
            ErrorCode.PREVIEW_ALREADY_USED,
            f"Retry preview {pid} was already used.",
            field="retry_preview_id",
            hint="Call sms_marketing.failed_messages.retry_preview again.",
        )
    return preview


def _recheck(actor: Actor, preview: Preview) -> tuple[Campaign, list[OutboundMessage], dict[str, int]]:
    campaign = Campaign.objects.select_related("gateway").get(pk=preview.payload["campaign_id"])
    messages = list(
        OutboundMessage.objects.filter(pk__in=preview.payload["message_ids"], batch__campaign=campaign).order_by("pk")
    )
    eligible, excluded = _classify(messages)
    quotes = _quotes(campaign, {m.country for m in eligible})
    uncovered = [m for m in eligible if m.country not in quotes]
    if uncovered:
        excluded["country_not_covered"] = len(uncovered)
        eligible = [m for m in eligible if m.country in quotes]
    return campaign, eligible, excluded


def _resend_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    preview = _preview_row(actor, payload["retry_preview_id"], lock=False)
    campaign, eligible, excluded = _recheck(actor, preview)
    quotes = _quotes(campaign, {m.country for m in eligible})
    cost = sum((quotes[m.country].price_per_segment * m.segments for m in eligible), Decimal(0))
    return {"recipients": len(eligible), "cost": str(cost), "excluded_now": excluded, "campaign_id": campaign.pk}


def _resend_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    from campaigns.dispatch import _apply_quiet_hours, _kick
    from gateways.quotas import quota_reserve

    preview = preview_consume(
        actor=actor,
        kind=PREVIEW_KIND,
        preview_id=payload["retry_preview_id"],
        field="retry_preview_id",
        consumer="sms_marketing.failed_messages.resend",
        allow_expired=request is not None,
    )
    campaign, eligible, excluded = _recheck(actor, preview)
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if not eligible:
        raise ApplicationError(
            "nothing_to_resend",
            "No message of the preview is eligible any more.",
            field="retry_preview_id",
            hint="They were delivered, opted out or resent since the preview.",
            details={"excluded": excluded},
        )
    now = timezone.now()
    number = (SendBatch.objects.filter(campaign=campaign).aggregate(n=Max("number"))["n"] or 0) + 1
    quotes = _quotes(campaign, {m.country for m in eligible})
    gateways = {g.code: g for g in Gateway.objects.filter(code__in={q.gateway_code for q in quotes.values()})}
    quota_reference = f"campaign:{campaign.pk}:resend:{number}"
    batch = SendBatch.objects.create(
        campaign=campaign,
        number=number,
        kind=BatchKind.RESEND,
        resend_of_id=eligible[0].batch_id,
        retry_preview_id=preview.pk,
        not_before=now,
        quota_reference=quota_reference,
        size=len(eligible),
        created_by=actor.user,
    )
    rows = []
    for m in eligible:
        quote = quotes[m.country]
        gateway = gateways[quote.gateway_code]
        rows.append(
            OutboundMessage(
                gateway=gateway,
                sender_id=m.sender_id,
                destination=m.destination,
                country=m.country,
                body=m.body,
                encoding=m.encoding,
                segments=m.segments,
                cost=(quote.price_per_segment * m.segments).quantize(Decimal("0.0001")),
                currency=quote.currency,
                purpose=m.purpose,
                reference=batch.reference,
                quota_reference=quota_reference,
                request_receipt=gateway.receipts_supported,
                next_attempt_at=now,
                batch=batch,
                contact_id=m.contact_id,
                resend_of=m,
            )
        )
    OutboundMessage.objects.bulk_create(rows, batch_size=2000)
    segments = sum(r.segments for r in rows)
    amount = sum((r.cost for r in rows), Decimal(0))
    quota_reserve(actor=actor, reference=quota_reference, segments=segments, amount=amount)
    waits = _apply_quiet_hours([batch], sorted({r.country for r in rows}))
    if campaign.state == CampaignState.COMPLETED:
        campaign.state = CampaignState.SENDING
        campaign.completed_at = None
        campaign.save(update_fields=["state", "completed_at"])
    audit_record(
        actor=actor,
        action="messages.resend",
        object_type="campaign",
        object_id=campaign.pk,
        after={
            "batch": number,
            "messages": len(rows),
            "segments": segments,
            "amount": str(amount),
            "retry_preview_id": str(preview.pk),
            "excluded_at_execution": excluded,
        },
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    transaction.on_commit(_kick)
    return {
        "campaign_id": campaign.pk,
        "batch_id": batch.pk,
        "batch_number": number,
        "resent": len(rows),
        "excluded_at_execution": excluded,
        "estimated_cost": str(amount.quantize(Decimal("0.01"))),
        "quiet_hours_waits": waits,
        "note": "Each new message links to the one it resends (resend_of); follow it with send_batches.list.",
    }


register_action(
    GovernedAction(
        action=ActionType.MESSAGES_RESEND,
        permission=RESEND,
        check=_resend_check,
        execute=_resend_execute,
        summary=lambda payload, facts: (
            f"Resend {facts.get('recipients')} failed messages of campaign #{facts.get('campaign_id')}, "
            f"cost {facts.get('cost')}"
        ),
    )
)


def failed_messages_resend(
    *, actor: Actor, retry_preview_id: Any, idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    if not actor.has_perm(RESEND):
        raise permission_denied(RESEND)
    preview = _preview_row(actor, retry_preview_id, lock=False)
    if preview.is_expired:
        raise ApplicationError(
            ErrorCode.PREVIEW_EXPIRED,
            f"Retry preview {preview.pk} expired at {preview.expires_at.isoformat()}.",
            field="retry_preview_id",
            hint="Call sms_marketing.failed_messages.retry_preview again.",
        )
    return governed_write(
        actor=actor,
        action=ActionType.MESSAGES_RESEND,
        payload={"retry_preview_id": str(preview.pk), "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )
