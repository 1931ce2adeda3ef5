"""Make the audit log append-only in the database itself, not only in the ORM."""

from django.db import migrations

from smsplatform.kernel.audit_triggers import DOWN, UP


def _run(statements_by_vendor):
    def apply(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("smsplatform", "0001_initial")]

    operations = [migrations.RunPython(_run(UP), _run(DOWN))]
