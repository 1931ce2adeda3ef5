"""An exit event racing the send, with real threads and transactions on PostgreSQL: the tick has
claimed the enrolment and queued its message (not yet committed) when the order arrives. The exit
waits for the tick's row lock, then withdraws the queued message: once the exit commits, nothing
of that enrolment can be submitted."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.automations import engine
from campaigns.automations.engine import enrolments_send_due, events_scan
from campaigns.automations.flow_models import Enrolment, EnrolmentState
from gateways.delivery.queue import messages_submit
from gateways.models import MessageState, OutboundMessage
from smsplatform.kernel.actor import Actor
from tests.automations.flows.conftest import active_flow, event
from tests.support.db import postgres_only

pytestmark = [
    postgres_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("known_gateways"),
]


def test_an_order_arriving_while_the_tick_sends_withdraws_the_reminder(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = active_flow(
        world,
        purpose="marketing",
        trigger_event_types=["cart_abandoned"],
        exit_conditions=[{"event_type": "order_placed", "match": "contact"}],
        template_version=world["reminder"],
    )
    contact = world["contacts"][0]
    event(world, contact, "cart_abandoned", order_ref="C-1", occurred_at=timezone.now() - timedelta(minutes=1))
    events_scan()
    in_flight, release = threading.Event(), threading.Event()
    original = engine.messages_insert

    def held_insert(*args: Any, **kwargs: Any) -> list[int]:
        ids = original(*args, **kwargs)
        in_flight.set()  # the message is queued, the enrolment locked, nothing committed yet
        release.wait(10)
        return ids

    monkeypatch.setattr(engine, "messages_insert", held_insert)
    # The tick's post-commit hand-off is held too: with eager Celery it would submit the message in
    # the tick's thread right after its commit, racing the exit for the row (a message submitted
    # before the exit reads it is sent, rightly, and the exit has nothing to withdraw). Here the
    # exit runs first; the hand-off is replayed once it has committed.
    handed: list[tuple[int, list[int]]] = []
    monkeypatch.setattr(
        "gateways.delivery.queue.message_submit_enqueue", lambda gateway_id, ids, **_: handed.append((gateway_id, ids))
    )
    results: dict[str, Any] = {}

    def run(name: str, fn: Any) -> None:
        try:
            results[name] = fn()
        except Exception as exc:
            results[name] = exc
        finally:
            connection.close()

    def exit_arrives() -> Any:
        event(world, contact, "order_placed", order_ref="O-1")
        return events_scan()

    ticker = threading.Thread(target=run, args=("tick", enrolments_send_due))
    exiter = threading.Thread(target=run, args=("exit", exit_arrives))
    ticker.start()
    assert in_flight.wait(10)
    exiter.start()
    exiter.join(0.5)
    assert exiter.is_alive(), ("the exit must wait for the tick's lock on the enrolment", results)
    release.set()
    ticker.join(10)
    exiter.join(10)
    assert results["tick"]["sent"] == 1, results
    assert results["exit"]["exited"] == 1, results
    [message] = OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix)
    assert message.state == MessageState.FAILED and message.error_code == "flow_exit"
    enrolment = Enrolment.objects.get(flow=flow)
    assert enrolment.state == EnrolmentState.EXITED and enrolment.reason == "exit:order_placed"
    assert handed and all(gateway_id == world["gateway"].pk for gateway_id, _ids in handed), handed
    counts = messages_submit(actor=Actor.system("test"), gateway_id=world["gateway"].pk)
    assert counts.get("accepted", 0) == 0
