"""The beat scan and the tick: enrolment once per (flow, event), replays and out-of-order events,
exits (also after the message was queued), date triggers, and every send-time re-check."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.automations.engine import enrolments_send_due, events_scan, flow_tick
from campaigns.automations.flow_models import Enrolment, EnrolmentState, FlowState
from gateways.delivery.queue import messages_submit
from gateways.models import MessagePurpose, MessageState, OutboundMessage
from smsplatform.kernel.actor import Actor
from tests.automations.flows.conftest import active_flow, event
from tests.support.campaigns import set_quiet_hours
from tests.support.factories import ContactFactory, OptOutFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def messages_of(flow: Any) -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix).order_by("pk"))


def test_an_event_enrols_once_and_sends_once_even_when_scanned_and_replayed_again(world: dict[str, Any]) -> None:
    flow = active_flow(world)
    contact = world["contacts"][0]
    evt = event(world, contact, "order_shipped", order_ref="A-1")
    flow_tick()
    flow_tick()
    # The scan cursor went past it; a re-scan of the overlap and a forced re-scan change nothing.
    from campaigns.automations.flow_models import ScanCursor

    ScanCursor.objects.update(last_event_id=0)
    events_scan()
    enrolments_send_due()
    enrolments = list(Enrolment.objects.filter(flow=flow))
    assert len(enrolments) == 1 and enrolments[0].state == EnrolmentState.COMPLETED
    messages = messages_of(flow)
    assert len(messages) == 1
    message = messages[0]
    assert message.body == "【ShopHK】Your order A-1 has shipped."
    assert message.purpose == MessagePurpose.TRANSACTIONAL and message.state == MessageState.QUEUED
    assert message.destination == contact.phone and message.contact_id == contact.pk
    assert message.reference == f"automation:{flow.pk}:{enrolments[0].pk}:0"
    assert enrolments[0].event_id == evt.pk


def test_the_unique_constraint_refuses_a_second_enrolment_of_the_same_flow_and_event(world: dict[str, Any]) -> None:
    flow = active_flow(world)
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    events_scan()
    row = Enrolment.objects.get(flow=flow)
    row.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        row.save()


def test_a_date_trigger_is_due_at_its_offset_and_fires_once_per_contact_and_date(world: dict[str, Any]) -> None:
    appointment = timezone.now() + timedelta(days=3)
    flow = active_flow(
        world,
        trigger_event_types=["appointment_booked"],
        trigger_anchor="appointment_at",
        trigger_offset_minutes=-24 * 60,
        exit_conditions=[{"event_type": "appointment_cancelled", "match": "reference"}],
    )
    contact = world["contacts"][0]
    event(world, contact, "appointment_booked", order_ref="APT-1", appointment_at=appointment)
    # The booking system sends the same booking again under another event id: same contact and date.
    event(world, contact, "appointment_booked", order_ref="APT-1", appointment_at=appointment)
    events_scan()
    rows = list(Enrolment.objects.filter(flow=flow))
    assert len(rows) == 1
    assert abs(rows[0].due_at - (appointment - timedelta(hours=24))) < timedelta(seconds=1)
    assert enrolments_send_due()["claimed"] == 0  # not due yet
    # The appointment is cancelled: its reminder is withdrawn.
    event(world, contact, "appointment_cancelled", order_ref="APT-1")
    events_scan()
    rows[0].refresh_from_db()
    assert rows[0].state == EnrolmentState.EXITED and rows[0].reason == "exit:appointment_cancelled"


def test_an_appointment_already_past_its_reminder_time_is_not_reminded_late(world: dict[str, Any]) -> None:
    flow = active_flow(
        world, trigger_event_types=["appointment_booked"], trigger_anchor="appointment_at", trigger_offset_minutes=-1440
    )
    event(
        world,
        world["contacts"][0],
        "appointment_booked",
        order_ref="X",
        appointment_at=timezone.now() + timedelta(hours=2),
    )
    events_scan()
    row = Enrolment.objects.get(flow=flow)
    assert row.state == EnrolmentState.SKIPPED and row.reason == "too_late"


def cart_flow(world: dict[str, Any], **kw: Any) -> Any:
    data: dict[str, Any] = {
        "purpose": "marketing",
        "trigger_event_types": ["cart_abandoned"],
        "steps": [{"kind": "wait", "minutes": 60}, {"kind": "send"}],
        "exit_conditions": [{"event_type": "order_placed", "match": "contact"}],
        "template_version": world["reminder"],
        **kw,
    }
    return active_flow(world, **data)


def test_an_order_stops_the_cart_reminder_and_an_out_of_order_order_prevents_it(world: dict[str, Any]) -> None:
    flow = cart_flow(world)
    first, second = world["contacts"][:2]
    now = timezone.now()
    event(world, first, "cart_abandoned", order_ref="C-1", occurred_at=now - timedelta(minutes=10))
    events_scan()
    row = Enrolment.objects.get(flow=flow, contact=first)
    assert row.state == EnrolmentState.WAITING and row.step_index == 1
    assert abs(row.due_at - (now + timedelta(minutes=50))) < timedelta(seconds=5)
    event(world, first, "order_placed", order_ref="O-1", occurred_at=now - timedelta(minutes=5))
    # Out of order: the order (later in business time) arrives before the cart event.
    event(world, second, "order_placed", order_ref="O-2", occurred_at=now - timedelta(minutes=1))
    event(world, second, "cart_abandoned", order_ref="C-2", occurred_at=now - timedelta(minutes=20))
    events_scan()
    row.refresh_from_db()
    assert row.state == EnrolmentState.EXITED
    late = Enrolment.objects.get(flow=flow, contact=second)
    assert late.state == EnrolmentState.EXITED and "out of order" in late.detail
    assert enrolments_send_due(now=now + timedelta(hours=2))["sent"] == 0
    assert messages_of(flow) == []


def test_an_exit_after_the_message_was_queued_withdraws_it_before_any_submit(world: dict[str, Any]) -> None:
    flow = cart_flow(world, steps=[{"kind": "send"}])
    contact = world["contacts"][0]
    event(world, contact, "cart_abandoned", order_ref="C-1", occurred_at=timezone.now() - timedelta(minutes=1))
    flow_tick()
    [message] = messages_of(flow)
    assert message.state == MessageState.QUEUED
    event(world, contact, "order_placed", order_ref="O-1")
    events_scan()
    message.refresh_from_db()
    assert message.state == MessageState.FAILED and message.error_code == "flow_exit"
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.EXITED
    counts = messages_submit(actor=Actor.system("test"), gateway_id=world["gateway"].pk)
    assert counts.get("accepted", 0) == 0


def test_an_exit_event_committed_before_the_tick_wins_even_before_the_scan_sees_it(world: dict[str, Any]) -> None:
    flow = cart_flow(world, steps=[{"kind": "send"}])
    contact = world["contacts"][0]
    event(world, contact, "cart_abandoned", order_ref="C-1", occurred_at=timezone.now() - timedelta(minutes=2))
    events_scan()
    event(world, contact, "order_placed", order_ref="O-1")
    result = enrolments_send_due()  # no scan in between: the tick re-checks the exit itself
    assert result["sent"] == 0 and result["exited"] == 1
    assert messages_of(flow) == []


def test_send_time_rechecks_opt_out_phone_change_consent_and_filters(world: dict[str, Any]) -> None:
    flow = cart_flow(world, steps=[{"kind": "send"}], filters={"tags": {"none": ["staff"]}})
    a, b, c = world["contacts"]
    d = ContactFactory.create()  # no marketing consent
    e = ContactFactory.create(tags=["vip"])
    from tests.support.factories import ConsentEvidenceFactory

    ConsentEvidenceFactory.create(contact=e)
    for contact in (a, b, c, d, e):
        event(world, contact, "cart_abandoned", order_ref=f"C-{contact.pk}", occurred_at=timezone.now())
    events_scan()
    OptOutFactory.create(contact=a)
    b.phone = "+85298888888"
    b.save()
    e.tags = ["staff"]
    e.save()
    result = enrolments_send_due()
    assert result["skipped"] == {"opted_out": 1, "phone_changed": 1, "no_consent": 1, "filtered": 1}
    assert [m.destination for m in messages_of(flow)] == [c.phone]


def test_marketing_waits_through_quiet_hours_and_transactional_does_not(world: dict[str, Any]) -> None:
    set_quiet_hours({"HK": {"start": "00:00", "end": "23:59", "time_zone": "Asia/Hong_Kong", "no_sundays": False}})
    marketing = cart_flow(world, steps=[{"kind": "send"}])
    transactional = active_flow(world)
    contact = world["contacts"][0]
    event(world, contact, "cart_abandoned", order_ref="C-1")
    event(world, contact, "order_shipped", order_ref="A-1")
    result = flow_tick()["send"]
    assert result["held"] == 1 and result["sent"] == 1
    held = Enrolment.objects.get(flow=marketing)
    assert held.state == EnrolmentState.WAITING and held.due_at > timezone.now()
    assert messages_of(marketing) == [] and len(messages_of(transactional)) == 1


def test_the_flows_own_frequency_limit_and_once_per_order(world: dict[str, Any]) -> None:
    active_flow(world, max_per_period=2, period_hours=24, once_per_order=True)
    contact = world["contacts"][0]
    for ref in ("A-1", "A-1", "A-2", "A-3"):
        event(world, contact, "order_shipped", order_ref=ref)
    result = flow_tick()["send"]
    assert result["sent"] == 2
    assert result["skipped"] == {"once_per_order": 1, "flow_frequency": 1}


def test_pausing_holds_pending_steps_and_archiving_drops_them(world: dict[str, Any]) -> None:
    flow = active_flow(world)
    contact = world["contacts"][0]
    event(world, contact, "order_shipped", order_ref="A-1")
    events_scan()
    flow.state = FlowState.PAUSED
    flow.save()
    assert enrolments_send_due()["claimed"] == 0
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.WAITING
    flow.state = FlowState.ACTIVE
    flow.save()
    assert enrolments_send_due()["sent"] == 1


def test_a_template_no_longer_usable_at_send_time_sends_nothing(world: dict[str, Any]) -> None:
    flow = active_flow(world)
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    events_scan()
    # The pinned version is swapped for a promotional one behind the service's back (a raw write).
    world["shipped"].__class__.objects.filter(pk=world["shipped"].pk).update(body="【ShopHK】Sale 50% off {{order}}")
    result = enrolments_send_due()
    assert result["sent"] == 0 and result["skipped"] == {"template_invalid": 1}
    assert messages_of(flow) == []


def test_the_monthly_budget_caps_sending(world: dict[str, Any]) -> None:
    from decimal import Decimal

    active_flow(world, monthly_budget=Decimal("0.50"), max_per_period=10)
    contact = world["contacts"][0]
    for ref in ("A-1", "A-2", "A-3"):
        event(world, contact, "order_shipped", order_ref=ref)
    result = flow_tick()["send"]
    assert result["sent"] == 1 and result["skipped"] == {"budget_cap": 2}


def test_a_tick_rolled_back_leaves_nothing_queued_and_the_next_tick_sends_once(world: dict[str, Any]) -> None:
    flow = active_flow(world)
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    events_scan()

    class Killed(Exception):
        pass

    with pytest.raises(Killed), transaction.atomic():
        enrolments_send_due()
        raise Killed
    assert messages_of(flow) == []
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.WAITING
    assert enrolments_send_due()["sent"] == 1
    assert len(messages_of(flow)) == 1


def test_an_event_committed_after_a_later_one_is_still_enrolled(world: dict[str, Any]) -> None:
    """Ids come from a sequence at insert time: a batch committing late leaves its ids below the
    cursor. The scan remembers the gap and reads it again."""
    flow = active_flow(world)
    contact = world["contacts"][0]
    first = event(world, contact, "order_shipped", order_ref="A-1")
    late = event(world, contact, "order_shipped", order_ref="A-2")
    last = event(world, contact, "order_shipped", order_ref="A-3")
    kept = {f.attname: getattr(late, f.attname) for f in late._meta.concrete_fields}
    late.delete()  # not committed yet when the scan runs
    events_scan()
    assert set(Enrolment.objects.filter(flow=flow).values_list("event_id", flat=True)) == {first.pk, last.pk}
    type(late).objects.create(**kept)  # its batch commits now, with its old id
    counts = events_scan()
    assert counts["late_events"] == 1 and counts["enrolled"] == 1
    assert Enrolment.objects.filter(flow=flow).count() == 3
    assert events_scan()["enrolled"] == 0


def test_the_platform_frequency_caps_apply_at_send_time(world: dict[str, Any]) -> None:
    from gateways.platform_config import platform_config_update
    from smsplatform.config_service import platform_config_get

    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"frequency_caps": {**config["config"]["frequency_caps"], "transactional_per_day": 1}},
        base_version_token=config["base_version_token"],
        idempotency_key="flows-caps-0001",
    )
    flow = active_flow(world)
    first, second = world["contacts"][:2]
    event(world, first, "order_shipped", order_ref="A-1")
    flow_tick()
    event(world, first, "order_shipped", order_ref="A-2")  # a second shipping SMS today: over the cap
    event(world, second, "order_shipped", order_ref="B-1")
    result = flow_tick()["send"]
    assert result["sent"] == 1 and result["skipped"] == {"frequency_cap": 1}
    assert [m.destination for m in messages_of(flow)] == [first.phone, second.phone]
