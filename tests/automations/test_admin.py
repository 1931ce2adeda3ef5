"""The admin of the events intake: sources are created with a generated secret (shown once, then
only to holders of view_event_source_secret), rotated by an action; events are read-only with
masked phones and filters."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.automations.services import event_source_create, event_source_secret_get
from compliance.roles import Role
from contacts.models import Contact
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog
from tests.automations.conftest import event
from tests.support.actors import actor

pytestmark = pytest.mark.django_db


def test_create_from_the_admin_shows_the_secret_once(client: Client, make_user: Any) -> None:
    user = make_user(Role.TECHNICAL)
    client.force_login(user)
    response = client.post(
        "/admin/automations/eventsource/add/", {"code": "shop-hk", "name": "Shop HK", "enabled": "on"}, follow=True
    )
    assert response.status_code == 200
    source = EventSource.objects.get(code="shop-hk")
    assert source.created_by == user and len(source.secret) >= 40
    assert source.secret in response.content.decode()
    audit = AuditLog.objects.get(action="event_source.create")
    assert source.secret not in str(audit.after) and audit.user_id == user.pk


def test_the_secret_is_shown_only_with_the_permission(client: Client, make_user: Any) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    reader = make_user()
    reader.user_permissions.add(Permission.objects.get(codename="view_eventsource"))
    client.force_login(reader)
    page = client.get(f"/admin/automations/eventsource/{source.pk}/change/").content.decode()
    assert page.count(source.secret) == 0 and "hidden" in page
    client.force_login(make_user(Role.TECHNICAL))
    page = client.get(f"/admin/automations/eventsource/{source.pk}/change/").content.decode()
    assert source.secret in page


def test_secret_read_needs_the_permission(make_user: Any) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    with pytest.raises(ApplicationError) as raised:
        event_source_secret_get(actor=actor(make_user(Role.MARKETING)), source_id=source.pk)
    assert raised.value.code == "permission_denied"
    assert event_source_secret_get(actor=actor(make_user(Role.TECHNICAL)), source_id=source.pk) == source.secret


def test_create_needs_the_permission_and_a_valid_unique_code(make_user: Any) -> None:
    with pytest.raises(ApplicationError) as raised:
        event_source_create(actor=actor(make_user(Role.MARKETING)), code="shop", name="Shop")
    assert raised.value.code == "permission_denied"
    tech = actor(make_user(Role.TECHNICAL))
    for bad in ["", "has space", "x" * 65, "café"]:
        with pytest.raises(ApplicationError):
            event_source_create(actor=tech, code=bad, name="Shop")
    event_source_create(actor=tech, code="shop", name="Shop")
    with pytest.raises(ApplicationError) as raised:
        event_source_create(actor=tech, code="shop", name="Again")
    assert raised.value.field == "code"


def test_rotation_from_the_admin(client: Client, make_user: Any) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    old = source.secret
    client.force_login(make_user(Role.TECHNICAL))
    response = client.post(
        "/admin/automations/eventsource/",
        {"action": "rotate_secret", "_selected_action": [str(source.pk)]},
        follow=True,
    )
    source.refresh_from_db()
    assert source.secret != old and source.secret_previous == old and source.secret_rotated_at
    assert source.secret in response.content.decode()
    audit = AuditLog.objects.get(action="event_source.secret_rotate")
    assert old not in str(audit.after) and source.secret not in str(audit.after)


def test_rotation_is_refused_without_the_permission(client: Client, make_user: Any) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    old = source.secret
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="view_eventsource"))
    client.force_login(user)
    client.post("/admin/automations/eventsource/", {"action": "rotate_secret", "_selected_action": [str(source.pk)]})
    source.refresh_from_db()
    assert source.secret == old


def test_sources_cannot_be_deleted(client: Client, make_user: Any) -> None:
    source = EventSource.objects.create(code="shop", name="Shop")
    client.force_login(make_user(superuser=True))
    assert client.get(f"/admin/automations/eventsource/{source.pk}/delete/").status_code == 403


def test_events_list_masks_phones_and_filters(client: Client, make_user: Any, post: Any, contact: Contact) -> None:
    post(
        {
            "events": [
                event(),
                event(event_id="v", type="product_viewed", order_id=None, amount=None, currency=None),
            ]
        }
    )
    client.force_login(make_user(Role.CRM))
    page = client.get("/admin/automations/commerceevent/").content.decode()
    assert "+852****4567" in page and "91234567" not in page
    filtered = client.get("/admin/automations/commerceevent/?type__exact=product_viewed").content.decode()
    assert "Product viewed" in filtered and "ORD-1" not in filtered
    stored = CommerceEvent.objects.get(event_id="e-1")
    detail = client.get(f"/admin/automations/commerceevent/{stored.pk}/change/").content.decode()
    assert "91234567" not in detail and "+852****4567" in detail


def test_events_are_read_only_in_the_admin(client: Client, make_user: Any, post: Any, contact: Contact) -> None:
    post({"events": [event()]})
    stored = CommerceEvent.objects.get()
    client.force_login(make_user(superuser=True))
    assert client.get("/admin/automations/commerceevent/add/").status_code == 403
    assert client.get(f"/admin/automations/commerceevent/{stored.pk}/delete/").status_code == 403
    client.post(f"/admin/automations/commerceevent/{stored.pk}/change/", {"amount": "1.00"})
    stored.refresh_from_db()
    assert str(stored.amount) == "120.50"
