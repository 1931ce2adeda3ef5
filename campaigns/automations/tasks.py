"""Beat tasks of the automations app, and the priority tick the intake starts: thin, named (STYLE 9)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings

from campaigns.automations.engine import events_send_now, flow_tick, priority_flows
from campaigns.automations.services import events_purge

logger = logging.getLogger(__name__)


@shared_task(name="automations.purge_events")
def purge_events() -> int:
    """Beat: delete commerce events past SMS_EVENTS_RETENTION_DAYS, in batches."""
    return events_purge()


@shared_task(name="automations.tick")
def automations_tick() -> dict[str, Any]:
    """Every few seconds (beat): scan new events into enrolments and exits, then send what is due."""
    return flow_tick()


@shared_task(name="automations.tick_priority")
def automations_tick_priority(event_pks: list[int], flow_ids: list[int]) -> dict[str, Any]:
    """On the priority queue, right after the intake committed events of transactional flows:
    scan them and send what they made due (engine.events_send_now)."""
    return events_send_now(event_pks=[int(pk) for pk in event_pks], flow_ids=[int(pk) for pk in flow_ids])


# The priority flows, read at most once a second per process (the intake may store ten batches a
# second): a flow activated or paused meanwhile is seen a second later; the beat's tick sends its
# events anyway, and the priority tick re-checks the flow's state at send time.
_FLOWS_TTL = 1.0
_flows_cache: dict[str, Any] = {"until": 0.0, "flows": []}


def _priority_flows(event_types: set[str]) -> list[int]:
    now = time.monotonic()
    if now >= _flows_cache["until"]:
        _flows_cache["flows"] = priority_flows(None)
        _flows_cache["until"] = now + _FLOWS_TTL
    return [pk for pk, types in _flows_cache["flows"] if event_types.intersection(types)]


def on_events_ingested(sender: Any, event_pks: list[int], event_types: dict[int, str] | None = None, **_: Any) -> None:
    """intake.events_ingested receiver (after the commit): events that an active transactional
    flow sends at once start the priority tick on the priority queue (SMS_PRIORITY_QUEUE), so they
    do not wait up to a beat interval. Any other event waits for the beat's tick, which is also
    the safety net: a broker that refuses the task delays these messages to it, never loses them."""
    if not event_types:
        return
    try:
        flows = _priority_flows(set(event_types.values()))
        if not flows:
            return
        automations_tick_priority.apply_async(args=(sorted(event_pks), flows), queue=settings.SMS_PRIORITY_QUEUE)
    except Exception:
        logger.exception("automations: the priority tick was not started; the beat's tick will send these events")
