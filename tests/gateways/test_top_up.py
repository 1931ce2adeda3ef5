"""account_top_up: permission, idempotency key, audit; and the admin page that calls it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.roles import Role
from gateways.models import Account
from gateways.quotas import account_instance, account_top_up
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog

pytestmark = pytest.mark.django_db


def _actor(user: Any) -> Actor:
    return Actor(user=user, channel=Channel.API)


def _balance() -> Decimal:
    return Account.objects.get(pk=account_instance().pk).balance


def test_operations_tops_up_once_per_key_and_it_is_audited(make_user: Any) -> None:
    operator = make_user(Role.OPERATIONS)
    start = _balance()
    args: dict[str, Any] = {
        "actor": _actor(operator),
        "amount": Decimal("250"),
        "reason": "invoice 42",
        "idempotency_key": "top-up-0001",
    }
    first = account_top_up(**args)
    assert Decimal(first["balance"]) == start + 250 and Decimal(first["balance_before"]) == start
    assert account_top_up(**args) == first  # a retry replays; nothing is added twice
    assert _balance() == start + 250
    entry = AuditLog.objects.get(action="account.top_up")
    assert entry.user_id == operator.pk and entry.reason == "invoice 42" and entry.idempotency_key == "top-up-0001"
    assert entry.before == {"balance": str(start)} and entry.after == {"balance": first["balance"]}
    with pytest.raises(ApplicationError) as err:
        account_top_up(**{**args, "amount": Decimal("1")})
    assert err.value.code == "idempotency_key_reused"
    assert _balance() == start + 250


def test_top_up_needs_the_permission_a_key_and_a_positive_amount(make_user: Any) -> None:
    start = _balance()
    with pytest.raises(ApplicationError) as err:
        account_top_up(
            actor=_actor(make_user(Role.MARKETING)), amount=Decimal("5"), reason="", idempotency_key="top-up-0002"
        )
    assert err.value.code == "permission_denied" and "gateways.change_account" in err.value.message
    operator = _actor(make_user(Role.OPERATIONS))
    with pytest.raises(ApplicationError) as err:
        account_top_up(actor=operator, amount=Decimal("5"), reason="", idempotency_key=None)
    assert err.value.code == "idempotency_key_required"
    with pytest.raises(ApplicationError) as err:
        account_top_up(actor=operator, amount=Decimal("0"), reason="", idempotency_key="top-up-0003")
    assert (err.value.code, err.value.field) == ("invalid_argument", "amount")
    assert _balance() == start and not AuditLog.objects.filter(action="account.top_up").exists()


def test_admin_top_up_page(make_user: Any) -> None:
    start = _balance()
    url = reverse("admin:gateways_account_top_up")
    client = Client()
    client.force_login(make_user(Role.OPERATIONS))
    page = client.get(url)
    assert page.status_code == 200
    key = page.context["form"].initial["idempotency_key"]
    body = {"amount": "100", "reason": "invoice 7", "idempotency_key": key}
    assert client.post(url, body).status_code == 302
    assert client.post(url, body).status_code == 302  # a double submit replays
    assert _balance() == start + 100
    assert AuditLog.objects.get(action="account.top_up").channel == "admin"
    assert "Top up" in client.get(reverse("admin:gateways_account_changelist")).content.decode()

    marketer = Client()
    marketer.force_login(make_user(Role.MARKETING))
    assert marketer.post(url, body | {"idempotency_key": "admin-top-up-other"}).status_code == 302
    assert _balance() == start + 100
