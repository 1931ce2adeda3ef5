"""The keys 0004 took off the import tables, guarded on SQLite too: see contacts/sqlite_keys.py.

On PostgreSQL this migration does nothing (0004's statement-level triggers hold the keys there).
"""

from django.conf import settings
from django.db import migrations

from contacts import sqlite_keys


def _users(apps):
    return apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table


def create(apps, schema_editor):
    sqlite_keys.install(schema_editor.connection, _users(apps))


def drop(apps, schema_editor):
    sqlite_keys.remove(schema_editor.connection, _users(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0004_import_set_based_keys"),
        ("smsplatform", "0002_audit_log_append_only"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
