"""Retries: a stored preview of which failed messages may be resent, and the resend from it.

Eligible: failed or expired after a temporary problem (retries exhausted, undelivered
receipt, validity expired). Never: delivered, pending, maybe-delivered (unknown), hard
failures, invalid numbers, opted-out phones, withdrawn messages, messages already
resent, contacts now over a frequency cap. ``failed_messages.resend`` takes only the
preview id; it re-checks every message at execution and can only narrow the preview.

The preview and the resend are set-based like the dispatch: the rules are one SQL ``CASE``
(``_reason``), their only home; delivery_status.get evaluates the same expression over the
messages it shows (``resend_reasons``). The preview groups by it in the database; the resend
runs one ``INSERT ... SELECT`` over the preview's still-eligible messages with the quota
reserved in the same transaction: a constant number of queries, whatever the number of messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.utils import timezone

from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from campaigns.selectors import _campaign
from compliance.governance import GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType, OptOut, OptOutReason
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


def _quotes(campaign: Campaign, countries: set[str]) -> dict[str, Any]:
    return segment_prices(countries=sorted(countries), gateway_code=campaign.gateway.code if campaign.gateway else None)


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
    failed = qs.count()
    if failed > MAX_PREVIEW:
        raise ApplicationError(
            "too_many_failures",
            f"More than {MAX_PREVIEW} failed messages; preview one batch at a time.",
            field="batch_id",
            hint="Pass batch_id (sms_marketing.send_batches.list).",
        )
    # The resend's own rules (one SQL CASE), grouped in the database: no message is read into Python.
    quotes = _quotes(campaign, set(qs.values_list("country", flat=True).distinct().order_by()))
    classified = qs.annotate(m_reason=_reason(quotes))
    excluded = _excluded(_by_reason(classified, quotes))
    chosen = classified.filter(m_reason=ELIGIBLE)
    eligible = list(chosen.order_by("pk").values_list("pk", flat=True))
    per_country: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = {}
    for row in chosen.values("country").annotate(n=Count("id"), n_segments=Sum("segments")).order_by("country"):
        quote = quotes[row["country"]]
        cost = (quote.price_per_segment * row["n_segments"]).quantize(Decimal("0.01"))
        per_country[row["country"]] = {
            "country": row["country"],
            "messages": row["n"],
            "segments": row["n_segments"],
            "gateway": quote.gateway_code,
            "price_per_segment": str(quote.price_per_segment),
            "currency": quote.currency,
            "estimated_cost": str(cost),
        }
        totals[quote.currency] = totals.get(quote.currency, Decimal(0)) + cost
    delivered = OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.DELIVERED).count()
    final = OutboundMessage.objects.filter(
        batch__campaign=campaign, state__in=[*FAILED, MessageState.DELIVERED]
    ).count()
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


# --- the resend, set-based --------------------------------------------------------------------------

ELIGIBLE = "temporary_failure"


def _previewed(message_ids: Sequence[Any]) -> RawSQL:
    """The preview's message ids as one SQL subquery with one parameter (a JSON array), whatever
    their number: no per-id placeholders, no driver limit on bind parameters."""
    data = json.dumps([int(pk) for pk in message_ids])
    if connection.vendor == "postgresql":
        return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)::bigint", (data,), output_field=BigIntegerField())
    return RawSQL("SELECT value FROM json_each(%s)", (data,), output_field=BigIntegerField())


def resend_classified(
    campaign: Campaign, message_ids: Sequence[Any], quotes: dict[str, Any]
) -> QuerySet[OutboundMessage]:
    """The preview's messages of this campaign, each annotated in SQL with ``m_reason``
    (``_reason``: why it may not be resent now, ``ELIGIBLE`` if it may). Only ids of the preview
    and only messages of this campaign: never wider than the preview."""
    return OutboundMessage.objects.filter(pk__in=_previewed(message_ids), batch__campaign_id=campaign.pk).annotate(
        m_reason=_reason(quotes)
    )


def resend_reasons(message_ids: Sequence[int]) -> dict[int, str]:
    """Each message's reason under the resend rule (``_reason``), in one query whatever their
    number: what delivery_status.get reports. Without quotes: whether a gateway covers the
    country is decided when a resend is previewed, not part of a message's own verdict."""
    rows = OutboundMessage.objects.filter(pk__in=list(message_ids)).annotate(m_reason=_reason(None))
    return dict(rows.values_list("pk", "m_reason"))


def _reason(quotes: dict[str, Any] | None) -> Case:
    """The resend rule, the only copy: one SQL CASE, first match wins, ``ELIGIBLE`` marks the
    resendable messages. With ``quotes`` (a preview or a resend), an otherwise eligible message
    no quote covers is ``country_not_covered``; ``None`` leaves that last check out."""
    from gateways.frequency import frequency_capped_destinations

    active = OptOut.objects.filter(phone=OuterRef("destination"), lifted_at__isnull=True)
    resends = OutboundMessage.objects.filter(resend_of=OuterRef("pk"))
    capped = [
        When(destination__in=qs, then=Value("frequency_capped"))
        for qs in frequency_capped_destinations(purpose=MessagePurpose.MARKETING).values()
    ]
    coverage = []
    if quotes is not None:
        covered = sorted(quotes)
        uncovered = ~Q(country__in=covered) if covered else Q(pk__isnull=False)
        coverage.append(When(uncovered, then=Value("country_not_covered")))
    return Case(
        When(state=MessageState.DELIVERED, then=Value("delivered")),
        When(state__in=[MessageState.QUEUED, MessageState.SUBMITTING, MessageState.SUBMITTED], then=Value("pending")),
        When(state=MessageState.UNKNOWN, then=Value("maybe_delivered")),
        When(
            Q(Exists(active.filter(reason=OptOutReason.INVALID))) | Q(error_code="invalid_destination"),
            then=Value("invalid_number"),
        ),
        When(Q(Exists(active)) | Q(error_code="suppressed"), then=Value("opted_out")),
        When(error_code="withdrawn", then=Value("withdrawn")),
        When(Q(submitted_at__isnull=True) & ~Q(error_code="retries_exhausted"), then=Value("hard_failure")),
        When(Exists(resends), then=Value("already_resent")),
        *capped,
        *coverage,
        default=Value(ELIGIBLE),
        output_field=CharField(),
    )


def _by_reason(qs: QuerySet[OutboundMessage], quotes: dict[str, Any]) -> dict[str, tuple[int, Decimal]]:
    """One grouped query: messages and their resend cost per reason."""
    rows = qs.annotate(m_cost=_cost(quotes)).values("m_reason").annotate(n=Count("id"), cost=Sum("m_cost")).order_by()
    return {r["m_reason"]: (int(r["n"]), Decimal(r["cost"] or 0)) for r in rows}


def _by_country(quotes: dict[str, Any], values: dict[str, Any], output: Any) -> Case:
    return Case(
        *(When(country=c, then=Value(values[c])) for c in sorted(quotes)), default=Value(None), output_field=output
    )


def _cost(quotes: dict[str, Any]) -> ExpressionWrapper:
    price = _by_country(
        quotes, {c: q.price_per_segment for c, q in quotes.items()}, DecimalField(max_digits=10, decimal_places=4)
    )
    return ExpressionWrapper(price * F("segments"), output_field=DecimalField(max_digits=12, decimal_places=4))


def _resend_quotes(campaign: Campaign, message_ids: Sequence[Any]) -> dict[str, Any]:
    countries = OutboundMessage.objects.filter(pk__in=_previewed(message_ids), batch__campaign_id=campaign.pk)
    return _quotes(campaign, set(countries.values_list("country", flat=True).distinct().order_by()))


def _excluded(counts: dict[str, tuple[int, Decimal]]) -> dict[str, int]:
    return {reason: n for reason, (n, _cost) in sorted(counts.items()) if reason != ELIGIBLE}


def _resend_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    preview = _preview_row(actor, payload["retry_preview_id"], lock=False)
    campaign = Campaign.objects.select_related("gateway").get(pk=preview.payload["campaign_id"])
    ids = preview.payload["message_ids"]
    quotes = _resend_quotes(campaign, ids)
    counts = _by_reason(resend_classified(campaign, ids, quotes), quotes)
    recipients, cost = counts.get(ELIGIBLE, (0, Decimal(0)))
    return {"recipients": recipients, "cost": str(cost), "excluded_now": _excluded(counts), "campaign_id": campaign.pk}


_INSERT = """
INSERT INTO gateways_outboundmessage (
    gateway_id, sender_id, destination, country, body, encoding, segments, cost, currency, purpose, state,
    reference, quota_reference, request_receipt, attempts, next_attempt_at, error_code, error_reason,
    created_at, updated_at, batch_id, contact_id, resend_of_id
)
SELECT r.m_gateway, r.sender_id, r.destination, r.country, r.body, r.encoding, r.segments, r.m_cost, r.m_currency,
       r.purpose, %s, %s, %s, r.m_receipt = 1, 0, %s, '', '', %s, %s, %s, r.contact_id, r.id
FROM ({select}) r
"""


def _resend_insert(
    campaign: Campaign, message_ids: Sequence[Any], quotes: dict[str, Any], batch: SendBatch, *, now: Any
) -> None:
    """One ``INSERT ... SELECT``: a resend of every preview message still eligible, rules applied in SQL."""
    gateways = {g.code: g for g in Gateway.objects.filter(code__in={q.gateway_code for q in quotes.values()})}
    eligible = (
        resend_classified(campaign, message_ids, quotes)
        .filter(Q(m_reason=ELIGIBLE))  # m_reason: annotated by resend_classified
        .annotate(
            m_gateway=_by_country(quotes, {c: gateways[q.gateway_code].pk for c, q in quotes.items()}, IntegerField()),
            m_receipt=_by_country(
                quotes, {c: int(gateways[q.gateway_code].receipts_supported) for c, q in quotes.items()}, IntegerField()
            ),
            m_cost=_cost(quotes),
            m_currency=_by_country(quotes, {c: q.currency for c, q in quotes.items()}, CharField()),
        )
        .order_by("pk")
        .values_list(
            "m_gateway",
            "sender_id",
            "destination",
            "country",
            "body",
            "encoding",
            "segments",
            "m_cost",
            "m_currency",
            "purpose",
            "m_receipt",
            "contact_id",
            "id",
        )
    )
    select_sql, select_params = eligible.query.sql_with_params()
    params = [
        MessageState.QUEUED.value,
        batch.reference,
        batch.quota_reference,
        now,
        now,
        now,
        batch.pk,
        *select_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.format(select=select_sql), params)


def _resend_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    """Set-based: a constant number of queries whatever the number of messages resent."""
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
    campaign = (
        Campaign.objects.select_for_update(of=("self",))
        .select_related("gateway")
        .get(pk=preview.payload["campaign_id"])
    )
    ids = preview.payload["message_ids"]
    quotes = _resend_quotes(campaign, ids)
    # Why each message is excluded, as of now, under the campaign lock (resends of one campaign are
    # serialised). The INSERT below applies the same rules again in its own statement; what it
    # writes (not this count) sizes the batch and the quota reservation.
    excluded = _excluded(_by_reason(resend_classified(campaign, ids, quotes), quotes))
    now = timezone.now()
    number = (SendBatch.objects.filter(campaign=campaign).aggregate(n=Max("number"))["n"] or 0) + 1
    quota_reference = f"campaign:{campaign.pk}:resend:{number}"
    batch = SendBatch.objects.create(
        campaign=campaign,
        number=number,
        kind=BatchKind.RESEND,
        retry_preview_id=preview.pk,
        not_before=now,
        quota_reference=quota_reference,
        created_by=actor.user,
    )
    _resend_insert(campaign, ids, quotes, batch, now=now)
    written = OutboundMessage.objects.filter(batch=batch)
    totals = written.aggregate(n=Count("id"), segments=Sum("segments"), amount=Sum("cost"), first=Min("resend_of_id"))
    resent = int(totals["n"] or 0)
    if not resent:
        # Rolls back with the batch and the preview's consumption: nothing was written.
        raise ApplicationError(
            "nothing_to_resend",
            "No message of the preview is eligible any more.",
            field="retry_preview_id",
            hint="They were delivered, opted out or resent since the preview.",
            details={"excluded": excluded},
        )
    segments = int(totals["segments"] or 0)
    amount = Decimal(totals["amount"] or 0)
    # The batch links to the batch of the first message it resends.
    batch.resend_of_id = OutboundMessage.objects.filter(pk=totals["first"]).values_list("batch_id", flat=True)[0]
    batch.size = resent
    batch.save(update_fields=["resend_of", "size"])
    quota_reserve(actor=actor, reference=quota_reference, segments=segments, amount=amount)
    countries = sorted(written.values_list("country", flat=True).distinct().order_by())
    waits = _apply_quiet_hours([batch], countries)
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
            "messages": resent,
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
        "resent": resent,
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
