"""Campaigns, their immutable versions, and the send batches a dispatch creates.

A campaign is a versioned draft: every change writes a ``CampaignVersion`` and bumps
``version`` (the compare-and-set counter behind the version token). Approval pins the
version it approved (``approved_version``); a dispatch sends only that version, so a
change after approval can never go out unreviewed. Messages are ``gateways.OutboundMessage``
rows linked to their ``SendBatch``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.versioning import VersionSnapshot


class CampaignState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    APPROVED = "approved", "Approved (dispatch queued)"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    PAUSED = "paused", "Paused (remaining batches stopped)"
    COMPLETED = "completed", "Completed (every message submitted or final)"
    CANCELLED = "cancelled", "Cancelled before sending"
    FAILED = "failed", "Failed (dispatch refused; nothing sent)"


# States in which the content may still be edited freely (no approval to lose).
EDITABLE_STATES = (CampaignState.DRAFT, CampaignState.PENDING_APPROVAL)
# States an approval has been given for; a content change sends them back to draft.
APPROVED_STATES = (CampaignState.APPROVED, CampaignState.SCHEDULED)
# Once any message may have left, the campaign's content is frozen.
SENT_STATES = (CampaignState.SENDING, CampaignState.PAUSED, CampaignState.COMPLETED)
# States where the pre-send live check (cost preview) no longer applies: the send's own progress
# tells what happens (its recipients are frequency-capped by this very send), or nothing will.
PAST_PRE_SEND_STATES = (*SENT_STATES, CampaignState.CANCELLED)


class Campaign(models.Model):
    name = models.CharField(max_length=100)
    state = models.CharField(max_length=20, choices=CampaignState.choices, default=CampaignState.DRAFT)
    version = models.PositiveIntegerField(default=1)
    purpose = models.CharField(max_length=20, default="marketing")
    # Who and what
    segment = models.ForeignKey("contacts.Segment", on_delete=models.PROTECT, related_name="campaigns")
    template_version = models.ForeignKey(
        "sms_templates.TemplateVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    text = models.TextField(blank=True, help_text="Free copy, when no template version is pinned.")
    brand = models.CharField(max_length=60, blank=True)
    language = models.CharField(max_length=20, default="bilingual")
    variables = models.JSONField(default=dict, blank=True, help_text="Values for the template's fields.")
    short_link = models.ForeignKey(
        "sms_templates.ShortLink", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sender_id = models.CharField(max_length=16)
    gateway = models.ForeignKey(
        "gateways.Gateway",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: the preferred enabled gateway per country.",
    )
    max_segments = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Most parts the free copy may take (empty: 3); a template sets its own."
    )
    tracking = models.BooleanField(default=True)
    send_goal = models.CharField(max_length=300, blank=True)
    budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    review_notes = models.TextField(blank=True)
    # The message as it will go out (computed on every change)
    body_preview = models.TextField(blank=True)
    encoding = models.CharField(max_length=8, blank=True)
    segments_per_message = models.PositiveSmallIntegerField(default=0)
    estimate = models.JSONField(default=dict, blank=True, help_text="Counts and cost at the last check.")
    # Schedule
    send_at = models.DateTimeField(null=True, blank=True)
    time_zone = models.CharField(max_length=50, default="Asia/Hong_Kong")
    batch_size = models.PositiveIntegerField(default=1000)
    batch_interval_seconds = models.PositiveIntegerField(default=60)
    notify = models.JSONField(default=list, blank=True, help_text="Usernames or e-mail addresses to notify.")
    beat_task_name = models.CharField(max_length=200, blank=True)
    # Review
    approved_version = models.PositiveIntegerField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    approval_request_id = models.BigIntegerField(null=True, blank=True)
    # Lifecycle
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.TextField(blank=True)
    failure_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("view_all_campaigns", "Can view every campaign (not only own)"),
            ("schedule_campaign", "Can schedule a campaign"),
            ("send_campaign", "Can send an approved campaign"),
            ("confirm_campaign", "Can confirm a live send without a separate approval"),
            ("resend_messages", "Can resend failed messages"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk}, {self.state})"

    @property
    def reference(self) -> str:
        return f"campaign:{self.pk}:"


class CampaignVersion(VersionSnapshot):
    """What the campaign looked like after each change. Never updated."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="versions")

    class Meta:
        ordering = ["campaign", "-version"]
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="uniq_campaign_version")]

    def __str__(self) -> str:
        return f"{self.campaign_id} v{self.version}"


class BatchKind(models.TextChoices):
    INITIAL = "initial", "Campaign send"
    RESEND = "resend", "Resend of failed messages"


class BatchState(models.TextChoices):
    WAITING = "waiting", "Waiting for its start time"
    SENDING = "sending", "Sending"
    COMPLETED = "completed", "Completed (every message submitted or final)"
    STOPPED = "stopped", "Stopped (remaining messages withdrawn)"


class SendBatch(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="batches")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=BatchKind.choices, default=BatchKind.INITIAL)
    resend_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="resends", help_text="For resends."
    )
    retry_preview_id = models.UUIDField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=BatchState.choices, default=BatchState.WAITING)
    size = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField()
    quota_reference = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["campaign", "number"]
        verbose_name_plural = "send batches"
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="uniq_campaign_batch_number")]
        indexes = [models.Index(fields=["state", "not_before"], name="batch_state_due")]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id} batch {self.number}"

    @property
    def reference(self) -> str:
        return f"campaign:{self.campaign_id}:batch:{self.number}"
