"""Writes of the automations app's event intake: event sources (create, rotate the secret) and
the retention purge of events. The intake itself is ``campaigns.automations.intake``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns.automations.models import (
    EVENT_SOURCE_SECRET_GRACE,
    CommerceEvent,
    EventSource,
    EventType,
    event_source_secret_new,
)
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied

ADD_SOURCE_PERMISSION = "automations.add_eventsource"
CHANGE_SOURCE_PERMISSION = "automations.change_eventsource"
SECRET_PERMISSION = "automations.view_event_source_secret"


def event_source_create(*, actor: Actor, code: str, name: str, enabled: bool = True) -> dict[str, Any]:
    """A new event source with a generated secret. The answer carries the secret: show it to
    the person setting up the business's system (admins with view_event_source_secret can read
    it again); the audit row never does."""
    if not actor.has_perm(ADD_SOURCE_PERMISSION):
        raise permission_denied(ADD_SOURCE_PERMISSION)
    code = (code or "").strip()
    if not code or len(code) > 64 or not code.replace("-", "").replace("_", "").isalnum() or not code.isascii():
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "code is 1-64 letters, digits, - and _.",
            field="code",
            hint="e.g. shopify-hk; the source sends it in X-Event-Source.",
        )
    with transaction.atomic():
        if EventSource.objects.filter(code=code).exists():
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"An event source with code {code!r} exists.",
                field="code",
                hint="Choose another code, or rotate the existing source's secret.",
            )
        source = EventSource.objects.create(
            code=code, name=(name or code)[:100], enabled=enabled, created_by=actor.user if actor.user_id else None
        )
        audit_record(
            actor=actor,
            action="event_source.create",
            object_type="event_source",
            object_id=source.pk,
            after={"code": source.code, "name": source.name, "enabled": source.enabled},
        )
    return {"source_id": source.pk, "code": source.code, "secret": source.secret}


def event_source_secret_rotate(*, actor: Actor, source_id: int) -> dict[str, Any]:
    """A new signing secret for the source; the previous one is accepted for
    EVENT_SOURCE_SECRET_GRACE more (events queued on the business's side keep arriving). The
    answer carries the new secret, the audit row never does."""
    if not actor.has_perm(CHANGE_SOURCE_PERMISSION):
        raise permission_denied(CHANGE_SOURCE_PERMISSION)
    with transaction.atomic():
        source = EventSource.objects.select_for_update().filter(pk=source_id).first()
        if source is None:
            raise not_found("event source", source_id, field="source_id", hint="The admin lists event sources.")
        now = timezone.now()
        secret = event_source_secret_new()
        EventSource.objects.filter(pk=source.pk).update(
            secret=secret, secret_previous=source.secret, secret_rotated_at=now, updated_at=now
        )
        audit_record(
            actor=actor,
            action="event_source.secret_rotate",
            object_type="event_source",
            object_id=source.pk,
            after={"code": source.code, "previous_accepted_until": (now + EVENT_SOURCE_SECRET_GRACE).isoformat()},
        )
    return {"source_id": source.pk, "code": source.code, "secret": secret, "rotated_at": now.isoformat()}


def event_source_secret_get(*, actor: Actor, source_id: int) -> str:
    """The source's current secret, for admins with view_event_source_secret (audited)."""
    if not actor.has_perm(SECRET_PERMISSION):
        raise permission_denied(SECRET_PERMISSION)
    source = EventSource.objects.filter(pk=source_id).first()
    if source is None:
        raise not_found("event source", source_id, field="source_id", hint="The admin lists event sources.")
    audit_record(actor=actor, action="event_source.secret_read", object_type="event_source", object_id=source.pk)
    return source.secret


# --- retention --------------------------------------------------------------------------------------


def events_purge(*, now: datetime | None = None, batch: int | None = None, max_statements: int = 1000) -> int:
    """Delete events that occurred more than SMS_EVENTS_RETENTION_DAYS ago, ``batch`` ids per
    statement, each statement its own short transaction (no long lock; the intake keeps
    writing). The ids come from event_type_occurred, one type at a time. Reporting's aggregates
    are other tables and are kept. Returns how many events were deleted."""
    now = now or timezone.now()
    batch = max(1, batch or settings.SMS_EVENTS_PURGE_BATCH)
    cutoff = now - timedelta(days=settings.SMS_EVENTS_RETENTION_DAYS)
    deleted = 0
    statements = 0
    for kind in EventType.values:
        while statements < max_statements:
            ids = list(
                CommerceEvent.objects.filter(type=kind, occurred_at__lt=cutoff)
                .order_by("occurred_at")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            with transaction.atomic():
                count, _ = CommerceEvent.objects.filter(pk__in=ids).delete()
            deleted += count
            statements += 1
    if deleted:
        audit_record(
            actor=Actor.system("automations.purge_events"),
            action="commerce_events.purge",
            object_type="commerce_event",
            after={"deleted": deleted, "occurred_before": cutoff.isoformat()},
        )
    return deleted
