"""Celery tasks of the compliance app: thin, named, idempotent (STYLE 9)."""

from __future__ import annotations

from celery import shared_task

from compliance.services import action_requests_expire
from smsplatform.kernel.actor import Actor


@shared_task(name="compliance.expire_action_requests")
def expire_action_requests() -> int:
    return action_requests_expire(actor=Actor.system("compliance.expire_action_requests"))
