"""Less WAL per campaign message (docs/OTP.md): no index that a unique constraint or receipt_lookup
already leads with, and no per-row foreign-key check of a part's message (a locking read of the
message for every part written). On PostgreSQL each step is a DROP INDEX or DROP CONSTRAINT, no
rewrite."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateways", "0012_unbatched_reference_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deliveryreceipt",
            name="gateway",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="gateways.gateway"
            ),
        ),
        migrations.AlterField(
            model_name="deliveryreceipt",
            name="provider_message_id",
            field=models.CharField(max_length=100),
        ),
        migrations.AlterField(
            model_name="messagepart",
            name="gateway",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="gateways.gateway"
            ),
        ),
        migrations.AlterField(
            model_name="messagepart",
            name="message",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="parts",
                to="gateways.outboundmessage",
            ),
        ),
    ]
