"""Models of the OTP app."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# ---------------------------------------------------------------------------------------------
# Abuse defence (campaigns/otp/abuse.py): velocity counters and SMS-pumping blocks.
# ---------------------------------------------------------------------------------------------


class CounterScope(models.TextChoices):
    """What an OtpRateCounter row counts. The velocity scopes are budgets (a refused attempt
    takes no slot); the pumping scopes are detectors; REFUSAL counts refusals for the metrics."""

    PHONE = "phone", "Sends per phone number"
    CLIENT_IP = "client_ip", "Sends per client IP"
    TOKEN = "token", "Sends per API token"
    COUNTRY = "country", "Sends per destination country"
    RANGE = "range", "Sends per number range (pumping burst)"
    PREFIX_SENT = "prefix_sent", "Sends per prefix (conversion ratio)"
    PREFIX_VERIFIED = "prefix_verified", "Verified codes per prefix (conversion ratio)"
    REFUSAL = "refusal", "Refused sends, by the limit that refused them"


class OtpRateCounter(models.Model):
    """One fixed window of one counter: (scope, key, window length, window start) -> count.

    Written only by abuse.py's single-statement upsert (INSERT ... ON CONFLICT DO UPDATE SET
    count = count + 1 RETURNING count), never read-then-written. Phone numbers and client IPs
    are stored as keyed hashes, not in clear; ranges and prefixes are the number without its
    last digits. Times are epoch seconds, so both databases compare plain integers.
    ``expires_at`` is when the row stops mattering (the sliding estimate reads the previous
    window too); the beat task otp.prune_rate_counters deletes past it in one statement."""

    scope = models.CharField(max_length=20, choices=CounterScope.choices)
    key = models.CharField(max_length=64)
    window_seconds = models.PositiveIntegerField()
    window_start = models.BigIntegerField(help_text="Epoch seconds, a multiple of window_seconds.")
    count = models.PositiveIntegerField(default=0)
    expires_at = models.BigIntegerField(help_text="Epoch seconds after which the row is pruned.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "key", "window_seconds", "window_start"], name="uniq_otp_rate_counter_window"
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="otp_counter_expires_idx")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} @{self.window_start}/{self.window_seconds}s = {self.count}"


class PumpingBlockReason(models.TextChoices):
    RANGE_BURST = "range_burst", "Burst of sends to one number range"
    HIGH_COST_BURST = "high_cost_burst", "Burst of sends to a high-cost destination"
    LOW_CONVERSION = "low_conversion", "Low verify/send conversion for the prefix"


class PumpingBlock(models.Model):
    """A destination prefix (an E.164 start such as +85251230) to which OTP sends are refused
    until an operator lifts the block (abuse.pumping_block_lift). ``facts`` hold what tripped it
    (counts, threshold, window; numbers only masked). At most one active block per prefix."""

    prefix = models.CharField(max_length=16, db_index=True)
    country = models.CharField(max_length=2, blank=True)
    reason = models.CharField(max_length=20, choices=PumpingBlockReason.choices)
    facts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lift_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["prefix"], condition=Q(lifted_at__isnull=True), name="uniq_otp_active_pumping_block"
            ),
        ]
        permissions = [("lift_pumpingblock", "Can lift an SMS-pumping block")]

    def __str__(self) -> str:
        state = "lifted" if self.lifted_at else "active"
        return f"{self.prefix} ({self.get_reason_display()}, {state})"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None
