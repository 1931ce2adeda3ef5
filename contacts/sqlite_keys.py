"""The keys contacts 0004 took off the import tables, guarded on SQLite too (the embedded default).

0004 replaced five foreign keys with PostgreSQL statement-level triggers; on SQLite nothing but
the services guarded them. These SQLite row-level triggers hold the same relations to the same
rules, with the same messages (an IntegrityError, as a foreign key would raise):

- consentevidence.contact, audiencemembership.contact, audiencemembership.audience and the two
  user keys (contact.created_by, consentevidence.recorded_by, null allowed): an INSERT or an
  UPDATE of the key that points at no row is refused;
- a DELETE of a contact with evidence or memberships, of an audience with memberships, or of a
  user who created contacts or recorded evidence is refused (the ORM's PROTECT and CASCADE still
  act first; this holds raw SQL to the same rule). SQLite has no TRUNCATE: DELETE covers it;
- contact, audience and user ids never change.

Row-level and immediate: SQLite has neither statement-level triggers nor deferred ones. Every
writer creates the contact or audience before its evidence and memberships, and the ORM deletes
children before their parent, so no writer sees a difference.

A wipe of the whole database (``flush``: one DELETE per table, in no set order) would be refused
as soon as it deleted a parent before its children. On SQLite a wipe is only possible with the
audit log's no-delete trigger lifted (see smsplatform/kernel/audit_triggers.py; the test suite
lifts it for the flush after each transactional test), so the delete checks step aside while
that trigger is absent, as PostgreSQL's TRUNCATE check lets a flush pass.

A schema change to one of these tables on SQLite rebuilds it (create a copy, drop the old one,
rename the copy), and SQLite refuses the rename while a trigger names the dropped table ("error in
trigger contacts_...: no such table"); the rebuild would also lose the table's own triggers. So on
SQLite every ``migrate`` removes them first (pre_migrate) and installs them again at the end
(post_migrate) once migration 0005 is applied (contacts/apps.py): a later migration, or a Django
upgrade that alters the user table, needs nothing of its own.
"""

from __future__ import annotations

from typing import Any

# Present in every SQLite database migrated past smsplatform 0002; absent only while a wipe runs.
AUDIT_NO_DELETE = "smsplatform_auditlog_no_delete"
GUARDED = f"EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = '{AUDIT_NO_DELETE}')"  # noqa: S608 (constants)


def _refuse(name: str, event: str, when: str, message: str) -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {name} {event} FOR EACH ROW WHEN {when} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _no_user(column: str) -> str:
    return f"NEW.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {{users}} u WHERE u.id = NEW.{column})"  # noqa: S608 (constants)


NO_CONTACT = "NOT EXISTS (SELECT 1 FROM contacts_contact c WHERE c.id = NEW.contact_id)"
NO_AUDIENCE = "NOT EXISTS (SELECT 1 FROM contacts_audience a WHERE a.id = NEW.audience_id)"


def _statements(users: str) -> list[str]:
    statements = []
    # Children need parents. Each key has its own trigger so that the message names it; an
    # UPDATE is checked only when it sets the key.
    for op, event in (("insert", "AFTER INSERT"), ("update", "AFTER UPDATE OF {column}")):
        for table, short, column, when, message in (
            ("contacts_contact", "contact", "created_by_id", _no_user("created_by_id"), "refers to no user"),
            ("contacts_consentevidence", "consent", "contact_id", NO_CONTACT, "refers to no contact"),
            ("contacts_consentevidence", "consent", "recorded_by_id", _no_user("recorded_by_id"), "refers to no user"),
            ("contacts_audiencemembership", "membership", "contact_id", NO_CONTACT, "refers to no contact"),
            ("contacts_audiencemembership", "membership", "audience_id", NO_AUDIENCE, "refers to no audience"),
        ):
            statements.append(
                _refuse(
                    f"contacts_{short}_keys_{op}_{column.removesuffix('_id')}",
                    f"{event.format(column=column)} ON {table}",
                    when,
                    f"{table}.{column} {message}",
                )
            )
    # Parents stay while children point at them (except while the whole database is wiped).
    statements += [
        _refuse(
            "contacts_contact_children_delete",
            "AFTER DELETE ON contacts_contact",
            "(EXISTS (SELECT 1 FROM contacts_consentevidence e WHERE e.contact_id = OLD.id) "  # noqa: S608 (constants)
            f"OR EXISTS (SELECT 1 FROM contacts_audiencemembership m WHERE m.contact_id = OLD.id)) AND {GUARDED}",
            "contacts_contact: a contact with consent evidence or memberships cannot be deleted",
        ),
        _refuse(
            "contacts_audience_children_delete",
            "AFTER DELETE ON contacts_audience",
            f"EXISTS (SELECT 1 FROM contacts_audiencemembership m WHERE m.audience_id = OLD.id) AND {GUARDED}",  # noqa: S608 (constants)
            "contacts_audience: delete its memberships first",
        ),
        # No index on the user keys (see 0004): a scan, as on PostgreSQL; users are rarely deleted.
        _refuse(
            "contacts_user_children_delete",
            f"AFTER DELETE ON {users}",
            "(EXISTS (SELECT 1 FROM contacts_contact c WHERE c.created_by_id = OLD.id) "  # noqa: S608 (constants)
            f"OR EXISTS (SELECT 1 FROM contacts_consentevidence e WHERE e.recorded_by_id = OLD.id)) AND {GUARDED}",
            f"{users}: a user who created contacts or recorded consent evidence cannot be deleted",
        ),
    ]
    for short, table in (("contact", "contacts_contact"), ("audience", "contacts_audience"), ("user", users)):
        statements.append(
            _refuse(
                f"contacts_{short}_id_unchanged",
                f"BEFORE UPDATE OF id ON {table}",
                "NEW.id IS NOT OLD.id",
                f"{table}: ids never change",
            )
        )
    return [s.replace("{users}", users) for s in statements]


def trigger_names(users: str) -> list[str]:
    """The triggers this migration installs (``users``: the user model's table)."""
    return [statement.split()[5] for statement in _statements(users)]


def install(connection: Any, users: str) -> None:
    """Create the triggers that are missing (SQLite only)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            for statement in _statements(users):
                cursor.execute(statement)


def remove(connection: Any, users: str) -> None:
    """Drop the triggers (SQLite only)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            for name in trigger_names(users):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
