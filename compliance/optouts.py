"""Opt-outs and the suppression list (ARCHITECTURE, hard rules).

An opt-out is a row per phone, effective the moment its transaction commits for
every promotional path (previews and dispatch test ``suppressed_phone_exists``
in SQL). Opt-outs are never deleted and never delayed by approval: the
catalogue says a STOP is executed at once. Only explicit new consent with
evidence lifts one (``opt_outs_lift_by_consent``, called by contacts.upsert
with ``lift_opt_out`` and by a START reply); a contact write never touches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from contacts.models import LIFTABLE_REASONS, ConsentEvidence, Contact, OptOut, OptOutReason, SyncState
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.idempotency import run_idempotent
from smsplatform.kernel.phones import phone_mask, phone_parse

VIEW_PERMISSION = "contacts.view_optout"
ADD_PERMISSION = "contacts.add_optout"
FULL_PHONE_PERMISSION = "compliance.view_full_phone"

DEFAULT_REASON = {
    Channel.MCP: OptOutReason.API,
    Channel.API: OptOutReason.API,
    Channel.ADMIN: OptOutReason.ADMIN,
    Channel.FORM: OptOutReason.WEB,
    Channel.SYSTEM: OptOutReason.STOP,
}


def active_opt_outs() -> QuerySet[OptOut]:
    return OptOut.objects.filter(lifted_at__isnull=True)


def suppressed_phone_exists(phone_ref: Any = None) -> Exists:
    """``EXISTS (active opt-out for this phone)``, for annotating contact querysets in SQL."""
    return Exists(active_opt_outs().filter(phone=phone_ref if phone_ref is not None else OuterRef("phone")))


def phone_is_suppressed(phone: str) -> bool:
    return active_opt_outs().filter(phone=phone).exists()


def opt_out_last_id() -> int:
    """The highest opt-out id (0 when there is none): where a watch for new opt-outs starts."""
    return OptOut.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def opt_outs_active_after(*, after_id: int) -> list[tuple[int, str, str, str]]:
    """Active opt-outs with an id above ``after_id``: (id, phone, reason, source), one query.

    For watchers of new opt-outs (the SMPP bind worker withdraws held messages to those numbers).
    Ids are assigned at insert, not at commit: a watcher looks again somewhat below the highest id
    it has seen, so an opt-out committed after a higher one is not missed."""
    return list(active_opt_outs().filter(pk__gt=after_id).values_list("pk", "phone", "reason", "source"))


def phone_for_actor(actor: Actor, e164: str) -> str:
    return e164 if actor.has_perm(FULL_PHONE_PERMISSION) else phone_mask(e164)


def opt_out_record(
    *,
    actor: Actor,
    phone: str,
    reason: str,
    source: str,
    message_text: str = "",
    language: str = "",
    note: str = "",
    occurred_at: datetime | None = None,
    idempotency_key: str = "",
) -> dict[str, Any]:
    """Suppress ``phone`` now. Runs inside the caller's transaction (an inbound SMS handler
    or ``contact_opt_out``); ``phone`` is already E.164."""
    now = timezone.now()
    contact = (
        # Lock the contact row: an upsert racing with this opt-out either committed before
        # (and we bump past its version) or waits and then finds its version token stale.
        Contact.objects.select_for_update(of=("self",)).filter(phone=phone).first()
    )
    if contact is not None:
        Contact.objects.filter(pk=contact.pk).update(version=F("version") + 1, updated_at=now)
    existing = active_opt_outs().filter(phone=phone, reason=reason).order_by("id").first()
    if existing is not None:
        opt_out, created = existing, False
    else:
        opt_out = OptOut.objects.create(
            phone=phone,
            contact=contact,
            reason=reason,
            source=source[:100],
            message_text=message_text,
            language=language[:10],
            note=note[:500],
            occurred_at=occurred_at or now,
            recorded_at=now,
            recorded_by_id=actor.user_id,
            actor_channel=str(actor.channel),
            actor_token_name=actor.token_name,
            sync_state=SyncState.PENDING if contact is not None and contact.crm_key else SyncState.NOT_APPLICABLE,
        )
        created = True
    audit_record(
        actor=actor,
        action="opt_out.record",
        object_type="opt_out",
        object_id=opt_out.pk,
        after={
            "phone": phone_mask(phone),
            "contact_id": contact.pk if contact else None,
            "reason": reason,
            "source": source,
            "language": language,
            "message_text": message_text,
            "created": created,
        },
        reason=note,
        idempotency_key=idempotency_key,
    )
    return {
        "opt_out_id": opt_out.pk,
        "contact_id": contact.pk if contact else None,
        "reason": opt_out.reason,
        "created": created,
        "already_opted_out": not created,
        "effective_at": (opt_out.recorded_at if created else now).isoformat(),
        "suppressed": True,
    }


def contact_opt_out(
    *,
    actor: Actor,
    idempotency_key: str | None,
    contact_id: int | None = None,
    phone: str | None = None,
    reason: str | None = None,
    source: str = "",
    message_text: str = "",
    language: str = "",
    note: str = "",
) -> dict[str, Any]:
    """contacts.opt_out: executed at once, never held for approval (catalogue)."""
    if not actor.has_perm(ADD_PERMISSION):
        raise permission_denied(ADD_PERMISSION)
    if (contact_id is None) == (not phone):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give exactly one of contact_id or phone.",
            field="contact_id" if contact_id is None else "phone",
            hint="Find the contact with sms_marketing.contacts.search, or pass the phone as received.",
        )
    reason = reason or DEFAULT_REASON[actor.channel]
    if reason not in OptOutReason.values:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"reason must be one of {', '.join(OptOutReason.values)}.",
            field="reason",
        )
    if contact_id is not None:
        e164 = Contact.objects.filter(pk=contact_id).values_list("phone", flat=True).first()
        if e164 is None:
            raise not_found("contact", contact_id, field="contact_id", hint="Use sms_marketing.contacts.search.")
    else:
        # A number that does not parse is still suppressed as given: an opt-out is never refused.
        try:
            e164 = phone_parse(str(phone)).e164
        except ApplicationError:
            e164 = str(phone).strip()[:16]
    payload: dict[str, Any] = {
        "phone": e164,
        "reason": reason,
        "source": source or str(actor.channel),
        "message_text": message_text,
        "language": language,
        "note": note,
    }
    return run_idempotent(
        actor=actor,
        key=idempotency_key,
        operation="contacts.opt_out",
        payload=payload,
        execute=lambda: opt_out_record(actor=actor, idempotency_key=idempotency_key or "", **payload),
    )


def opt_outs_lift_by_consent(*, actor: Actor, phone: str, consent: ConsentEvidence) -> int:
    """Lift the liftable opt-outs this consent postdates. Inside the caller's transaction.

    Blocks, invalid numbers and complaints stay: only staff decisions reverse those."""
    lifted = list(
        active_opt_outs()
        .select_for_update()
        .filter(phone=phone, reason__in=LIFTABLE_REASONS, occurred_at__lte=consent.obtained_at)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if not lifted:
        return 0
    OptOut.objects.filter(pk__in=lifted).update(lifted_at=timezone.now(), lifted_by_consent=consent)
    audit_record(
        actor=actor,
        action="opt_out.lift",
        object_type="opt_out",
        object_id=lifted[0],
        after={"opt_out_ids": lifted, "consent_id": consent.pk, "phone": phone_mask(phone)},
        reason="explicit new consent with evidence",
    )
    return len(lifted)


def opt_out_summary(item: OptOut, actor: Actor) -> dict[str, Any]:
    return {
        "opt_out_id": item.pk,
        "phone": phone_for_actor(actor, item.phone),
        "contact_id": item.contact_id,
        "reason": item.reason,
        "source": item.source,
        "message_text": item.message_text,
        "language": item.language,
        "occurred_at": item.occurred_at.isoformat(),
        "recorded_at": item.recorded_at.isoformat(),
        "sync_state": item.sync_state,
        "active": item.lifted_at is None,
        "lifted_at": item.lifted_at.isoformat() if item.lifted_at else None,
    }


def opt_outs_list(
    *,
    actor: Actor,
    reason: str | None = None,
    phone: str | None = None,
    include_lifted: bool = False,
    limit: int = 100,
) -> dict[str, Any]:
    if not actor.has_perm(VIEW_PERMISSION):
        raise permission_denied(VIEW_PERMISSION)
    if reason and reason not in OptOutReason.values:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, f"reason must be one of {', '.join(OptOutReason.values)}.", field="reason"
        )
    qs = OptOut.objects.all() if include_lifted else active_opt_outs()
    if reason:
        qs = qs.filter(reason=reason)
    if phone:
        qs = qs.filter(phone=phone_parse(phone).e164)
    limit = max(1, min(int(limit), 500))
    counts = dict(active_opt_outs().values_list("reason").annotate(n=Count("id")).order_by("reason"))
    items = [opt_out_summary(o, actor) for o in qs.order_by("-occurred_at", "-id")[:limit]]
    return {
        "opt_outs": items,
        "count": len(items),
        "active_by_reason": {r: counts.get(r, 0) for r in OptOutReason.values},
        "active_phones": active_opt_outs().values("phone").distinct().count(),
        "note": (
            "Opt-outs are a hard limit on every send except OTP and apply from the moment they are recorded. "
            "Phones are masked unless you may see them."
        ),
    }


def opt_out_q_for_contacts() -> Q:
    """Contacts with no active opt-out, as a Q usable in any contact queryset."""
    return ~Q(phone__in=active_opt_outs().values("phone"))
