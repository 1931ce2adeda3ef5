"""Campaign notifications: the schedule's ``notify`` list (usernames or e-mail addresses)
hears about cancellation, failure and completion. Sent through Django's e-mail backend
(console by default); the outcome is returned so it can be recorded in the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from campaigns.models import Campaign


def _addresses(campaign: Campaign) -> tuple[list[str], list[str]]:
    found, unknown = [], []
    user_model = get_user_model()
    for entry in campaign.notify or []:
        if "@" in entry:
            found.append(entry)
            continue
        user = user_model.objects.filter(username=entry).first()
        if user is not None and user.email:
            found.append(user.email)
        else:
            unknown.append(entry)
    return sorted(set(found)), unknown


def campaign_notify(campaign: Campaign, *, subject: str, body: str) -> dict[str, Any]:
    recipients, unknown = _addresses(campaign)
    if not recipients:
        return {"status": "none", "sent_to": [], "unresolved": unknown}
    try:
        send_mail(subject[:200], body, None, recipients, fail_silently=False)
    except Exception as exc:
        return {"status": "failed", "sent_to": [], "error": str(exc)[:200], "unresolved": unknown}
    return {"status": "sent", "sent_to": recipients, "unresolved": unknown}
