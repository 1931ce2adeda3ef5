"""CSV import: row errors, nothing half-imported, consent evidence, approval, REST and admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction

from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition
from compliance.optouts import phone_is_suppressed
from compliance.roles import Role
from contacts import imports
from contacts.imports import contacts_import
from contacts.models import Audience, AudienceMembership, ConsentEvidence, Contact
from contacts.optouts import opt_out_record
from contacts.selectors import contact_get
from contacts.services import consent_normalise
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog
from tests.support.contacts import api_actor, consent, create_contact, key
from tests.support.db import postgres_only

pytestmark = pytest.mark.django_db

HEADER = "phone,language,name,tags,crm_key,consent_wording,consent_source,consent_obtained_at,consent_proof_reference\n"
WITH_CONSENT = "I agree to SMS offers,web_form,2026-01-05T10:00:00+08:00,form-1"


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


def _import(user: Any, text: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("source", "pos")
    return contacts_import(
        actor=api_actor(user), csv_text=text, idempotency_key=kw.pop("idempotency_key", key("imp")), **kw
    )


def test_import_creates_contacts_with_evidence_and_merges_duplicates(crm: Any) -> None:
    audience = Audience.objects.create(name="POS", source="import")
    text = HEADER + (
        f"9123 4567,en,Chan,vip;hk,C-1,{WITH_CONSENT}\n"
        "+85261234567,zh-hant,,,,,,,\n"
        f"+852 9123 4567,en,Chan again,,,{WITH_CONSENT}\n"  # the same phone: one contact
    )
    result = _import(crm, text, audience_id=audience.pk)
    assert result["status"] == "executed"
    assert result["result"] == {"rows": 2, "created": 2, "existing": 0, "consent_evidence": 1, "duplicates_in_file": 1}
    chan = Contact.objects.get(phone="+85291234567")
    assert chan.tags == ["hk", "vip"] and chan.crm_key == "C-1" and chan.source == "import:pos"
    assert ConsentEvidence.objects.get().proof_reference == "form-1"
    other = contact_get(actor=api_actor(crm), contact_id=Contact.objects.get(phone="+85261234567").pk)
    assert other["sendable"] is False  # no evidence, not sendable
    assert AudienceMembership.objects.filter(audience=audience).count() == 2
    audit: Any = AuditLog.objects.get(action="contacts.import")
    assert audit.after["created"] == 2


def test_any_row_error_refuses_the_whole_file_and_lists_every_error(crm: Any) -> None:
    text = HEADER + (
        f"+85291234567,en,,,,{WITH_CONSENT}\n"
        "12345,en,,,,,,,\n"
        "+85261234567,klingon,,,,,,,\n"
        "+85298765432,en,,,,I agree,web,yesterday,form-2\n"
        ",en,,,,,,,\n"
    )
    with pytest.raises(ApplicationError) as err:
        _import(crm, text)
    errors = err.value.details["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [
        (3, "phone"),
        (4, "language"),
        (5, "consent_obtained_at"),
        (6, "phone"),
    ]
    assert "12345" in errors[0]["message"] and err.value.field == "csv.line_3.phone"
    assert not Contact.objects.exists() and not ConsentEvidence.objects.exists()


def test_consent_evidence_too_long_is_refused_never_cut(crm: Any) -> None:
    """Evidence is kept as given: a value longer than its column is a row error (never a database
    error, never silently shortened)."""
    long_source, long_proof = "s" * 101, "p" * 201
    text = HEADER + (
        f"+85291234567,en,,,,I agree,{long_source},2026-01-05T10:00:00+08:00,form-1\n"
        f"+85261234567,en,,,,I agree,web,2026-01-05T10:00:00+08:00,{long_proof}\n"
        f"+85298765432,en,,,,{'w' * 2001},web,2026-01-05T10:00:00+08:00,form-3\n"
    )
    with pytest.raises(ApplicationError) as err:
        _import(crm, text)
    errors = err.value.details["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [
        (2, "consent_source"),
        (3, "consent_proof_reference"),
        (4, "consent_wording"),
    ]
    assert "at most 100" in errors[0]["message"]
    assert not Contact.objects.exists() and not ConsentEvidence.objects.exists()
    # The batch consent and the upsert path refuse it the same way.
    with pytest.raises(ApplicationError) as err:
        consent_normalise(
            {
                "wording": "I agree",
                "source": long_source,
                "proof_reference": "form-9",
                "obtained_at": "2026-01-05T10:00:00+08:00",
            }
        )
    assert err.value.field == "consent.source" and "at most 100" in err.value.message


@pytest.mark.parametrize(
    ("text", "field"),
    [("name\nx\n", "csv"), ("phone,colour\n+85291234567,red\n", "csv"), ("phone\n", "csv")],
)
def test_bad_files(crm: Any, text: str, field: str) -> None:
    with pytest.raises(ApplicationError) as err:
        _import(crm, text)
    assert err.value.field == field


def test_existing_contacts_are_not_overwritten_and_opt_outs_survive(crm: Any) -> None:
    cid = create_contact(crm, phone="+85291234567", name="Original", with_consent=False)
    token = contact_get(actor=api_actor(crm), contact_id=cid)["base_version_token"]
    opt_out_record(actor=Actor.system("t"), phone="+85291234567", reason="stop", source="sms")
    result = _import(crm, HEADER + f"+85291234567,en,Changed,,,{WITH_CONSENT}\n")["result"]
    assert result["existing"] == 1 and result["created"] == 0
    contact = Contact.objects.get(pk=cid)
    assert contact.name == "Original" and phone_is_suppressed("+85291234567")
    got = contact_get(actor=api_actor(crm), contact_id=cid)
    assert got["has_consent"] is True and got["sendable"] is False
    assert got["base_version_token"] != token  # consent changed: older tokens are stale


GOOD_CONSENT = {
    "consent_wording": "I agree",
    "consent_source": "web",
    "consent_obtained_at": "2026-01-05T10:00:00+08:00",
    "consent_proof_reference": "form-1",
    "consent_purpose": "marketing",
}


@pytest.mark.parametrize(
    ("columns", "part"),
    [
        ({"consent_wording": ""}, "wording"),
        ({"consent_source": "s" * 101}, "source"),
        ({"consent_proof_reference": ""}, "proof_reference"),
        ({"consent_purpose": "spam"}, "purpose"),
        ({"consent_obtained_at": "2026-01-05 10:00"}, "obtained_at"),  # no time zone
        ({"consent_obtained_at": "2026-13-05T10:00:00+08:00"}, "obtained_at"),  # well formed, no such month
        ({"consent_obtained_at": "2999-01-01T00:00:00+00:00"}, "obtained_at"),  # in the future
    ],
)
def test_a_row_and_the_batch_consent_are_held_to_the_same_rules(columns: dict[str, str], part: str) -> None:
    """One home for the consent rules (contacts.services.consent_check): an import row's error
    names its column and carries the message the upsert and the batch consent give."""
    row = GOOD_CONSENT | columns
    text = (
        f"phone,{','.join(row)}\n"
        f"+85261234567,{','.join(GOOD_CONSENT.values())}\n"
        f"+85291234567,{','.join(row.values())}\n"
    )
    rows, errors, _ = imports.import_parse(text, batch_consent=None)
    assert [(e["line"], e["field"]) for e in errors] == [(3, f"consent_{part}")]
    assert rows[0][6] == ["sms", "marketing", "I agree", "web", "2026-01-05T10:00:00+08:00", "form-1"]
    with pytest.raises(ApplicationError) as err:
        consent_normalise({name.removeprefix("consent_"): value for name, value in row.items()})
    assert err.value.field == f"consent.{part}" and err.value.message == errors[0]["message"]


def test_consent_normalise_keeps_its_shape(crm: Any) -> None:
    """The upsert's and the batch's normalised consent (frozen in action request payloads)."""
    assert consent_normalise(
        {
            "wording": " I agree ",
            "source": "web",
            "proof_reference": "form-1",
            "obtained_at": "2026-01-05T10:00:00+08:00",
            "channel": "x" * 30,
        }
    ) == {
        "wording": "I agree",
        "source": "web",
        "proof_reference": "form-1",
        "purpose": "marketing",
        "channel": "x" * 20,
        "obtained_at": "2026-01-05T10:00:00+08:00",
    }


def test_batch_consent_applies_to_rows_without_their_own(crm: Any) -> None:
    result = _import(crm, "phone\n+85291234567\n+85261234567\n", consent=consent())["result"]
    assert result["consent_evidence"] == 2


def test_crm_key_clashes_are_refused(crm: Any) -> None:
    create_contact(crm, phone="+85291234567", crm_key="C-1")
    with pytest.raises(ApplicationError) as err:
        _import(crm, "phone,crm_key\n+85261234567,C-1\n")
    assert err.value.field == "crm_key"
    with pytest.raises(ApplicationError) as twice:
        _import(crm, "phone,crm_key\n+85261234567,C-2\n+85298765432,C-2\n")
    assert twice.value.details["errors"][0]["field"] == "crm_key"


def test_large_imports_follow_the_approval_policy(crm: Any, approver: Any) -> None:
    from compliance.services import action_request_approve

    ApprovalPolicy.objects.create(
        action=ActionType.CONTACTS_IMPORT,
        condition=Condition.RECIPIENTS_OVER,
        threshold_count=1,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )
    assert _import(crm, "phone\n+85291234567\n")["status"] == "executed"
    held = _import(crm, "phone\n+85261234567\n+85298765432\n")
    assert held["status"] == "pending_approval"
    assert ActionRequest.objects.get(pk=held["action_request_id"]).facts["recipients"] == 2
    assert Contact.objects.count() == 1
    action_request_approve(actor=api_actor(approver), action_request_id=held["action_request_id"])
    assert Contact.objects.count() == 3


def test_import_needs_permission(marketing: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        _import(marketing, "phone\n+85291234567\n")
    assert err.value.code == ErrorCode.PERMISSION_DENIED


def test_import_over_rest(api_for: Any, crm: Any, marketing: Any) -> None:
    api = api_for(crm)
    ok = api.post(
        "/api/v1/contacts/import/",
        {"csv": HEADER + f"+85291234567,en,,,,{WITH_CONSENT}\n", "source": "crm", "idempotency_key": "rest-imp-001"},
        format="json",
    )
    assert ok.status_code == 200 and ok.json()["result"]["created"] == 1
    upload = SimpleUploadedFile("c.csv", b"phone\n+85261234567\nnope\n", content_type="text/csv")
    bad = api.post(
        "/api/v1/contacts/import/",
        {"file": upload, "source": "crm", "idempotency_key": "rest-imp-002"},
        format="multipart",
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"]["errors"][0]["line"] == 3
    assert api_for(marketing).post("/api/v1/contacts/import/", {}, format="json").status_code == 403
    assert Contact.objects.count() == 1


def test_import_in_the_admin(client: Any, crm: Any) -> None:
    client.force_login(crm)
    assert client.get("/admin/contacts/contact/import/").status_code == 200
    upload = SimpleUploadedFile("c.csv", (HEADER + f"+85291234567,en,,,,{WITH_CONSENT}\n").encode(), "text/csv")
    response = client.post("/admin/contacts/contact/import/", {"file": upload, "source": "pos"}, follow=True)
    assert response.status_code == 200 and Contact.objects.count() == 1
    bad = SimpleUploadedFile("c.csv", b"phone\n12345\n", "text/csv")
    page = client.post("/admin/contacts/contact/import/", {"file": bad, "source": "pos"}).content.decode()
    assert "line 2 phone" in page and Contact.objects.count() == 1


def test_a_file_mixing_new_and_existing_numbers(crm: Any) -> None:
    """Existing contacts gain the evidence and the audience (their version bumped only when
    consent changes); new ones are created; a membership already there is not duplicated."""
    audience = Audience.objects.create(name="Mixed", source="import")
    with_token = create_contact(crm, phone="+85291234567", with_consent=False)
    no_consent_row = create_contact(crm, phone="+85261234567", with_consent=False)
    AudienceMembership.objects.create(audience=audience, contact_id=no_consent_row)
    versions = dict(Contact.objects.values_list("pk", "version"))
    text = HEADER + (
        f"+85291234567,en,,,,{WITH_CONSENT}\n"  # existing, gains consent
        "+85261234567,en,,,,,,,\n"  # existing, already in the audience, no consent given
        f"+85298765432,en,,,,{WITH_CONSENT}\n"  # new
    )
    result = _import(crm, text, audience_id=audience.pk)["result"]
    assert result == {"rows": 3, "created": 1, "existing": 2, "consent_evidence": 2, "duplicates_in_file": 0}
    after = dict(Contact.objects.values_list("pk", "version"))
    assert after[with_token] == versions[with_token] + 1
    assert after[no_consent_row] == versions[no_consent_row]
    new = Contact.objects.get(phone="+85298765432")
    assert new.version == 1 and new.consents.count() == 1
    assert AudienceMembership.objects.filter(audience=audience).count() == 3


def _orphans() -> int:
    """Consent evidence and memberships whose contact or audience does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM contacts_consentevidence e "
            "        WHERE NOT EXISTS (SELECT 1 FROM contacts_contact c WHERE c.id = e.contact_id)) "
            "     + (SELECT count(*) FROM contacts_audiencemembership m "
            "        WHERE NOT EXISTS (SELECT 1 FROM contacts_contact c WHERE c.id = m.contact_id) "
            "           OR NOT EXISTS (SELECT 1 FROM contacts_audience a WHERE a.id = m.audience_id))"
        )
        return int(cursor.fetchone()[0])


def test_a_phone_created_meanwhile_by_another_writer(crm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup misses a contact (as when another writer creates it after the lookup): the COPY
    fails on the phone's unique index, its savepoint is rolled back and the staged path imports
    the file in full: nothing twice, nothing lost, no orphan."""
    audience = Audience.objects.create(name="Race", source="import")
    cid = create_contact(crm, phone="+85291234567", with_consent=False)
    monkeypatch.setattr(imports, "_existing_contacts", lambda cursor, phones: {})
    text = HEADER + f"+85291234567,en,Changed,,,{WITH_CONSENT}\n+85298765432,en,,,,{WITH_CONSENT}\n"
    result = _import(crm, text, audience_id=audience.pk)["result"]
    assert result == {"rows": 2, "created": 1, "existing": 1, "consent_evidence": 2, "duplicates_in_file": 0}
    assert Contact.objects.get(pk=cid).name != "Changed" and Contact.objects.count() == 2
    assert ConsentEvidence.objects.count() == 2 and AudienceMembership.objects.filter(audience=audience).count() == 2
    assert _orphans() == 0


def test_no_orphan_through_the_orm(crm: Any) -> None:
    """The keys of evidence and memberships have no per-row database constraint: the ORM keeps
    PROTECT (a contact with evidence or memberships is never deleted) and CASCADE (an audience
    takes its memberships with it)."""
    from django.db.models import ProtectedError

    audience = Audience.objects.create(name="Orm", source="import")
    _import(crm, HEADER + f"+85291234567,en,,,,{WITH_CONSENT}\n+85261234567,en,,,,,,,\n", audience_id=audience.pk)
    with pytest.raises(ProtectedError):
        Contact.objects.get(phone="+85291234567").delete()
    with pytest.raises(ProtectedError):
        Contact.objects.all().delete()
    audience.delete()
    assert Contact.objects.count() == 2 and not AudienceMembership.objects.exists() and _orphans() == 0


@postgres_only
@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, "
        "proof_reference, recorded_at, actor_channel, actor_token_name) "
        "VALUES (-1, 'sms', 'marketing', 'w', 's', now(), 'p', now(), 'api', '')",
        "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
        "SELECT -1, id, now() FROM contacts_contact",
        "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
        "SELECT id, -1, now() FROM contacts_audience",
        "UPDATE contacts_consentevidence SET contact_id = -1",
        "UPDATE contacts_audiencemembership SET contact_id = -1",
        "UPDATE contacts_audiencemembership SET audience_id = -1",
        "DELETE FROM contacts_contact",
        "DELETE FROM contacts_audience",
        "UPDATE contacts_contact SET id = id + 1000000",
        "UPDATE contacts_audience SET id = id + 1000000",
        "TRUNCATE contacts_audience, contacts_audience_visible_to",
    ],
)
def test_no_orphan_through_raw_sql(crm: Any, statement: str) -> None:
    """Even raw SQL cannot leave evidence or a membership without its contact or audience: the
    statement-level checks of contacts/migrations/0004 refuse it as a foreign key would."""
    from django.db import IntegrityError

    audience = Audience.objects.create(name="Raw", source="import")
    _import(crm, HEADER + f"+85291234567,en,,,,{WITH_CONSENT}\n", audience_id=audience.pk)
    refused = r"refers to no|cannot be deleted|memberships first|never change|truncate it"
    with pytest.raises(IntegrityError, match=refused), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert _orphans() == 0 and ConsentEvidence.objects.count() == 1 and AudienceMembership.objects.count() == 1


@postgres_only
@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, "
        "updated_at, created_by_id) VALUES ('+85261234567', 'HK', 'en', '', '[]', 'x', '', 1, now(), now(), -1)",
        "UPDATE contacts_contact SET created_by_id = -1",
        "UPDATE contacts_consentevidence SET recorded_by_id = -1",
        "DELETE FROM auth_user WHERE id = {user}",
        "UPDATE auth_user SET id = id + 1000000 WHERE id = {user}",
    ],
)
def test_no_contact_or_evidence_without_its_user(django_user_model: Any, statement: str) -> None:
    """The users who created contacts and recorded evidence (one key per imported row, checked per
    statement as well) cannot disappear from under them, nor be given to no user."""
    from django.db import IntegrityError

    user = django_user_model.objects.create_user(username="importer")
    contact = Contact.objects.create(phone="+85291234567", country="HK", source="x", created_by=user)
    ConsentEvidence.objects.create(
        contact=contact,
        wording="w",
        source="s",
        obtained_at=contact.created_at,
        proof_reference="p",
        recorded_by=user,
        actor_channel="api",
    )
    refused = r"refers to no user|cannot be deleted|never change"
    with pytest.raises(IntegrityError, match=refused), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement.replace("{user}", str(user.pk)))
    assert Contact.objects.filter(created_by=user).count() == 1
    assert ConsentEvidence.objects.filter(recorded_by=user).count() == 1


def test_a_held_import_frozen_with_consent_as_a_dict_still_executes(crm: Any, approver: Any) -> None:
    """Compact rows hold consent as a list; imports held for approval before that hold a dict."""
    from compliance.services import action_request_approve

    ApprovalPolicy.objects.create(
        action=ActionType.CONTACTS_IMPORT,
        condition=Condition.RECIPIENTS_OVER,
        threshold_count=0,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )
    held = _import(crm, HEADER + f"+85291234567,en,,,,{WITH_CONSENT}\n")
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    fields = ("channel", "purpose", "wording", "source", "obtained_at", "proof_reference")
    request.payload["rows"][0][6] = dict(zip(fields, request.payload["rows"][0][6], strict=True))
    request.save(update_fields=["payload"])
    action_request_approve(actor=api_actor(approver), action_request_id=request.pk)
    evidence = ConsentEvidence.objects.get(contact__phone="+85291234567")
    assert (evidence.wording, evidence.source, evidence.proof_reference) == (
        "I agree to SMS offers",
        "web_form",
        "form-1",
    )
