"""Stored previews (spine 6): a write takes only the preview id, never wider input."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import Preview


def preview_store(
    *,
    actor: Actor,
    kind: str,
    payload: Any,
    result: Any,
    ttl_seconds: int | None = None,
) -> Preview:
    ttl = ttl_seconds if ttl_seconds is not None else settings.SMS_PREVIEW_TTL_SECONDS
    now = timezone.now()
    return Preview.objects.create(
        kind=kind,
        user_id=actor.user_id,
        payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)),
        result=json.loads(json.dumps(result, cls=DjangoJSONEncoder)),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )


def preview_read(
    *,
    actor: Actor,
    kind: str,
    preview_id: object,
    field: str,
    tool: str | None = None,
    lock: bool = False,
    allow_expired: bool = True,
) -> Preview:
    """The caller's own unused preview of this kind, or a structured error naming ``field`` and
    the preview tool to call (``tool``; by default ``sms_marketing.<kind>.preview``). A check
    reads it without consuming it; the write consumes it through preview_consume.
    ``lock``: take the row lock (inside the write's transaction)."""
    preview_tool = tool or f"sms_marketing.{kind}.preview"
    try:
        pid = uuid.UUID(str(preview_id))
    except (TypeError, ValueError):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{field} is not a preview id.",
            field=field,
            hint=f"Call {preview_tool} first.",
        ) from None
    qs = Preview.objects.select_for_update() if lock else Preview.objects.all()
    preview = qs.filter(pk=pid, user=actor.user).first()
    if preview is None:
        raise ApplicationError(
            ErrorCode.PREVIEW_NOT_FOUND,
            f"No preview {pid} of yours exists.",
            field=field,
            hint=f"Call {preview_tool} and pass the id it returns.",
        )
    if preview.kind != kind:
        raise ApplicationError(
            ErrorCode.PREVIEW_KIND_MISMATCH,
            f"Preview {pid} is a {preview.kind} preview, not a {kind} preview.",
            field=field,
            hint=f"Call {preview_tool}.",
        )
    if preview.consumed_at is not None:
        raise ApplicationError(
            ErrorCode.PREVIEW_ALREADY_USED,
            f"Preview {pid} was already used by {preview.consumed_by}.",
            field=field,
            hint=f"Call {preview_tool} again for a fresh preview.",
        )
    if preview.is_expired and not allow_expired:
        raise ApplicationError(
            ErrorCode.PREVIEW_EXPIRED,
            f"Preview {pid} expired at {preview.expires_at.isoformat()}.",
            field=field,
            hint=f"Call {preview_tool} again; previews reflect data at the time they were made.",
        )
    return preview


def preview_consume(
    *,
    actor: Actor,
    kind: str,
    preview_id: object,
    field: str,
    consumer: str,
    tool: str | None = None,
    allow_expired: bool = False,
) -> Preview:
    """Lock, check and mark a preview used. Call inside the write's transaction.

    ``allow_expired``: an approved action request froze a preview that was valid when requested;
    its execution may consume it after expiry (a direct write may not)."""
    # The row lock: two writes cannot both use one preview.
    preview = preview_read(
        actor=actor, kind=kind, preview_id=preview_id, field=field, tool=tool, lock=True, allow_expired=allow_expired
    )
    preview.consumed_at = timezone.now()
    preview.consumed_by = consumer
    preview.save(update_fields=["consumed_at", "consumed_by"])
    return preview


def previews_purge_expired(*, older_than: timedelta = timedelta(days=7)) -> int:
    cutoff = timezone.now() - older_than
    deleted, _ = Preview.objects.filter(expires_at__lt=cutoff).delete()
    return deleted
