"""The suppression list (OptOut) moves here from the contacts app, over the same table.

State only for the model: the table ``contacts_optout`` (created by contacts 0001) keeps its
name, rows and indexes, declared here with ``db_table``; contacts 0006 removes the model from
the contacts app first, so the two apps never hold it at once.

The model's content type is renamed (contacts.optout -> compliance.optout) where one exists, so
its permissions (view_optout, add_optout, ...) and admin log entries follow it: a user or group
given ``contacts.add_optout`` holds ``compliance.add_optout`` afterwards. On a fresh database
there is none yet (content types are created after migrate) and this does nothing.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def _rename_content_type(apps, schema_editor, old, new):
    from django.contrib.contenttypes.models import ContentType as GlobalContentType

    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    types = ContentType.objects.using(db)
    if not types.filter(app_label=new, model="optout").exists():
        types.filter(app_label=old, model="optout").update(app_label=new)
    # The global manager caches content types by app label: drop what it holds of the old one.
    GlobalContentType.objects.clear_cache()


def forwards(apps, schema_editor):
    _rename_content_type(apps, schema_editor, "contacts", "compliance")


def backwards(apps, schema_editor):
    _rename_content_type(apps, schema_editor, "compliance", "contacts")


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0002_condition_sensitive_content"),
        ("contacts", "0006_optout_to_compliance"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OptOut",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("phone", models.CharField(help_text="E.164", max_length=16)),
                        (
                            "reason",
                            models.CharField(
                                choices=[
                                    ("stop", "STOP reply"),
                                    ("web", "Web request"),
                                    ("api", "API request"),
                                    ("admin", "Staff request (admin)"),
                                    ("blocked", "Blocked"),
                                    ("invalid", "Invalid number"),
                                    ("complaint", "Complaint"),
                                    ("do_not_call", "Do-not-call register"),
                                ],
                                max_length=20,
                            ),
                        ),
                        (
                            "source",
                            models.CharField(help_text="sms:<gateway>, web_form, api, admin, import:...", max_length=100),
                        ),
                        ("message_text", models.TextField(blank=True, help_text="The STOP message as received")),
                        ("language", models.CharField(blank=True, max_length=10)),
                        ("note", models.CharField(blank=True, max_length=500)),
                        ("occurred_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("recorded_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("actor_channel", models.CharField(max_length=16)),
                        ("actor_token_name", models.CharField(blank=True, max_length=100)),
                        (
                            "sync_state",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending sync to CRM"),
                                    ("synced", "Synced"),
                                    ("not_applicable", "No CRM"),
                                ],
                                default="pending",
                                max_length=20,
                            ),
                        ),
                        ("lifted_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "contact",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="opt_outs",
                                to="contacts.contact",
                            ),
                        ),
                        (
                            "lifted_by_consent",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="lifted_opt_outs",
                                to="contacts.consentevidence",
                            ),
                        ),
                        (
                            "recorded_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "contacts_optout",
                        "ordering": ["-occurred_at", "-id"],
                        "indexes": [
                            models.Index(
                                condition=models.Q(("lifted_at__isnull", True)),
                                fields=["phone"],
                                name="optout_active_phone",
                            ),
                            models.Index(fields=["reason", "-occurred_at"], name="optout_reason_recent"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
