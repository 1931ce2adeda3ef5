"""Every send path obeys the suppression list and the content rules (issue 14, item 1).

The admin test SMS, a transactional message and anything claimed later are refused for an
opted-out number; OTP and the answer to a person's own STOP/START are the two exceptions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from compliance.models import OptOut, OptOutReason
from gateways.adapters.base import InboundEvent
from gateways.delivery.claim import messages_claim
from gateways.delivery.inbound import inbound_receive
from gateways.delivery.queue import gateway_test_sms, message_queue, messages_submit
from gateways.models import Gateway, GatewayRate, MessagePurpose, MessageState, OutboundMessage, Provider
from gateways.quotas import account_instance
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from tests.support.actors import actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
SYSTEM = Actor.system("test")
PHONE = "+85291234567"


@pytest.fixture
def sim(db: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code="sim-hk", name="Sim", provider=Provider.SIMULATOR, countries=["HK"], settings={"receipt_latency_ms": 0}
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    return gateway


def opt_out(phone: str = PHONE, reason: str = OptOutReason.STOP) -> OptOut:
    return OptOut.objects.create(phone=phone, reason=reason, source="test", actor_channel="system")


def queue(purpose: str, body: str = "Your parcel is on its way", destination: str = PHONE) -> OutboundMessage:
    with transaction.atomic():
        return message_queue(
            actor=SYSTEM,
            gateway_code="sim-hk",
            sender_id="#SHOPHK",
            destination=destination,
            body=body,
            purpose=purpose,
        )


@pytest.mark.parametrize("reason", [OptOutReason.STOP, OptOutReason.BLOCKED, OptOutReason.COMPLAINT, "invalid"])
def test_the_test_sms_refuses_an_opted_out_number(sim: Gateway, make_user: Any, reason: str) -> None:
    opt_out(reason=reason)
    with pytest.raises(ApplicationError) as err:
        gateway_test_sms(
            actor=actor(make_user("operations")),
            gateway_code="sim-hk",
            destination="9123 4567",  # the same number, written locally
            body="Gateway check",
            sender_id="#SHOPHK",
        )
    assert (err.value.code, err.value.field) == ("destination_opted_out", "destination")
    assert "+852****4567" in err.value.message and PHONE not in err.value.message
    assert not OutboundMessage.objects.exists() and not AuditLog.objects.filter(action="gateway.test_sms").exists()


def test_a_lifted_opt_out_no_longer_blocks_the_test_sms(sim: Gateway, make_user: Any) -> None:
    lifted = opt_out()
    OptOut.objects.filter(pk=lifted.pk).update(lifted_at=lifted.occurred_at)
    message = gateway_test_sms(
        actor=actor(make_user("operations")), gateway_code="sim-hk", destination=PHONE, body="Ping", sender_id="#SHOPHK"
    )
    assert message.purpose == MessagePurpose.TEST


@pytest.mark.parametrize(
    "body",
    [
        "Flash SALE today, see https://evil.example/shop",
        "Visit www.example.com now",
        "Gateway check shop.example.com/x",
        "全場八折優惠",
        "50% off everything",
        "Ｓａｌｅ ends soon",  # full-width letters are normalised first
    ],
)
def test_the_test_sms_carries_no_promotion(sim: Gateway, make_user: Any, body: str) -> None:
    with pytest.raises(ApplicationError) as err:
        gateway_test_sms(
            actor=actor(make_user("operations")),
            gateway_code="sim-hk",
            destination=PHONE,
            body=body,
            sender_id="#SHOPHK",
        )
    assert (err.value.code, err.value.field) == ("body_promotional", "body")
    assert not OutboundMessage.objects.exists()


def test_the_admin_form_shows_the_refusal_on_its_fields(sim: Gateway, make_user: Any) -> None:
    opt_out()
    client = Client()
    client.force_login(make_user("operations"))
    url = reverse("admin:gateways_gateway_test_sms", args=[sim.pk])
    response = client.post(url, {"destination": PHONE, "sender_id": "#SHOPHK", "body": "Ping"})
    assert response.status_code == 200
    assert "suppression list" in str(response.context["form"].errors["destination"])
    response = client.post(url, {"destination": "+85291234568", "sender_id": "#SHOPHK", "body": "Big sale www.x.com"})
    assert response.status_code == 200
    assert "no promotion" in str(response.context["form"].errors["body"])
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize("purpose", [MessagePurpose.TRANSACTIONAL, MessagePurpose.MARKETING, MessagePurpose.TEST])
def test_every_purpose_but_otp_is_refused_at_queue_time(sim: Gateway, purpose: str) -> None:
    opt_out()
    with pytest.raises(ApplicationError) as err:
        queue(purpose)
    assert err.value.code == "destination_opted_out"
    assert not OutboundMessage.objects.exists()


def test_otp_is_the_exception_but_carries_no_promotion(sim: Gateway) -> None:
    opt_out()
    message = queue(MessagePurpose.OTP, body="Your code is 123456")
    assert message.state == MessageState.QUEUED
    with pytest.raises(ApplicationError) as err:
        queue(MessagePurpose.OTP, body="Your code is 123456. 20% off at https://shop.example")
    assert err.value.code == "body_promotional"


@pytest.mark.parametrize("purpose", [MessagePurpose.TRANSACTIONAL, MessagePurpose.TEST])
def test_an_opt_out_after_queueing_wins_at_claim_time(sim: Gateway, purpose: str) -> None:
    message = queue(purpose)
    opt_out()
    assert messages_claim(gateway_id=sim.pk) == []
    message.refresh_from_db()
    assert (message.state, message.error_code) == (MessageState.FAILED, "suppressed")


def test_otp_queued_before_an_opt_out_is_still_sent(sim: Gateway) -> None:
    message = queue(MessagePurpose.OTP, body="Your code is 123456")
    opt_out()
    assert [m.pk for m in messages_claim(gateway_id=sim.pk)] == [message.pk]


def test_the_answer_to_a_stop_still_reaches_the_number_that_just_opted_out(
    sim: Gateway, django_capture_on_commit_callbacks: Any
) -> None:
    Gateway.objects.exclude(pk=sim.pk).update(enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        [inbound] = inbound_receive(
            gateway=sim,
            events=[InboundEvent(source=PHONE, destination="#SHOPHK", body="STOP", provider_message_id="a")],
        )
    outcome: Any = (inbound.handler_result or {})["inbound_keyword_handler"]
    assert outcome["reply_sms"]["queued"] is True, outcome
    reply = OutboundMessage.objects.get(pk=outcome["reply_sms"]["message_id"])
    messages_submit(actor=SYSTEM, gateway_id=sim.pk)
    reply.refresh_from_db()
    assert reply.state != MessageState.FAILED and reply.error_code != "suppressed"


@pytest.mark.parametrize(("purpose", "withdrawn"), [(MessagePurpose.TEST, 1), (MessagePurpose.OTP, 0)])
def test_an_opt_out_after_the_claim_withdraws_a_test_sms_not_yet_sent(
    sim: Gateway, purpose: str, withdrawn: int
) -> None:
    from gateways.delivery.claim import messages_suppress_claimed

    message = queue(purpose, body="Your code is 123456")
    [claimed] = messages_claim(gateway_id=sim.pk)
    stop = opt_out()
    assert messages_suppress_claimed(actor=SYSTEM, suppressions=[(claimed.pk, stop.pk, "stop", "test")]) == withdrawn
    message.refresh_from_db()
    assert (message.state == MessageState.FAILED) is bool(withdrawn)
