"""Dispatch: recipients materialised in SQL, quota reserved, batches paced, progress rolled up.

``campaign_dispatch`` is what beat (or send_approved) runs. In one transaction it re-checks
every rule as the campaign's owner, then writes every message with one
``INSERT ... SELECT`` over the segment: members of the segment's audiences matching its
criteria, with marketing consent evidence, without an active opt-out, in a country a
gateway covers, and not over any frequency cap (this campaign's own included). Each row
gets its gateway and price by country, its rendered text (with a per-recipient link token
computed in SQL) and its batch by row number. Quota for the whole send is reserved in the
same transaction: nothing is queued that the balance cannot pay for.

Messages of a batch become claimable at the batch's start time (``next_attempt_at``);
messages to a country inside its quiet hours wait for the window to open. The claim
re-checks opt-outs (gateways.delivery.claim), so a STOP a second before sending still wins.
"""

from __future__ import annotations

import functools
import logging
import time as clock
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    DecimalField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import MD5, Cast, Concat, RowNumber, Substr
from django.utils import timezone

from campaigns.content import TOKEN_MARK, Evaluation, budget_check, campaign_evaluate, recipient_token_salt
from campaigns.errors import CampaignErrorCode
from campaigns.models import (
    APPROVED_STATES,
    BatchKind,
    BatchState,
    Campaign,
    CampaignState,
    SendBatch,
)
from campaigns.progress import campaign_progress
from campaigns.quiet_hours import quiet_hours_apply
from campaigns.spec import campaign_spec
from compliance.models import OptOut
from contacts.models import AudienceMembership, ConsentEvidence, ConsentPurpose, Contact
from gateways.models import Gateway, MessagePurpose, MessageState, OutboundMessage
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from templates.short_links.codes import RECIPIENT_TOKEN_LENGTH

logger = logging.getLogger(__name__)

# --- dispatch ------------------------------------------------------------------------------------


def _owner_actor(campaign: Campaign) -> Actor:
    return Actor(user=campaign.owner, channel=Channel.SYSTEM, token_name="campaigns.dispatch")  # noqa: S106 - a task name


def _recipients(campaign: Campaign, evaluation: Evaluation) -> Any:
    from contacts.criteria import criteria_q
    from gateways.frequency import frequency_capped_destinations

    scope = campaign.segment.criteria.get("audience_ids") or []
    criteria = campaign.segment.criteria.get("criteria") or {}
    qs = (
        Contact.objects.filter(pk__in=AudienceMembership.objects.filter(audience_id__in=scope).values("contact_id"))
        .filter(criteria_q(criteria))
        .filter(Exists(ConsentEvidence.objects.filter(contact=OuterRef("pk"), purpose=ConsentPurpose.MARKETING)))
        .filter(~Exists(OptOut.objects.filter(phone=OuterRef("phone"), lifted_at__isnull=True)))
        .filter(country__in=sorted(evaluation.quotes))
    )
    for capped in frequency_capped_destinations(purpose=MessagePurpose.MARKETING).values():
        qs = qs.exclude(phone__in=capped)
    # The per-campaign cap, on this campaign's own messages (batch index; refused ones do not count).
    per_campaign = max(1, int(platform_config_data()["frequency_caps"]["per_campaign"]))
    already = (
        OutboundMessage.objects.filter(batch__campaign_id=campaign.pk)
        .exclude(state=MessageState.FAILED)
        .values("destination")
        .annotate(n=Count("id"))
        .filter(n__gte=per_campaign)
        .values("destination")
    )
    return qs.exclude(phone__in=already)


def _annotated(campaign: Campaign, evaluation: Evaluation, qs: Any) -> Any:
    gateways = {
        g.code: g for g in Gateway.objects.filter(code__in={q.gateway_code for q in evaluation.quotes.values()})
    }
    by_country = sorted(evaluation.quotes.items())

    def case(values: dict[str, Any], output: Any) -> Case:
        return Case(
            *(When(country=c, then=Value(v)) for c, v in values.items()), default=Value(None), output_field=output
        )

    if evaluation.per_recipient_token and evaluation.link is not None:
        prefix, _, suffix = evaluation.body_template.partition(TOKEN_MARK)
        salt = recipient_token_salt(campaign.pk, evaluation.link.pk)
        token = Substr(
            MD5(Concat(Value(salt), Cast("id", CharField()), output_field=CharField())), 1, RECIPIENT_TOKEN_LENGTH
        )
        body: Any = Concat(Value(prefix), token, Value(suffix), output_field=CharField())
    else:
        body = Value(evaluation.body_template, output_field=CharField())
    return qs.annotate(
        m_gateway=case({c: gateways[q.gateway_code].pk for c, q in by_country}, IntegerField()),
        m_receipt=case({c: int(gateways[q.gateway_code].receipts_supported) for c, q in by_country}, IntegerField()),
        m_cost=case(
            {c: q.price_per_segment * evaluation.segments_for(c) for c, q in by_country},
            DecimalField(max_digits=12, decimal_places=4),
        ),
        # Parts as each country's gateway splits the message (a Twilio gateway can need one more).
        m_segments=case({c: evaluation.segments_for(c) for c, _q in by_country}, IntegerField()),
        m_currency=case({c: q.currency for c, q in by_country}, CharField()),
        m_body=body,
        m_rn=Window(RowNumber(), order_by=F("id").asc()),
    ).values_list(
        "m_gateway", "phone", "country", "m_body", "m_cost", "m_currency", "m_receipt", "id", "m_rn", "m_segments"
    )


_INSERT = """
INSERT INTO gateways_outboundmessage (
    gateway_id, sender_id, destination, country, body, encoding, segments, cost, currency, purpose, state,
    reference, quota_reference, request_receipt, attempts, next_attempt_at, error_code, error_reason,
    created_at, updated_at, batch_id, contact_id
)
SELECT r.m_gateway, %s, r.phone, r.country, r.m_body, %s, r.m_segments, r.m_cost, r.m_currency, %s, %s,
       %s || CAST(b.number AS TEXT), %s, r.m_receipt = 1, 0, b.not_before, '', '',
       %s, %s, b.id, r.id
FROM ({select}) r
JOIN campaigns_sendbatch b ON b.campaign_id = %s AND b.kind = %s AND b.number = (
    CASE WHEN ((r.m_rn - 1) / %s) + 1 > %s THEN %s ELSE ((r.m_rn - 1) / %s) + 1 END
)
"""


def _materialise(campaign: Campaign, evaluation: Evaluation, *, now: datetime) -> dict[str, Any]:
    from gateways.quotas import quota_reserve

    recipients = _recipients(campaign, evaluation)
    # The evaluation just counted the sendable contacts; the INSERT below may see a few more or
    # fewer (it runs a moment later): surplus rows go to the last batch, empty batches are dropped.
    expected = max(1, evaluation.recipients)
    size = max(1, int(campaign.batch_size))
    batches = (expected + size - 1) // size
    start = max(now, campaign.send_at or now)
    interval = timedelta(seconds=int(campaign.batch_interval_seconds))
    quota_reference = f"campaign:{campaign.pk}:send"
    SendBatch.objects.bulk_create(
        [
            SendBatch(
                campaign=campaign,
                number=n,
                kind=BatchKind.INITIAL,
                not_before=start + interval * (n - 1),
                quota_reference=quota_reference,
            )
            for n in range(1, batches + 1)
        ]
    )
    select_sql, select_params = _annotated(campaign, evaluation, recipients).query.sql_with_params()
    params = [
        campaign.sender_id,
        evaluation.encoding,
        MessagePurpose.MARKETING.value,
        MessageState.QUEUED.value,
        f"campaign:{campaign.pk}:batch:",
        quota_reference,
        now,
        now,
        *select_params,
        campaign.pk,
        BatchKind.INITIAL.value,
        size,
        batches,
        batches,
        size,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.format(select=select_sql), params)
    sizes = dict(
        OutboundMessage.objects.filter(batch__campaign=campaign, batch__kind=BatchKind.INITIAL)
        .values_list("batch_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    batch_rows = list(SendBatch.objects.filter(campaign=campaign, kind=BatchKind.INITIAL).order_by("number"))
    for batch in batch_rows:
        batch.size = sizes.get(batch.pk, 0)
    SendBatch.objects.bulk_update(batch_rows, ["size"])
    SendBatch.objects.filter(campaign=campaign, kind=BatchKind.INITIAL, size=0).delete()
    waits = quiet_hours_apply([b for b in batch_rows if b.size], sorted(evaluation.quotes))
    totals = OutboundMessage.objects.filter(batch__campaign=campaign, batch__kind=BatchKind.INITIAL).aggregate(
        n=Count("id"), segments=Sum("segments"), amount=Sum("cost")
    )
    if not totals["n"]:
        raise ApplicationError(
            CampaignErrorCode.NO_SENDABLE_RECIPIENTS,
            "No contact of the segment is sendable now (consent, opt-outs, caps and coverage applied).",
            field="segment_id",
            hint="Preview the segment again; nothing was sent or charged.",
        )
    reservation = quota_reserve(
        actor=_owner_actor(campaign),
        reference=quota_reference,
        segments=int(totals["segments"] or 0),
        amount=Decimal(totals["amount"] or 0),
    )
    return {
        "messages": int(totals["n"] or 0),
        "batches": sum(1 for b in batch_rows if b.size),
        "segments": int(totals["segments"] or 0),
        "reserved_amount": str(reservation.amount),
        "quota_reference": quota_reference,
        "first_batch_at": start.isoformat(),
        "quiet_hours_waits": waits,
    }


def campaign_dispatch(*, campaign_id: int, version: int) -> dict[str, Any]:
    """Beat's (or send_approved's) entry point. Idempotent: a campaign is dispatched once."""
    from campaigns.notifications import campaign_notify

    system = Actor.system("campaigns.dispatch")
    now = timezone.now()
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(of=("self",))
            .select_related("segment", "owner", "gateway", "short_link")
            .filter(pk=campaign_id)
            .first()
        )
        if campaign is None:
            return {"dispatched": False, "reason": "no such campaign"}
        skip = None
        if campaign.state not in APPROVED_STATES:
            skip = f"campaign is {campaign.state}"
        elif campaign.approved_version != version or campaign.version != version:
            skip = f"version {version} is not the approved current version"
        elif SendBatch.objects.filter(campaign=campaign, kind=BatchKind.INITIAL).exists():
            skip = "already dispatched"
        if skip:
            audit_record(
                actor=system,
                action="campaign.dispatch_skipped",
                object_type="campaign",
                object_id=campaign.pk,
                after={"version": version, "reason": skip},
            )
            return {"dispatched": False, "reason": skip}
        try:
            with transaction.atomic():
                evaluation = campaign_evaluate(_owner_actor(campaign), campaign_spec(campaign), campaign_id=campaign.pk)
                if evaluation.body_preview != campaign.body_preview:
                    raise ApplicationError(
                        CampaignErrorCode.CAMPAIGN_CONTENT_CHANGED,
                        "The message would differ from the approved one (a template, link or rule changed).",
                        field="campaign_id",
                        hint="Update the campaign and have it approved again.",
                    )
                budget_check(evaluation, budget=campaign.budget)
                from gateways.frequency import frequency_blocked_purpose

                if frequency_blocked_purpose(MessagePurpose.MARKETING):
                    raise ApplicationError(
                        CampaignErrorCode.FREQUENCY_CAP_BLOCKS,
                        "A marketing frequency cap is set to 0: no marketing SMS may be sent.",
                        field="frequency_caps",
                        hint=(
                            "Compliance changes frequency_caps in the admin's Platform configuration or with "
                            "PATCH /api/v1/config/ (no MCP tool writes configuration)."
                        ),
                    )
                outcome = _materialise(campaign, evaluation, now=now)
        except ApplicationError as exc:
            campaign.state = CampaignState.FAILED
            campaign.failure_reason = f"{exc.code}: {exc.message}"[:2000]
            campaign.updated_at = now
            campaign.save(update_fields=["state", "failure_reason", "updated_at"])
            notified = campaign_notify(campaign, subject=f"Campaign {campaign.name} not sent", body=exc.message)
            audit_record(
                actor=system,
                action="campaign.dispatch_failed",
                object_type="campaign",
                object_id=campaign.pk,
                after={"error": exc.as_dict(), "notification": notified},
            )
            return {"dispatched": False, "reason": exc.message, "error": exc.as_dict()}
        campaign.state = CampaignState.SENDING
        campaign.dispatched_at = now
        campaign.updated_at = now
        campaign.save(update_fields=["state", "dispatched_at", "updated_at"])
        audit_record(
            actor=system,
            action="campaign.dispatch",
            object_type="campaign",
            object_id=campaign.pk,
            after={"version": version, **outcome},
        )
        transaction.on_commit(_kick)
    return {"dispatched": True, "campaign_id": campaign_id, **outcome}


def _kick() -> None:
    from campaigns.tasks import advance_batches

    advance_batches.delay()


def batches_advance_on_commit() -> None:
    """Run batches_advance soon after the current transaction commits (new messages to submit)."""
    transaction.on_commit(_kick)


# --- progress ---------------------------------------------------------------------------------------

PENDING_STATES = (MessageState.QUEUED, MessageState.SUBMITTING)


# A campaign due this long ago with no dispatch committed lost its dispatch task (its Celery worker
# was killed before the commit and the broker holds the task until its visibility timeout, or the
# message was lost): the sweep in batches_advance dispatches it again. Dispatch is idempotent.
DISPATCH_GRACE = timedelta(seconds=settings.SMS_DISPATCH_GRACE_SECONDS)
DISPATCH_RETRY_EVERY = 2 * DISPATCH_GRACE


def dispatch_sweep(*, now: datetime | None = None) -> int:
    """Queue the dispatch again for approved (send now) or scheduled campaigns past due by more
    than DISPATCH_GRACE with nothing dispatched, at most every DISPATCH_RETRY_EVERY each (audited)."""
    from campaigns.tasks import dispatch_campaign

    now = now or timezone.now()
    cutoff = now - DISPATCH_GRACE
    dispatched = SendBatch.objects.filter(campaign=OuterRef("pk"), kind=BatchKind.INITIAL)
    due = (
        Campaign.objects.filter(
            Q(state=CampaignState.APPROVED, approved_at__lt=cutoff)
            | Q(state=CampaignState.SCHEDULED, send_at__lt=cutoff)
        )
        .exclude(Exists(dispatched))
        .values_list("pk", "approved_version", "state")
    )
    system = Actor.system("campaigns.dispatch_sweep")
    queued = 0
    for campaign_id, version, state in due:
        if version is None:
            continue
        recently = AuditLog.objects.filter(
            object_type="campaign",
            object_id=str(campaign_id),
            action="campaign.dispatch_retry",
            at__gte=now - DISPATCH_RETRY_EVERY,
        ).exists()
        if recently:
            continue
        audit_record(
            actor=system,
            action="campaign.dispatch_retry",
            object_type="campaign",
            object_id=campaign_id,
            after={"version": version, "state": state},
            reason=f"Due more than {DISPATCH_GRACE.seconds}s ago and not dispatched: its dispatch task was lost "
            "or is late; queued again (a campaign is dispatched once, whichever task runs first).",
        )
        logger.warning("campaign %s was due and not dispatched: dispatching it again", campaign_id)
        transaction.on_commit(functools.partial(dispatch_campaign.delay, campaign_id, version))
        queued += 1
    return queued


def batches_advance(*, budget_seconds: float = 4.0) -> dict[str, int]:
    """Start due batches, submit due messages for HTTP/in-process gateways, roll up completion."""
    from campaigns.notifications import campaign_notify
    from gateways.adapters import adapter_for
    from gateways.delivery.queue import messages_submit

    now = timezone.now()
    redispatched = dispatch_sweep(now=now)
    started = SendBatch.objects.filter(state=BatchState.WAITING, not_before__lte=now).update(
        state=BatchState.SENDING, started_at=now
    )
    submitted = 0
    deadline = clock.monotonic() + budget_seconds
    due_gateways = (
        OutboundMessage.objects.filter(
            batch__state=BatchState.SENDING, state=MessageState.QUEUED, next_attempt_at__lte=now
        )
        .values_list("gateway_id", flat=True)
        .distinct()
        .order_by()
    )
    system = Actor.system("campaigns.advance_batches")
    for gateway in Gateway.objects.filter(pk__in=list(due_gateways), enabled=True):
        if adapter_for(gateway).sends_from_worker:
            continue  # its bind worker claims due messages itself
        while clock.monotonic() < deadline:
            counts = messages_submit(actor=system, gateway_id=gateway.pk)
            n = sum(counts.values())
            submitted += n
            if n == 0:
                break
    completed = 0
    for batch in SendBatch.objects.filter(state=BatchState.SENDING):
        if not OutboundMessage.objects.filter(batch=batch, state__in=PENDING_STATES).exists():
            SendBatch.objects.filter(pk=batch.pk, state=BatchState.SENDING).update(
                state=BatchState.COMPLETED, completed_at=timezone.now()
            )
            completed += 1
    finished = 0
    for campaign in Campaign.objects.filter(state=CampaignState.SENDING).select_related("owner"):
        open_batches = SendBatch.objects.filter(
            campaign=campaign, state__in=[BatchState.WAITING, BatchState.SENDING]
        ).exists()
        if open_batches:
            continue
        updated = Campaign.objects.filter(pk=campaign.pk, state=CampaignState.SENDING).update(
            state=CampaignState.COMPLETED, completed_at=timezone.now(), updated_at=timezone.now()
        )
        if updated:
            finished += 1
            summary = campaign_progress(campaign.pk)
            notified = campaign_notify(
                campaign,
                subject=f"Campaign {campaign.name} sent",
                body=f"Every message was submitted or reached a final state: {summary}",
            )
            audit_record(
                actor=system,
                action="campaign.complete",
                object_type="campaign",
                object_id=campaign.pk,
                after={"progress": summary, "notification": notified},
            )
    return {
        "batches_started": started,
        "messages_submitted": submitted,
        "batches_completed": completed,
        "campaigns_completed": finished,
        "campaigns_redispatched": redispatched,
    }


# --- stop ---------------------------------------------------------------------------------------------


def campaign_stop(*, actor: Actor, campaign: Campaign, reason: str) -> dict[str, Any]:
    """Withdraw every message not yet claimed; stop open batches. Runs in the caller's transaction."""
    from gateways.quotas import quota_unhold

    now = timezone.now()
    withdrawn = 0
    while True:
        rows = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(batch__campaign=campaign, state=MessageState.QUEUED)
            .order_by("pk")
            .values_list("pk", "segments", "cost", "quota_reference")[:5000]
        )
        if not rows:
            break
        ids = [r[0] for r in rows]
        OutboundMessage.objects.filter(pk__in=ids, state=MessageState.QUEUED).update(
            state=MessageState.FAILED,
            error_code="withdrawn",
            error_reason=f"campaign stopped: {reason}"[:300],
            final_at=now,
        )
        totals: dict[str, tuple[int, Decimal]] = {}
        for _pk, segments, cost, reference in rows:
            s, a = totals.get(reference, (0, Decimal(0)))
            totals[reference] = (s + segments, a + cost)
        for reference, (segments, amount) in totals.items():
            quota_unhold(actor=actor, reference=reference, segments=segments, amount=amount)
        withdrawn += len(ids)
    stopped = SendBatch.objects.filter(campaign=campaign, state__in=[BatchState.WAITING, BatchState.SENDING]).update(
        state=BatchState.STOPPED, stopped_at=now, stop_reason=reason[:1000]
    )
    Campaign.objects.filter(pk=campaign.pk).update(
        state=CampaignState.PAUSED, cancel_reason=reason, cancelled_at=now, updated_at=now
    )
    campaign.state = CampaignState.PAUSED
    progress = campaign_progress(campaign.pk)
    return {
        "withdrawn_messages": withdrawn,
        "stopped_batches": stopped,
        "already_sent": progress["submitted"] + progress["delivered"] + progress["unknown"] + progress["submitting"],
        "progress": progress,
    }
