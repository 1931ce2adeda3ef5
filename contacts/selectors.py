"""Reads of contacts: search (minimal, masked) and get (full, with a version token)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)

from compliance.optouts import FULL_PHONE_PERMISSION, opt_out_summary, phone_for_actor, suppressed_phone_exists
from contacts.models import Audience, AudienceMembership, ConsentEvidence, ConsentPurpose, Contact, OptOut
from gateways.models import OutboundMessage
from gateways.phones import phone_parse
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.versioning import version_token

LABEL = "contacts.contact"
VIEW_PERMISSION = "contacts.view_contact"
SEND_HISTORY_LIMIT = 20


def contact_token(contact: Contact) -> str:
    return version_token(LABEL, contact.pk, contact.version)


def marketing_consent_exists() -> Exists:
    return Exists(ConsentEvidence.objects.filter(contact=OuterRef("pk"), purpose=ConsentPurpose.MARKETING))


def contacts_annotated() -> QuerySet[Contact]:
    """Contacts with ``has_consent`` and ``opted_out`` computed in SQL; sendable = both right."""
    return Contact.objects.annotate(has_consent=marketing_consent_exists(), opted_out=suppressed_phone_exists())


def _require_view(actor: Actor) -> None:
    if not actor.has_perm(VIEW_PERMISSION):
        raise permission_denied(VIEW_PERMISSION)


def _minimal(actor: Actor, contact: Any) -> dict[str, Any]:
    return {
        "contact_id": contact.pk,
        "phone": phone_for_actor(actor, contact.phone),
        "country": contact.country,
        "language": contact.language,
        "has_consent": bool(contact.has_consent),
        "opted_out": bool(contact.opted_out),
        "sendable": bool(contact.has_consent and not contact.opted_out),
    }


def contacts_search(
    *,
    actor: Actor,
    phone: str | None = None,
    crm_key: str | None = None,
    tag: str | None = None,
    audience_id: int | None = None,
    opted_out: bool | None = None,
    has_consent: bool | None = None,
    sent_within_days: int | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """The minimum to pick a contact: id, phone (masked unless permitted), country, language,
    consent and opt-out flags. Phone lookups are one unique-index probe."""
    _require_view(actor)
    criteria = (phone, crm_key, tag, audience_id, opted_out, has_consent, sent_within_days)
    if not any(v is not None and v != "" for v in criteria):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give at least one search criterion.",
            field="phone",
            hint="Search by phone, crm_key, tag, audience_id, opted_out, has_consent or sent_within_days.",
        )
    qs = contacts_annotated()
    if phone:
        qs = qs.filter(phone=phone_parse(phone, field="phone").e164)
    if crm_key:
        qs = qs.filter(crm_key=crm_key)
    if tag:
        qs = qs.filter(tags__contains=[tag]) if _json_contains_supported() else qs.filter(tags__icontains=f'"{tag}"')
    if audience_id is not None:
        qs = qs.filter(memberships__audience_id=audience_id)
    if opted_out is not None:
        qs = qs.filter(Q(opted_out=opted_out))  # an annotation
    if has_consent is not None:
        qs = qs.filter(Q(has_consent=has_consent))
    if sent_within_days is not None:
        from datetime import timedelta

        from django.utils import timezone

        since = timezone.now() - timedelta(days=int(sent_within_days))
        qs = qs.filter(Exists(OutboundMessage.objects.filter(destination=OuterRef("phone"), created_at__gte=since)))
    limit = max(1, min(int(limit), 100))
    items = [_minimal(actor, c) for c in qs.order_by("id")[: limit + 1]]
    return {
        "contacts": items[:limit],
        "count": min(len(items), limit),
        "truncated": len(items) > limit,
        "phones_masked": not actor.has_perm(FULL_PHONE_PERMISSION),
        "note": "Minimal fields only; read one contact with sms_marketing.contacts.get for its version token.",
    }


def _json_contains_supported() -> bool:
    from django.db import connection

    return bool(connection.features.supports_json_field_contains)


def contact_access(*, actor: Actor, contact_id: int) -> Contact:
    _require_view(actor)
    contact = contacts_annotated().filter(pk=contact_id).first()
    if contact is None:
        raise not_found("contact", contact_id, field="contact_id", hint="Use sms_marketing.contacts.search.")
    return contact


def contact_get(*, actor: Actor, contact_id: int) -> dict[str, Any]:
    contact: Any = contact_access(actor=actor, contact_id=contact_id)
    consents = [
        {
            "consent_id": c.pk,
            "channel": c.channel,
            "purpose": c.purpose,
            "wording": c.wording,
            "source": c.source,
            "obtained_at": c.obtained_at.isoformat(),
            "proof_reference": c.proof_reference,
            "recorded_at": c.recorded_at.isoformat(),
            "recorded_via": c.actor_channel,
        }
        for c in contact.consents.order_by("-obtained_at", "-id")
    ]
    opt_outs = [opt_out_summary(o, actor) for o in OptOut.objects.filter(phone=contact.phone).order_by("-id")]
    history = [
        {
            "message_id": m.pk,
            "created_at": m.created_at.isoformat(),
            "purpose": m.purpose,
            "state": m.state,
            "reference": m.reference,
        }
        for m in OutboundMessage.objects.filter(destination=contact.phone).order_by("-created_at")[:SEND_HISTORY_LIMIT]
    ]
    return {
        "contact_id": contact.pk,
        "phone": phone_for_actor(actor, contact.phone),
        "phones_masked": not actor.has_perm(FULL_PHONE_PERMISSION),
        "country": contact.country,
        "language": contact.language,
        "name": contact.name,
        "tags": list(contact.tags or []),
        "source": contact.source,
        "crm_key": contact.crm_key,
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
        "has_consent": bool(contact.has_consent),
        "opted_out": bool(contact.opted_out),
        "sendable": bool(contact.has_consent and not contact.opted_out),
        "consent_evidence": consents,
        "opt_outs": opt_outs,
        "send_history": history,
        "version": contact.version,
        "base_version_token": contact_token(contact),
        "note": (
            "Update with sms_marketing.contacts.upsert sending contact_id and base_version_token; a newer "
            "opt-out makes the token stale. Only explicit new consent with evidence (lift_opt_out) lifts a STOP."
        ),
    }


# --- audiences ----------------------------------------------------------------------------------

AUDIENCE_PERMISSION = "contacts.view_audience"


def audiences_visible(actor: Actor) -> QuerySet[Audience]:
    """Audiences the actor may see: those open to every contact viewer, and those shared with
    one of the actor's roles."""
    if not actor.has_perm(AUDIENCE_PERMISSION):
        raise permission_denied(AUDIENCE_PERMISSION)
    qs = Audience.objects.all()
    user = actor.user
    if user is None or getattr(user, "is_superuser", False):
        return qs
    restricted = Audience.visible_to.through.objects.filter(audience_id=OuterRef("pk"))
    mine = restricted.filter(group__in=user.groups.all())
    return qs.filter(~Exists(restricted) | Exists(mine))


def audiences_list(*, actor: Actor) -> dict[str, Any]:
    audiences = list(audiences_visible(actor).order_by("name"))
    ids = [a.pk for a in audiences]
    # One grouped query over the memberships: totals, consent and opt-out state per audience.
    stats = {
        row["audience_id"]: row
        for row in AudienceMembership.objects.filter(audience_id__in=ids)
        .annotate(
            consented=_flag(Q(contact_id__in=_consented_contact_ids())),
            suppressed=_flag(Q(contact__phone__in=_suppressed_phones())),
        )
        .values("audience_id")
        .annotate(
            members=Count("id"),
            with_consent=Count("id", filter=Q(consented=True)),
            opted_out=Count("id", filter=Q(suppressed=True)),
            sendable=Count("id", filter=Q(consented=True, suppressed=False)),
        )
        .order_by()
    }
    items = []
    for a in audiences:
        row: Any = stats.get(a.pk, {})
        members = row.get("members", 0)
        items.append(
            {
                "audience_id": a.pk,
                "name": a.name,
                "description": a.description,
                "source": a.source,
                "region": a.region,
                "sync_source": a.sync_source,
                "purchase_behaviour": a.purchase_behaviour,
                "members": members,
                "sendable": row.get("sendable", 0),
                "consent": {
                    "with_consent": row.get("with_consent", 0),
                    "without_consent": members - row.get("with_consent", 0),
                    "opted_out": row.get("opted_out", 0),
                },
            }
        )
    return {
        "audiences": items,
        "count": len(items),
        "note": (
            "Counts only; no phone numbers. Sendable = marketing consent evidence and no active opt-out; "
            "segments.preview also removes duplicates, uncovered countries and frequency-capped contacts."
        ),
    }


def _consented_contact_ids() -> QuerySet[Any]:
    return ConsentEvidence.objects.filter(purpose=ConsentPurpose.MARKETING).values("contact_id")


def _suppressed_phones() -> QuerySet[Any]:
    return OptOut.objects.filter(lifted_at__isnull=True).values("phone")


def _flag(q: Q) -> ExpressionWrapper:
    return ExpressionWrapper(q, output_field=BooleanField())


# --- segment counts (the body of segments.preview) --------------------------------------------

# Each excluded contact is counted under the first reason that applies, in this order; a phone
# present in several audiences of the scope is counted once and its extra rows as duplicates.
EXCLUSION_ORDER = (
    "duplicate_phone",
    "invalid",
    "blocked",
    "opted_out",
    "no_consent",
    "country_not_covered",
    "frequency_capped",
)


def segment_counts(*, actor: Actor, criteria: dict[str, Any]) -> dict[str, Any]:
    """Matched rows, sendable contacts and every exclusion by reason, per country, in SQL.

    ``criteria`` is already normalised. Every membership predicate below is an uncorrelated
    ``IN (subquery)``, which PostgreSQL runs as one hashed lookup per table, not a probe per
    contact; the contacts are grouped by (primary reason, country, cap windows) in one query.
    """
    from compliance.frequency import frequency_capped_destinations, frequency_windows
    from contacts.criteria import criteria_audience_ids, criteria_q
    from contacts.models import OptOutReason
    from gateways.models import GatewayRate, MessagePurpose
    from gateways.selectors import segment_prices

    visible = set(audiences_visible(actor).values_list("pk", flat=True))
    referenced = criteria_audience_ids(criteria)
    hidden = sorted(referenced - visible)
    if hidden:
        raise not_found(
            "audience", hidden[0], field="criteria.audiences", hint="Pick ids from sms_marketing.audiences.list."
        )
    scope = sorted(referenced or visible)
    in_scope = AudienceMembership.objects.filter(audience_id__in=scope)
    matched = Contact.objects.filter(pk__in=in_scope.values("contact_id")).filter(criteria_q(criteria))

    caps = frequency_capped_destinations(purpose=MessagePurpose.MARKETING)
    windows = {w.name: w for w in frequency_windows()}
    countries = list(
        GatewayRate.objects.filter(gateway__enabled=True).values_list("country", flat=True).distinct().order_by()
    )
    prices = segment_prices(countries=countries)
    active = OptOut.objects.filter(lifted_at__isnull=True)
    cap_flags = {f"cap_{name}": _flag(Q(phone__in=qs)) for name, qs in caps.items()}
    any_cap = Q()
    for name in cap_flags:
        any_cap |= Q(**{name: True})
    reason = Case(
        When(Q(phone__in=active.filter(reason=OptOutReason.INVALID).values("phone")), then=Value("invalid")),
        When(Q(phone__in=active.filter(reason=OptOutReason.BLOCKED).values("phone")), then=Value("blocked")),
        When(
            Q(phone__in=active.exclude(reason__in=[OptOutReason.INVALID, OptOutReason.BLOCKED]).values("phone")),
            then=Value("opted_out"),
        ),
        When(~Q(pk__in=_consented_contact_ids()), then=Value("no_consent")),
        When(~Q(country__in=list(prices)), then=Value("country_not_covered")),
        *([When(any_cap, then=Value("frequency_capped"))] if cap_flags else []),
        default=Value("sendable"),
        output_field=CharField(),
    )
    rows = (
        matched.annotate(**cap_flags)
        .annotate(primary_reason=reason)
        .values("primary_reason", "country", *cap_flags)
        .annotate(n=Count("id"))
        .order_by()
    )
    exclusions = dict.fromkeys(EXCLUSION_ORDER, 0)
    by_window = dict.fromkeys(caps, 0)
    by_country: dict[str, dict[str, Any]] = {}
    sendable = distinct = 0
    for row in rows:
        n, country, primary = row["n"], row["country"], row["primary_reason"]
        distinct += n
        entry = by_country.setdefault(country, {"country": country, "contacts": 0, "sendable": 0, "excluded": 0})
        entry["contacts"] += n
        if primary == "sendable":
            sendable += n
            entry["sendable"] += n
            continue
        entry["excluded"] += n
        exclusions[primary] += n
        if primary == "frequency_capped":
            for name in caps:
                if row[f"cap_{name}"]:
                    by_window[name] += n
    membership_rows = in_scope.filter(contact_id__in=matched.values("pk")).count()
    exclusions["duplicate_phone"] = membership_rows - distinct
    total_cost: dict[str, Decimal] = {}
    for country, entry in by_country.items():
        quote = prices.get(country)
        entry["covered"] = quote is not None
        if quote is not None:
            cost = (quote.price_per_segment * entry["sendable"]).quantize(Decimal("0.01"))
            entry.update(
                gateway=quote.gateway_code,
                price_per_segment=str(quote.price_per_segment),
                currency=quote.currency,
                estimated_cost=str(cost),
            )
            total_cost[quote.currency] = total_cost.get(quote.currency, Decimal(0)) + cost
    return {
        "criteria": criteria,
        "audience_ids": scope,
        "matched": membership_rows,
        "distinct_phones": distinct,
        "sendable": sendable,
        "excluded": membership_rows - sendable,
        "exclusions": exclusions,
        "exclusion_order": list(EXCLUSION_ORDER),
        "frequency_capped_by_window": {
            name: {"count": by_window[name], "rule": windows[name].describe()} for name in caps if name in windows
        },
        "by_country": sorted(by_country.values(), key=lambda e: (-e["contacts"], e["country"])),
        "estimated_cost": {currency: str(amount) for currency, amount in sorted(total_cost.items())},
        "cost_basis": "one SMS segment per sendable contact; the campaign's copy fit preview gives the real count",
    }
