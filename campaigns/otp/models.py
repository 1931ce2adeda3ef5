"""Models of the OTP app: approved OTP templates (immutable versions), verifications and their sends.

A code is never stored: a verification keeps only the keyed hash of its current code
(campaigns/otp/codes.py). The SMS that carried it is an OutboundMessage whose body holds the code
until the scrub (campaigns/otp/scrub.py) rewrites it with ``masked_body``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class OtpPurpose(models.TextChoices):
    LOGIN = "login", "Login"
    TWO_FACTOR = "two_factor", "Two-factor authentication"
    PASSWORD_RESET = "password_reset", "Password reset"
    PAYMENT_CONFIRMATION = "payment_confirmation", "Payment confirmation"
    PHONE_VERIFICATION = "phone_verification", "Phone verification"


class Alphabet(models.TextChoices):
    DIGITS = "digits", "Digits 0-9"
    # Upper-case letters and digits without look-alikes (0/O, 1/I/L) and without vowels, so that a
    # random code never spells a word (promotional or otherwise).
    ALNUM_UPPER = "alnum_upper", "Unambiguous upper-case letters and digits"


class OtpTemplate(models.Model):
    """An OTP template. Its content lives in immutable ``OtpTemplateVersion`` rows; only an approved
    version is ever used (``current_version``). ``version`` counts approved versions and is the
    compare-and-set counter behind the template's version token."""

    name = models.CharField(max_length=100, unique=True)
    purpose = models.CharField(max_length=30, choices=OtpPurpose.choices)
    version = models.PositiveIntegerField(default=0, help_text="Number of approved versions (0: none yet).")
    current_version = models.ForeignKey(
        "OtpTemplateVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class OtpTemplateVersion(models.Model):
    """One requested state of an OTP template, written when the request is made (held for an
    approver) and made current when the approver approves it. Never edited afterwards; its approval
    state is its action request's state (pending, executed = approved, rejected, expired, failed)."""

    template = models.ForeignKey(OtpTemplate, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField(null=True, blank=True, help_text="Set when approved.")
    name = models.CharField(max_length=100)
    purpose = models.CharField(max_length=30, choices=OtpPurpose.choices)
    body_en = models.TextField()
    body_zh_hant = models.TextField()
    code_length = models.PositiveSmallIntegerField(default=6)
    alphabet = models.CharField(max_length=20, choices=Alphabet.choices, default=Alphabet.DIGITS)
    validity_minutes = models.PositiveSmallIntegerField(default=10)
    max_checks = models.PositiveSmallIntegerField(default=5)
    max_sends = models.PositiveSmallIntegerField(default=5)
    limits = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"phone"|"ip"|"token"|"country": {"count": n, "window_seconds": s}} (read by campaigns.otp.abuse)',
    )
    gateway = models.CharField(max_length=64, blank=True, help_text="Gateway code; empty: the best covering one.")
    fallback_gateway = models.CharField(max_length=64, blank=True)
    allowed_countries = models.JSONField(default=list, help_text="ISO codes the template may send to.")
    sender_id = models.CharField(max_length=16)
    single_segment_required = models.BooleanField(default=True)
    action_request_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["template", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="uniq_otp_template_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.number or '?'}"


class VerificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved (the code was checked; single use)"
    EXPIRED = "expired", "Expired"
    LOCKED = "locked", "Locked (too many wrong codes)"
    CANCELED = "canceled", "Canceled"


class Locale(models.TextChoices):
    EN = "en", "English"
    ZH_HANT = "zh-Hant", "Traditional Chinese"


class Verification(models.Model):
    """One verification of one phone with one template: up to ``max_sends`` codes (each send a new
    code that replaces the previous one) and ``max_checks`` checks. Counters move only through
    conditional UPDATEs (campaigns/otp/services.py)."""

    public_id = models.CharField(max_length=40, unique=True)
    template = models.ForeignKey(OtpTemplate, on_delete=models.PROTECT, related_name="verifications")
    template_version = models.ForeignKey(OtpTemplateVersion, on_delete=models.PROTECT, related_name="+")
    phone = models.CharField(max_length=16, help_text="E.164")
    country = models.CharField(max_length=2)
    locale = models.CharField(max_length=8, choices=Locale.choices)
    status = models.CharField(max_length=10, choices=VerificationStatus.choices, default=VerificationStatus.PENDING)
    code_hash = models.CharField(max_length=64, help_text="HMAC-SHA256 of the current code; never the code.")
    sends = models.PositiveSmallIntegerField(default=1)
    checks = models.PositiveSmallIntegerField(default=0)
    max_sends = models.PositiveSmallIntegerField()
    max_checks = models.PositiveSmallIntegerField()
    expires_at = models.DateTimeField()
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(max_length=16)
    token_name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("send_verification", "Can send OTP codes (otp.send)"),
            ("check_verification", "Can check OTP codes (the business backend)"),
        ]
        constraints = [
            # At most one pending verification per phone and template: concurrent first sends meet
            # here, and the losers resend within the winner's verification.
            models.UniqueConstraint(
                fields=["phone", "template"],
                condition=models.Q(status="pending"),
                name="uniq_otp_pending_per_phone_template",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.status})"


class VerificationSend(models.Model):
    """One code sent within a verification: the message that carried it and that message's body
    with the code masked, which the scrub writes over the stored body."""

    verification = models.ForeignKey(Verification, on_delete=models.PROTECT, related_name="send_rows")
    number = models.PositiveSmallIntegerField()
    message = models.ForeignKey(
        "gateways.OutboundMessage", on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    masked_body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    scrubbed_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["verification", "number"]
        constraints = [
            models.UniqueConstraint(fields=["verification", "number"], name="uniq_otp_send_number"),
        ]

    def __str__(self) -> str:
        return f"{self.verification_id} send {self.number}"


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
