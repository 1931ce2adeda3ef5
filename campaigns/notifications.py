"""Campaign notifications: the schedule's ``notify`` list (usernames or e-mail addresses)
hears about cancellation, failure and completion.

Each notification is a row of the kernel's outbox, written in the caller's transaction and
e-mailed by a Celery task after it commits (smsplatform.kernel.notifications), so a change that
rolls back notifies nobody and no mail server is contacted under the campaign's row lock. What is
returned (queued, to whom, which entries did not resolve, the outbox row's id) goes into the audit
log; the send's outcome is recorded on the outbox row."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from campaigns.models import Campaign
from smsplatform.kernel.notifications import notification_record


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
        return {"status": "none", "to": [], "unresolved": unknown}
    notification = notification_record(
        recipients=recipients, subject=subject, body=body, object_type="campaign", object_id=campaign.pk
    )
    return {"status": "queued", "notification_id": notification.pk, "to": recipients, "unresolved": unknown}
