"""CSV import of contacts with consent evidence (governed as contacts.import).

Columns (header row; only ``phone`` is required)::

    phone, language, name, tags (separated by ;), crm_key,
    consent_wording, consent_source, consent_obtained_at, consent_proof_reference, consent_purpose

Consent evidence comes from the row's consent_* columns or, for rows without them, from the
batch-level ``consent`` given with the import; a row without either is imported as not
sendable. Both are checked by the upsert's rules (contacts.services.consent_check). Rules:

- every row is validated first (phone parsed with phonenumbers, default region HK); any
  error refuses the whole file with every row error listed: nothing is half-imported;
- a phone appearing twice in the file is one contact (reported as ``duplicates_in_file``);
- an existing contact is never overwritten by an import: it only gains the new consent
  evidence (its version is bumped) and the audience membership; opt-outs are never touched;
- the write is set-based: on PostgreSQL one lookup of the file's phones, then COPY straight into
  contacts, consent evidence and memberships (the keys are checked once per statement, see
  contacts/migrations/0004_import_set_based_keys); elsewhere a staged INSERT ... SELECT.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from compliance.governance import governed_write
from compliance.models import ActionRequest, ActionType
from contacts.models import Audience, ConsentPurpose, Contact
from contacts.phones import PhoneNormaliser
from contacts.services import LANGUAGES, ConsentFieldError, consent_check, consent_latest, consent_normalise
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.text import invisible_character

IMPORT_PERMISSION = "contacts.add_contact"
MAX_ROWS = 1_000_000
MAX_ERRORS_REPORTED = 200
LOOKUP_CHUNK = 5000
COLUMNS = (
    "phone",
    "language",
    "name",
    "tags",
    "crm_key",
    "consent_wording",
    "consent_source",
    "consent_obtained_at",
    "consent_proof_reference",
    "consent_purpose",
)


def _bad(message: str, field: str, details: dict[str, Any] | None = None) -> ApplicationError:
    return ApplicationError(
        ErrorCode.VALIDATION_ERROR,
        message,
        field=field,
        hint="Fix the rows listed in details.errors and import the whole file again.",
        details=details,
    )


def consent_values(consent: dict[str, Any] | list[str]) -> list[str]:
    """Consent evidence as a compact row holds it: [channel, purpose, wording, source, obtained_at
    (ISO), proof_reference]. A list (half the cost of a dict when the payload of 100k rows is
    fingerprinted); payloads frozen before held dicts, which are read the same."""
    if isinstance(consent, list):
        return consent
    return [
        consent.get("channel", "sms"),
        consent.get("purpose", ConsentPurpose.MARKETING),
        consent["wording"],
        consent["source"],
        consent["obtained_at"],
        consent["proof_reference"],
    ]


def import_parse(
    csv_text: str, *, batch_consent: dict[str, Any] | None
) -> tuple[list[list[Any]], list[dict[str, Any]], int]:
    """Validate every row; return compact rows, row errors and how many duplicates were merged.

    A compact row is [phone, country, language, name, tags, crm_key, consent or None], the consent
    as consent_values gives it.

    This loop is the one per-row Python step of an import (everything after it is set-based
    SQL), so it reads rows as lists by column position and memoises what files repeat (tag
    lists, consent times); phone parsing takes PhoneNormaliser's fast path for common shapes.
    """
    reader = csv.reader(io.StringIO(csv_text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "phone" not in header:
        raise _bad("The CSV needs a header row with a phone column.", "csv")
    unknown = sorted(set(header) - set(COLUMNS))
    if unknown:
        raise _bad(f"Unknown column {unknown[0]!r}; columns: {', '.join(COLUMNS)}.", "csv")
    # A column given twice: the last one counts (as csv.DictReader reads it). A column absent
    # reads the empty cell every row is padded with.
    width = len(header)
    at = dict.fromkeys(COLUMNS, width) | {name: i for i, name in enumerate(header)}
    c_phone, c_language, c_name, c_tags, c_crm = (at[c] for c in ("phone", "language", "name", "tags", "crm_key"))
    c_wording, c_source, c_obtained, c_proof, c_purpose = (
        at[c]
        for c in (
            "consent_wording",
            "consent_source",
            "consent_obtained_at",
            "consent_proof_reference",
            "consent_purpose",
        )
    )
    padding = [""] * (width + 1)
    normalise = PhoneNormaliser()
    latest = consent_latest()  # the latest consent time accepted, taken once per file
    batch = consent_values(batch_consent) if batch_consent else None
    tag_lists: dict[str, list[str]] = {}
    rows: dict[str, list[Any]] = {}
    crm_keys: dict[str, str] = {}
    errors: list[dict[str, Any]] = []
    duplicates = 0
    count = 0
    line = 1  # line numbers as a spreadsheet shows them (blank lines skipped, as DictReader did)
    for row in reader:
        if not row:
            continue
        line += 1
        count += 1
        if count > MAX_ROWS:
            raise _bad(f"At most {MAX_ROWS} rows per import.", "csv")
        if len(row) <= width:
            row.extend(padding[len(row) :])
        raw = row[c_phone].strip()
        parsed = normalise(raw) if raw else "phone is empty"
        if isinstance(parsed, str):
            errors.append({"line": line, "field": "phone", "message": f"{raw!r}: {parsed}"})
            continue
        phone, country = parsed
        language = row[c_language].strip() or "zh-hant"
        if language not in LANGUAGES:
            errors.append({"line": line, "field": "language", "message": f"one of {', '.join(LANGUAGES)}"})
            continue
        wording, source, obtained, proof = (
            row[c_wording].strip(),
            row[c_source].strip(),
            row[c_obtained].strip(),
            row[c_proof].strip(),
        )
        consent: list[str] | ConsentFieldError | None = None
        if wording or source or obtained or proof:  # a row without evidence takes the batch's
            consent = consent_check(
                wording=wording,
                source=source,
                proof_reference=proof,
                purpose=row[c_purpose].strip(),
                obtained_at=obtained,
                latest=latest,
            )
            if isinstance(consent, ConsentFieldError):
                # The column at fault: consent_<part> (consent_wording, ..., consent_obtained_at).
                errors.append({"line": line, "field": f"consent_{consent.field}", "message": consent.message})
                continue
        crm_key = row[c_crm].strip()[:100]
        hidden = next(
            (
                column
                for column, text in (("name", row[c_name].strip()), ("crm_key", crm_key))
                if invisible_character(text)
            ),
            None,
        )
        if hidden is not None:
            errors.append({"line": line, "field": hidden, "message": "contains an invisible or control character"})
            continue
        if crm_key and crm_keys.setdefault(crm_key, phone) != phone:
            errors.append({"line": line, "field": "crm_key", "message": f"{crm_key!r} is given to two phones"})
            continue
        raw_tags = row[c_tags]
        tags = tag_lists.get(raw_tags)
        if tags is None:
            tags = tag_lists[raw_tags] = sorted({t.strip()[:50] for t in raw_tags.split(";") if t.strip()})
        if phone in rows:
            duplicates += 1
            if consent and not rows[phone][6]:
                rows[phone][6] = consent
            continue
        rows[phone] = [phone, country, language, row[c_name].strip()[:100], tags, crm_key, consent or batch]
    if count == 0:
        raise _bad("The CSV has no rows.", "csv")
    return list(rows.values()), errors, duplicates


def import_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    """check() of a contacts.import action holding a CSV import (dispatched by contacts.services)."""
    if payload.get("audience_id") is not None and not Audience.objects.filter(pk=payload["audience_id"]).exists():
        raise not_found(
            "audience", payload["audience_id"], field="audience_id", hint="See sms_marketing.audiences.list."
        )
    rows = payload["rows"]
    # crm_key clashes with existing contacts of another phone are checked set-based, in chunks
    # (a query holds at most so many parameters).
    keyed = {r[5]: r[0] for r in rows if r[5]}
    keys = list(keyed)
    clashes = [
        (key, phone)
        for i in range(0, len(keys), LOOKUP_CHUNK)
        for key, phone in Contact.objects.filter(crm_key__in=keys[i : i + LOOKUP_CHUNK]).values_list("crm_key", "phone")
        if keyed[key] != phone
    ]
    if clashes:
        raise _bad(
            f"crm_key {clashes[0][0]!r} already belongs to another contact.",
            "crm_key",
            {"errors": [{"field": "crm_key", "message": f"{k!r} belongs to another contact"} for k, _ in clashes[:50]]},
        )
    return {
        "recipients": len(rows),
        "with_consent": sum(1 for r in rows if r[6]),
        # Imports carrying consent change consent state: the policy's "sensitive" condition.
        "sensitive": any(r[6] for r in rows),
        "consent_change": any(r[6] for r in rows),
    }


def import_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    facts = import_check(actor, payload)
    result = import_rows(
        actor=actor, rows=payload["rows"], source=payload["source"], audience_id=payload.get("audience_id")
    )
    audit_record(
        actor=actor,
        action="contacts.import",
        object_type="contact_import",
        object_id=payload.get("audience_id") or "",
        after={**result, "source": payload["source"], "recipients": facts["recipients"]},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return {**result, "duplicates_in_file": payload.get("duplicates_in_file", 0)}


CONTACT_COLUMNS = (
    "id",
    "phone",
    "country",
    "language",
    "name",
    "tags",
    "source",
    "crm_key",
    "version",
    "created_at",
    "updated_at",
    "created_by_id",
)
CONSENT_COLUMNS = (
    "contact_id",
    "channel",
    "purpose",
    "wording",
    "source",
    "obtained_at",
    "proof_reference",
    "recorded_at",
    "recorded_by_id",
    "actor_channel",
    "actor_token_name",
)
STAGE_COLUMNS = (
    "phone",
    "country",
    "language",
    "name",
    "tags",
    "crm_key",
    "c_channel",
    "c_purpose",
    "c_wording",
    "c_source",
    "c_obtained_at",
    "c_proof",
)


def _stage(cursor: Any, rows: list[list[Any]]) -> None:
    """Load the validated rows into a temporary table (COPY on PostgreSQL)."""
    cursor.execute("DROP TABLE IF EXISTS contact_import_stage")
    cursor.execute(
        "CREATE TEMP TABLE contact_import_stage (phone varchar(16) PRIMARY KEY, contact_id bigint, "
        "existed boolean NOT NULL DEFAULT false, country varchar(2), "
        "language varchar(10), name varchar(100), tags text, crm_key varchar(100), c_channel varchar(20), "
        "c_purpose varchar(20), c_wording text, c_source varchar(200), c_obtained_at varchar(40), c_proof varchar(200))"
    )
    tags_json: dict[tuple[str, ...], str] = {}  # files repeat a few tag lists
    no_consent = (None, None, None, None, None, None)

    def staged(r: list[Any]) -> tuple[Any, ...]:
        tags = tuple(r[4])
        text = tags_json.get(tags)
        if text is None:
            text = tags_json[tags] = json.dumps(list(tags))
        return (r[0], r[1], r[2], r[3], text, r[5], *(consent_values(r[6]) if r[6] else no_consent))

    if connection.vendor == "postgresql":
        with cursor.cursor.copy(f"COPY contact_import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(staged(r))
        # A temporary table is never auto-analysed: without statistics the planner guesses
        # its size and may probe the contacts once per staged row.
        cursor.execute("ANALYZE contact_import_stage")
    else:
        marks = ", ".join(["%s"] * len(STAGE_COLUMNS))
        cursor.executemany(
            f"INSERT INTO contact_import_stage ({', '.join(STAGE_COLUMNS)}) VALUES ({marks})",  # noqa: S608
            [staged(r) for r in rows],
        )


_INSERT_CONTACTS = (
    "INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, "
    "created_at, updated_at, created_by_id) SELECT phone, country, language, name, tags{cast}, %s, "
    # WHERE ...: SQLite needs a WHERE to parse INSERT ... SELECT ... ON CONFLICT
    "crm_key, 1, %s, %s, %s FROM contact_import_stage WHERE contact_id IS NULL ON CONFLICT (phone) DO NOTHING"
)
# PostgreSQL: the new ids come back from the INSERT itself and are written to the stage in the
# same statement, so no second lookup of the phones is needed.
INSERT_CONTACTS = {
    "postgresql": (
        f"WITH created AS ({_INSERT_CONTACTS.replace('{cast}', '::jsonb')} RETURNING id, phone) "  # noqa: S608
        "UPDATE contact_import_stage s SET contact_id = created.id FROM created WHERE s.phone = created.phone"
    ),
    "sqlite": _INSERT_CONTACTS.replace("{cast}", ""),
}
_INSERT_CONSENTS = (
    "INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, "
    "proof_reference, recorded_at, recorded_by_id, actor_channel, actor_token_name) "
    "SELECT contact_id, c_channel, c_purpose, c_wording, c_source, c_obtained_at{cast}, c_proof, "
    "%s, %s, %s, %s FROM contact_import_stage WHERE c_wording IS NOT NULL"
)
INSERT_CONSENTS = {
    "postgresql": _INSERT_CONSENTS.replace("{cast}", "::timestamptz"),
    "sqlite": _INSERT_CONSENTS.replace("{cast}", ""),
}
# The stage's contact ids from the contacts table, for the rows still without one (UPDATE ... FROM:
# PostgreSQL, and SQLite since 3.33); the first lookup marks the contacts that existed already.
_FILL_IDS = (
    "UPDATE contact_import_stage AS s SET contact_id = c.id{existed} FROM contacts_contact AS c "
    "WHERE c.phone = s.phone AND s.contact_id IS NULL"
)
FILL_EXISTING = _FILL_IDS.replace("{existed}", ", existed = true")
FILL_CREATED = _FILL_IDS.replace("{existed}", "")


def import_rows(*, actor: Actor, rows: list[list[Any]], source: str, audience_id: int | None) -> dict[str, int]:
    """The set-based write, inside the caller's transaction. Existing contacts are never
    overwritten: they only gain the consent evidence (version bumped) and the membership.

    PostgreSQL: COPY straight into the final tables (:func:`_copy_rows`); should another writer
    create one of the phones meanwhile, the COPY fails on the phone's unique index, its savepoint
    is rolled back and the staged path below does the whole import instead."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        try:
            # wrap_database_errors: COPY runs on the driver's cursor, whose errors Django does not see.
            with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
                return _copy_rows(cursor, actor=actor, rows=rows, source=source, audience_id=audience_id, now=now)
        except IntegrityError:
            pass
    with connection.cursor() as cursor:
        return _staged_rows(cursor, actor=actor, rows=rows, source=source, audience_id=audience_id, now=now)


def _copy_rows(
    cursor: Any, *, actor: Actor, rows: list[list[Any]], source: str, audience_id: int | None, now: datetime
) -> dict[str, int]:
    """Look the phones up once, reserve ids for the new ones from the contacts' sequence, then
    COPY the new contacts, every consent evidence and the new contacts' memberships. Nothing is
    staged or scanned twice; the existing contacts take one statement per table."""
    existing = _existing_contacts(cursor, [r[0] for r in rows])
    new = [r for r in rows if r[0] not in existing]
    # The sequence is named once (per row, pg_get_serial_sequence costs more than nextval itself).
    cursor.execute(
        "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('contacts_contact', 'id')::regclass AS seq) "
        "SELECT array_agg(nextval(s.seq)) FROM s CROSS JOIN generate_series(1, %s)",
        [len(new)],
    )
    new_ids: list[int] = cursor.fetchone()[0] or []
    at = now.isoformat()
    user_id = actor.user_id
    tags_json: dict[tuple[str, ...], str] = {}  # files repeat a few tag lists
    with cursor.cursor.copy(f"COPY contacts_contact ({', '.join(CONTACT_COLUMNS)}) FROM STDIN") as copy:
        for contact_id, r in zip(new_ids, new, strict=True):
            tags = tuple(r[4])
            text = tags_json.get(tags)
            if text is None:
                text = tags_json[tags] = json.dumps(list(tags))
            copy.write_row((contact_id, r[0], r[1], r[2], r[3], text, source, r[5], 1, at, at, user_id))
    ids = dict(existing)
    ids.update(zip((r[0] for r in new), new_ids, strict=True))
    consenting_existing = [existing[r[0]] for r in rows if r[6] and r[0] in existing]
    if consenting_existing:
        # Existing contacts whose consent changes get a new version: tokens read before go stale.
        cursor.execute(
            "UPDATE contacts_contact SET version = version + 1, updated_at = %s WHERE id = ANY(%s)",
            [now, consenting_existing],
        )
    consents = 0
    channel, token = str(actor.channel), actor.token_name
    with cursor.cursor.copy(f"COPY contacts_consentevidence ({', '.join(CONSENT_COLUMNS)}) FROM STDIN") as copy:
        for r in rows:
            if r[6]:
                consents += 1
                copy.write_row((ids[r[0]], *consent_values(r[6]), at, user_id, channel, token))
    if audience_id is not None:
        # New contacts have no membership yet: COPY. Existing ones may be in the audience already.
        members = "COPY contacts_audiencemembership (audience_id, contact_id, added_at) FROM STDIN"
        with cursor.cursor.copy(members) as copy:
            for contact_id in new_ids:
                copy.write_row((audience_id, contact_id, at))
        if existing:
            cursor.execute(
                "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
                "SELECT %s, unnest(%s::bigint[]), %s ON CONFLICT (audience_id, contact_id) DO NOTHING",
                [audience_id, list(existing.values()), now],
            )
    return {"rows": len(rows), "created": len(new), "existing": len(existing), "consent_evidence": consents}


def _existing_contacts(cursor: Any, phones: list[str]) -> dict[str, int]:
    """Contact id by phone, for the phones that have a contact (one index probe each)."""
    cursor.execute("SELECT phone, id FROM contacts_contact WHERE phone = ANY(%s)", [phones])
    return dict(cursor.fetchall())


def _staged_rows(
    cursor: Any, *, actor: Actor, rows: list[list[Any]], source: str, audience_id: int | None, now: datetime
) -> dict[str, int]:
    """Stage the rows, give each its contact id once, then one INSERT ... SELECT per table from
    the stage (SQLite, and PostgreSQL when a concurrent writer created one of the phones)."""
    _stage(cursor, rows)
    if connection.vendor == "postgresql":
        # New phones first: the INSERT writes their ids back to the stage itself, and only the
        # rows it skipped (contacts that exist, also one another writer created meanwhile)
        # are looked up.
        cursor.execute(INSERT_CONTACTS["postgresql"], [source, now, now, actor.user_id])
        created = cursor.rowcount
        existing = 0
        if created < len(rows):
            cursor.execute(FILL_EXISTING)
            existing = cursor.rowcount
    else:
        cursor.execute(FILL_EXISTING)
        existing = cursor.rowcount
        cursor.execute(INSERT_CONTACTS["sqlite"], [source, now, now, actor.user_id])
        created = cursor.rowcount
        cursor.execute(FILL_CREATED)
    if existing:
        # Existing contacts whose consent changes get a new version: tokens read before go stale.
        cursor.execute(
            "UPDATE contacts_contact SET version = version + 1, updated_at = %s WHERE id IN "
            "(SELECT contact_id FROM contact_import_stage WHERE existed AND c_wording IS NOT NULL)",
            [now],
        )
    cursor.execute(INSERT_CONSENTS[connection.vendor], [now, actor.user_id, str(actor.channel), actor.token_name])
    consents = cursor.rowcount
    if audience_id is not None:
        cursor.execute(
            "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
            "SELECT %s, contact_id, %s FROM contact_import_stage "
            "WHERE true ON CONFLICT (audience_id, contact_id) DO NOTHING",
            [audience_id, now],
        )
    cursor.execute("DROP TABLE contact_import_stage")
    return {"rows": len(rows), "created": created, "existing": existing, "consent_evidence": consents}


def contacts_import(
    *,
    actor: Actor,
    csv_text: str,
    source: str,
    idempotency_key: str | None,
    audience_id: int | None = None,
    consent: dict[str, Any] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Validate the whole file, then import it (or hold it for approval) as one write."""
    if not actor.has_perm(IMPORT_PERMISSION):
        raise permission_denied(IMPORT_PERMISSION)
    source = (source or "").strip()
    if not source:
        raise _bad("source is required: every import records where its data came from.", "source")
    batch_consent = consent_normalise(consent) if consent else None
    rows, errors, duplicates = import_parse(csv_text, batch_consent=batch_consent)
    if errors:
        raise _bad(
            f"{len(errors)} row(s) are invalid; nothing was imported.",
            f"csv.line_{errors[0]['line']}.{errors[0]['field']}",
            {"errors": errors[:MAX_ERRORS_REPORTED], "error_count": len(errors)},
        )
    payload = {
        "kind": "import",
        "rows": rows,
        "source": f"import:{source}"[:100],
        "audience_id": audience_id,
        "duplicates_in_file": duplicates,
        "reason": reason,
    }
    return governed_write(
        actor=actor, action=ActionType.CONTACTS_IMPORT, payload=payload, idempotency_key=idempotency_key, reason=reason
    )
