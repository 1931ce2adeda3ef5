"""Recording and lifting opt-outs (ARCHITECTURE, hard rules): the writes that touch a contact.

The suppression list itself (the model, the "is this phone suppressed" rules, the list) is
compliance's (compliance/models.py, compliance/optouts.py). Recording an opt-out locks and
bumps the phone's contact; only explicit new consent with evidence lifts one
(``opt_outs_lift_by_consent``, called by contacts.upsert with ``lift_opt_out`` and by a START
reply); a contact write never touches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from compliance.models import LIFTABLE_REASONS, OptOut, OptOutReason, SyncState
from compliance.optouts import ADD_PERMISSION, active_opt_outs
from contacts.models import ConsentEvidence, Contact
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.idempotency import run_idempotent
from smsplatform.kernel.phones import phone_mask, phone_parse

DEFAULT_REASON = {
    Channel.MCP: OptOutReason.API,
    Channel.API: OptOutReason.API,
    Channel.ADMIN: OptOutReason.ADMIN,
    Channel.FORM: OptOutReason.WEB,
    Channel.SYSTEM: OptOutReason.STOP,
}


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
    """contacts.opt_out: executed at once, never held for approval (catalogue). Answers with the
    write envelope: ``{"status": "executed", "action": "contacts.opt_out", "result": {...}}``."""
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

    def execute() -> dict[str, Any]:
        # The envelope every write answers with (compliance.governance.governed_write): an opt-out
        # is never held for approval, so it is always executed, its record in result.
        result = opt_out_record(actor=actor, idempotency_key=idempotency_key or "", **payload)
        return {"status": "executed", "action": OPT_OUT_ACTION, "result": result}

    return run_idempotent(actor=actor, key=idempotency_key, operation=OPT_OUT_ACTION, payload=payload, execute=execute)


OPT_OUT_ACTION = "contacts.opt_out"


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
