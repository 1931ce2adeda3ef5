"""failed_messages.resend: resend what a retry preview showed, re-checked message by message.

Takes only the preview id; at execution every message is classified again (the resend rule,
``campaigns.resend_rules``), so a resend can only narrow its preview. Set-based like the
dispatch: one ``INSERT ... SELECT`` over the preview's still-eligible messages, with the quota
reserved in the same transaction: a constant number of queries, whatever the number of messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import CharField, Count, IntegerField, Max, Min, Q, Sum
from django.utils import timezone

from campaigns.dispatch import batches_advance_on_commit
from campaigns.errors import CampaignErrorCode
from campaigns.models import BatchKind, Campaign, CampaignState, SendBatch
from campaigns.quiet_hours import quiet_hours_apply
from campaigns.resend_rules import (
    ELIGIBLE,
    PREVIEW_KIND,
    RESEND,
    by_country_case,
    excluded_counts,
    quotes_for_messages,
    resend_classified,
    resend_cost,
    resend_counts,
)
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from gateways.models import Gateway, MessageState, OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.idempotency import idempotent_replay
from smsplatform.kernel.money import money_text
from smsplatform.kernel.previews import preview_consume, preview_read
from smsplatform.models import Preview

RETRY_PREVIEW_TOOL = "sms_marketing.failed_messages.retry_preview"


def _preview_row(actor: Actor, preview_id: Any) -> Preview:
    """The caller's unused retry preview, read without consuming it (the check and the request)."""
    return preview_read(
        actor=actor, kind=PREVIEW_KIND, preview_id=preview_id, field="retry_preview_id", tool=RETRY_PREVIEW_TOOL
    )


def _resend_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    preview = _preview_row(actor, payload["retry_preview_id"])
    campaign = Campaign.objects.select_related("gateway").get(pk=preview.payload["campaign_id"])
    ids = preview.payload["message_ids"]
    quotes = quotes_for_messages(campaign, ids)
    counts = resend_counts(resend_classified(campaign, ids, quotes), quotes)
    recipients, cost = counts.get(ELIGIBLE, (0, Decimal(0)))
    currencies = {quote.currency for quote in quotes.values()}
    # No context: execute() classifies again under the campaign lock, as of then.
    return Checked(
        facts={
            "recipients": recipients,
            "cost": str(cost),
            # The quotes' currency when they share one (a resend is priced in the gateway's).
            "currency": next(iter(currencies)) if len(currencies) == 1 else None,
            "excluded_now": excluded_counts(counts),
            "campaign_id": campaign.pk,
        }
    )


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
            m_gateway=by_country_case(
                quotes, {c: gateways[q.gateway_code].pk for c, q in quotes.items()}, IntegerField()
            ),
            m_receipt=by_country_case(
                quotes, {c: int(gateways[q.gateway_code].receipts_supported) for c, q in quotes.items()}, IntegerField()
            ),
            m_cost=resend_cost(quotes),
            m_currency=by_country_case(quotes, {c: q.currency for c, q in quotes.items()}, CharField()),
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


def _resend_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    """Set-based: a constant number of queries whatever the number of messages resent."""
    from gateways.quotas import quota_reserve

    preview = preview_consume(
        actor=actor,
        kind=PREVIEW_KIND,
        preview_id=payload["retry_preview_id"],
        field="retry_preview_id",
        consumer="sms_marketing.failed_messages.resend",
        tool=RETRY_PREVIEW_TOOL,
        allow_expired=request is not None,
    )
    campaign = (
        Campaign.objects.select_for_update(of=("self",))
        .select_related("gateway")
        .get(pk=preview.payload["campaign_id"])
    )
    ids = preview.payload["message_ids"]
    quotes = quotes_for_messages(campaign, ids)
    # Why each message is excluded, as of now, under the campaign lock (resends of one campaign are
    # serialised). The INSERT below applies the same rules again in its own statement; what it
    # writes (not this count) sizes the batch and the quota reservation.
    excluded = excluded_counts(resend_counts(resend_classified(campaign, ids, quotes), quotes))
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
    totals = written.aggregate(
        n=Count("id"),
        segments=Sum("segments"),
        amount=Sum("cost"),
        first=Min("resend_of_id"),
        first_currency=Min("currency"),
        last_currency=Max("currency"),
    )
    resent = int(totals["n"] or 0)
    if not resent:
        # Rolls back with the batch and the preview's consumption: nothing was written.
        raise ApplicationError(
            CampaignErrorCode.NOTHING_TO_RESEND,
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
    waits = quiet_hours_apply([batch], countries)
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
    batches_advance_on_commit()
    return {
        "campaign_id": campaign.pk,
        "batch_id": batch.pk,
        "batch_number": number,
        "resent": resent,
        "excluded_at_execution": excluded,
        "estimated_cost": str(amount.quantize(Decimal("0.01"))),
        # The messages' currency (their quotes'); None if they were priced in more than one.
        "currency": totals["first_currency"] if totals["first_currency"] == totals["last_currency"] else None,
        "quiet_hours_waits": waits,
        "note": "Each new message links to the one it resends (resend_of); its batch is in send_batches.list, "
        "its messages in sms_marketing.delivery_status.get with that batch_id.",
    }


register_action(
    GovernedAction(
        action=ActionType.MESSAGES_RESEND,
        permission=RESEND,
        check=_resend_check,
        execute=_resend_execute,
        summary=lambda payload, facts: (
            f"Resend {facts.get('recipients')} failed messages of campaign #{facts.get('campaign_id')}, "
            f"cost {money_text(facts.get('cost'), facts.get('currency'))}"
        ),
    )
)


def _replay(actor: Actor, key: Any, action: str, preview_id: Any, reason: str) -> dict[str, Any] | None:
    payload = {"retry_preview_id": str(uuid.UUID(str(preview_id))), "reason": reason}
    return idempotent_replay(actor=actor, key=key, operation=action, payload=payload)


def failed_messages_resend(
    *, actor: Actor, retry_preview_id: Any, idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    if not actor.has_perm(RESEND):
        raise permission_denied(RESEND)
    try:
        preview = _preview_row(actor, retry_preview_id)
        if preview.is_expired:
            raise ApplicationError(
                ErrorCode.PREVIEW_EXPIRED,
                f"Retry preview {preview.pk} expired at {preview.expires_at.isoformat()}.",
                field="retry_preview_id",
                hint="Call sms_marketing.failed_messages.retry_preview again.",
            )
    except ApplicationError as exc:
        # A retry of a resend that went through finds its preview used (or expired by now):
        # it gets its first result.
        if exc.code in (ErrorCode.PREVIEW_ALREADY_USED, ErrorCode.PREVIEW_EXPIRED):
            replay = _replay(actor, idempotency_key, ActionType.MESSAGES_RESEND, retry_preview_id, reason)
            if replay is not None:
                return replay
        raise
    return governed_write(
        actor=actor,
        action=ActionType.MESSAGES_RESEND,
        payload={"retry_preview_id": str(preview.pk), "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )
