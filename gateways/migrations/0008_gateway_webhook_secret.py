"""Each gateway gets its own webhook signing secret (issue 14, item 3)."""

import secrets

from django.db import migrations, models

import gateways.models


def _secret_per_gateway(apps, schema_editor):  # type: ignore[no-untyped-def]
    # AddField computes a callable default once for every existing row: give each its own.
    Gateway = apps.get_model("gateways", "Gateway")
    for gateway in Gateway.objects.only("pk"):
        Gateway.objects.filter(pk=gateway.pk).update(webhook_secret=secrets.token_urlsafe(32))


class Migration(migrations.Migration):
    dependencies = [
        ("gateways", "0007_outboundmessage_updated_at_moves"),
    ]

    operations = [
        migrations.AddField(
            model_name="gateway",
            name="webhook_secret",
            field=models.CharField(default=gateways.models.webhook_secret_new, editable=False, max_length=100),
        ),
        migrations.AddField(
            model_name="gateway",
            name="webhook_secret_previous",
            field=models.CharField(blank=True, editable=False, max_length=100),
        ),
        migrations.AddField(
            model_name="gateway",
            name="webhook_secret_rotated_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(_secret_per_gateway, migrations.RunPython.noop),
    ]
