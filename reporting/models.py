"""Models of the reporting app."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.utils import timezone

from campaigns.automations.flow_models import Flow
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


class MessageBucket(models.Model):
    """Messages by hour of their latest state (final_at, else submitted_at, else created_at),
    gateway, country, state and error code, with their segments and costs per the charge rule:
    what a campaign's and a flow's reports both count."""

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
        abstract = True


class ReportMessageBucket(MessageBucket):
    """A campaign's messages of one send batch, bucketed."""

    batch_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()

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


class ReportFlowChunk(models.Model):
    """One block of message ids (``chunk`` = id // FLOW_CHUNK_IDS) holding automation-flow messages:
    the unit the flow aggregates are recomputed in, as a send batch is for campaigns. Refreshed
    again while ``pending`` (flow messages of the block not yet final) is above zero."""

    chunk = models.BigIntegerField(primary_key=True)
    messages = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    newest_final_at = models.DateTimeField(null=True, blank=True, help_text="The newest receipt applied")
    refreshed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"flow chunk {self.chunk}: {self.pending} pending"


class ReportFlowMessageBucket(MessageBucket):
    """An automation flow's messages in one id block (chunk), bucketed."""

    chunk = models.BigIntegerField()
    flow_id = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["flow_id", "hour"], name="rpt_flow_msg_flow_hour"),
            models.Index(fields=["chunk"], name="rpt_flow_msg_chunk"),
        ]

    def __str__(self) -> str:
        return f"flow {self.flow_id} {self.hour:%Y-%m-%d %H}h {self.state}: {self.messages}"


class ReportOptOut(models.Model):
    """A STOP attributed to the marketing message (of a campaign or of an automation flow) that
    preceded it within the opt-out window: exactly one of campaign_id and flow_id is set."""

    opt_out_id = models.BigIntegerField(unique=True)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    flow_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField()
    gateway_id = models.BigIntegerField()
    country = models.CharField(max_length=2)
    occurred_at = models.DateTimeField()
    hour = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["campaign_id", "hour"], name="rpt_optout_campaign_hour"),
            models.Index(fields=["flow_id", "hour"], name="rpt_optout_flow_hour"),
        ]

    def __str__(self) -> str:
        target = f"campaign {self.campaign_id}" if self.campaign_id else f"flow {self.flow_id}"
        return f"opt-out {self.opt_out_id} -> {target}"


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


class FlowReport(Flow):
    """The admin's entry to automation-flow reports (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "flow report"
        verbose_name_plural = "flow reports"


# Snapshots and notifications ------------------------------------------------------------------
# Performance snapshots (sms_marketing.performance_snapshot.record): figures a person or an outside
# source reported, kept beside the computed ones and never mixed into them. Review notifications
# (sms_marketing.review_notification.send and the alert beat): an in-app inbox plus e-mail through
# the kernel's notification outbox. Services: reporting/snapshots.py, reporting/notifications.py,
# reporting/alerts.py.


class EvidenceStorage(FileSystemStorage):
    """Evidence files under var/evidence (SMS_VAR_DIR), never the working directory; the location is
    read from the settings at each use, so a test (or a deployment) may move it."""

    @property
    def base_location(self) -> str:
        return str(settings.VAR_DIR / "evidence")

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)


def evidence_storage() -> FileSystemStorage:
    return EvidenceStorage()


class SnapshotSubject(models.TextChoices):
    CAMPAIGN = "campaign", "Campaign"
    FLOW = "flow", "Automation flow"


class SnapshotSource(models.TextChoices):
    MANUAL = "manual", "Entered by a person"
    GATEWAY_PORTAL = "gateway_portal", "Gateway portal"
    AD_PLATFORM = "ad_platform", "Ad platform"
    FINANCE_EXPORT = "finance_export", "Finance export"
    ANALYTICS = "analytics", "Web analytics"
    OTHER = "other", "Other outside source"


class EvidenceKind(models.TextChoices):
    FILE = "file", "Uploaded file"
    URL = "url", "Link"


# The metric columns of a snapshot, in the order reports show them.
SNAPSHOT_COUNTS = ("sent", "delivered", "failed", "clicks", "unique_clicks", "opt_outs", "conversions")
SNAPSHOT_AMOUNTS = ("cost", "revenue")
SNAPSHOT_METRICS = (*SNAPSHOT_COUNTS, *SNAPSHOT_AMOUNTS)


class PerformanceSnapshot(models.Model):
    """One version of a reported result. The uniqueness key is subject + source + date range +
    gateway; recording the same key again is an overwrite (governed): a new version becomes current
    and the old one stays, never edited or deleted."""

    key = models.CharField(max_length=300, help_text="subject, source, date range and gateway.")
    version = models.PositiveIntegerField(default=1)
    is_current = models.BooleanField(default=True)
    subject_kind = models.CharField(max_length=10, choices=SnapshotSubject.choices)
    campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.PROTECT, related_name="performance_snapshots"
    )
    # The automations app's flow, by id (its model lives above reporting's merge point).
    flow_id = models.PositiveBigIntegerField(null=True, blank=True)
    source_kind = models.CharField(max_length=20, choices=SnapshotSource.choices)
    source_name = models.CharField(max_length=100, help_text="Which portal, platform or export.")
    date_from = models.DateField()
    date_to = models.DateField()
    gateway_code = models.CharField(max_length=64, blank=True, help_text="Empty: all gateways.")
    attribution = models.JSONField(default=dict, blank=True, help_text="Model and windows the source used.")
    # The figures (null: the source did not report it).
    sent = models.PositiveBigIntegerField(null=True, blank=True)
    delivered = models.PositiveBigIntegerField(null=True, blank=True)
    failed = models.PositiveBigIntegerField(null=True, blank=True)
    clicks = models.PositiveBigIntegerField(null=True, blank=True)
    unique_clicks = models.PositiveBigIntegerField(null=True, blank=True)
    opt_outs = models.PositiveBigIntegerField(null=True, blank=True)
    conversions = models.PositiveBigIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=16, decimal_places=4, null=True, blank=True)
    revenue = models.DecimalField(max_digits=16, decimal_places=4, null=True, blank=True)
    currency = models.CharField(max_length=3, default="HKD")
    gateway_performance = models.JSONField(
        default=dict, blank=True, help_text="Gateway figures as the source gave them (rates, latency)."
    )
    # Evidence: an uploaded file with the sha256 computed here, or a link with the hash its recorder
    # stated (never fetched by the server, so marked unverified).
    evidence_kind = models.CharField(max_length=8, choices=EvidenceKind.choices)
    evidence_file = models.FileField(storage=evidence_storage, upload_to="snapshots/%Y/%m/", blank=True)
    evidence_name = models.CharField(max_length=200, blank=True)
    evidence_size = models.PositiveBigIntegerField(null=True, blank=True)
    evidence_url = models.URLField(max_length=1000, blank=True)
    evidence_sha256 = models.CharField(max_length=64)
    evidence_hash_verified = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(default=timezone.now)
    actor_channel = models.CharField(max_length=16)
    actor_token_name = models.CharField(max_length=100, blank=True)
    reason = models.TextField(blank=True)
    # The approved request an overwrite went through (empty for a first recording).
    action_request_id = models.BigIntegerField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="snapshot_key_version"),
            # One current version per key: two overwrites racing cannot both become current.
            models.UniqueConstraint(fields=["key"], condition=models.Q(is_current=True), name="snapshot_one_current"),
            models.CheckConstraint(condition=models.Q(date_from__lte=models.F("date_to")), name="snapshot_date_range"),
            models.CheckConstraint(
                condition=models.Q(campaign__isnull=False, flow_id__isnull=True, subject_kind="campaign")
                | models.Q(campaign__isnull=True, flow_id__isnull=False, subject_kind="flow"),
                name="snapshot_one_subject",
            ),
            models.CheckConstraint(
                condition=(models.Q(cost__isnull=True) | models.Q(cost__gte=0))
                & (models.Q(revenue__isnull=True) | models.Q(revenue__gte=0)),
                name="snapshot_amounts_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "date_from"], name="snapshot_campaign"),
            models.Index(fields=["flow_id", "date_from"], name="snapshot_flow"),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.key} v{self.version}"

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Performance snapshots are kept; an overwrite adds a version.")


class NotificationKind(models.TextChoices):
    REVIEW = "review", "Review to do"
    SEND_CONFIRM = "send_confirm", "Send to confirm"
    COST_ANOMALY = "cost_anomaly", "Cost anomaly"
    OPTOUT_SPIKE = "optout_spike", "Opt-out spike"
    DELIVERY_FAILURES = "delivery_failures", "Delivery failures"
    POOR_ROI = "poor_roi", "Poor ROI"


class NotificationSubject(models.TextChoices):
    CAMPAIGN = "campaign", "Campaign"
    FLOW = "flow", "Automation flow"
    ACTION_REQUEST = "action_request", "Action request"


class NotificationOrigin(models.TextChoices):
    SENT = "sent", "Sent by a person or agent"
    ALERT = "alert", "Raised by the alert beat"


class ReviewNotification(models.Model):
    """A notification to the people responsible for a subject: one inbox item per platform user,
    and one outbox e-mail to their addresses (and approved external ones)."""

    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    origin = models.CharField(max_length=8, choices=NotificationOrigin.choices, default=NotificationOrigin.SENT)
    subject_kind = models.CharField(max_length=20, choices=NotificationSubject.choices)
    campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.PROTECT, related_name="review_notifications"
    )
    flow_id = models.PositiveBigIntegerField(null=True, blank=True)
    subject_request = models.ForeignKey(
        "compliance.ActionRequest", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    title = models.CharField(max_length=200)
    body = models.TextField()
    recipients = models.JSONField(default=list, help_text="Usernames of the platform users notified.")
    external_recipients = models.JSONField(default=list, help_text="Approved e-mail addresses outside the platform.")
    outbox = models.ForeignKey(
        "smsplatform.Notification", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_channel = models.CharField(max_length=16)
    actor_token_name = models.CharField(max_length=100, blank=True)
    reason = models.TextField(blank=True)
    action_request_id = models.BigIntegerField(null=True, blank=True, help_text="The approval it went through.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"


class InboxItem(models.Model):
    """A notification in one user's in-app inbox ("My notifications" in the admin)."""

    notification = models.ForeignKey(ReviewNotification, on_delete=models.PROTECT, related_name="inbox_items")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "my notification"
        verbose_name_plural = "my notifications"
        constraints = [models.UniqueConstraint(fields=["notification", "user"], name="inbox_one_per_user")]
        indexes = [models.Index(fields=["user", "read_at"], name="inbox_user_unread")]

    def __str__(self) -> str:
        return f"{self.notification} -> {self.user_id}"


class AlertFiring(models.Model):
    """One alert condition raised for one campaign in one window. The unique constraint, not a
    check-then-insert, is what makes two beats (or two workers) send it once."""

    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.PROTECT, related_name="+")
    window_start = models.DateTimeField()
    figures = models.JSONField(default=dict)
    notification = models.ForeignKey(
        ReviewNotification, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "campaign", "window_start"], name="alert_once_per_window")
        ]

    def __str__(self) -> str:
        return f"{self.kind} campaign {self.campaign_id} @ {self.window_start:%Y-%m-%d %H:%M}"
