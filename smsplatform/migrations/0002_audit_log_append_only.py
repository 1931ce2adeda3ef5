"""Make the audit log append-only in the database itself, not only in the ORM."""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION smsplatform_auditlog_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'smsplatform_auditlog is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER smsplatform_auditlog_no_update BEFORE UPDATE OR DELETE ON smsplatform_auditlog
    FOR EACH ROW EXECUTE FUNCTION smsplatform_auditlog_immutable();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS smsplatform_auditlog_no_update ON smsplatform_auditlog;
DROP FUNCTION IF EXISTS smsplatform_auditlog_immutable();
"""
SQLITE_UP = [
    """CREATE TRIGGER smsplatform_auditlog_no_update BEFORE UPDATE ON smsplatform_auditlog
       BEGIN SELECT RAISE(ABORT, 'smsplatform_auditlog is append-only'); END;""",
    """CREATE TRIGGER smsplatform_auditlog_no_delete BEFORE DELETE ON smsplatform_auditlog
       BEGIN SELECT RAISE(ABORT, 'smsplatform_auditlog is append-only'); END;""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS smsplatform_auditlog_no_update;",
    "DROP TRIGGER IF EXISTS smsplatform_auditlog_no_delete;",
]


def _run(statements_by_vendor):
    def apply(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            return
        if isinstance(statements, str):
            statements = [statements]
        for sql in statements:
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("smsplatform", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}),
            _run({"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}),
        )
    ]
