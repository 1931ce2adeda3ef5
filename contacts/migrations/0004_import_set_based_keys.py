"""Consent evidence and audience memberships: foreign keys checked per statement, not per row.

A CSV import writes ~100k consent evidence rows and ~100k memberships in one transaction. Each
row's foreign-key trigger (RI_FKey_check: one query per row, run at commit) cost more than the
writes themselves (measured: about half of the database time of a 100k-row import). The three keys
(consentevidence.contact, audiencemembership.contact, audiencemembership.audience) and the two
user keys written once per imported row (contact.created_by, consentevidence.recorded_by) lose
their per-row constraint (db_constraint=False) and get, on PostgreSQL, statement-level triggers
that check the same thing set-based, once per statement, over the statement's transition table:

- an INSERT or UPDATE of contacts, evidence or memberships whose contact, audience or user does
  not exist fails with foreign_key_violation (one anti-join however many rows);
- a DELETE of contacts, audiences or users that leaves rows pointing at them fails
  likewise (the ORM's PROTECT and CASCADE still act first; this holds raw SQL to the same rule);
  it first takes a SHARE lock on the child tables, so a concurrent insert of a child either
  commits first (and the delete sees it and fails) or waits and then finds its parent gone;
- contact, audience and user ids never change (UPDATE OF id is refused);
- a TRUNCATE of contacts, audiences or users that leaves children behind fails (one TRUNCATE of the
  parent with its children, as ``flush`` does, passes).

The two user keys also lose their index: nothing looks contacts or evidence up by user, and each
index costs every imported row.

The checks are immediate (at the end of each statement), not deferred to commit: every writer
creates the contact or audience before its evidence and memberships.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

CHILDREN_NEED_PARENTS = """
CREATE FUNCTION contacts_contact_keys_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT created_by_id FROM new_rows WHERE created_by_id IS NOT NULL) n
        WHERE NOT EXISTS (SELECT 1 FROM {users} u WHERE u.id = n.created_by_id)
    ) THEN
        RAISE EXCEPTION 'contacts_contact.created_by_id refers to no user' USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION contacts_consent_keys_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM contacts_contact c WHERE c.id = n.contact_id))
    THEN
        RAISE EXCEPTION 'contacts_consentevidence.contact_id refers to no contact'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT recorded_by_id FROM new_rows WHERE recorded_by_id IS NOT NULL) n
        WHERE NOT EXISTS (SELECT 1 FROM {users} u WHERE u.id = n.recorded_by_id)
    ) THEN
        RAISE EXCEPTION 'contacts_consentevidence.recorded_by_id refers to no user'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION contacts_membership_keys_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM contacts_contact c WHERE c.id = n.contact_id))
    THEN
        RAISE EXCEPTION 'contacts_audiencemembership.contact_id refers to no contact'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT audience_id FROM new_rows) n
        WHERE NOT EXISTS (SELECT 1 FROM contacts_audience a WHERE a.id = n.audience_id)
    ) THEN
        RAISE EXCEPTION 'contacts_audiencemembership.audience_id refers to no audience'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER contact_keys_insert AFTER INSERT ON contacts_contact
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_contact_keys_check();
CREATE TRIGGER contact_keys_update AFTER UPDATE ON contacts_contact
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_contact_keys_check();
CREATE TRIGGER consent_keys_insert AFTER INSERT ON contacts_consentevidence
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_consent_keys_check();
CREATE TRIGGER consent_keys_update AFTER UPDATE ON contacts_consentevidence
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_consent_keys_check();
CREATE TRIGGER membership_keys_insert AFTER INSERT ON contacts_audiencemembership
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_membership_keys_check();
CREATE TRIGGER membership_keys_update AFTER UPDATE ON contacts_audiencemembership
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_membership_keys_check();

CREATE FUNCTION contacts_contact_delete_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE contacts_consentevidence, contacts_audiencemembership IN SHARE MODE;
    IF EXISTS (SELECT 1 FROM old_rows o JOIN contacts_consentevidence e ON e.contact_id = o.id)
        OR EXISTS (SELECT 1 FROM old_rows o JOIN contacts_audiencemembership m ON m.contact_id = o.id)
    THEN
        RAISE EXCEPTION 'contacts_contact: a contact with consent evidence or memberships cannot be deleted'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION contacts_audience_delete_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE contacts_audiencemembership IN SHARE MODE;
    IF EXISTS (SELECT 1 FROM old_rows o JOIN contacts_audiencemembership m ON m.audience_id = o.id) THEN
        RAISE EXCEPTION 'contacts_audience: delete its memberships first'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION contacts_user_delete_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE contacts_contact, contacts_consentevidence IN SHARE MODE;
    IF EXISTS (SELECT 1 FROM old_rows o JOIN contacts_contact c ON c.created_by_id = o.id)
        OR EXISTS (SELECT 1 FROM old_rows o JOIN contacts_consentevidence e ON e.recorded_by_id = o.id)
    THEN
        RAISE EXCEPTION '{users}: a user who created contacts or recorded consent evidence cannot be deleted'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER contacts_user_delete AFTER DELETE ON {users}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_user_delete_check();
CREATE TRIGGER contact_children_delete AFTER DELETE ON contacts_contact
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_contact_delete_check();
CREATE TRIGGER audience_children_delete AFTER DELETE ON contacts_audience
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_audience_delete_check();

CREATE FUNCTION contacts_id_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION '%: ids never change', TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER contact_id_unchanged BEFORE UPDATE OF id ON contacts_contact
    FOR EACH ROW EXECUTE FUNCTION contacts_id_unchanged();
CREATE TRIGGER audience_id_unchanged BEFORE UPDATE OF id ON contacts_audience
    FOR EACH ROW EXECUTE FUNCTION contacts_id_unchanged();

CREATE FUNCTION contacts_truncate_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_TABLE_NAME <> 'contacts_audience' AND EXISTS (SELECT 1 FROM contacts_consentevidence))
        OR (TG_TABLE_NAME <> '{users}' AND EXISTS (SELECT 1 FROM contacts_audiencemembership))
        OR (TG_TABLE_NAME = '{users}' AND EXISTS (SELECT 1 FROM contacts_contact WHERE created_by_id IS NOT NULL))
    THEN
        RAISE EXCEPTION '%: truncate it with its evidence and memberships', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER contact_truncate AFTER TRUNCATE ON contacts_contact
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_truncate_check();
CREATE TRIGGER audience_truncate AFTER TRUNCATE ON contacts_audience
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_truncate_check();
CREATE TRIGGER contacts_user_id_unchanged BEFORE UPDATE OF id ON {users}
    FOR EACH ROW EXECUTE FUNCTION contacts_id_unchanged();
CREATE TRIGGER contacts_user_truncate AFTER TRUNCATE ON {users}
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_truncate_check();
"""

DROP = """
DROP TRIGGER contact_keys_insert ON contacts_contact;
DROP TRIGGER contact_keys_update ON contacts_contact;
DROP TRIGGER contacts_user_delete ON {users};
DROP TRIGGER contacts_user_id_unchanged ON {users};
DROP TRIGGER contacts_user_truncate ON {users};
DROP TRIGGER consent_keys_insert ON contacts_consentevidence;
DROP TRIGGER consent_keys_update ON contacts_consentevidence;
DROP TRIGGER membership_keys_insert ON contacts_audiencemembership;
DROP TRIGGER membership_keys_update ON contacts_audiencemembership;
DROP TRIGGER contact_children_delete ON contacts_contact;
DROP TRIGGER audience_children_delete ON contacts_audience;
DROP TRIGGER contact_id_unchanged ON contacts_contact;
DROP TRIGGER audience_id_unchanged ON contacts_audience;
DROP TRIGGER contact_truncate ON contacts_contact;
DROP TRIGGER audience_truncate ON contacts_audience;
DROP FUNCTION contacts_contact_keys_check();
DROP FUNCTION contacts_user_delete_check();
DROP FUNCTION contacts_consent_keys_check();
DROP FUNCTION contacts_membership_keys_check();
DROP FUNCTION contacts_contact_delete_check();
DROP FUNCTION contacts_audience_delete_check();
DROP FUNCTION contacts_id_unchanged();
DROP FUNCTION contacts_truncate_check();
"""


def _users(apps):
    return apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CHILDREN_NEED_PARENTS.replace("{users}", _users(apps)), params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP.replace("{users}", _users(apps)), params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0003_send_history_cap_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    # In one transaction: the keys are never unchecked in between.
    operations = [
        migrations.AlterField(
            model_name="audiencemembership",
            name="audience",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="memberships",
                to="contacts.audience",
            ),
        ),
        migrations.AlterField(
            model_name="audiencemembership",
            name="contact",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="memberships",
                to="contacts.contact",
            ),
        ),
        migrations.AlterField(
            model_name="consentevidence",
            name="contact",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consents",
                to="contacts.contact",
            ),
        ),
        migrations.AlterField(
            model_name="contact",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="consentevidence",
            name="recorded_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(create, drop, elidable=False),
    ]
