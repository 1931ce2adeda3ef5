"""An index on the send history (gateways_outboundmessage) for frequency caps.

Frequency caps (gateways/frequency.py) count each destination's messages of a purpose in the
last day or week. Without an index starting with (purpose, created_at) that is a scan of the
whole send history at every segment preview and dispatch; with this one (destination and state
included) it is an index-only range scan of the window. The table belongs to the gateways app,
whose models do not declare this index, so it is created here with plain SQL (and dropped on
reversal); the gateways app may adopt it in its Meta.indexes under the same name.
"""

from django.db import migrations

NAME = "caps_msg_purpose_created"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        columns = "(purpose, created_at) INCLUDE (destination, state)"
    else:
        columns = "(purpose, created_at, destination, state)"
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {NAME} ON gateways_outboundmessage {columns}")


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0002_preview_and_import_indexes"),
        ("gateways", "0002_outboundmessage_messagepart_deliveryreceipt_and_more"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
