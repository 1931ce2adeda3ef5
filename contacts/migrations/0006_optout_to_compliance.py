"""The suppression list (OptOut) moves to the compliance app: this side only forgets the model.

State only: the table ``contacts_optout``, its rows and indexes stay as they are; compliance
0003 declares the same model over the same table (``db_table``). Nothing in the database changes.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0005_import_keys_sqlite_triggers"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="OptOut")],
            database_operations=[],
        ),
    ]
