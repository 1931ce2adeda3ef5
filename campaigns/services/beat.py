"""A campaign's one-off beat entry: set when it is scheduled, disabled when that schedule
no longer holds (a send now, a cancellation, a change sending it back to draft)."""

from __future__ import annotations

import json

from campaigns.models import Campaign
from campaigns.services.common import DISPATCH_TASK


def campaign_beat_set(campaign: Campaign, *, version: int) -> None:
    from django_celery_beat.models import ClockedSchedule, PeriodicTask

    assert campaign.send_at is not None
    clock, _ = ClockedSchedule.objects.get_or_create(clocked_time=campaign.send_at)
    name = f"campaign:{campaign.pk}"
    PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": DISPATCH_TASK,
            "clocked": clock,
            "interval": None,
            "crontab": None,
            "one_off": True,
            "enabled": True,
            "args": json.dumps([campaign.pk, version]),
            "description": f"Send campaign {campaign.name!r} version {version}",
        },
    )
    campaign.beat_task_name = name


def campaign_beat_disable(campaign: Campaign) -> None:
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    if campaign.beat_task_name:
        PeriodicTask.objects.filter(name=campaign.beat_task_name).update(enabled=False)
        # A queryset update skips the change tracking beat polls (STYLE 10): tell it.
        PeriodicTasks.update_changed()


def campaign_beat_remove(campaign: Campaign) -> None:
    """Delete the campaign's beat entry (a cancelled campaign keeps none, not even a disabled one)."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    if campaign.beat_task_name:
        PeriodicTask.objects.filter(name=campaign.beat_task_name).delete()
        PeriodicTasks.update_changed()
        campaign.beat_task_name = ""
