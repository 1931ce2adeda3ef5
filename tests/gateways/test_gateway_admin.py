"""The operators' admin: send a test SMS through a gateway; phone numbers masked by permission."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from gateways.models import Gateway, GatewayRate, MessageState, OutboundMessage, Provider
from gateways.quotas import account_instance

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


@pytest.fixture
def sim(db: Any) -> Gateway:
    gateway = Gateway.objects.create(code="sim-hk", name="Sim", provider=Provider.SIMULATOR, countries=["HK"])
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance = Decimal("10")
    account.save()
    return gateway


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_operator_sends_a_test_sms(sim: Gateway, make_user: Any, django_capture_on_commit_callbacks: Any) -> None:
    client = logged_in(make_user("operations"))
    url = reverse("admin:gateways_gateway_test_sms", args=[sim.pk])
    assert client.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"destination": "+85291234567", "sender_id": "#SHOPHK", "body": "Ping"})
    assert response.status_code == 302
    message = OutboundMessage.objects.get()
    assert message.state == MessageState.DELIVERED and message.purpose == "test"


def test_test_sms_errors_show_on_the_form(sim: Gateway, make_user: Any) -> None:
    client = logged_in(make_user("operations"))
    response = client.post(
        reverse("admin:gateways_gateway_test_sms", args=[sim.pk]),
        {"destination": "12", "sender_id": "#SHOPHK", "body": "Ping"},
    )
    assert response.status_code == 200
    assert "not a valid number" in str(response.context["form"].errors["destination"])
    assert not OutboundMessage.objects.exists()


def test_test_sms_needs_the_permission(sim: Gateway, marketing: Any) -> None:
    response = logged_in(marketing).post(
        reverse("admin:gateways_gateway_test_sms", args=[sim.pk]),
        {"destination": "+85291234567", "sender_id": "#SHOPHK", "body": "Ping"},
    )
    assert response.status_code in (302, 403)
    assert not OutboundMessage.objects.exists()


def test_destination_masked_unless_permitted(
    sim: Gateway, make_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        logged_in(make_user("operations")).post(
            reverse("admin:gateways_gateway_test_sms", args=[sim.pk]),
            {"destination": "+85291234567", "sender_id": "#SHOPHK", "body": "Ping"},
        )
    message = OutboundMessage.objects.get()
    url = reverse("admin:gateways_outboundmessage_change", args=[message.pk])
    operator_page = logged_in(make_user("operations")).get(url).content.decode()
    assert "+852****4567" in operator_page and "+85291234567" not in operator_page
    crm_page = logged_in(make_user("crm", superuser=True)).get(url).content.decode()
    assert "+85291234567" in crm_page


def test_the_gateway_list_shows_each_smpp_bind(make_user: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from gateways.models import BindState, BindWorkerStatus

    down = Gateway.objects.create(code="smpp-down", name="Down", provider=Provider.SMPP, countries=["HK"])
    idle = Gateway.objects.create(code="smpp-idle", name="Idle", provider=Provider.SMPP, countries=["HK"])
    now = timezone.now()
    BindWorkerStatus.objects.create(
        gateway=down,
        owner="host:1:ab",
        host="host",
        pid=1,
        state=BindState.DOWN,
        state_since=now - timedelta(minutes=3),
        heartbeat_at=now,
        started_at=now - timedelta(hours=1),
        last_error="bind failed: Connection refused",
        failing_over_to="smpp-backup",
    )
    page = logged_in(make_user(superuser=True)).get(reverse("admin:gateways_gateway_changelist"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "DOWN since" in html and "failing over to smpp-backup" in html and "Connection refused" in html
    assert "no worker running" in html and idle.code in html


def test_operators_see_the_delivery_quarantine_and_cannot_change_it(sim: Gateway, make_user: Any) -> None:
    from gateways.delivery.quarantine import QuarantineItem, delivery_quarantine
    from gateways.models import DeliveryQuarantine, QuarantineKind
    from smsplatform.kernel.actor import Actor

    delivery_quarantine(
        actor=Actor.system("test"),
        gateway=sim,
        items=[QuarantineItem(QuarantineKind.RECEIPT, {"raw": {"text": "id:7f text:\x00H"}}, provider_message_id="7f")],
        reason='unsupported Unicode escape sequence "\\u0000"',
    )
    row = DeliveryQuarantine.objects.get()
    assert row.payload == {"raw": {"text": "id:7f text:\\x00H"}}  # stored, its NUL escaped
    client = logged_in(make_user(superuser=True))
    page = client.get(reverse("admin:gateways_deliveryquarantine_changelist"))
    assert page.status_code == 200 and "7f" in page.content.decode() and "unsupported Unicode" in page.content.decode()
    assert client.get(reverse("admin:gateways_deliveryquarantine_add")).status_code == 403
    delete = client.post(reverse("admin:gateways_deliveryquarantine_delete", args=[row.pk]), {"post": "yes"})
    assert delete.status_code == 403 and DeliveryQuarantine.objects.filter(pk=row.pk).exists()
