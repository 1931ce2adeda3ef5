"""Version tokens for optimistic concurrency (spine 5).

A token names the object and its version and is signed, so a token read from
one object cannot be replayed against another. Updates compare the version in
the same UPDATE ... WHERE version = n that writes, so two writers racing on one
token cannot both win.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.db import models
from django.utils import timezone

from smsplatform.kernel.errors import ApplicationError, ErrorCode


def _signature(label: str, pk: object, version: int) -> str:
    message = f"{label}:{pk}:{version}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:16]


def version_token(label: str, pk: object, version: int) -> str:
    return f"{version}.{_signature(label, pk, version)}"


def parse_version_token(token: str | None, *, label: str, pk: object, field: str = "base_version_token") -> int:
    hint = f"Read the object again (its get tool returns {field}) and send the token you received."
    if not token:
        raise ApplicationError(
            ErrorCode.VERSION_TOKEN_REQUIRED,
            f"{field} is required for this update.",
            field=field,
            hint=hint,
        )
    version_part, _, signature = str(token).partition(".")
    if not version_part.isdigit() or not hmac.compare_digest(signature, _signature(label, pk, int(version_part))):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{field} is not a token issued for this object.",
            field=field,
            hint=hint,
        )
    return int(version_part)


def stale_token_error(
    *, label: str, pk: object, current_version: int, field: str = "base_version_token"
) -> ApplicationError:
    return ApplicationError(
        ErrorCode.STALE_VERSION_TOKEN,
        "The object changed since you read it; your update was not applied.",
        field=field,
        hint="Read it again, re-apply your change to the current data, and send the new token.",
        details={"current_version_token": version_token(label, pk, current_version)},
    )


class VersionSnapshot(models.Model):
    """What an object looked like after one change, kept beside its version token: the version,
    the whole object as data, which fields changed, why and by whom. Never updated. A concrete
    history names its object (a foreign key) and the uniqueness of (object, version)."""

    version = models.PositiveIntegerField()
    data = models.JSONField()
    changed_fields = models.JSONField(default=list)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
