"""Shared-kernel models: API tokens, audit log, idempotency, previews, platform config, the notification
outbox."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.errors import ApplicationError, ErrorCode


class ApiToken(models.Model):
    """A named bearer token. Only a hash of the key is stored; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="Shown in the audit log, e.g. 'campaign-agent'.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="First characters, to recognise a key.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="uniq_api_token_name_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @classmethod
    def issue(cls, *, user: Any, name: str) -> tuple[ApiToken, str]:
        key = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, key_hash=cls.hash_key(key), prefix=key[:8])
        return token, key

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditLogQuerySet(models.QuerySet["AuditLog"]):
    def update(self, **kwargs: Any) -> int:
        raise ApplicationError(ErrorCode.AUDIT_IMMUTABLE, "The audit log is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ApplicationError(ErrorCode.AUDIT_IMMUTABLE, "The audit log is append-only.")


class AuditLog(models.Model):
    """Append-only record of every write, decision, send and opt-out.

    The model refuses updates and deletes, and a database trigger (migration 0002)
    refuses them too, so no interface and no raw query can rewrite history.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    channel = models.CharField(max_length=16)
    token_name = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    action_request_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ApplicationError(ErrorCode.AUDIT_IMMUTABLE, "The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ApplicationError(ErrorCode.AUDIT_IMMUTABLE, "The audit log is append-only.")


class IdempotencyRecord(models.Model):
    """One row per (user, key): the request's fingerprint and its first result (STYLE 8)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    # System actors have no user; their keys live in their own namespace.
    namespace = models.CharField(max_length=100, default="")
    key = models.CharField(max_length=200)
    operation = models.CharField(max_length=100)
    request_hash = models.CharField(max_length=64)
    response = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "namespace", "key"], name="uniq_idempotency_user_key"),
        ]

    def __str__(self) -> str:
        return f"{self.operation}:{self.key}"


class Preview(models.Model):
    """What a preview tool showed, so the matching write can use exactly that (spine 6)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=50, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    payload = models.JSONField(help_text="The validated input the preview was computed from.")
    result = models.JSONField(help_text="What the preview showed.")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    consumed_by = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} preview {self.id}"

    @property
    def is_expired(self) -> bool:
        return timezone.now() >= self.expires_at


class PlatformConfig(models.Model):
    """The singleton behind sms_marketing.config.get. Sections are validated JSON
    (see smsplatform.config_schema); every change bumps ``version`` and is kept
    in PlatformConfigVersion."""

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    default_sender_id = models.CharField(max_length=20, blank=True)
    default_gateway = models.CharField(max_length=64, blank=True)
    short_links = models.JSONField(default=dict)
    unsubscribe = models.JSONField(default=dict)
    schedule = models.JSONField(default=dict)
    approval = models.JSONField(default=dict)
    quota = models.JSONField(default=dict)
    cost = models.JSONField(default=dict)
    tracking = models.JSONField(default=dict)
    frequency_caps = models.JSONField(default=dict)
    reporting = models.JSONField(default=dict)
    alerts = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = "platform configuration"
        verbose_name_plural = "platform configuration"

    def __str__(self) -> str:
        return f"Platform configuration v{self.version}"


class PlatformConfigVersion(models.Model):
    """A frozen copy of every configuration version."""

    version = models.PositiveIntegerField(unique=True)
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"config v{self.version}"


class NotificationState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """The notification outbox (STYLE 18): one e-mail, written in the transaction of the change it
    reports and sent by a Celery task after commit (smsplatform.kernel.notifications).

    pending -> sending (claimed by one worker, under a lease) -> sent | pending again (back-off)
    | failed (permanent error or attempts used up).
    """

    object_type = models.CharField(max_length=100, blank=True, help_text="What the notification is about.")
    object_id = models.CharField(max_length=64, blank=True)
    recipients = models.JSONField(default=list, help_text="E-mail addresses.")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    state = models.CharField(max_length=16, choices=NotificationState.choices, default=NotificationState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # While ``sending``: until when the claiming worker owns the row; past it, the sweep takes it back.
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"notification {self.pk} ({self.state}): {self.subject}"


class Heartbeat(models.Model):
    """The last time a periodic part of the platform said it was alive (beat's heartbeat task, run
    by a worker), read by /readyz and ``manage.py platform_status``."""

    name = models.CharField(max_length=50, unique=True)
    at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"


class RetentionCursor(models.Model):
    """How far a retention purge has gone through one kind of data (the last id handled), so each
    run starts where the previous one stopped (smsplatform.operations.retention)."""

    name = models.CharField(max_length=50, unique=True)
    last_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} up to #{self.last_id}"
