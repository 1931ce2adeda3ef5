"""Models of the reporting app."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from campaigns.models import Campaign

# --------------------------------------------------------------------------------------------
# Reports and attribution
#
# Reports are read from aggregates, never by scanning messages: these tables are kept current by
# the beat task reporting.refresh_aggregates (reporting/aggregates.py), each from a high-water
# mark, and every answer states how old they are. Ids of other apps' rows are plain integers,
# like OutboundMessage.batch: the tables are rewritten in bulk and never joined through the ORM.
# --------------------------------------------------------------------------------------------


class ReportCursor(models.Model):
    """Where an incremental refresh got to. ``position`` is the last id consumed; ``seen`` the
    highest id seen at the run before, consumed at the next run (one interval of lag, so a
    transaction that took an id below the mark but committed late is not skipped)."""

    name = models.CharField(max_length=40, primary_key=True)
    position = models.BigIntegerField(default=0)
    seen = models.BigIntegerField(default=0)
    rules = models.CharField(max_length=64, blank=True, help_text="Hash of the rules the rows were computed with")
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class ReportBatchState(models.Model):
    """One send batch's place in the message aggregates: refreshed again while ``pending`` (messages
    not yet final) is above zero or the batch is still sending."""

    batch_id = models.BigIntegerField(primary_key=True)
    campaign_id = models.BigIntegerField(db_index=True)
    messages = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    newest_final_at = models.DateTimeField(null=True, blank=True, help_text="The newest receipt applied")
    changed_at = models.DateTimeField(default=timezone.now, help_text="When the pending count last moved")
    refreshed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"batch {self.batch_id}: {self.pending} pending"


class ReportMessageBucket(models.Model):
    """Messages of one batch by hour of their latest state (final_at, else submitted_at, else
    created_at), gateway, country, state and error code; costs per the charge rule."""

    batch_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    hour = models.DateTimeField()
    gateway_id = models.BigIntegerField()
    country = models.CharField(max_length=2)
    state = models.CharField(max_length=12)
    error_code = models.CharField(max_length=32, blank=True)
    messages = models.PositiveIntegerField()
    segments = models.PositiveIntegerField()
    cost_estimated = models.DecimalField(max_digits=16, decimal_places=4)
    cost_billed = models.DecimalField(max_digits=16, decimal_places=4)
    currency = models.CharField(max_length=3)

    class Meta:
        indexes = [
            models.Index(fields=["campaign_id", "hour"], name="rpt_msg_campaign_hour"),
            models.Index(fields=["batch_id"], name="rpt_msg_batch"),
        ]
        permissions = [
            ("view_campaign_report", "Can read campaign reports, link clicks and conversion attribution"),
            ("view_person_clicks", "Can list person-level clicks (phones masked unless view_full_phone)"),
        ]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id} {self.hour:%Y-%m-%d %H}h {self.state}: {self.messages}"


class ReportClickBucket(models.Model):
    """Clicks of one short link by hour and device class (bot: link scanners and previews)."""

    link_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField(null=True, blank=True)
    hour = models.DateTimeField()
    device_class = models.CharField(max_length=10)
    clicks = models.PositiveIntegerField(default=0)
    unique_clicks = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["link_id", "hour", "device_class"], name="uniq_rpt_click_bucket"),
        ]
        indexes = [models.Index(fields=["campaign_id", "hour"], name="rpt_click_campaign_hour")]

    def __str__(self) -> str:
        return f"link {self.link_id} {self.hour:%Y-%m-%d %H}h {self.device_class}: {self.clicks}"


class ReportClickTouch(models.Model):
    """A click on a per-recipient link, as attribution looks it up: by link, token and time
    (LinkClick has no such index, and adding one would slow the redirect's hot path). Bot and
    scanner clicks are kept with ``bot`` set: never a touch, only reported as a tracking limit."""

    click_id = models.BigIntegerField(unique=True)
    link_id = models.BigIntegerField()
    recipient_token = models.CharField(max_length=32)
    clicked_at = models.DateTimeField()
    bot = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["link_id", "recipient_token", "clicked_at"], name="rpt_touch_lookup")]

    def __str__(self) -> str:
        return f"link {self.link_id} token {self.recipient_token} at {self.clicked_at:%Y-%m-%d %H:%M}"


class ReportOptOut(models.Model):
    """A STOP attributed to the campaign message that preceded it within the opt-out window."""

    opt_out_id = models.BigIntegerField(unique=True)
    campaign_id = models.BigIntegerField()
    message_id = models.BigIntegerField()
    gateway_id = models.BigIntegerField()
    country = models.CharField(max_length=2)
    occurred_at = models.DateTimeField()
    hour = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["campaign_id", "hour"], name="rpt_optout_campaign_hour")]

    def __str__(self) -> str:
        return f"opt-out {self.opt_out_id} -> campaign {self.campaign_id}"


class ConversionKind(models.TextChoices):
    ORDER = "order", "Order"
    PAYMENT = "payment", "Payment"
    BOOKING = "booking", "Booking"


class AttributionRule(models.TextChoices):
    CLICK = "click", "Last SMS click inside the click window"
    DELIVERY = "delivery", "Last SMS delivery inside the delivery window"
    COUPON = "coupon", "Coupon code of the campaign (outside the windows)"
    OTHER_CHANNEL = "other_channel", "Not claimed: another channel touched last"
    NONE = "none", "No SMS touch"


class ReportConversion(models.Model):
    """One conversion (an order by its reference, a payment, a booking) and the campaign it is
    attributed to under the rules hashed in ReportCursor('conversions').rules.

    ``sms_campaign_id`` is the SMS last touch even when another channel touched later
    (``claimed`` false, rule other_channel): a conflict is reported, never silently claimed."""

    key = models.CharField(max_length=140, unique=True, help_text="order:<source>:<ref>, or event:<id>")
    kind = models.CharField(max_length=10, choices=ConversionKind.choices)
    event_id = models.BigIntegerField(help_text="The (first) commerce event of the conversion")
    contact_id = models.BigIntegerField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    hour = models.DateTimeField()
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    refunded = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True)
    rule = models.CharField(max_length=14, choices=AttributionRule.choices)
    campaign_id = models.BigIntegerField(null=True, blank=True, help_text="Credited campaign (claimed)")
    sms_campaign_id = models.BigIntegerField(null=True, blank=True, help_text="The SMS last touch, claimed or not")
    claimed = models.BooleanField(default=False)
    touch_at = models.DateTimeField(null=True, blank=True)
    touch_message_id = models.BigIntegerField(null=True, blank=True)
    touch_link_id = models.BigIntegerField(null=True, blank=True)
    conflict_channel = models.CharField(max_length=20, blank=True)
    conflict_at = models.DateTimeField(null=True, blank=True)
    other_campaigns = models.JSONField(default=list, blank=True, help_text="Other campaigns that touched it")
    path = models.CharField(max_length=200, blank=True, help_text="e.g. delivered>click>order")
    limits = models.JSONField(default=list, blank=True, help_text="Tracking limits met")
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["campaign_id", "hour"], name="rpt_conv_campaign_hour"),
            models.Index(fields=["sms_campaign_id"], name="rpt_conv_sms_campaign"),
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.campaign_id or '-'} ({self.rule})"


class CampaignReport(Campaign):
    """The admin's entry to campaign reports (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "campaign report"
        verbose_name_plural = "campaign reports"
