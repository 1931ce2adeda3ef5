from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate

SQLITE_KEYS_MIGRATION = ("contacts", "0005_import_keys_sqlite_triggers")


def _users_table() -> str:
    from django.contrib.auth import get_user_model

    return get_user_model()._meta.db_table


def _sqlite_keys_off(using: str, **kwargs: Any) -> None:
    """Before any migration on SQLite, the import tables' key triggers go (a migration that rebuilds
    one of those tables, or the user table, would fail on them; see contacts/sqlite_keys.py)."""
    from django.db import connections

    from contacts import sqlite_keys

    sqlite_keys.remove(connections[using], _users_table())


def _sqlite_keys_on(using: str, **kwargs: Any) -> None:
    """After migrating (and after a flush), they are back wherever migration 0005 is applied."""
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from contacts import sqlite_keys

    connection = connections[using]
    if connection.vendor == "sqlite" and SQLITE_KEYS_MIGRATION in MigrationRecorder(connection).applied_migrations():
        sqlite_keys.install(connection, _users_table())


class ContactsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "contacts"

    def ready(self) -> None:
        from contacts import services  # noqa: F401  (registers the governed contact actions)
        from contacts.keywords import inbound_keyword_handler
        from contacts.staff.nav import register as staff_register
        from gateways.delivery.inbound import INBOUND_HANDLERS, register_inbound_handler

        # ready() can run twice in some test setups: register the STOP handler once.
        if inbound_keyword_handler not in INBOUND_HANDLERS:
            register_inbound_handler(inbound_keyword_handler)
        staff_register()  # the contacts pages of the staff app (/app/contacts/)
        pre_migrate.connect(_sqlite_keys_off, sender=self, dispatch_uid="contacts.sqlite_keys_off")
        post_migrate.connect(_sqlite_keys_on, sender=self, dispatch_uid="contacts.sqlite_keys_on")
