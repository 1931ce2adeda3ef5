"""The suppression list (ARCHITECTURE, hard rules): which phones are opted out, and the list.

An opt-out is a row per phone, effective the moment its transaction commits for
every promotional path (previews and dispatch test ``suppressed_phone_exists``
in SQL). Opt-outs are never deleted and never delayed by approval: the
catalogue says a STOP is executed at once. Recording one and lifting one touch
the contact, so those writes are the contacts app's (contacts/optouts.py).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from compliance.models import OptOut, OptOutReason
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied
from smsplatform.kernel.phones import phone_mask, phone_parse

VIEW_PERMISSION = "compliance.view_optout"
ADD_PERMISSION = "compliance.add_optout"
FULL_PHONE_PERMISSION = "compliance.view_full_phone"


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
    if reason is not None and reason not in OptOutReason.values:
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
