"""The keys of the import tables on SQLite (contacts/migrations/0005_import_keys_sqlite_triggers).

The same relations as PostgreSQL's statement-level checks of 0004 (tested in test_import.py on
PostgreSQL), here as row-level triggers: an orphaning insert, update or delete is refused,
through the ORM and through raw SQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from contacts import sqlite_keys
from contacts.models import Audience, AudienceMembership, ConsentEvidence, Contact
from smsplatform.kernel.audit_triggers import SQLITE_NO_DELETE
from smsplatform.kernel.audit_triggers import TABLE as AUDIT_TABLE

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "sqlite", reason="SQLite's triggers; PostgreSQL's are tested in test_import"
    ),
]

MIGRATION = sqlite_keys
REFUSED = r"refers to no|cannot be deleted|memberships first|never change"


@pytest.fixture(autouse=True)
def _audit_log_append_only() -> None:
    """As in any migrated database (the suite lifts the audit log's no-delete trigger for the
    flush after a transactional test; here it is back, inside this test's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_NO_DELETE)


@pytest.fixture
def rows(django_user_model: Any) -> dict[str, Any]:
    """A user who created a contact and recorded its evidence, and the contact in an audience."""
    user = django_user_model.objects.create_user(username="importer")
    contact = Contact.objects.create(phone="+85291234567", country="HK", source="x", created_by=user)
    evidence = ConsentEvidence.objects.create(
        contact=contact,
        wording="w",
        source="s",
        obtained_at=contact.created_at,
        proof_reference="p",
        recorded_by=user,
        actor_channel="api",
    )
    audience = Audience.objects.create(name="Keys", source="import")
    membership = AudienceMembership.objects.create(audience=audience, contact=contact)
    return {"user": user, "contact": contact, "evidence": evidence, "audience": audience, "membership": membership}


def _unchanged(rows: dict[str, Any]) -> None:
    user, contact, audience = rows["user"], rows["contact"], rows["audience"]
    assert get_user_model().objects.filter(pk=user.pk).exists()
    assert Contact.objects.filter(pk=contact.pk, created_by=user).exists()
    assert ConsentEvidence.objects.filter(pk=rows["evidence"].pk, contact=contact, recorded_by=user).exists()
    assert AudienceMembership.objects.filter(pk=rows["membership"].pk, contact=contact, audience=audience).exists()


def test_every_trigger_is_installed() -> None:
    """Django rebuilds a SQLite table for some schema changes, which drops its triggers: a
    migration that does so must install them again."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        installed = {name for (name,) in cursor.fetchall()}
    expected = set(MIGRATION.trigger_names(get_user_model()._meta.db_table))
    assert len(expected) == 16 and expected <= installed


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, "
        "proof_reference, recorded_at, actor_channel, actor_token_name) "
        "VALUES (-1, 'sms', 'marketing', 'w', 's', CURRENT_TIMESTAMP, 'p', CURRENT_TIMESTAMP, 'api', '')",
        "INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, "
        "proof_reference, recorded_at, recorded_by_id, actor_channel, actor_token_name) "
        "SELECT id, 'sms', 'marketing', 'w', 's', CURRENT_TIMESTAMP, 'p', CURRENT_TIMESTAMP, -1, 'api', '' "
        "FROM contacts_contact",
        "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
        "SELECT -1, id, CURRENT_TIMESTAMP FROM contacts_contact",
        "INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at) "
        "SELECT id, -1, CURRENT_TIMESTAMP FROM contacts_audience",
        "INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, "
        "updated_at, created_by_id) VALUES ('+85261234567', 'HK', 'en', '', '[]', 'x', '', 1, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP, -1)",
        "UPDATE contacts_consentevidence SET contact_id = -1",
        "UPDATE contacts_consentevidence SET recorded_by_id = -1",
        "UPDATE contacts_audiencemembership SET contact_id = -1",
        "UPDATE contacts_audiencemembership SET audience_id = -1",
        "UPDATE contacts_contact SET created_by_id = -1",
        "DELETE FROM contacts_contact",
        "DELETE FROM contacts_audience",
        "DELETE FROM auth_user WHERE id = {user}",
        "UPDATE contacts_contact SET id = id + 1000000",
        "UPDATE contacts_audience SET id = id + 1000000",
        "UPDATE auth_user SET id = id + 1000000 WHERE id = {user}",
    ],
)
def test_no_orphan_through_raw_sql(rows: dict[str, Any], statement: str) -> None:
    with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement.replace("{user}", str(rows["user"].pk)))
    _unchanged(rows)


def test_no_orphan_through_the_orm(rows: dict[str, Any]) -> None:
    """PROTECT answers first where the ORM knows the relation; what it lets through (bulk updates,
    rows written with a bare id, deletes without the collector) the triggers refuse."""
    user, contact, audience = rows["user"], rows["contact"], rows["audience"]
    with pytest.raises(ProtectedError):
        Contact.objects.filter(pk=contact.pk).delete()
    with pytest.raises(ProtectedError):
        get_user_model().objects.filter(pk=user.pk).delete()
    attempts = [
        lambda: Contact.objects.filter(pk=contact.pk)._raw_delete(connection.alias),
        lambda: Audience.objects.filter(pk=audience.pk)._raw_delete(connection.alias),
        lambda: get_user_model().objects.filter(pk=user.pk)._raw_delete(connection.alias),
        lambda: Contact.objects.filter(pk=contact.pk).update(id=contact.pk + 1000),
        lambda: Audience.objects.filter(pk=audience.pk).update(id=audience.pk + 1000),
        lambda: Contact.objects.filter(pk=contact.pk).update(created_by_id=user.pk + 1000),
        lambda: ConsentEvidence.objects.update(contact_id=contact.pk + 1000),
        lambda: ConsentEvidence.objects.update(recorded_by_id=user.pk + 1000),
        lambda: AudienceMembership.objects.update(audience_id=audience.pk + 1000),
        lambda: AudienceMembership.objects.create(audience_id=audience.pk + 1000, contact=contact),
        lambda: AudienceMembership.objects.create(audience=audience, contact_id=contact.pk + 1000),
        lambda: ConsentEvidence.objects.create(
            contact_id=contact.pk + 1000,
            wording="w",
            source="s",
            obtained_at=timezone.now(),
            proof_reference="p",
            actor_channel="api",
        ),
        lambda: Contact.objects.create(phone="+85261234567", country="HK", source="x", created_by_id=user.pk + 1000),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError, match=REFUSED), transaction.atomic():
            attempt()
    _unchanged(rows)


def test_what_leaves_no_orphan_passes(rows: dict[str, Any], django_user_model: Any) -> None:
    """Children deleted before their parent, parents without children, keys set to rows that
    exist or to no user: all as before."""
    user, contact, audience = rows["user"], rows["contact"], rows["audience"]
    other = django_user_model.objects.create_user(username="other")
    Contact.objects.filter(pk=contact.pk).update(created_by=other, name="renamed")
    ConsentEvidence.objects.update(recorded_by=None)
    Contact.objects.filter(pk=contact.pk).update(created_by=None)
    user.delete()  # created and recorded nothing any more
    audience.delete()  # CASCADE: its memberships first
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM contacts_consentevidence")
        cursor.execute("DELETE FROM contacts_contact")
    assert not Contact.objects.exists() and not AudienceMembership.objects.exists()
    assert Audience.objects.create(name="Empty", source="x").delete()[0] == 1


@pytest.fixture
def audit_guard_lifted() -> Iterator[None]:
    """What the suite does before the flush of a transactional test (tests/conftest.py), inside
    this test's transaction (rolled back: the trigger is back afterwards)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {AUDIT_TABLE}_no_delete")
    yield


def test_a_wipe_of_the_whole_database_passes_in_any_order(rows: dict[str, Any], audit_guard_lifted: None) -> None:
    """flush deletes table after table in no set order; SQLite permits it only with the audit log's
    no-delete trigger lifted, and then the delete checks step aside as well (the key checks of
    inserts and updates stay)."""
    with connection.cursor() as cursor:
        for table in ("auth_user", "contacts_audience", "contacts_contact"):
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608
        with pytest.raises(IntegrityError, match="refers to no contact"), transaction.atomic():
            cursor.execute("UPDATE contacts_audiencemembership SET contact_id = -1")
        for table in ("contacts_audiencemembership", "contacts_consentevidence"):
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608
    assert not ConsentEvidence.objects.exists() and not Contact.objects.exists()


def _installed() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_later_migration_that_rebuilds_a_guarded_table_passes_and_the_keys_come_back() -> None:
    """A schema change to a guarded table rebuilds it on SQLite, which its triggers would refuse
    ("no such table"): every migrate takes them off first and puts them back at the end."""
    from django.db import models

    from contacts.apps import _sqlite_keys_off, _sqlite_keys_on

    expected = set(sqlite_keys.trigger_names(get_user_model()._meta.db_table))
    old = Contact._meta.get_field("name")
    new = models.CharField(max_length=101, blank=True)
    new.set_attributes_from_name("name")
    new.model = Contact
    _sqlite_keys_off(using="default")  # what pre_migrate does
    assert not expected & _installed()
    with connection.schema_editor() as editor:
        editor.alter_field(Contact, old, new)  # the copy-drop-rename rebuild
        editor.alter_field(Contact, new, old)
    _sqlite_keys_on(using="default")  # what post_migrate does
    assert expected <= _installed()
    with pytest.raises(IntegrityError, match="refers to no contact"), transaction.atomic():
        AudienceMembership.objects.create(audience=Audience.objects.create(name="A", source="x"), contact_id=-1)


@pytest.mark.django_db(transaction=True)
def test_migrating_back_past_0005_removes_the_keys_and_forward_puts_them_back() -> None:
    from django.core.management import call_command

    expected = set(sqlite_keys.trigger_names(get_user_model()._meta.db_table))
    call_command("migrate", "contacts", "0004", verbosity=0)
    try:
        assert not expected & _installed()
    finally:
        # Every app back to its latest migration: going back to contacts 0004 also unapplied the
        # apps that depend on contacts (campaigns, automations, reporting...), and the tests that
        # run after this one in the same process need their tables.
        call_command("migrate", verbosity=0)
    assert expected <= _installed()
