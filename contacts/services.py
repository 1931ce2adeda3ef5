"""Writes of the contacts app: contacts.upsert (governed as contacts.import, or as
opt_outs.update when it lifts an opt-out).

Rules the upsert keeps (catalogue safety notes):
- the phone is parsed and validated (phonenumbers, default region HK); one phone is one contact;
- an existing contact changes only with its current ``base_version_token``, compared in the
  same ``UPDATE ... WHERE version = n`` that writes (an opt-out bumps the version, so an
  update read before a STOP is refused as stale);
- a contact is sendable only with marketing consent evidence, which is stored, never deleted,
  with its wording, source, time, actor and proof;
- opt-outs are never touched, except that explicit new consent with evidence *and*
  ``lift_opt_out`` lifts the liftable ones it postdates.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import LIFTABLE_REASONS, ActionRequest, ActionType
from compliance.optouts import active_opt_outs
from contacts.criteria import criteria_normalise
from contacts.models import ConsentEvidence, ConsentPurpose, Contact, CustomerFact, FactKind, Segment
from contacts.optouts import opt_outs_lift_by_consent
from contacts.selectors import LABEL, contact_token, segment_counts
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.idempotency import idempotent_replay, run_idempotent
from smsplatform.kernel.money import money_text
from smsplatform.kernel.phones import phone_mask, phone_parse
from smsplatform.kernel.previews import preview_consume, preview_read, preview_store
from smsplatform.kernel.text import name_check
from smsplatform.kernel.versioning import parse_version_token, stale_token_error
from smsplatform.models import Preview

CHANGE_PERMISSION = "contacts.change_contact"
LANGUAGES = ("zh-hant", "zh-hans", "en")
MAX_TAGS = 50


def _error(message: str, field: str, hint: str | None = None) -> ApplicationError:
    return ApplicationError(ErrorCode.VALIDATION_ERROR, message, field=field, hint=hint)


# The longest consent evidence fields accepted (the columns' sizes; the wording a sane notice).
CONSENT_LIMITS = {"wording": 2000, "source": 100, "proof_reference": 200}
# How far past the current time obtained_at may lie (clocks of the systems that record consent drift).
CONSENT_CLOCK_SKEW = timedelta(minutes=5)
_CONSENT_PURPOSES = frozenset(ConsentPurpose.values)
_CONSENT_REQUIRED_HINT = "Give the wording shown, where consent was given and a proof reference."
_CONSENT_LENGTH_HINT = "Shorten it (for a long wording, keep the full text where the proof reference points)."


class ConsentFieldError(NamedTuple):
    """The part of consent evidence at fault (wording, source, proof_reference, purpose or
    obtained_at), what is wrong with it and how to fix it."""

    field: str
    message: str
    hint: str | None = None


def consent_latest() -> float:
    """The latest consent time accepted now (POSIX timestamp): now plus CONSENT_CLOCK_SKEW."""
    return time.time() + CONSENT_CLOCK_SKEW.total_seconds()


def _consent_moment(value: datetime) -> tuple[float, str] | None:
    """An aware time as (POSIX timestamp, ISO text); None for a naive one. Timestamps, since
    comparing floats costs a fraction of comparing datetimes of different time zones (an import
    compares one per row)."""
    return None if timezone.is_naive(value) else (value.timestamp(), value.isoformat())


@lru_cache(maxsize=4096)
def _consent_time(raw: str) -> tuple[float, str] | None:
    """ISO 8601 text with a time zone as _consent_moment gives it, or None. Cached: the rows of an
    import repeat few distinct times, and parsing costs more than the rest of a row's checks."""
    try:
        value = parse_datetime(raw)
    except ValueError:  # well formed but no such time (month 13): the caller's error, not ours
        return None
    return None if value is None else _consent_moment(value)


def consent_check(
    *,
    wording: str,
    source: str,
    proof_reference: str,
    purpose: str,
    obtained_at: str | datetime,
    channel: str = "sms",
    latest: float | None = None,
) -> list[str] | ConsentFieldError:
    """The rules of consent evidence, for the upsert, the import's batch consent and each import
    row alike: every part is required (PDPO: keep what was shown), kept as given (too long is
    refused, never cut), a known purpose (marketing when empty), obtained at a time with a time
    zone and not in the future.

    Pure: strings come stripped; ``latest`` is the latest acceptable obtained_at as consent_latest
    gives it (taken now unless given; the import takes it once per file). Returns the evidence as
    [channel, purpose, wording, source, obtained_at (ISO), proof_reference] (the order of
    contacts.imports.consent_values) or the first part at fault; it raises nothing, so the import
    reports the fault on its row and the upsert as its error.
    """
    for name, value in (("wording", wording), ("source", source), ("proof_reference", proof_reference)):
        if not value:
            return ConsentFieldError(name, f"Consent evidence needs {name}.", _CONSENT_REQUIRED_HINT)
        if len(value) > CONSENT_LIMITS[name]:
            return ConsentFieldError(
                name, f"{name} is {len(value)} characters; at most {CONSENT_LIMITS[name]}.", _CONSENT_LENGTH_HINT
            )
    purpose = purpose or ConsentPurpose.MARKETING
    if purpose not in _CONSENT_PURPOSES:
        return ConsentFieldError("purpose", f"purpose must be one of {', '.join(ConsentPurpose.values)}.")
    moment = _consent_time(obtained_at) if isinstance(obtained_at, str) else _consent_moment(obtained_at)
    if moment is None:
        return ConsentFieldError(
            "obtained_at", "obtained_at must be an ISO 8601 time with a time zone.", "e.g. 2026-01-31T10:00:00+08:00"
        )
    if moment[0] > (consent_latest() if latest is None else latest):
        return ConsentFieldError("obtained_at", "Consent cannot be obtained in the future.")
    return [channel, purpose, wording, source, moment[1], proof_reference]


def consent_normalise(consent: Any, *, field: str = "consent") -> dict[str, Any] | None:
    """Validate consent evidence given as an object (consent_check has the rules); errors name
    ``field.<part>``."""
    if consent is None:
        return None
    if not isinstance(consent, dict):
        raise _error("consent must be an object.", field)
    raw_time = consent.get("obtained_at")
    checked = consent_check(
        wording=str(consent.get("wording") or "").strip(),
        source=str(consent.get("source") or "").strip(),
        proof_reference=str(consent.get("proof_reference") or "").strip(),
        purpose=str(consent.get("purpose") or "").strip(),
        obtained_at=raw_time if isinstance(raw_time, datetime) else str(raw_time or "").strip(),
        channel=str(consent.get("channel") or "sms")[:20],
    )
    if isinstance(checked, ConsentFieldError):
        raise _error(checked.message, f"{field}.{checked.field}", checked.hint)
    channel, purpose, wording, source, obtained_at, proof_reference = checked
    return {
        "wording": wording,
        "source": source,
        "proof_reference": proof_reference,
        "purpose": purpose,
        "channel": channel,
        "obtained_at": obtained_at,
    }


def _tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise _error(f"tags must be a list of at most {MAX_TAGS} strings.", "tags")
    cleaned = sorted({str(t).strip()[:50] for t in tags if str(t).strip()})
    return cleaned


# --- audience membership (contacts.upsert's ``audiences``, and the admin's contact actions) ---------

MAX_AUDIENCES_PER_WRITE = 50


def _audience_refs(value: Any, field: str) -> list[int | str]:
    if not isinstance(value, list) or len(value) > MAX_AUDIENCES_PER_WRITE:
        raise _error(
            f"{field} must be a list of at most {MAX_AUDIENCES_PER_WRITE} audience ids or names.",
            field,
            "See sms_marketing.audiences.list.",
        )
    refs: list[int | str] = []
    for i, ref in enumerate(value):
        if isinstance(ref, bool) or not isinstance(ref, (int, str)) or (isinstance(ref, str) and not ref.strip()):
            raise _error("Each audience is an id (integer) or a name.", f"{field}[{i}]")
        refs.append(ref.strip() if isinstance(ref, str) else ref)
    return refs


def audiences_resolve(actor: Actor, audiences: Any) -> dict[str, list[int]] | None:
    """``audiences`` as a contact write takes it: a list (added), or ``{"add": [...], "remove": [...]}``,
    each entry an audience id or name the actor may see. Returns the ids, or None for no change."""
    from contacts.selectors import audiences_visible

    if audiences is None:
        return None
    if isinstance(audiences, list):
        audiences = {"add": audiences}
    if not isinstance(audiences, dict) or not set(audiences) <= {"add", "remove"}:
        raise _error(
            "audiences must be a list of audience ids or names (added), or {add: [...], remove: [...]}.",
            "audiences",
            "See sms_marketing.audiences.list.",
        )
    visible = audiences_visible(actor)
    out: dict[str, list[int]] = {}
    for part in ("add", "remove"):
        ids: list[int] = []
        for i, ref in enumerate(_audience_refs(audiences.get(part, []), f"audiences.{part}")):
            found = visible.filter(**({"pk": ref} if isinstance(ref, int) else {"name": ref})).first()
            if found is None:
                raise not_found(
                    "audience", ref, field=f"audiences.{part}[{i}]", hint="Pick one from sms_marketing.audiences.list."
                )
            ids.append(found.pk)
        out[part] = sorted(set(ids))
    both = set(out["add"]) & set(out["remove"])
    if both:
        raise _error(f"Audience {min(both)} is both added and removed.", "audiences", "Name it once.")
    return out if out["add"] or out["remove"] else None


def _audiences_recheck(actor: Actor, spec: dict[str, list[int]] | None) -> None:
    """At execution (perhaps after an approval): the audiences still exist and are still visible."""
    from contacts.selectors import audiences_visible

    if not spec:
        return
    wanted = set(spec["add"]) | set(spec["remove"])
    present = set(audiences_visible(actor).filter(pk__in=wanted).values_list("pk", flat=True))
    missing = sorted(wanted - present)
    if missing:
        raise not_found("audience", missing[0], field="audiences", hint="Pick one from sms_marketing.audiences.list.")


def _memberships_apply(contact_id: int, spec: dict[str, list[int]] | None) -> dict[str, list[int]]:
    """Add and remove one contact's memberships; what actually changed (an existing membership is
    not added twice: the unique pair makes a retry or a race harmless)."""
    from contacts.models import AudienceMembership

    if not spec:
        return {"added": [], "removed": []}
    have = set(
        AudienceMembership.objects.filter(
            contact_id=contact_id, audience_id__in=spec["add"] + spec["remove"]
        ).values_list("audience_id", flat=True)
    )
    added = [a for a in spec["add"] if a not in have]
    AudienceMembership.objects.bulk_create(
        [AudienceMembership(audience_id=a, contact_id=contact_id) for a in added], ignore_conflicts=True
    )
    removed = [a for a in spec["remove"] if a in have]
    AudienceMembership.objects.filter(contact_id=contact_id, audience_id__in=removed).delete()
    return {"added": added, "removed": removed}


def _memberships_of(contact_id: int) -> list[int]:
    from contacts.models import AudienceMembership

    return sorted(AudienceMembership.objects.filter(contact_id=contact_id).values_list("audience_id", flat=True))


def contact_audiences_change(
    *,
    actor: Actor,
    contact_ids: list[int],
    audiences: Any,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    """Add contacts to audiences or remove them (the admin's contact actions): audited per contact,
    idempotent by key. Membership alone changes no consent, so no approval policy holds it."""
    if not actor.has_perm(CHANGE_PERMISSION):
        raise permission_denied(CHANGE_PERMISSION)
    spec = audiences_resolve(actor, audiences)
    if spec is None:
        raise _error("Name at least one audience to add or remove.", "audiences")
    ids = sorted({int(i) for i in contact_ids})
    if not ids or len(ids) > 10_000:
        raise _error("Choose 1-10,000 contacts.", "contact_ids")

    def body() -> dict[str, Any]:
        with transaction.atomic():
            found = list(
                Contact.objects.select_for_update(of=("self",))
                .filter(pk__in=ids)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if len(found) != len(ids):
                missing = sorted(set(ids) - set(found))[0]
                raise not_found("contact", missing, field="contact_ids", hint="Use sms_marketing.contacts.search.")
            changed = 0
            for contact_id in found:
                done = _memberships_apply(contact_id, spec)
                if done["added"] or done["removed"]:
                    changed += 1
                    audit_record(
                        actor=actor,
                        action="contact.audiences",
                        object_type="contact",
                        object_id=contact_id,
                        after={"audiences_added": done["added"], "audiences_removed": done["removed"]},
                        reason=reason,
                    )
        return {"contacts": len(found), "changed": changed, "add": spec["add"], "remove": spec["remove"]}

    return run_idempotent(
        actor=actor,
        key=idempotency_key,
        operation="contact.audiences",
        payload={"contact_ids": ids, "audiences": spec, "reason": reason},
        execute=body,
    )


def _normalised_payload(
    *,
    phone: str | None,
    contact_id: int | None,
    base_version_token: str | None,
    fields: dict[str, Any],
    consent: Any,
    lift_opt_out: bool,
    reason: str,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"contact_id": contact_id, "base_version_token": base_version_token or None}
    if phone:
        parsed = phone_parse(str(phone), field="phone")
        payload["phone"], payload["country"] = parsed.e164, parsed.country
    elif contact_id is None:
        raise _error("phone is required to create a contact.", "phone", "Or pass contact_id to update one.")
    changes: dict[str, Any] = {}
    if fields.get("language") is not None:
        if fields["language"] not in LANGUAGES:
            raise _error(f"language must be one of {', '.join(LANGUAGES)}.", "language")
        changes["language"] = fields["language"]
    if fields.get("tags") is not None:
        changes["tags"] = _tags(fields["tags"])
    for name, size in (("name", 100), ("crm_key", 100)):
        if fields.get(name) is not None:
            changes[name] = name_check(str(fields[name]).strip()[:size], field=name)
    source = str(fields.get("source") or "").strip()
    if not source:
        raise _error("source is required: every contact write records where its data came from.", "source")
    changes["source"] = source[:100]
    payload["changes"] = changes
    payload["consent"] = consent_normalise(consent)
    payload["lift_opt_out"] = bool(lift_opt_out)
    payload["reason"] = reason
    if lift_opt_out and (payload["consent"] is None or payload["consent"]["purpose"] != ConsentPurpose.MARKETING):
        raise _error(
            "Only explicit new marketing consent with evidence lifts an opt-out.",
            "consent",
            "Send consent {purpose: marketing, wording, source, obtained_at, proof_reference} with lift_opt_out.",
        )
    return payload


def _target(payload: dict[str, Any], *, lock: bool) -> Contact | None:
    """The contact this upsert updates, or None to create one; checks the version token."""
    qs = Contact.objects.select_for_update(of=("self",)) if lock else Contact.objects.all()
    if payload.get("contact_id") is not None:
        contact = qs.filter(pk=payload["contact_id"]).first()
        if contact is None:
            raise not_found(
                "contact", payload["contact_id"], field="contact_id", hint="Use sms_marketing.contacts.search."
            )
        if payload.get("phone") and payload["phone"] != contact.phone:
            raise _error(
                "A contact's phone cannot change; the phone is the contact.",
                "phone",
                "Create a new contact for the new number (and opt out the old one if asked).",
            )
    else:
        contact = qs.filter(phone=payload["phone"]).first()
        if contact is None:
            return None
    if not payload.get("base_version_token"):
        raise ApplicationError(
            ErrorCode.VERSION_TOKEN_REQUIRED,
            f"Contact {contact.pk} already exists for this phone; updating it needs its base_version_token.",
            field="base_version_token",
            hint="Read it with sms_marketing.contacts.get and send contact_id and base_version_token.",
            details={"contact_id": contact.pk},
        )
    expected = parse_version_token(payload["base_version_token"], label=LABEL, pk=contact.pk)
    if expected != contact.version:
        raise stale_token_error(label=LABEL, pk=contact.pk, current_version=contact.version)
    return contact


def _check_crm_key(payload: dict[str, Any], contact: Contact | None) -> None:
    key = payload["changes"].get("crm_key")
    others = Contact.objects.filter(crm_key=key)
    if contact is not None:
        others = others.exclude(pk=contact.pk)
    if key and others.exists():
        raise _error(f"crm_key {key!r} belongs to another contact.", "crm_key", "Search by crm_key to find it.")


def _check_lift(payload: dict[str, Any], phone: str) -> int:
    """How many opt-outs the consent would lift; refuses a consent older than the opt-out."""
    if not payload["lift_opt_out"]:
        return 0
    obtained = datetime.fromisoformat(payload["consent"]["obtained_at"])
    liftable = active_opt_outs().filter(phone=phone, reason__in=LIFTABLE_REASONS)
    newer = liftable.filter(occurred_at__gt=obtained).order_by("-occurred_at").first()
    if newer is not None:
        raise _error(
            f"The consent given ({obtained.isoformat()}) predates the opt-out of {newer.occurred_at.isoformat()}.",
            "consent.obtained_at",
            "Only consent given after the opt-out lifts it.",
        )
    return liftable.count()


def _check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    contact = _target(payload, lock=False)
    _check_crm_key(payload, contact)
    lifts = _check_lift(payload, contact.phone if contact else payload["phone"])
    _audiences_recheck(actor, payload.get("audiences"))
    return {
        "recipients": 1,
        "overwrites_existing": contact is not None,
        # Consent changes (new evidence, or lifting an opt-out) are what the approval policy
        # calls sensitive for contact writes.
        "sensitive": bool(payload["consent"] or payload["lift_opt_out"]),
        "consent_change": bool(payload["consent"]),
        "lifts_opt_outs": lifts,
    }


def _execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    now = timezone.now()
    contact = _target(payload, lock=True)
    _check_crm_key(payload, contact)
    changes = dict(payload["changes"])
    created = contact is None
    if contact is None:
        try:
            with transaction.atomic():
                contact = Contact.objects.create(
                    phone=payload["phone"],
                    country=payload["country"],
                    created_by_id=actor.user_id,
                    created_at=now,
                    updated_at=now,
                    **changes,
                )
        except IntegrityError:
            # Another writer created this phone (or took the crm_key) a moment ago.
            raise ApplicationError(
                ErrorCode.STALE_VERSION_TOKEN,
                "The contact was created by someone else meanwhile; your write was not applied.",
                field="phone",
                hint="Search for it with sms_marketing.contacts.search and update it with its token.",
            ) from None
        before = None
    else:
        before = {name: getattr(contact, name) for name in changes}
        expected = contact.version
        # Compare-and-set on the version; the row is locked, so this only misses when the
        # token was stale, which _target already refused.
        updated = Contact.objects.filter(pk=contact.pk, version=expected).update(
            **changes, version=expected + 1, updated_at=now
        )
        if updated != 1:  # pragma: no cover - guarded by the lock above
            current = Contact.objects.values_list("version", flat=True).get(pk=contact.pk)
            raise stale_token_error(label=LABEL, pk=contact.pk, current_version=current)
        contact.refresh_from_db()
    consent_id = None
    lifted = 0
    if payload["consent"]:
        data = payload["consent"]
        consent = ConsentEvidence.objects.create(
            contact=contact,
            channel=data["channel"],
            purpose=data["purpose"],
            wording=data["wording"],
            source=data["source"],
            obtained_at=datetime.fromisoformat(data["obtained_at"]),
            proof_reference=data["proof_reference"],
            recorded_at=now,
            recorded_by_id=actor.user_id,
            actor_channel=str(actor.channel),
            actor_token_name=actor.token_name,
        )
        consent_id = consent.pk
        if payload["lift_opt_out"]:
            _check_lift(payload, contact.phone)
            lifted = opt_outs_lift_by_consent(actor=actor, phone=contact.phone, consent=consent)
    _audiences_recheck(actor, payload.get("audiences"))
    membership = _memberships_apply(contact.pk, payload.get("audiences"))
    opted_out = active_opt_outs().filter(phone=contact.phone).exists()
    has_consent = contact.consents.filter(purpose=ConsentPurpose.MARKETING).exists()
    audit_record(
        actor=actor,
        action="contact.create" if created else "contact.update",
        object_type="contact",
        object_id=contact.pk,
        before=before,
        after={
            **changes,
            "phone": phone_mask(contact.phone),
            "consent_id": consent_id,
            "lifted_opt_outs": lifted,
            "audiences_added": membership["added"],
            "audiences_removed": membership["removed"],
        },
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return {
        "contact_id": contact.pk,
        "created": created,
        "version": contact.version,
        "base_version_token": contact_token(contact),
        "consent_id": consent_id,
        "lifted_opt_outs": lifted,
        "has_consent": has_consent,
        "opted_out": opted_out,
        "sendable": has_consent and not opted_out,
        "audience_ids": _memberships_of(contact.pk),
        "audiences_added": membership["added"],
        "audiences_removed": membership["removed"],
    }


def _summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    target = f"contact {payload['contact_id']}" if payload.get("contact_id") else phone_mask(payload.get("phone", ""))
    extra = " with consent" if payload.get("consent") else ""
    extra += " lifting opt-out" if payload.get("lift_opt_out") else ""
    if payload.get("audiences"):
        extra += f" (audiences +{payload['audiences']['add']} -{payload['audiences']['remove']})"
    return f"Upsert {target}{extra}"


# contacts.upsert and the CSV import share the contacts.import action type (one approval policy
# for contact data and consent changes); the frozen payload says which one it holds.


def _dispatch_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    if payload.get("kind") == "import":
        from contacts.imports import import_check

        return Checked(facts=import_check(actor, payload))
    return Checked(facts=_check(actor, payload))


def _dispatch_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    if payload.get("kind") == "import":
        from contacts.imports import import_execute

        return import_execute(actor, payload, request)
    return _execute(actor, payload, request)


def _dispatch_summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    if payload.get("kind") == "import":
        return f"Import {facts.get('recipients')} contacts from {payload.get('source')}"
    return _summary(payload, facts)


register_action(
    GovernedAction(
        action=ActionType.CONTACTS_IMPORT,
        permission=CHANGE_PERMISSION,
        check=_dispatch_check,
        execute=_dispatch_execute,
        summary=_dispatch_summary,
    )
)


# Lifting an opt-out is its own governed action (the catalogue's "update opt-outs" policy),
# held per that policy on every path that can lift one (MCP and REST upsert, and an approval
# re-runs the same check). A START reply is the person's own request and lifts at once
# (contacts/keywords.py); recording an opt-out is never held.
register_action(
    GovernedAction(
        action=ActionType.OPT_OUTS_UPDATE,
        permission=CHANGE_PERMISSION,
        check=_dispatch_check,
        execute=_dispatch_execute,
        summary=_dispatch_summary,
    )
)


def contacts_upsert(
    *,
    actor: Actor,
    idempotency_key: str | None,
    phone: str | None = None,
    contact_id: int | None = None,
    base_version_token: str | None = None,
    source: str = "",
    language: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    crm_key: str | None = None,
    consent: dict[str, Any] | None = None,
    lift_opt_out: bool = False,
    audiences: Any = None,
    reason: str = "",
) -> dict[str, Any]:
    """Create or update one contact; consent changes may be held for approval. ``audiences``: a list
    of audience ids or names to add the contact to, or ``{"add": [...], "remove": [...]}`` (a
    contact in no audience is in no segment)."""
    if not actor.has_perm(CHANGE_PERMISSION):
        raise permission_denied(CHANGE_PERMISSION)
    membership = audiences_resolve(actor, audiences)
    payload = _normalised_payload(
        phone=phone,
        contact_id=contact_id,
        base_version_token=base_version_token,
        fields={"source": source, "language": language, "name": name, "tags": tags, "crm_key": crm_key},
        consent=consent,
        lift_opt_out=lift_opt_out,
        reason=reason,
    )
    if membership is not None:
        # Only when given: an upsert without audiences keeps the payload (and idempotency) of before.
        payload["audiences"] = membership
    lifting = payload["lift_opt_out"]
    return governed_write(
        actor=actor,
        action=ActionType.OPT_OUTS_UPDATE if lifting else ActionType.CONTACTS_IMPORT,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
        also_governed_by=(ActionType.CONTACTS_IMPORT,) if lifting else (),
    )


# --- segments: preview (stored) and create (from the preview id only) ---------------------------

SEGMENT_PREVIEW_KIND = "segments"
SEGMENT_VIEW_PERMISSION = "contacts.view_segment"
SEGMENT_ADD_PERMISSION = "contacts.add_segment"


def segment_preview(*, actor: Actor, criteria: Any) -> dict[str, Any]:
    """segments.preview: counts, every exclusion by reason, cost per country; stores the preview."""
    if not actor.has_perm(SEGMENT_VIEW_PERMISSION):
        raise permission_denied(SEGMENT_VIEW_PERMISSION)
    normalised = criteria_normalise(criteria)
    counts = segment_counts(actor=actor, criteria=normalised)
    with transaction.atomic():
        preview = preview_store(
            actor=actor,
            kind=SEGMENT_PREVIEW_KIND,
            payload={"criteria": normalised, "audience_ids": counts["audience_ids"]},
            result=counts,
        )
    return {
        "segment_preview_id": str(preview.pk),
        "expires_at": preview.expires_at.isoformat(),
        **counts,
        "note": (
            "matched = sendable + the sum of exclusions; each contact is counted once, under the first reason "
            "in exclusion_order. Create the segment with sms_marketing.segments.create and this id only."
        ),
    }


def _segment_preview_row(actor: Actor, preview_id: Any) -> Preview:
    """The caller's unused segment preview, read without consuming it (the check and the
    request); the write consumes it through the kernel's preview_consume."""
    return preview_read(actor=actor, kind=SEGMENT_PREVIEW_KIND, preview_id=preview_id, field="segment_preview_id")


def _segment_facts(preview: Preview) -> dict[str, Any]:
    result = preview.result
    costs = [Decimal(v) for v in (result.get("estimated_cost") or {}).values()]
    return {
        "recipients": int(result["sendable"]),
        "cost": str(sum(costs, Decimal(0))),
        "costs": dict(result.get("estimated_cost") or {}),  # per currency: what the summary says
        "matched": result["matched"],
    }


def _segment_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    return Checked(facts=_segment_facts(_segment_preview_row(actor, payload["segment_preview_id"])))


def _segment_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    # A held request froze a preview that was valid when requested; only a direct write
    # is refused for an expired one.
    preview = preview_consume(
        actor=actor,
        kind=SEGMENT_PREVIEW_KIND,
        preview_id=payload["segment_preview_id"],
        field="segment_preview_id",
        consumer="sms_marketing.segments.create",
        allow_expired=request is not None,
    )
    result = preview.result
    # The segment is exactly the previewed criteria and scope: nothing from the caller but a name.
    segment = Segment.objects.create(
        name=payload["name"],
        criteria={"criteria": preview.payload["criteria"], "audience_ids": preview.payload["audience_ids"]},
        preview_id=preview.pk,
        matched_count=result["matched"],
        sendable_count=result["sendable"],
        exclusions=result["exclusions"],
        estimated_cost=result["estimated_cost"],
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action="segment.create",
        object_type="segment",
        object_id=segment.pk,
        after={"name": segment.name, "preview_id": str(preview.pk), **_segment_facts(preview)},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return {
        "segment_id": segment.pk,
        "name": segment.name,
        # The shape segments.preview answers with: the criteria as given, the audiences in scope
        # beside them (stored together, shown flat: no criteria.criteria).
        "criteria": segment.criteria["criteria"],
        "audience_ids": segment.criteria["audience_ids"],
        "matched": segment.matched_count,
        "sendable": segment.sendable_count,
        "exclusions": segment.exclusions,
        "estimated_cost": segment.estimated_cost,
        "note": "Opt-outs, consent and frequency caps are applied again at dispatch; the segment never widens.",
    }


register_action(
    GovernedAction(
        action=ActionType.SEGMENT_CREATE,
        permission=SEGMENT_ADD_PERMISSION,
        check=_segment_check,
        execute=_segment_execute,
        summary=lambda payload, facts: (
            f"Create segment {payload['name']!r}: {facts.get('recipients')} sendable, "
            f"cost {money_text(facts.get('costs') or facts.get('cost'))}"
        ),
    )
)


def segment_create(
    *, actor: Actor, segment_preview_id: str, name: str, idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    """segments.create: from a stored preview id only; large or costly segments may be held."""
    if not actor.has_perm(SEGMENT_ADD_PERMISSION):
        raise permission_denied(SEGMENT_ADD_PERMISSION)
    name = str(name or "").strip()
    if not name or len(name) > 100:
        raise _error("name must be 1-100 characters.", "name")
    name_check(name, field="name")
    try:
        preview = _segment_preview_row(actor, segment_preview_id)
        if preview.is_expired:
            raise ApplicationError(
                ErrorCode.PREVIEW_EXPIRED,
                f"Preview {preview.pk} expired at {preview.expires_at.isoformat()}.",
                field="segment_preview_id",
                hint="Call sms_marketing.segments.preview again; previews reflect data at the time they were made.",
            )
    except ApplicationError as exc:
        # A retry of a create that went through finds its preview used: it gets its first result.
        if exc.code in (ErrorCode.PREVIEW_ALREADY_USED, ErrorCode.PREVIEW_EXPIRED):
            replay = idempotent_replay(
                actor=actor,
                key=idempotency_key,
                operation=ActionType.SEGMENT_CREATE,
                payload={"segment_preview_id": str(uuid.UUID(str(segment_preview_id))), "name": name, "reason": reason},
            )
            if replay is not None:
                return replay
        raise
    return governed_write(
        actor=actor,
        action=ActionType.SEGMENT_CREATE,
        payload={"segment_preview_id": str(preview.pk), "name": name, "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )


# --- customer facts: bulk ingest (REST) ---------------------------------------------------------

FACT_PERMISSION = "contacts.add_customerfact"
MAX_FACTS = 10_000


def customer_facts_upsert(facts: list[CustomerFact]) -> None:
    """Write facts by (kind, external_id): a new one is added, a known one takes the new values.
    The caller audits (the facts ingest, the events intake)."""
    CustomerFact.objects.bulk_create(
        facts,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["kind", "external_id"],
        update_fields=[
            "contact",
            "status",
            "amount",
            "currency",
            "offer_code",
            "occurred_at",
            "due_at",
            "data",
            "ingested_at",
        ],
    )


def customer_facts_ingest(*, actor: Actor, facts: Any, idempotency_key: str | None) -> dict[str, Any]:
    """Insert or update facts by (kind, external_id), all or nothing; row errors are reported."""
    if not actor.has_perm(FACT_PERMISSION):
        raise permission_denied(FACT_PERMISSION)
    if not isinstance(facts, list) or not facts or len(facts) > MAX_FACTS:
        raise _error(f"facts must be a list of 1-{MAX_FACTS} objects.", "facts")
    rows, errors = _facts_validate(facts)
    if errors:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{len(errors)} of {len(facts)} facts are invalid; nothing was ingested.",
            field=errors[0]["field"],
            hint="Fix the rows listed in details.errors and send the whole batch again.",
            details={"errors": errors[:100]},
        )

    def execute() -> dict[str, Any]:
        customer_facts_upsert([CustomerFact(**row) for row in rows])
        audit_record(
            actor=actor,
            action="customer_facts.ingest",
            object_type="customer_fact",
            after={"count": len(rows), "kinds": sorted({r["kind"] for r in rows})},
            idempotency_key=idempotency_key or "",
        )
        return {"ingested": len(rows)}

    return run_idempotent(
        actor=actor,
        key=idempotency_key,
        operation="customer_facts.ingest",
        payload=facts,
        execute=execute,
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _facts_validate(facts: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Resolve contacts set-based (one query per key type) and validate every row."""
    errors: list[dict[str, Any]] = []
    phones: dict[int, str] = {}
    for i, fact in enumerate(facts):
        if isinstance(fact, dict) and fact.get("phone") and not fact.get("contact_id"):
            try:
                phones[i] = phone_parse(str(fact["phone"]), field=f"facts.{i}.phone").e164
            except ApplicationError as exc:
                errors.append({"row": i, "field": f"facts.{i}.phone", "message": exc.message})
    crm_keys = {str(f["crm_key"]) for f in facts if isinstance(f, dict) and f.get("crm_key")}
    ids = {f["contact_id"] for f in facts if isinstance(f, dict) and _is_id(f.get("contact_id"))}
    by_phone = dict(Contact.objects.filter(phone__in=set(phones.values())).values_list("phone", "pk"))
    by_crm = dict(Contact.objects.filter(crm_key__in=crm_keys).values_list("crm_key", "pk"))
    known_ids = set(Contact.objects.filter(pk__in=ids).values_list("pk", flat=True))
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    now = timezone.now()
    for i, fact in enumerate(facts):
        where = f"facts.{i}"
        if not isinstance(fact, dict):
            errors.append({"row": i, "field": where, "message": "must be an object"})
            continue
        if fact.get("contact_id"):
            # Only an integer id is looked up: a list is unhashable and True would equal id 1.
            contact_id = fact["contact_id"] if _is_id(fact["contact_id"]) and fact["contact_id"] in known_ids else None
        elif i in phones:
            contact_id = by_phone.get(phones[i])
        elif fact.get("crm_key"):
            contact_id = by_crm.get(str(fact["crm_key"]))
        elif fact.get("phone"):
            continue  # already reported as an invalid phone
        else:
            errors.append({"row": i, "field": f"{where}.contact_id", "message": "give contact_id, phone or crm_key"})
            continue
        if contact_id is None:
            errors.append({"row": i, "field": f"{where}.contact_id", "message": "no such contact"})
            continue
        kind, external_id = fact.get("kind"), str(fact.get("external_id") or "").strip()
        if kind not in FactKind.values:
            errors.append({"row": i, "field": f"{where}.kind", "message": f"one of {', '.join(FactKind.values)}"})
            continue
        if not external_id or (kind, external_id) in seen:
            errors.append({"row": i, "field": f"{where}.external_id", "message": "required and unique per kind"})
            continue
        seen.add((kind, external_id))
        occurred = parse_datetime(str(fact.get("occurred_at") or ""))
        due = parse_datetime(str(fact["due_at"])) if fact.get("due_at") else None
        if occurred is None or timezone.is_naive(occurred) or (fact.get("due_at") and due is None):
            errors.append({"row": i, "field": f"{where}.occurred_at", "message": "ISO 8601 with a time zone"})
            continue
        try:
            amount = Decimal(str(fact["amount"])) if fact.get("amount") is not None else None
        except InvalidOperation:
            errors.append({"row": i, "field": f"{where}.amount", "message": "a decimal number"})
            continue
        rows.append(
            {
                "contact_id": contact_id,
                "kind": kind,
                "external_id": external_id[:100],
                "status": str(fact.get("status") or "")[:30],
                "amount": amount,
                "currency": str(fact.get("currency") or "")[:3],
                "offer_code": str(fact.get("offer_code") or "")[:50],
                "occurred_at": occurred,
                "due_at": due,
                "data": fact.get("data") if isinstance(fact.get("data"), dict) else {},
                "ingested_at": now,
            }
        )
    errors.sort(key=lambda e: e["row"])
    return rows, errors
