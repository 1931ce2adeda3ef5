"""Models for the reporting app."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.utils import timezone

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
