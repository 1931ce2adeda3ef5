"""Reads of the in-app inbox: only the actor's own items, ever."""

from __future__ import annotations

from typing import Any

from reporting.models import InboxItem
from smsplatform.kernel.actor import Actor


def inbox_items(*, actor: Actor, unread_only: bool = False) -> Any:
    qs = InboxItem.objects.select_related("notification").filter(user=actor.user)
    if unread_only:
        qs = qs.filter(read_at__isnull=True)
    return qs.order_by("-created_at", "-id")


def inbox_list(*, actor: Actor, unread_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    if actor.user is None:
        return []
    return [
        {
            "item_id": item.pk,
            "notification_id": item.notification_id,
            "kind": item.notification.kind,
            "title": item.notification.title,
            "body": item.notification.body,
            "subject": {
                "kind": item.notification.subject_kind,
                "campaign_id": item.notification.campaign_id,
                "flow_id": item.notification.flow_id,
                "action_request_id": item.notification.subject_request_id,
            },
            "read": item.read_at is not None,
            "read_at": item.read_at.isoformat() if item.read_at else None,
            "created_at": item.created_at.isoformat(),
        }
        for item in inbox_items(actor=actor, unread_only=unread_only)[:limit]
    ]


def inbox_unread_count(*, actor: Actor) -> int:
    return inbox_items(actor=actor, unread_only=True).count() if actor.user is not None else 0
