"""Fail-over to the fallback gateway: one rule (gateways.failover), applied alike by both paths
that hand messages over -- ``outcomes_record`` (a submit answered 'link down' / 'unavailable')
and the SMPP bind worker whose bind stays down (``BindWorker._fail_over``)."""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

import pytest

from gateways.adapters.base import SendOutcome
from gateways.delivery.claim import messages_claim, messages_claim_rows
from gateways.delivery.outcomes import outcomes_record
from gateways.failover import fail_over_eligible, fallback_usable
from gateways.models import Gateway, MessagePart, MessageState, OutboundMessage, Provider
from gateways.smpp.worker import BindWorker, Job
from smsplatform.kernel.actor import Actor
from smsplatform.models import AuditLog

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")

# Each message of the scenario, by what makes it (in)eligible.
DESTINATIONS = {
    "hk": ("+85291230001", "HK"),  # a country the fallback covers, nothing taken: may move
    "mo": ("+85366123456", "MO"),  # a country the fallback does not cover
    "hk_part_taken": ("+85291230002", "HK"),  # a part already taken by a gateway: finished here
}
# fallback set-up -> the messages that move
SCENARIOS = {
    "covers_hk": {"hk"},
    "disabled": set(),
    "itself": set(),
    "none": set(),
}


def gateways(fallback: str) -> tuple[Gateway, Gateway]:
    primary = Gateway.objects.create(
        code="fo-primary", name="primary", provider=Provider.SIMULATOR, countries=["HK", "MO"], priority=1
    )
    backup = Gateway.objects.create(
        code="fo-backup", name="backup", provider=Provider.SIMULATOR, countries=["HK"], priority=2
    )
    if fallback == "disabled":
        backup.enabled = False
        backup.save()
    primary.fallback = {"covers_hk": backup, "disabled": backup, "itself": primary, "none": None}[fallback]
    primary.save()
    return Gateway.objects.get(pk=primary.pk), backup


def queued_message(primary: Gateway, destination: str, country: str, purpose: str = "transactional") -> OutboundMessage:
    return OutboundMessage.objects.create(
        gateway=primary,
        sender_id="#SHOPHK",
        destination=destination,
        country=country,
        body="Hello",
        encoding="GSM-7",
        segments=1,
        cost=Decimal("0.30"),
        purpose=purpose,
        quota_reference="",
    )


def queued(primary: Gateway) -> dict[str, OutboundMessage]:
    messages = {
        label: queued_message(primary, destination, country) for label, (destination, country) in DESTINATIONS.items()
    }
    MessagePart.objects.create(
        message=messages["hk_part_taken"], part_number=1, provider_message_id="taken-1", gateway=primary
    )
    return messages


def moved(messages: dict[str, OutboundMessage], backup: Gateway) -> set[str]:
    return {
        label
        for label, message in messages.items()
        if OutboundMessage.objects.filter(pk=message.pk, gateway=backup, state=MessageState.QUEUED).exists()
    }


def by_the_rule(messages: dict[str, OutboundMessage], primary: Gateway) -> set[str]:
    eligible = set(
        OutboundMessage.objects.filter(fail_over_eligible(gateway=primary, fallback=primary.fallback)).values_list(
            "pk", flat=True
        )
    )
    return {label for label, message in messages.items() if message.pk in eligible}


def through_outcomes_record(primary: Gateway, messages: dict[str, OutboundMessage]) -> int:
    claimed = messages_claim(gateway_id=primary.pk)
    assert len(claimed) == len(messages)
    counts = outcomes_record(
        actor=SYSTEM,
        gateway=primary,
        messages=claimed,
        outcomes=[SendOutcome.temporary("link_down", "the bind is down")] * len(claimed),
    )
    return counts["failed_over"]


def through_the_bind_worker(primary: Gateway, messages: dict[str, OutboundMessage]) -> int:
    claimed = messages_claim_rows(gateway_id=primary.pk).messages
    assert len(claimed) == len(messages)
    worker = BindWorker(primary, password="unused", journal=False)
    worker.ready = deque((Job(message, [b""]), 0) for message in claimed)  # held, nothing written
    worker.open_jobs = len(claimed)
    worker._fail_over("no bind for 10s")
    return worker.stats.failed_over_messages


PATHS = {"outcomes_record": through_outcomes_record, "bind_worker": through_the_bind_worker}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("fallback", sorted(SCENARIOS))
def test_both_paths_hand_over_exactly_what_the_rule_selects(path: str, fallback: str) -> None:
    primary, backup = gateways(fallback)
    messages = queued(primary)
    expected = SCENARIOS[fallback]
    assert by_the_rule(messages, primary) == expected

    failed_over = PATHS[path](primary, messages)

    assert moved(messages, backup) == expected
    assert failed_over == len(expected)
    for label, message in messages.items():
        message.refresh_from_db()
        if label in expected:
            assert "failed over from fo-primary" in message.error_reason and message.next_attempt_at is None
        else:
            assert message.gateway_id == primary.pk  # waits for (or is retried on) its own gateway
    if path == "bind_worker" and expected:
        after: Any = AuditLog.objects.get(action="messages.fail_over").after
        assert after["ids"] == sorted(messages[label].pk for label in expected)


def test_fallback_usable() -> None:
    primary, backup = gateways("covers_hk")
    assert fallback_usable(primary) == backup
    for fallback in ("disabled", "itself", "none"):
        Gateway.objects.filter(code__in=["fo-primary", "fo-backup"]).delete()
        assert fallback_usable(gateways(fallback)[0]) is None


def test_the_bind_worker_keeps_a_message_with_a_part_written_and_what_the_fallback_may_not_take() -> None:
    """What the worker holds and may not hand over stays held, for the bind to come back; a part
    written on the link (not recorded yet: only the worker knows) keeps its message here."""
    primary, backup = gateways("covers_hk")
    messages = queued(primary)
    MessagePart.objects.all().delete()  # no part recorded: the second HK message has one written
    claimed = {m.destination: m for m in messages_claim_rows(gateway_id=primary.pk).messages}
    jobs = {label: Job(claimed[destination], [b"", b""]) for label, (destination, _c) in DESTINATIONS.items()}
    jobs["hk_part_taken"].written.add(0)
    worker = BindWorker(primary, password="unused", journal=False)
    worker.ready = deque(
        [(jobs["hk"], 0), (jobs["hk"], 1), (jobs["mo"], 0), (jobs["mo"], 1), (jobs["hk_part_taken"], 1)]
    )
    worker.open_jobs = len(jobs)

    assert worker._fail_over("no bind for 10s") == 1

    assert moved(messages, backup) == {"hk"}
    assert {job.message.destination for job, _index in worker.ready} == {
        DESTINATIONS["mo"][0],
        DESTINATIONS["hk_part_taken"][0],
    }
    assert worker.open_jobs == 2 and jobs["hk"].done and not jobs["mo"].done


def test_the_bind_worker_claims_due_messages_for_the_fallback_when_it_holds_none() -> None:
    primary, backup = gateways("covers_hk")
    messages = queued(primary)
    worker = BindWorker(primary, password="unused", journal=False)

    assert worker._fail_over("no bind for 10s") == 1

    assert moved(messages, backup) == {"hk"}
    # Not covered by the fallback: never claimed. A part taken: claimed for the fallback, refused
    # by the rule, and back in the queue untouched (its attempt not counted).
    mo, taken = messages["mo"], messages["hk_part_taken"]
    mo.refresh_from_db()
    taken.refresh_from_db()
    assert (mo.state, mo.attempts, mo.gateway_id) == (MessageState.QUEUED, 0, primary.pk)
    assert (taken.state, taken.attempts, taken.gateway_id) == (MessageState.QUEUED, 0, primary.pk)
    assert worker.open_jobs == 0


def test_a_lane_hands_the_fallback_only_its_own_messages() -> None:
    """A gateway split in lanes: the priority worker's bind being down moves its codes and
    notices, not the campaign (the bulk worker's bind may be up), and the other way round."""
    primary, backup = gateways("covers_hk")
    messages = queued(primary)  # transactional: the priority lane
    campaign = queued_message(primary, "+85261234000", "HK", purpose="marketing")

    assert BindWorker(primary, password="unused", journal=False, lane="priority")._fail_over("down") == 1
    assert moved(messages, backup) == {"hk"}
    assert OutboundMessage.objects.get(pk=campaign.pk).gateway_id == primary.pk

    assert BindWorker(primary, password="unused", journal=False, lane="bulk")._fail_over("down") == 1
    assert OutboundMessage.objects.get(pk=campaign.pk).gateway_id == backup.pk
