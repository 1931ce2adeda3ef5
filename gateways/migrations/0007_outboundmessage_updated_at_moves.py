"""updated_at of an outbound message moves on every change of state or error, in the database."""

from django.db import migrations

from gateways.message_triggers import DOWN, UP


def _run(statements_by_vendor):
    def apply(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("gateways", "0006_sender_id_names")]

    operations = [migrations.RunPython(_run(UP), _run(DOWN))]
