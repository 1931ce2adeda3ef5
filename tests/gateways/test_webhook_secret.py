"""Webhook signing has its own secret per gateway, never Django's SECRET_KEY (issue 14, item 3):
with the key unset nobody can forge Kannel's STOP/START or receipt callbacks; the secret is made
on creation and rotatable, the old one accepted 48 h more."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from compliance.optouts import phone_is_suppressed
from gateways.adapters.kannel import KannelAdapter, callback_token, provider_id
from gateways.models import Gateway, InboundMessage
from gateways.services import gateway_webhook_secret_rotate
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from tests.gateways.test_kannel import CODE, PASSWORD, PASSWORD_ENV, FakeKannel, make_gateway, sms
from tests.support.actors import actor

pytestmark = pytest.mark.django_db
PUBLIC_DEFAULT_KEY = django_settings.DEFAULT_SECRET_KEY


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    # No dlr_secret environment variable: the gateway's own secret signs.
    gateway = make_gateway()
    Gateway.objects.filter(pk=gateway.pk).update(credentials_env={"password": PASSWORD_ENV})
    gateway.refresh_from_db()
    return gateway


def _stop(client: Client, token: str) -> int:
    query = f"from=85291234567&to=12345&text=STOP&charset=UTF-8&coding=0&id=mo-{token[:8]}&token={token}"
    return int(client.get(f"/hooks/{CODE}/inbound?{query}").status_code)


def test_each_gateway_gets_its_own_secret_on_creation(gateway: Gateway) -> None:
    other = make_gateway(code="kannel-two")
    assert len(gateway.webhook_secret) >= 40 and gateway.webhook_secret != other.webhook_secret
    assert gateway.webhook_secret not in (django_settings.SECRET_KEY, PUBLIC_DEFAULT_KEY)


def test_dlr_url_is_signed_with_the_gateway_secret(gateway: Gateway) -> None:
    fake = FakeKannel()
    KannelAdapter(gateway, client=fake.client()).send([sms()])
    token = parse_qs(urlsplit(fake.params()["dlr-url"]).query)["token"][0]
    assert token == callback_token(gateway.webhook_secret, "kannel-41")
    assert token not in {callback_token(k, "kannel-41") for k in (django_settings.SECRET_KEY, PUBLIC_DEFAULT_KEY)}


@pytest.mark.parametrize("key", ["secret_key", "public_default"])
def test_a_stop_forged_with_the_django_key_is_refused(gateway: Gateway, client: Client, key: str) -> None:
    secret = django_settings.SECRET_KEY if key == "secret_key" else PUBLIC_DEFAULT_KEY
    assert _stop(client, callback_token(secret, f"kannel-inbound:{CODE}")) == 403
    assert not InboundMessage.objects.exists() and not phone_is_suppressed("+85291234567")


def test_a_receipt_forged_with_the_django_key_is_refused(gateway: Gateway, client: Client) -> None:
    token = callback_token(PUBLIC_DEFAULT_KEY, provider_id(41))
    assert client.get(f"/hooks/{CODE}/receipts?msg=41&status=1&token={token}").status_code == 403


def test_the_real_token_works(gateway: Gateway, client: Client) -> None:
    assert _stop(client, callback_token(gateway.webhook_secret, f"kannel-inbound:{CODE}")) == 200
    assert phone_is_suppressed("+85291234567")


def test_rotation(gateway: Gateway, client: Client, make_user: Any) -> None:
    old = gateway.webhook_secret
    with pytest.raises(ApplicationError) as denied:
        gateway_webhook_secret_rotate(actor=actor(make_user("marketing")), gateway_id=gateway.pk)
    assert denied.value.code == "permission_denied"
    gateway_webhook_secret_rotate(actor=actor(make_user("technical")), gateway_id=gateway.pk)
    gateway.refresh_from_db()
    assert gateway.webhook_secret != old and gateway.webhook_secret_previous == old
    audit: Any = AuditLog.objects.get(action="gateway.webhook_secret_rotate")
    assert old not in str(audit.after) and gateway.webhook_secret not in str(audit.after)
    # New URLs carry the new secret; the old ones still work during the grace period...
    assert (
        KannelAdapter(gateway).inbound_url().endswith(callback_token(gateway.webhook_secret, f"kannel-inbound:{CODE}"))
    )
    old_token = callback_token(old, f"kannel-inbound:{CODE}")
    assert _stop(client, old_token) == 200
    # ... and not after it.
    Gateway.objects.filter(pk=gateway.pk).update(webhook_secret_rotated_at=timezone.now() - timedelta(hours=49))
    assert _stop(client, old_token) == 403


def test_rotation_from_the_admin(gateway: Gateway, client: Client, make_user: Any) -> None:
    client.force_login(make_user("technical"))
    old = gateway.webhook_secret
    page = client.get(f"/admin/gateways/gateway/{gateway.pk}/change/").content.decode()
    assert "Kannel get-url" in page and callback_token(old, f"kannel-inbound:{CODE}") in page
    assert old not in page  # the secret itself is never shown
    response = client.post(
        "/admin/gateways/gateway/", {"action": "rotate_webhook_secret", "_selected_action": [str(gateway.pk)]}
    )
    assert response.status_code == 302
    gateway.refresh_from_db()
    assert gateway.webhook_secret != old
