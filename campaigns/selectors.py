"""Campaign reads: list, get, cost preview, send batches, delivery status.

Visibility (``campaigns.access``): a user sees the campaigns they own or created;
``campaigns.view_all_campaigns`` (approvers, compliance, operations) sees all. A campaign
outside that set is reported as not found, so its name, offer and audience do not leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet

from campaigns.access import VIEW, campaign_access, campaigns_visible
from campaigns.content import TOKEN_SAMPLE, campaign_evaluate, quota_check
from campaigns.errors import CampaignErrorCode
from campaigns.models import PAST_PRE_SEND_STATES, BatchState, Campaign, CampaignState, CampaignVersion, SendBatch
from campaigns.progress import campaign_progress, campaigns_progress
from campaigns.quiet_hours import quiet_hours_notices
from campaigns.resend_rules import ELIGIBLE, resend_reasons
from campaigns.spec import (
    SCHEDULE_DRAFT_FIELDS,
    campaign_snapshot,
    campaign_spec,
    campaign_token,
    schedule_normalise,
    spec_normalise,
)
from compliance.models import ActionRequest, ActionType, RequestState
from compliance.optouts import phone_for_actor
from gateways.charges import CHARGE_RULE, is_charged, message_charge
from gateways.failure_reasons import failure_reason
from gateways.message_counts import BatchFigures, batch_message_counts, charged_sum
from gateways.models import Gateway, MessagePart, MessagePurpose, MessageState, OutboundMessage
from gateways.quotas import account_instance
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from templates.content_rules import segment_analysis

VIEW_BATCHES = "campaigns.view_sendbatch"

STATE_DEFINITIONS = {
    "queued": "Waiting to be handed to a gateway (its batch start, quiet hours or a back-off). Not sent.",
    "submitting": "Being handed to the gateway right now. Not confirmed.",
    "submitted": "Accepted by the gateway; no delivery receipt yet. Pending is not success.",
    "delivered": "The handset received it (delivery receipt).",
    "failed": "Not delivered: refused, undelivered, withdrawn, suppressed or retries exhausted (see error).",
    "expired": "The network gave up before delivery (validity period ended).",
    "unknown": "Submission was interrupted; it may or may not have been sent. Never resent blindly.",
}
BATCH_STATE_DEFINITIONS = {
    "waiting": "Not started: its start time has not come.",
    "sending": "Started: some messages are still queued or being submitted.",
    "completed": "Every message was submitted or reached a final state; receipts may still arrive.",
    "stopped": "Stopped by a cancellation: its unsent messages were withdrawn.",
}


def _pending_requests(campaign_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    pending = ActionRequest.objects.filter(
        state=RequestState.PENDING,
        action__in=["campaign.schedule", "campaign.send", "campaign.update", "campaign.cancel_schedule"],
    ).order_by("id")
    for request in pending:
        cid = (request.payload or {}).get("campaign_id")
        if cid in campaign_ids:
            out.setdefault(cid, []).append(
                {
                    "action_request_id": request.pk,
                    "action": request.action,
                    "expires_at": request.expires_at.isoformat(),
                }
            )
    return out


def _summary(campaign: Campaign, progress: dict[str, int] | None, pending: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "campaign_id": campaign.pk,
        "name": campaign.name,
        "state": campaign.state,
        "version": campaign.version,
        "segment": {"segment_id": campaign.segment_id, "name": campaign.segment.name},
        "message": {
            "body_preview": campaign.body_preview,
            "encoding": campaign.encoding,
            "segments": campaign.segments_per_message,
        },
        "short_link": campaign.short_link.short_url if campaign.short_link else None,
        "sender_id": campaign.sender_id,
        "gateway": campaign.gateway.code if campaign.gateway else None,
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "approval": {
            "approved": campaign.approved_version is not None and campaign.approved_version == campaign.version,
            "approved_version": campaign.approved_version,
            "approved_at": campaign.approved_at.isoformat() if campaign.approved_at else None,
            # Who approved or confirmed it: the user id and, beside it, the name people read.
            "approved_by": campaign.approved_by_id,
            "approved_by_username": campaign.approved_by.get_username() if campaign.approved_by else None,
            "pending_requests": pending,
        },
        "estimate": {k: campaign.estimate.get(k) for k in ("recipients", "cost", "at")},
        "sending": progress,
        "report": "see sms_marketing.send_batches.list" if progress else None,
        "updated_at": campaign.updated_at.isoformat(),
    }


CAMPAIGN_ACTIONS = (
    ActionType.CAMPAIGN_UPDATE,
    ActionType.CAMPAIGN_SCHEDULE,
    ActionType.CAMPAIGN_SEND,
    ActionType.CAMPAIGN_CANCEL,
)


def campaign_action_requests(*, campaign_id: int, pending_only: bool = True) -> QuerySet[ActionRequest]:
    """The action requests about one campaign: its payload names it (a resend: its facts do)."""
    qs = ActionRequest.objects.filter(
        Q(action__in=CAMPAIGN_ACTIONS, payload__campaign_id=campaign_id)
        | Q(action=ActionType.MESSAGES_RESEND, facts__campaign_id=campaign_id)
    )
    if pending_only:
        qs = qs.filter(state=RequestState.PENDING)
    return qs.select_related("requested_by", "required_role", "decided_by").order_by("-created_at", "-id")


def campaigns_list(*, actor: Actor, state: str | None = None, limit: int = 50) -> dict[str, Any]:
    qs = (
        campaigns_visible(actor)
        .select_related("segment", "gateway", "short_link", "approved_by")
        .order_by("-updated_at", "-id")
    )
    if state is not None:
        if state not in CampaignState.values:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"state must be one of {', '.join(CampaignState.values)}.",
                field="state",
                hint="Or leave it out.",
            )
        qs = qs.filter(state=state)
    rows = list(qs[: max(1, min(int(limit), 200))])
    ids = [c.pk for c in rows]
    progress = campaigns_progress(ids)
    pending = _pending_requests(ids)
    return {
        "campaigns": [_summary(c, progress.get(c.pk), pending.get(c.pk, [])) for c in rows],
        "count": len(rows),
        "states": {s.value: s.label for s in CampaignState},
        "note": "Only campaigns you own or created, unless you may view all. Pending is not delivered.",
    }


def campaign_get(*, actor: Actor, campaign_id: Any) -> dict[str, Any]:
    from templates.short_links.preview import short_link_payload

    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    versions = list(CampaignVersion.objects.filter(campaign=campaign).select_related("created_by")[:20])
    pending = _pending_requests([campaign.pk]).get(campaign.pk, [])
    batches = SendBatch.objects.filter(campaign=campaign).count()
    return {
        **_summary(campaign, campaign_progress(campaign.pk) if batches else None, pending),
        "base_version_token": campaign_token(campaign),
        "content": campaign_snapshot(campaign),
        "template_version_id": campaign.template_version_id,
        "short_link_detail": short_link_payload(campaign.short_link) if campaign.short_link else None,
        "schedule": {
            "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
            "time_zone": campaign.time_zone,
            "batch_size": campaign.batch_size,
            "batch_interval_seconds": campaign.batch_interval_seconds,
            "notify": campaign.notify,
            "beat_entry": campaign.beat_task_name or None,
        },
        "review": {
            "review_notes": campaign.review_notes,
            "approved_by": campaign.approved_by.get_username() if campaign.approved_by else None,
            "approval_request_id": campaign.approval_request_id,
            "failure_reason": campaign.failure_reason,
            "cancel_reason": campaign.cancel_reason,
        },
        "estimate_detail": campaign.estimate,
        "owner": campaign.owner.get_username(),
        "batches": batches,
        "versions": [
            {
                "version": v.version,
                "changed_fields": v.changed_fields,
                "by": v.created_by.get_username() if v.created_by else None,
                "at": v.created_at.isoformat(),
                "reason": v.reason,
            }
            for v in versions
        ],
        "note": "Updates, scheduling and sending take campaign_id and this base_version_token.",
    }


# --- cost_preview ------------------------------------------------------------------------------------


def cost_preview(*, actor: Actor, campaign_id: Any) -> dict[str, Any]:
    """Per country: recipients, segments, rate, cost; exclusions; overage. Writes nothing."""
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    if campaign.state in PAST_PRE_SEND_STATES:
        # Evaluating now would count its recipients as capped by this very send and call it a failure.
        raise ApplicationError(
            CampaignErrorCode.CAMPAIGN_STATE,
            f"Campaign {campaign.pk} is {campaign.state}: the pre-send cost preview applies to drafts, pending, "
            "approved and scheduled campaigns.",
            field="campaign_id",
            hint="Follow the send with sms_marketing.send_batches.list (and delivery_status.get); "
            "sms_marketing.campaigns.get shows its progress.",
        )
    figures = _cost_figures(
        actor, campaign_spec(campaign), campaign_id=campaign.pk, send_at=campaign.send_at, budget=campaign.budget
    )
    return {"campaign_id": campaign.pk, "version": campaign.version, **figures}


def cost_preview_draft(*, actor: Actor, data: Any) -> dict[str, Any]:
    """The same preview for a draft not created yet (``data`` as campaigns.create_draft takes it),
    evaluated as create_draft evaluates it: the composer shows it before the submit. Writes nothing."""
    if not actor.has_perm(VIEW):
        raise permission_denied(VIEW)
    if not isinstance(data, dict):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, "The draft must be an object.", field="", hint="See the schema."
        )
    spec = spec_normalise({k: v for k, v in data.items() if k not in SCHEDULE_DRAFT_FIELDS})
    schedule_normalise({k: data[k] for k in SCHEDULE_DRAFT_FIELDS if k in data}, partial=True)
    budget = Decimal(spec["budget"]) if spec.get("budget") is not None else None
    figures = _cost_figures(actor, spec, campaign_id=None, send_at=None, budget=budget)
    return {"campaign_id": None, "version": None, **figures}


def _cost_figures(
    actor: Actor,
    spec: dict[str, Any],
    *,
    campaign_id: int | None,
    send_at: datetime | None,
    budget: Decimal | None,
) -> dict[str, Any]:
    config = platform_config_data()
    evaluation = campaign_evaluate(actor, spec, campaign_id=campaign_id, send_at=send_at)
    counts = evaluation.counts
    link_effect = None
    if evaluation.link is not None:
        url_len = evaluation.analysis["link_characters"]
        sample = evaluation.link.short_url + ("/" + TOKEN_SAMPLE if evaluation.per_recipient_token else "")
        unlinked = evaluation.body_preview.replace(sample, "")
        without = segment_analysis(unlinked, field="text")
        # Counted per gateway, like the message itself: a Twilio gateway keeps grapheme clusters whole.
        clustered = (
            segment_analysis(unlinked, field="text", keep_clusters=True)
            if any(q.keeps_clusters for q in evaluation.quotes.values())
            else without
        )
        # What the link adds, per currency: summed over every country billed in that currency.
        extra: dict[str, Decimal] = {}
        for row in evaluation.by_country:
            q = evaluation.quotes.get(row["country"])
            if q is None:
                continue
            parts = evaluation.segments_for(row["country"]) - (clustered if q.keeps_clusters else without).segments
            extra[q.currency] = extra.get(q.currency, Decimal(0)) + q.price_per_segment * parts * row["sendable"]
        link_effect = {
            "short_url_characters": url_len,
            "per_recipient_token": evaluation.per_recipient_token,
            "segments_with_link": evaluation.segments,
            "segments_without_link": max(without.segments, clustered.segments),
            "extra_cost": {currency: str(amount.quantize(Decimal("0.01"))) for currency, amount in extra.items()},
        }
    ceiling = Decimal(str(config["cost"]["max_campaign_cost"]))
    total = evaluation.total_cost
    return {
        "message": {
            "encoding": evaluation.encoding,
            "segments_per_message": evaluation.segments,
            "characters": evaluation.analysis["characters"],
            "parts": evaluation.analysis["parts"],
        },
        "matched": counts["matched"],
        "sendable": evaluation.recipients,
        "unsendable": counts["matched"] - evaluation.recipients,
        "exclusions": counts["exclusions"],
        "exclusion_order": counts["exclusion_order"],
        "frequency_capped_by_window": counts["frequency_capped_by_window"],
        "by_country": evaluation.by_country,
        "estimated_cost": {k: str(v) for k, v in evaluation.cost.items()},
        "short_link_effect": link_effect,
        "budget": {
            "campaign_budget": str(budget) if budget is not None else None,
            "platform_ceiling": str(ceiling),
            "over_budget": budget is not None and total > budget,
            "over_ceiling": total > ceiling,
            "currency": config["cost"]["currency"],
        },
        "quota": quota_check(evaluation),
        # Quiet hours that would hold this send (at its send time, or now): which rule, and when.
        "notices": quiet_hours_notices(evaluation.quotes, send_at),
        "estimate_note": config["cost"]["estimate_note"],
        "note": (
            "Estimated at the listed rate per segment; the billed cost can differ. Exclusions are applied "
            "again at dispatch, and opt-outs once more when each message is claimed."
        ),
    }


# --- send_batches.list --------------------------------------------------------------------------------


SEND_BATCHES_MAX_PAGE = 1000


def send_batches_list(
    *, actor: Actor, campaign_id: Any, limit: int | None = None, after_number: int | None = None
) -> dict[str, Any]:
    """Every batch of the campaign with its figures; with ``limit``, a page of them by batch number
    (``after_number``: the last number of the page before; ``next_after_number`` names the next).
    ``charged_total`` is the whole campaign's either way."""
    if not actor.has_perm(VIEW_BATCHES):
        raise permission_denied(VIEW_BATCHES)
    for name, value, low, high in (("limit", limit, 1, SEND_BATCHES_MAX_PAGE), ("after_number", after_number, 0, None)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high)
        ):
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"{name} must be a whole number from {low}" + (f" to {high}." if high else "."),
                field=name,
                hint="Leave both out for every batch.",
            )
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    all_batches = SendBatch.objects.filter(campaign=campaign).order_by("number")
    page = all_batches.filter(number__gt=after_number) if after_number is not None else all_batches
    batches = list(page[: limit + 1]) if limit is not None else list(page)
    more = limit is not None and len(batches) > limit
    batches = batches[:limit] if limit is not None else batches
    currency = account_instance().currency
    # The counters the database keeps per batch (gateways.message_counts): no message is read.
    figures = batch_message_counts(b.pk for b in batches)
    charged_total = (
        charged_sum(all_batches.values_list("pk", flat=True))
        if limit is not None
        else sum((f.charged for f in figures.values()), Decimal(0))
    )
    providers = dict(Gateway.objects.values_list("pk", "provider"))
    codes = dict(Gateway.objects.values_list("pk", "code"))
    stats: dict[int, dict[str, Any]] = {}
    for b in batches:
        f = figures.get(b.pk) or BatchFigures()
        errors: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for (gateway_id, error), n in f.errors.items():
            errors[error] = errors.get(error, 0) + n
            reasons[error] = failure_reason(provider=providers.get(gateway_id, ""), code=error)
        stats[b.pk] = {
            "states": f.states,
            "charged": f.charged,
            "gateways": {codes.get(g, str(g)) for g in f.gateways},
            "errors": errors,
            "reasons": reasons,
            "updated_at": f.changed_at,
        }
    out = []
    for b in batches:
        s = stats[b.pk]
        states = s["states"]
        out.append(
            {
                "batch_id": b.pk,
                "number": b.number,
                "kind": b.kind,
                "resend_of_batch": b.resend_of_id,
                "state": b.state,
                "size": b.size,
                "not_before": b.not_before.isoformat(),
                "started_at": b.started_at.isoformat() if b.started_at else None,
                "completed_at": b.completed_at.isoformat() if b.completed_at else None,
                "stopped_at": b.stopped_at.isoformat() if b.stopped_at else None,
                "stop_reason": b.stop_reason,
                "gateways": sorted(s["gateways"]),
                "delivered": states["delivered"],
                "failed": states["failed"] + states["expired"],
                "pending": states["queued"] + states["submitting"] + states["submitted"],
                "unknown": states["unknown"],
                "by_state": states,
                "charged": str(s["charged"].quantize(Decimal("0.0001"))),
                "currency": currency,
                "error_summary": sorted(
                    ({"error_code": k, "failure_reason": s["reasons"][k], "count": v} for k, v in s["errors"].items()),
                    key=lambda e: -e["count"],
                )[:10],
                "updated_at": s["updated_at"].isoformat() if s["updated_at"] else b.created_at.isoformat(),
            }
        )
    paging = {"next_after_number": batches[-1].number if more else None} if limit is not None else {}
    return {
        "campaign_id": campaign.pk,
        "campaign_state": campaign.state,
        "batches": out,
        "count": len(out),
        **paging,
        "message_states": STATE_DEFINITIONS,
        "batch_states": BATCH_STATE_DEFINITIONS,
        "charged_total": str(charged_total.quantize(Decimal("0.0001"))),
        "currency": currency,
        "charged_definition": "charged: what the batch's messages cost under charge_rule, at the listed rate "
        "(as the gateway billed their parts); quotas.get's balance moves by the same amounts.",
        "charge_rule": CHARGE_RULE,
        "note": "Pending (queued, submitting, submitted) does not mean delivered. Message ids: "
        'sms_marketing.delivery_status.get with {"batch_id": ..., "state": "failed"} (or campaign_id), '
        "a page at a time.",
    }


# --- delivery_status.get ---------------------------------------------------------------------------------

HARD_FAILURE_HINT = "refused by the gateway before delivery (invalid destination, rejected, not routable)"
FAILED_AGAIN = "a resend that failed too: a message is resent at most once"

# A few verdicts carry a word of explanation; the verdict itself is the resend rule's (resend_rules).
RESEND_DETAILS = {
    "pending": "not failed (yet); pending is not a failure",
    "maybe_delivered": "submission interrupted; never resent",
    "withdrawn": "stopped by a cancellation",
    "hard_failure": HARD_FAILURE_HINT,
    "failed_again": FAILED_AGAIN,
}


def resend_eligibility(*, message_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per message id, whether it may be resent and if not why: the same SQL expression the retry
    preview and the resend classify with, evaluated for just these messages in one query."""
    out: dict[int, dict[str, Any]] = {}
    for pk, reason in resend_reasons(message_ids).items():
        verdict: dict[str, Any] = {"eligible": reason == ELIGIBLE, "reason": reason}
        if reason in RESEND_DETAILS:
            verdict["detail"] = RESEND_DETAILS[reason]
        out[pk] = verdict
    return out


# A code is never sent again as it was: otp.send sends a new one within the verification.
OTP_NO_RESEND = {
    "eligible": False,
    "reason": "otp",
    "detail": "A one-time code is never resent as is; sms_marketing.otp.send sends a new code.",
}
DELIVERY_STATUS_PAGE = 20
DELIVERY_STATUS_MAX_PAGE = 100


def delivery_status_get(
    *,
    actor: Actor,
    message_id: int | None = None,
    phone: str | None = None,
    campaign_id: int | None = None,
    batch_id: int | None = None,
    state: str | None = None,
    limit: int | None = None,
    before_id: int | None = None,
) -> dict[str, Any]:
    """Messages by id, by phone, or by campaign or batch (newest first, a page at a time, filtered by
    state): how an agent finds the message ids of a campaign's failures."""
    from smsplatform.kernel.phones import phone_parse

    if not actor.has_perm(VIEW_BATCHES):
        raise permission_denied(VIEW_BATCHES)
    if message_id is not None and any(v is not None for v in (phone, campaign_id, batch_id, state, before_id)):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "message_id names one message: give it alone.",
            field="message_id",
            hint="Or list messages by phone, campaign_id or batch_id (with state, limit, before_id).",
        )
    if message_id is None and phone is None and campaign_id is None and batch_id is None:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give message_id, phone, campaign_id or batch_id.",
            field="message_id",
            hint='e.g. {"campaign_id": 4, "state": "failed"} lists the ids of its failed messages.',
        )
    if state is not None and state not in MessageState.values:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"state must be one of {', '.join(MessageState.values)}.",
            field="state",
            hint="failed lists the failures; omit state for every message.",
        )
    size = DELIVERY_STATUS_PAGE if limit is None else limit
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= DELIVERY_STATUS_MAX_PAGE:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"limit must be 1-{DELIVERY_STATUS_MAX_PAGE}.",
            field="limit",
            hint=f"Default {DELIVERY_STATUS_PAGE}.",
        )
    scope = Q(batch__campaign__in=campaigns_visible(actor))
    if campaign_id is None and batch_id is None:
        # One-time codes (campaigns.otp) belong to no campaign: their state, receipts and charge
        # show by message_id (otp.send answers it) or phone. Never their body (no field here has
        # it), and the phone masked as for any message.
        scope |= Q(batch__isnull=True, purpose=MessagePurpose.OTP)
    qs = OutboundMessage.objects.filter(scope).select_related("gateway", "batch")
    if message_id is not None:
        qs = qs.filter(pk=message_id)
    if phone is not None:
        qs = qs.filter(destination=phone_parse(str(phone), field="phone").e164)
    if campaign_id is not None:
        if message_id is None and phone is None:
            campaign_access(actor=actor, campaign_id=campaign_id)  # not_found for a campaign not visible
        qs = qs.filter(batch__campaign_id=campaign_id)
    if batch_id is not None:
        qs = qs.filter(batch_id=batch_id)
    if state is not None:
        qs = qs.filter(state=state)
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    # Newest first by id (keyset paging: before_id is the last id of the previous page).
    page = list(qs.order_by("-id")[: size + 1])
    messages, more = page[:size], len(page) > size
    if message_id is not None and not messages:
        raise not_found(
            "message",
            message_id,
            field="message_id",
            hint="List a campaign's messages and their ids with sms_marketing.delivery_status.get and campaign_id.",
        )
    parts: dict[int, list[dict[str, Any]]] = {}
    for part in MessagePart.objects.filter(message__in=messages).order_by("message_id", "part_number"):
        parts.setdefault(part.message_id, []).append(
            {
                "part": part.part_number,
                "provider_message_id": part.provider_message_id,
                "state": part.state,
                "error_code": part.error_code,
                "receipt_at": part.receipt_at.isoformat() if part.receipt_at else None,
            }
        )
    resend = resend_eligibility(message_ids=[m.pk for m in messages if m.purpose != MessagePurpose.OTP])
    out = []
    for m in messages:
        out.append(
            {
                "message_id": m.pk,
                "purpose": m.purpose,
                "campaign_id": m.batch.campaign_id if m.batch else None,
                "batch": m.batch.number if m.batch else None,
                "phone": phone_for_actor(actor, m.destination),
                "country": m.country,
                "state": m.state,
                "state_definition": STATE_DEFINITIONS[m.state],
                "error_code": m.error_code,
                "failure_reason": failure_reason(provider=m.gateway.provider, code=m.error_code, reason=m.error_reason),
                "gateway": m.gateway.code,
                "provider_message_ids": parts.get(m.pk, []),
                "segments": m.segments,
                "charged": is_charged(state=m.state, submitted_at=m.submitted_at),
                "charge": str(message_charge(state=m.state, submitted_at=m.submitted_at, cost=m.cost)),
                "currency": m.currency,
                "queued_at": m.created_at.isoformat(),
                "submitted_at": m.submitted_at.isoformat() if m.submitted_at else None,
                "final_at": m.final_at.isoformat() if m.final_at else None,
                "updated_at": m.updated_at.isoformat(),
                "resend": resend.get(m.pk, OTP_NO_RESEND),
            }
        )
    return {
        "messages": out,
        "count": len(out),
        "next_before_id": messages[-1].pk if more else None,
        "phones_masked": not actor.has_perm("compliance.view_full_phone"),
        "charge_rule": CHARGE_RULE,
        "note": "Submitted is pending, not delivered. charge follows charge_rule, at the listed rate.",
    }


__all__ = [
    "BatchState",
    "campaign_get",
    "campaigns_list",
    "cost_preview",
    "cost_preview_draft",
    "delivery_status_get",
    "send_batches_list",
]


def campaign_progress_get(*, actor: Actor, campaign_id: Any) -> dict[str, Any]:
    """A campaign's state and its messages per state (one grouped query): the staff app's live
    progress bar polls this. Pending is not delivered: every state is counted apart."""
    campaign = campaign_access(actor=actor, campaign_id=campaign_id)
    return {
        "campaign_id": campaign.pk,
        "name": campaign.name,
        "state": campaign.state,
        "state_label": CampaignState(campaign.state).label,
        "progress": campaign_progress(campaign.pk),
    }
