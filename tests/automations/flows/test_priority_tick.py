"""The priority tick: an event of an active transactional flow, once committed by the intake,
starts automations.tick_priority on the priority queue (not the beat's next tick); it scans and
sends through the same claim, every send-time rule checked, each message once; a burst makes one
tick that works, the others stop after two reads; anything else waits for the beat."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns.automations import tasks
from campaigns.automations.engine import events_send_now, flow_tick, priority_flows
from campaigns.automations.flow_models import Enrolment, EnrolmentState, FlowState
from campaigns.automations.intake import events_ingest
from gateways.models import MessagePurpose, OutboundMessage
from tests.automations.flows.conftest import active_flow, event
from tests.support.factories import ContactFactory, OptOutFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


@pytest.fixture
def started(monkeypatch: Any) -> list[tuple[str | None, list[int], list[int]]]:
    calls: list[tuple[str | None, list[int], list[int]]] = []
    monkeypatch.setitem(tasks._flows_cache, "until", 0.0)  # this test's flows, not a cached list

    def apply_async(args: Any, queue: str | None = None, **_: Any) -> None:
        calls.append((queue, list(args[0]), list(args[1])))

    monkeypatch.setattr(tasks.automations_tick_priority, "apply_async", apply_async)
    return calls


def ingest(world: dict[str, Any], capture: Any, *events: dict[str, Any]) -> dict[str, Any]:
    with capture(execute=True):
        return events_ingest(source=world["source"], events=list(events))


def shipped(contact: Any, n: int, type_: str = "order_shipped") -> dict[str, Any]:
    return {
        "event_id": f"evt-p-{n}",
        "type": type_,
        "phone": contact.phone,
        "occurred_at": timezone.now().isoformat(),
        "order_id": f"A-{n}",
    }


def messages_of(flow: Any) -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix))


def test_a_transactional_event_starts_the_priority_tick_which_sends_it_once(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world)
    contacts = world["contacts"]
    answer = ingest(world, django_capture_on_commit_callbacks, *(shipped(c, i) for i, c in enumerate(contacts)))
    assert answer["accepted"] == 3
    assert len(started) == 1
    queue, pks, flows = started[0]
    assert queue == settings.SMS_PRIORITY_QUEUE and flows == [flow.pk] and len(pks) == 3

    result = tasks.automations_tick_priority(pks, flows)
    assert result["enrolled"] == 3 and result["send"]["sent"] == 3
    messages = messages_of(flow)
    assert len(messages) == 3 and {m.purpose for m in messages} == {MessagePurpose.TRANSACTIONAL}
    # The same task again (a burst's later ones, a redelivery) and the beat: nothing more.
    assert events_send_now(event_pks=pks, flow_ids=flows) == {"enrolled": 0, "send": None}
    flow_tick()
    assert len(messages_of(flow)) == 3
    assert set(Enrolment.objects.filter(flow=flow).values_list("state", flat=True)) == {EnrolmentState.COMPLETED}


def test_the_beat_having_sent_first_leaves_the_priority_tick_nothing(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world)
    ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][0], 1))
    flow_tick()
    _queue, pks, flows = started[0]
    assert events_send_now(event_pks=pks, flow_ids=flows) == {"enrolled": 0, "send": None}
    assert len(messages_of(flow)) == 1


def test_send_time_rules_still_apply_on_the_priority_path(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world)
    blocked, fine = world["contacts"][0], world["contacts"][1]
    OptOutFactory.create(phone=blocked.phone)
    ingest(world, django_capture_on_commit_callbacks, shipped(blocked, 1), shipped(fine, 2))
    _queue, pks, flows = started[0]
    result = events_send_now(event_pks=pks, flow_ids=flows)
    assert result["send"]["sent"] == 1 and result["send"]["skipped"] == {"opted_out": 1}
    assert [m.destination for m in messages_of(flow)] == [fine.phone]


def test_a_flow_paused_before_the_task_runs_sends_nothing(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world)
    ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][0], 1))
    flow.state = FlowState.PAUSED
    flow.save(update_fields=["state"])
    _queue, pks, flows = started[0]
    events_send_now(event_pks=pks, flow_ids=flows)
    assert messages_of(flow) == []
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.WAITING  # held, not dropped


def test_events_no_transactional_flow_sends_at_once_wait_for_the_beat(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    active_flow(world, purpose="marketing", template_version=world["reminder"], trigger_event_types=["order_paid"])
    active_flow(world, steps=[{"kind": "wait", "minutes": 30}, {"kind": "send"}])
    active_flow(world, trigger_event_types=["pickup_ready"], trigger_anchor="pickup_at", trigger_offset_minutes=-60)
    contact = world["contacts"][0]
    paid = {**shipped(contact, 2, "order_paid"), "amount": "10.00", "currency": "HKD"}
    answer = ingest(world, django_capture_on_commit_callbacks, shipped(contact, 1), paid)
    assert answer["accepted"] == 2
    assert started == []
    assert priority_flows({"order_shipped", "order_paid", "pickup_ready"}) == []


def test_a_duplicate_batch_starts_nothing(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    active_flow(world)
    ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][0], 1))
    answer = ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][0], 1))
    assert answer["duplicate"] == 1 and len(started) == 1


def test_a_broker_refusing_the_task_leaves_the_events_to_the_beat(
    world: dict[str, Any], monkeypatch: Any, django_capture_on_commit_callbacks: Any, caplog: Any
) -> None:
    flow = active_flow(world)
    monkeypatch.setitem(tasks._flows_cache, "until", 0.0)

    def refuse(*_a: Any, **_k: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.automations_tick_priority, "apply_async", refuse)
    answer = ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][0], 1))
    assert answer["accepted"] == 1
    assert "priority tick was not started" in caplog.text
    flow_tick()
    assert len(messages_of(flow)) == 1


def test_the_priority_flows_are_read_once_a_second(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    contacts = world["contacts"]
    ingest(world, django_capture_on_commit_callbacks, shipped(contacts[0], 1))  # no flow yet: cached
    flow = active_flow(world)
    ingest(world, django_capture_on_commit_callbacks, shipped(contacts[1], 2))
    assert started == []  # within the second: the beat's tick sends it
    tasks._flows_cache["until"] = 0.0  # a second later
    ingest(world, django_capture_on_commit_callbacks, shipped(contacts[2], 3))
    assert [flows for _q, _pks, flows in started] == [[flow.pk]]


def test_claims_grow_from_the_first_claim_to_the_limit_and_send_each_once(
    world: dict[str, Any], monkeypatch: Any
) -> None:
    from campaigns.automations import engine

    limits: list[int] = []
    real = engine._flow_tick

    def spy(flow_id: int, *, now: Any, limit: int) -> dict[str, Any]:
        limits.append(limit)
        return real(flow_id, now=now, limit=limit)

    monkeypatch.setattr(engine, "FIRST_CLAIM", 1)
    monkeypatch.setattr(engine, "CLAIM_LIMIT", 2)
    monkeypatch.setattr(engine, "_flow_tick", spy)
    flow = active_flow(world)
    contacts = [*world["contacts"], *(ContactFactory.create() for _ in range(3))]
    for contact in contacts:
        event(world, contact, "order_shipped", order_ref=f"A-{contact.pk}")
    engine.events_scan()
    result = engine.enrolments_send_due()
    assert result["sent"] == 6
    assert limits == [1, 2, 2, 2]  # 1 + 2 + 2 + 1 (the short claim ends the flow's turn)
    assert len(messages_of(flow)) == 6 and len({m.destination for m in messages_of(flow)}) == 6


def test_the_priority_tick_enrols_its_events_only_and_the_scan_then_enrols_nothing_twice(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world)
    backlog = event(world, world["contacts"][0], "order_shipped", order_ref="B-1")  # not yet scanned
    ingest(world, django_capture_on_commit_callbacks, shipped(world["contacts"][1], 1))
    _queue, pks, flows = started[0]
    result = events_send_now(event_pks=pks, flow_ids=flows)
    assert result["enrolled"] == 1 and result["send"]["sent"] == 1
    assert not Enrolment.objects.filter(event=backlog).exists()  # the beat's scan's work
    scanned = flow_tick()
    assert scanned["send"]["sent"] == 1
    assert Enrolment.objects.filter(flow=flow).count() == 2 and len(messages_of(flow)) == 2


def test_an_exit_event_in_the_same_batch_enrols_the_trigger_as_exited(
    world: dict[str, Any], started: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    flow = active_flow(world, exit_conditions=[{"event_type": "order_delivered", "match": "reference"}])
    contact = world["contacts"][0]
    trigger = shipped(contact, 1)
    delivered = {**shipped(contact, 2, "order_delivered"), "order_id": "A-1"}  # at or after it
    ingest(world, django_capture_on_commit_callbacks, trigger, delivered)
    _queue, pks, flows = started[0]
    events_send_now(event_pks=pks, flow_ids=flows)
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.EXITED
    assert messages_of(flow) == []
