"""Gateways, their rates, sender IDs (SSRS), the account balance and quota reservations."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.phones import phone_mask


class Provider(models.TextChoices):
    SIMULATOR = "simulator", "Simulator (embedded)"
    SMPP = "smpp", "SMPP 3.4"
    KANNEL = "kannel", "Kannel HTTP"
    TWILIO = "twilio", "Twilio"


def webhook_secret_new() -> str:
    return secrets.token_urlsafe(32)


# How long the secret before a rotation is still accepted: receipts of messages sent before it
# keep arriving (an SMSC retries a receipt for up to a day; Jasmin's dlr_expiry is 86,400 s).
WEBHOOK_SECRET_GRACE = timedelta(hours=48)


class Gateway(models.Model):
    """A route to an SMSC or provider. The provider's secrets are never stored: ``credentials_env``
    names the environment variables that hold them. The one secret stored is the platform's own
    ``webhook_secret``, generated for each gateway, which signs the callback URLs the platform
    hands out (Kannel's dlr-url and get-url): never Django's SECRET_KEY, so knowing one secret
    forges nothing else; rotated with ``gateway_webhook_secret_rotate``."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    enabled = models.BooleanField(default=True)
    countries = models.JSONField(default=list, help_text="ISO 3166 codes this gateway delivers to.")
    receipts_supported = models.BooleanField(default=True)
    max_rate_per_second = models.PositiveIntegerField(default=100)
    window_size = models.PositiveIntegerField(default=10, help_text="Outstanding submits allowed (SMPP).")
    encodings = models.JSONField(default=list, help_text='e.g. ["GSM-7", "UCS-2"]')
    fallback = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower is preferred for a country.")
    settings = models.JSONField(default=dict, blank=True, help_text="Non-secret settings (host, port, system_id, url).")
    credentials_env = models.JSONField(
        default=dict, blank=True, help_text='Secret name -> environment variable, e.g. {"password": "SMPP_PASSWORD"}.'
    )
    currency = models.CharField(max_length=3, default="HKD")
    webhook_secret = models.CharField(max_length=100, default=webhook_secret_new, editable=False)
    # The secret before the last rotation, accepted for a grace period (callbacks already handed
    # out, such as the dlr-url of a message still in flight, keep working).
    webhook_secret_previous = models.CharField(max_length=100, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "code"]
        permissions = [("send_test_sms", "Can send a test SMS through a gateway")]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def webhook_secrets(self) -> list[str]:
        """The secrets a callback may be signed with: the current one, and the one before the
        last rotation while its grace period lasts."""
        accepted = [self.webhook_secret]
        rotated = self.webhook_secret_rotated_at
        if self.webhook_secret_previous and rotated and timezone.now() - rotated < WEBHOOK_SECRET_GRACE:
            accepted.append(self.webhook_secret_previous)
        return accepted


class BindState(models.TextChoices):
    BINDING = "binding", "Binding"
    BOUND = "bound", "Bound"
    DOWN = "down", "Down (retrying)"
    STOPPED = "stopped", "Stopped"


class BindWorkerStatus(models.Model):
    """What an SMPP bind worker last said about itself (``manage.py smpp_worker``): written when
    its bind changes and every few seconds while it runs, so operators see a down bind, a
    fail-over or a worker that died (its heartbeat stops) in gateways.list and the admin."""

    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="bind_workers")
    owner = models.CharField(max_length=120, unique=True, help_text="host, pid and a random token")
    host = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=BindState.choices)
    state_since = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    started_at = models.DateTimeField()
    last_error = models.CharField(max_length=300, blank=True)
    failing_over_to = models.CharField(max_length=64, blank=True)
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["gateway", "-heartbeat_at"]
        verbose_name_plural = "bind worker statuses"

    def __str__(self) -> str:
        return f"{self.owner}: {self.state}"


class GatewayRate(models.Model):
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="rates")
    country = models.CharField(max_length=2)
    price_per_segment = models.DecimalField(max_digits=10, decimal_places=4)
    currency = models.CharField(max_length=3, default="HKD")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["gateway", "country"]
        constraints = [
            models.UniqueConstraint(fields=["gateway", "country"], name="uniq_gateway_rate_country"),
            models.CheckConstraint(condition=models.Q(price_per_segment__gte=0), name="gateway_rate_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.gateway.code} {self.country} {self.currency} {self.price_per_segment}/segment"


class SenderIdKind(models.TextChoices):
    ALPHANUMERIC = "alphanumeric", "Alphanumeric"
    NUMERIC = "numeric", "Numeric (long or short code)"
    SSRS = "ssrs", "SSRS registered (#-prefixed, Hong Kong)"


class SenderIdStatus(models.TextChoices):
    REGISTERED = "registered", "Registered"
    PENDING = "pending", "Pending registration"
    REJECTED = "rejected", "Rejected"
    SUSPENDED = "suspended", "Suspended"


class SenderId(models.Model):
    value = models.CharField(max_length=16, unique=True)
    kind = models.CharField(max_length=20, choices=SenderIdKind.choices)
    brand = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=SenderIdStatus.choices, default=SenderIdStatus.PENDING)
    regions = models.JSONField(default=list, help_text="ISO codes where this sender ID may be used.")
    ssrs_registered_regions = models.JSONField(
        default=list, blank=True, help_text="Regions where the #-name is registered with the regulator (HK: OFCA SSRS)."
    )
    restrictions = models.TextField(blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["value"]
        verbose_name = "sender ID"
        verbose_name_plural = "sender IDs"

    def __str__(self) -> str:
        return self.value


class ApplicationStatus(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved by the regulator"
    REJECTED = "rejected", "Rejected by the regulator"
    WITHDRAWN = "withdrawn", "Withdrawn"


class SenderIdApplication(models.Model):
    """An SSRS / sender-ID application. Every submission or update is a new version row."""

    reference = models.CharField(max_length=32, db_index=True, help_text="Same for every version of one application.")
    version = models.PositiveIntegerField()
    sender_id = models.CharField(max_length=16)
    brand = models.CharField(max_length=100)
    company_name = models.CharField(max_length=200)
    company_registration_no = models.CharField(max_length=50)
    purpose = models.TextField()
    regions = models.JSONField(default=list)
    documents = models.JSONField(default=list, help_text='[{"name": ..., "status": "provided|missing|verified"}]')
    reason = models.TextField(help_text="Why this application or change is made.")
    status = models.CharField(max_length=20, choices=ApplicationStatus.choices, default=ApplicationStatus.SUBMITTED)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["reference", "-version"]
        verbose_name = "sender ID application"
        constraints = [
            models.UniqueConstraint(fields=["reference", "version"], name="uniq_sender_application_version"),
        ]

    def __str__(self) -> str:
        return f"{self.sender_id} application {self.reference} v{self.version}"


class Account(models.Model):
    """The messaging account: prepaid balance and monthly segment quota (singleton)."""

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    balance = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    currency = models.CharField(max_length=3, default="HKD")
    monthly_quota_segments = models.PositiveIntegerField(default=100_000)
    period_start = models.DateField(default=timezone.localdate)
    segments_used = models.PositiveIntegerField(default=0, help_text="Settled segments this period.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(balance__gte=0), name="account_balance_non_negative")]

    def __str__(self) -> str:
        return f"{self.currency} {self.balance}"


class ReservationState(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"


class QuotaReservation(models.Model):
    """Segments and money held for a dispatch until it is submitted (settle) or cancelled (release)."""

    reference = models.CharField(max_length=64, unique=True, help_text="e.g. campaign:12:batch:3")
    segments = models.PositiveIntegerField()
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    currency = models.CharField(max_length=3, default="HKD")
    state = models.CharField(max_length=20, choices=ReservationState.choices, default=ReservationState.HELD)
    settled_segments = models.PositiveIntegerField(default=0)
    settled_amount = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"{self.reference} {self.segments} segments ({self.state})"


class MessageState(models.TextChoices):
    QUEUED = "queued", "Queued"
    SUBMITTING = "submitting", "Submitting"
    SUBMITTED = "submitted", "Submitted (accepted by the gateway, not yet delivered)"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    UNKNOWN = "unknown", "Unknown (submission interrupted; reconciled, never resent blindly)"


FINAL_MESSAGE_STATES = (MessageState.DELIVERED, MessageState.FAILED, MessageState.EXPIRED)


class MessagePurpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"
    OTP = "otp", "OTP"
    TEST = "test", "Gateway test"


# The priority lane (issue 16): a person is waiting for these (a code, a reply to their own
# keyword, an operator's test SMS), so they never queue behind a campaign. The claim takes them
# first (the partial index msg_priority_queued finds them cheaply among a million queued
# campaign rows), the SMPP bind worker claims them on every pass and writes them ahead of what it
# already holds, and their Celery submit task goes to the priority queue (settings).
PRIORITY_PURPOSES: tuple[str, ...] = (
    MessagePurpose.OTP.value,
    MessagePurpose.TRANSACTIONAL.value,
    MessagePurpose.TEST.value,
)


class OutboundMessage(models.Model):
    """One SMS to one phone. Submitted at most once: the claim (queued -> submitting) is a
    conditional UPDATE, and a message left in 'submitting' by a dead worker becomes 'unknown'."""

    # Indexed by msg_gateway_state (gateway first): no separate FK index to maintain per row.
    gateway = models.ForeignKey(Gateway, on_delete=models.PROTECT, related_name="messages", db_index=False)
    sender_id = models.CharField(max_length=16)
    destination = models.CharField(max_length=16, help_text="E.164")
    country = models.CharField(max_length=2)
    body = models.TextField()
    encoding = models.CharField(max_length=8)
    segments = models.PositiveSmallIntegerField()
    cost = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    currency = models.CharField(max_length=3, default="HKD")
    purpose = models.CharField(max_length=20, choices=MessagePurpose.choices)
    state = models.CharField(max_length=12, choices=MessageState.choices, default=MessageState.QUEUED)
    reference = models.CharField(max_length=64, blank=True, help_text="e.g. campaign:12:batch:3")
    quota_reference = models.CharField(max_length=64, help_text="The quota reservation this message draws on.")
    request_receipt = models.BooleanField(default=True)
    # Campaign messages: the batch that sent it, the contact it went to, the message it resends.
    # No database-level FK checks: a campaign writes up to millions of rows in one statement and
    # per-row constraint triggers would dominate it. The rows are written only by the dispatch and
    # resend services from rows they have just read, and batches and contacts are never deleted
    # (PROTECT in the ORM, no delete path).
    batch = models.ForeignKey(
        "campaigns.SendBatch",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="messages",
        db_constraint=False,
    )
    contact = models.ForeignKey(
        "contacts.Contact",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    resend_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="resends",
        db_index=False,
        db_constraint=False,
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    error_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    submit_started_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["gateway", "state", "id"], name="msg_gateway_state"),
            models.Index(fields=["destination", "-created_at"], name="msg_destination_recent"),
            models.Index(fields=["resend_of"], name="msg_resend_of", condition=models.Q(resend_of__isnull=False)),
            # The priority lane: queued OTP/transactional/test rows only, a handful whatever the
            # size of the campaigns queued beside them.
            models.Index(
                fields=["gateway", "id"],
                name="msg_priority_queued",
                condition=models.Q(state="queued", purpose__in=PRIORITY_PURPOSES),
            ),
            # A campaign's failures, newest first a page at a time (delivery_status.get, the staff
            # failures list, the retry preview): the failed few among a million sent, not a scan.
            models.Index(
                fields=["batch", "-id"],
                name="msg_batch_failed",
                condition=models.Q(state__in=("failed", "expired")),
            ),
            # Messages outside campaign batches (automation flows, OTP, tests, single sends) by their
            # reference's prefix (``flow:<id>:``): a flow's numbers read its few messages, not a
            # range over every campaign message of the week. PostgreSQL's pattern operators make
            # the index serve LIKE 'prefix%' (other databases take it as a plain index).
            models.Index(
                fields=["reference"],
                name="msg_unbatched_reference",
                opclasses=["varchar_pattern_ops"],
                condition=models.Q(batch__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        # Masked: __str__ ends up in titles, logs and breadcrumbs.
        return f"#{self.pk} to {phone_mask(self.destination)} ({self.state})"


class MessagePart(models.Model):
    """One submitted part and the provider's id for it; receipts are matched here."""

    # Every campaign message writes one part (and one receipt, below) while it is sent, and every
    # index entry is WAL that a code's claim flushes behind (docs/OTP.md, "Less WAL per campaign
    # message"). So no index the unique constraints already lead with: uniq_message_part_number
    # serves lookups by message, uniq_part_provider_id those by gateway. No database-level check
    # of ``message`` either (as OutboundMessage.batch): its trigger ran a locking read of the
    # message for every part written, PostgreSQL CPU beside the codes' own work, and parts are
    # written only by outcomes_record, in the transaction that updates the very messages they
    # belong to; messages are never deleted.
    message = models.ForeignKey(
        OutboundMessage, on_delete=models.CASCADE, related_name="parts", db_index=False, db_constraint=False
    )
    part_number = models.PositiveSmallIntegerField()
    provider_message_id = models.CharField(max_length=100)
    gateway = models.ForeignKey(Gateway, on_delete=models.PROTECT, related_name="+", db_index=False)
    state = models.CharField(max_length=12, choices=MessageState.choices, default=MessageState.SUBMITTED)
    error_code = models.CharField(max_length=32, blank=True)
    receipt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["gateway", "provider_message_id"], name="uniq_part_provider_id"),
            models.UniqueConstraint(fields=["message", "part_number"], name="uniq_message_part_number"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id}/{self.part_number} {self.provider_message_id}"


class DeliveryReceipt(models.Model):
    """Every receipt as received, kept even when it matches nothing yet (it may precede the
    submit response) — nothing is lost; ``applied_at`` says when it was matched."""

    # Found by (gateway, provider id) only: receipt_lookup serves both, so no index of either alone.
    gateway = models.ForeignKey(Gateway, on_delete=models.PROTECT, related_name="+", db_index=False)
    provider_message_id = models.CharField(max_length=100)
    status = models.CharField(max_length=12, choices=MessageState.choices)
    provider_status = models.CharField(max_length=40)
    error_code = models.CharField(max_length=32, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    received_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True, db_index=True)
    raw = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["gateway", "provider_message_id"], name="receipt_lookup")]

    def __str__(self) -> str:
        return f"{self.gateway_id}:{self.provider_message_id} {self.status}"


class QuarantineKind(models.TextChoices):
    ANSWER = "answer", "Submit answer"
    RECEIPT = "receipt", "Delivery receipt"
    INBOUND = "inbound", "Inbound message"


class DeliveryQuarantine(models.Model):
    """What a gateway sent us that could not be written (a receipt, a submit answer, an MO), kept
    with the database's reason so an operator can see and replay it: a bad row never takes its
    neighbours' writes down with it (gateways.delivery.quarantine)."""

    gateway = models.ForeignKey(Gateway, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=QuarantineKind.choices)
    message_id = models.BigIntegerField(null=True, blank=True, help_text="The outbound message, for answers")
    provider_message_id = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict, help_text="What came in, every string escaped to be storable")
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "delivery quarantine"

    def __str__(self) -> str:
        return f"{self.kind} {self.provider_message_id or self.message_id} ({self.gateway_id})"


class InboundMessage(models.Model):
    """A mobile-originated SMS (replies such as STOP), handed to the keyword handler (contacts/keywords.py)."""

    gateway = models.ForeignKey(Gateway, on_delete=models.PROTECT, related_name="+")
    provider_message_id = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=20, help_text="The sender's number, E.164")
    destination = models.CharField(max_length=20)
    body = models.TextField()
    received_at = models.DateTimeField(default=timezone.now)
    handled_at = models.DateTimeField(null=True, blank=True)
    handler_result = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "provider_message_id"],
                condition=~models.Q(provider_message_id=""),
                name="uniq_inbound_provider_id",
            )
        ]

    def __str__(self) -> str:
        return f"MO #{self.pk} from {phone_mask(self.source)}"


class BatchMessageCount(models.Model):
    """Campaign messages counted per batch, gateway, state, error and charge (issue 19): what the
    progress bars, send_batches.list and the retry preview read instead of counting a million
    OutboundMessage rows per request.

    Written only by database triggers on gateways_outboundmessage (``gateways.message_counts``),
    in the same transaction as the change, whichever path made it (the dispatch's INSERT ... SELECT,
    the claim, the bind worker, receipts, expiry, reconcile, a cancellation's withdrawal, retention).
    On PostgreSQL each statement appends one row per key it changed (signed deltas: append-only,
    so concurrent writers never wait on a counter row); ``message_counts_fold`` sums them
    periodically. A key's figure is always the SUM of its rows, exact at any moment. On SQLite
    (one writer) the trigger keeps one row per key."""

    batch = models.ForeignKey("campaigns.SendBatch", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    gateway = models.ForeignKey(
        Gateway, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
    state = models.CharField(max_length=12, choices=MessageState.choices)
    error_code = models.CharField(max_length=32, blank=True)
    charged = models.BooleanField(help_text="gateways.charges: submitted (accepted) or unknown.")
    n = models.BigIntegerField(help_text="Messages (a signed delta).")
    cost = models.DecimalField(max_digits=18, decimal_places=4, help_text="Their cost (a signed delta).")
    changed_at = models.DateTimeField(null=True, blank=True, help_text="Latest change among the rows added.")

    def __str__(self) -> str:
        return f"batch {self.batch_id} {self.state} {self.n:+d}"
