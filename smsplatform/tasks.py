from __future__ import annotations

from celery import shared_task

from smsplatform.kernel.previews import previews_purge_expired


@shared_task(name="smsplatform.purge_expired_previews")
def purge_expired_previews() -> int:
    return previews_purge_expired()
