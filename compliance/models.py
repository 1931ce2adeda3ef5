"""Approval policies and action requests (ARCHITECTURE, spine 3), and the suppression list (opt-outs)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from smsplatform.kernel.phones import phone_mask


class ActionType(models.TextChoices):
    CONFIG_UPDATE = "config.update", "Update platform configuration"
    CAMPAIGN_CREATE = "campaign.create", "Create campaign draft"
    CAMPAIGN_UPDATE = "campaign.update", "Update campaign"
    CAMPAIGN_SCHEDULE = "campaign.schedule", "Schedule campaign"
    CAMPAIGN_CANCEL = "campaign.cancel_schedule", "Cancel campaign schedule"
    CAMPAIGN_SEND = "campaign.send", "Send approved campaign"
    MESSAGES_RESEND = "messages.resend", "Resend failed messages"
    OPT_OUTS_UPDATE = "opt_outs.update", "Update opt-outs"
    CONTACTS_IMPORT = "contacts.import", "Import or sync contacts / change consent"
    SEGMENT_CREATE = "segment.create", "Create segment"
    TEMPLATE_SAVE = "template.save", "Save template (brand, OTP or compliance wording)"
    SHORT_LINK_CREATE = "short_link.create", "Create short link"
    AUTOMATION_UPDATE = "automation.update", "Enable or change automation"
    OTP_SEND = "otp.send", "Send OTP"
    OTP_TEMPLATE_SAVE = "otp_template.save", "Save OTP template (always approved by another person)"
    SENDER_ID_APPLY = "sender_id.apply", "Sender ID / SSRS application"
    NOTIFICATION_SEND = "notification.send", "Send review notification"
    SNAPSHOT_OVERWRITE = "performance_snapshot.record", "Record performance snapshot"


class Condition(models.TextChoices):
    ALWAYS = "always", "Always"
    RECIPIENTS_OVER = "recipients_over", "Recipients over N"
    COST_OVER = "cost_over", "Estimated cost over X"
    OUTSIDE_BUSINESS_HOURS = "outside_business_hours", "Outside business hours"
    OVERWRITES_EXISTING = "overwrites_existing", "Overwrites an existing record"
    SENSITIVE_CONTENT = "sensitive_content", "Sensitive content (brand, OTP or compliance wording; payment pages)"
    UNCONFIRMED = "unconfirmed", "Not confirmed by a holder of the confirm permission"


class ApprovalPolicy(models.Model):
    """When an action needs approval, and which role approves it."""

    action = models.CharField(max_length=50, choices=ActionType.choices, db_index=True)
    condition = models.CharField(max_length=30, choices=Condition.choices, default=Condition.ALWAYS)
    threshold_count = models.PositiveIntegerField(null=True, blank=True, help_text="N for 'recipients over N'.")
    threshold_amount = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="X for 'cost over X'.",
    )
    currency = models.CharField(max_length=3, default="HKD")
    channels = models.JSONField(
        default=list,
        blank=True,
        help_text="Only for these channels (mcp, api, admin, form, system); empty: all.",
    )
    approver_role = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="approval_policies")
    request_ttl_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="How long a request waits; empty: the configuration default.",
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["action", "id"]
        verbose_name_plural = "approval policies"
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(condition="recipients_over") | models.Q(threshold_count__isnull=False),
                name="policy_recipients_needs_count",
            ),
            models.CheckConstraint(
                condition=~models.Q(condition="cost_over") | models.Q(threshold_amount__isnull=False),
                name="policy_cost_needs_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.describe()}"

    def describe(self) -> str:
        if self.condition == Condition.RECIPIENTS_OVER:
            text = f"more than {self.threshold_count} recipients"
        elif self.condition == Condition.COST_OVER:
            text = f"cost over {self.currency} {self.threshold_amount or Decimal(0):.2f}"
        else:
            text = self.get_condition_display().lower()
        if self.channels:
            text += f" (via {', '.join(self.channels)})"
        return f"{text} -> {self.approver_role.name}"


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending approval"
    EXECUTED = "executed", "Approved and executed"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Approved but failed on execution"


FINAL_STATES = {
    RequestState.EXECUTED,
    RequestState.REJECTED,
    RequestState.EXPIRED,
    RequestState.FAILED,
}


class ActionRequest(models.Model):
    """A write held for approval, with its frozen, validated payload."""

    action = models.CharField(max_length=50, choices=ActionType.choices, db_index=True)
    state = models.CharField(
        max_length=20,
        choices=RequestState.choices,
        default=RequestState.PENDING,
        db_index=True,
    )
    payload = models.JSONField(help_text="The validated input, frozen at request time.")
    facts = models.JSONField(
        default=dict,
        help_text="What the policy was evaluated on (recipients, cost, ...).",
    )
    summary = models.CharField(max_length=300)
    policy = models.ForeignKey(ApprovalPolicy, null=True, on_delete=models.SET_NULL, related_name="+")
    required_role = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=16)
    token_name = models.CharField(max_length=100, blank=True)
    request_reason = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, help_text="The service's result, or the error it raised.")

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("approve_actionrequest", "Can approve or reject action requests"),
            (
                "view_all_actionrequests",
                "Can see every action request, not only one's own",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_expired(self) -> bool:
        return timezone.now() >= self.expires_at

    def can_decide(self) -> bool:
        return self.state == RequestState.PENDING and not self.is_expired


class PlatformRole(models.Model):
    """Holds platform-wide permissions that belong to no single model (owners, contact data)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_owners", "Can list owners, roles and permissions"),
            ("view_full_phone", "Can see full phone numbers"),
        ]

    def __str__(self) -> str:
        return "platform role permissions"


# The suppression list (ARCHITECTURE, hard rules): rules in compliance/optouts.py.
class OptOutReason(models.TextChoices):
    STOP = "stop", "STOP reply"
    WEB = "web", "Web request"
    API = "api", "API request"
    ADMIN = "admin", "Staff request (admin)"
    BLOCKED = "blocked", "Blocked"
    INVALID = "invalid", "Invalid number"
    COMPLAINT = "complaint", "Complaint"
    DO_NOT_CALL = "do_not_call", "Do-not-call register"


# Opt-outs the person can reverse by giving new consent with evidence. Blocks, invalid
# numbers and complaints are operational decisions and are never lifted by a consent.
LIFTABLE_REASONS = (
    OptOutReason.STOP,
    OptOutReason.WEB,
    OptOutReason.API,
    OptOutReason.ADMIN,
    OptOutReason.DO_NOT_CALL,
)
# Opt-outs that stop every SMS to the number, OTP included (docs/OTP.md, "STOP and OTP"): the
# operator blocked it (a carrier block is recorded as 'blocked'), the number is invalid, or its
# owner complained. A STOP (or a web/API/admin/do-not-call opt-out) ends marketing, not the code
# the person has just asked for.
HARD_BLOCK_REASONS = (
    OptOutReason.BLOCKED,
    OptOutReason.INVALID,
    OptOutReason.COMPLAINT,
)


class SyncState(models.TextChoices):
    PENDING = "pending", "Pending sync to CRM"
    SYNCED = "synced", "Synced"
    NOT_APPLICABLE = "not_applicable", "No CRM"


class OptOut(models.Model):
    """One suppression record for a phone. Active while ``lifted_at`` is null; never deleted."""

    phone = models.CharField(max_length=16, help_text="E.164")
    # The contact and the consent that lifted it are named by string: compliance sits below
    # contacts and imports nothing of it (the phone, not the contact, is what is suppressed).
    contact = models.ForeignKey(
        "contacts.Contact", null=True, blank=True, on_delete=models.PROTECT, related_name="opt_outs"
    )
    reason = models.CharField(max_length=20, choices=OptOutReason.choices)
    source = models.CharField(max_length=100, help_text="sms:<gateway>, web_form, api, admin, import:...")
    message_text = models.TextField(blank=True, help_text="The STOP message as received")
    language = models.CharField(max_length=10, blank=True)
    note = models.CharField(max_length=500, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_channel = models.CharField(max_length=16)
    actor_token_name = models.CharField(max_length=100, blank=True)
    sync_state = models.CharField(max_length=20, choices=SyncState.choices, default=SyncState.PENDING)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by_consent = models.ForeignKey(
        "contacts.ConsentEvidence", null=True, blank=True, on_delete=models.PROTECT, related_name="lifted_opt_outs"
    )

    class Meta:
        # The table kept its name when the model moved here from contacts (compliance 0003).
        db_table = "contacts_optout"
        ordering = ["-occurred_at", "-id"]
        indexes = [
            # The suppression check ("is this phone opted out now?") is an index-only probe.
            models.Index(fields=["phone"], condition=models.Q(lifted_at__isnull=True), name="optout_active_phone"),
            models.Index(fields=["reason", "-occurred_at"], name="optout_reason_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} {phone_mask(self.phone)}"

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Opt-out evidence is kept; it is never deleted.")
