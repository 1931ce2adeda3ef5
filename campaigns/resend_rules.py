"""The resend rule: which failed messages may be sent again, and why not the others.

The rule is one SQL ``CASE`` (``resend_reason``), its only home: the retry preview groups by it
in the database, the resend selects the still-eligible messages with it in one
``INSERT ... SELECT``, and delivery_status.get evaluates it over the messages it shows
(``resend_reasons``). Also here: the prices a resend pays per country and its cost in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL

from campaigns.models import Campaign
from compliance.models import OptOut, OptOutReason
from gateways.models import MessagePurpose, MessageState, OutboundMessage
from gateways.selectors import segment_prices

RESEND = "campaigns.resend_messages"
PREVIEW_KIND = "failed_messages.retry"


def quotes_for_countries(campaign: Campaign, countries: set[str]) -> dict[str, Any]:
    """The price per segment a resend of this campaign pays, per country a gateway covers."""
    return segment_prices(countries=sorted(countries), gateway_code=campaign.gateway.code if campaign.gateway else None)


ELIGIBLE = "temporary_failure"


def previewed_ids(message_ids: Sequence[Any]) -> RawSQL:
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
    (``resend_reason``: why it may not be resent now, ``ELIGIBLE`` if it may). Only ids of the preview
    and only messages of this campaign: never wider than the preview."""
    return OutboundMessage.objects.filter(pk__in=previewed_ids(message_ids), batch__campaign_id=campaign.pk).annotate(
        m_reason=resend_reason(quotes)
    )


def resend_reasons(message_ids: Sequence[int]) -> dict[int, str]:
    """Each message's reason under the resend rule (``resend_reason``), in one query whatever their
    number: what delivery_status.get reports. Without quotes: whether a gateway covers the
    country is decided when a resend is previewed, not part of a message's own verdict."""
    rows = OutboundMessage.objects.filter(pk__in=list(message_ids)).annotate(
        m_reason=resend_reason(None, per_message=True)
    )
    return dict(rows.values_list("pk", "m_reason"))


def resend_reason(quotes: dict[str, Any] | None, *, per_message: bool = False) -> Case:
    """The resend rule, the only copy: one SQL CASE, first match wins, ``ELIGIBLE`` marks the
    resendable messages. With ``quotes`` (a preview or a resend), an otherwise eligible message
    no quote covers is ``country_not_covered``; ``None`` leaves that last check out.

    The frequency caps are the same rule either way: ``per_message`` asks it of each message's
    phone (a correlated EXISTS: for a page of messages), otherwise of the phones at each cap
    (one grouped pass over the window's send history: for a whole campaign's failures)."""
    from gateways.frequency import frequency_capped_exists, frequency_capped_windows

    active = OptOut.objects.filter(phone=OuterRef("destination"), lifted_at__isnull=True)
    resends = OutboundMessage.objects.filter(resend_of=OuterRef("pk"))
    if per_message:
        capped = [
            When(at_cap, then=Value("frequency_capped"))
            for at_cap in frequency_capped_exists(destination=OuterRef("destination"), purpose=MessagePurpose.MARKETING)
        ]
    else:
        # Two windows asking the same (a daily cap of 1 and a 24 h minimum gap) are one subquery.
        windows = frequency_capped_windows(purpose=MessagePurpose.MARKETING)
        distinct = {(w.hours, w.limit, w.purposes): qs for w, qs in windows}
        capped = [When(destination__in=qs, then=Value("frequency_capped")) for qs in distinct.values()]
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
        # A resend copy that failed too: the number failed twice, which is no temporary failure,
        # and a copy is never resent again (else a number that always fails is resent forever).
        When(resend_of__isnull=False, then=Value("failed_again")),
        *capped,
        *coverage,
        default=Value(ELIGIBLE),
        output_field=CharField(),
    )


def resend_counts(qs: QuerySet[OutboundMessage], quotes: dict[str, Any]) -> dict[str, tuple[int, Decimal]]:
    """One grouped query: messages and their resend cost per reason."""
    rows = (
        qs.annotate(m_cost=resend_cost(quotes))
        .values("m_reason")
        .annotate(n=Count("id"), cost=Sum("m_cost"))
        .order_by()
    )
    return {r["m_reason"]: (int(r["n"]), Decimal(r["cost"] or 0)) for r in rows}


def by_country_case(quotes: dict[str, Any], values: dict[str, Any], output: Any) -> Case:
    return Case(
        *(When(country=c, then=Value(values[c])) for c in sorted(quotes)), default=Value(None), output_field=output
    )


def resend_cost(quotes: dict[str, Any]) -> ExpressionWrapper:
    price = by_country_case(
        quotes, {c: q.price_per_segment for c, q in quotes.items()}, DecimalField(max_digits=10, decimal_places=4)
    )
    return ExpressionWrapper(price * F("segments"), output_field=DecimalField(max_digits=12, decimal_places=4))


def quotes_for_messages(campaign: Campaign, message_ids: Sequence[Any]) -> dict[str, Any]:
    countries = OutboundMessage.objects.filter(pk__in=previewed_ids(message_ids), batch__campaign_id=campaign.pk)
    return quotes_for_countries(campaign, set(countries.values_list("country", flat=True).distinct().order_by()))


def excluded_counts(counts: dict[str, tuple[int, Decimal]]) -> dict[str, int]:
    return {reason: n for reason, (n, _cost) in sorted(counts.items()) if reason != ELIGIBLE}
