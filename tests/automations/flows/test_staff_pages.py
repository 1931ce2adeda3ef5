"""The automations pages of the staff app through Django's test client (SQLite and PostgreSQL):
the list and detail with the funnel, the dry run (masked, writes nothing), and activation through
the page -- refused without a frequency limit with the error next to the limit, executed otherwise."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from campaigns.automations.flow_models import Enrolment, FlowState
from compliance.roles import Role
from tests.automations.flows.conftest import event, flow_row

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(html: str) -> dict[str, str]:
    form = html.split('id="state-form"', 1)[1]
    return {
        "key": re.search(r'name="key" value="([^"]+)"', form).group(1),  # type: ignore[union-attr]
        "token": re.search(r'name="token" value="([^"]+)"', form).group(1),  # type: ignore[union-attr]
    }


def test_list_and_detail_show_the_rules_and_the_funnel(world: dict[str, Any], marketer: Any) -> None:
    flow = flow_row(world, name="Shipped notice", steps=[{"kind": "wait", "minutes": 30}, {"kind": "send"}])
    client = logged_in(marketer)
    html = client.get("/app/automations/").content.decode()
    assert 'id="flows"' in html and "Shipped notice" in html and "3 per 24 h" in html
    detail = client.get(f"/app/automations/{flow.pk}/").content.decode()
    assert 'id="funnel"' in detail and "0: wait 30 min" in detail and "1: send" in detail
    assert client.get("/app/automations/999999/").status_code == 404


def test_the_dry_run_masks_phones_and_writes_nothing(world: dict[str, Any], marketer: Any) -> None:
    flow = flow_row(world)
    contact = world["contacts"][0]
    event(world, contact, "order_shipped", order_ref="A-1")
    client = logged_in(marketer)
    part = client.get(f"/app/automations/{flow.pk}/dry-run/", {"days": "7"}, headers={"HX-Request": "true"})
    html = part.content.decode()
    assert part.status_code == 200 and "<html" not in html
    assert re.search(r'class="would-enter">1<', html)
    assert contact.phone not in html and "****" in html
    assert not Enrolment.objects.filter(flow=flow).exists()
    bad = client.get(f"/app/automations/{flow.pk}/dry-run/", {"days": "500"})
    assert bad.status_code == 400 and 'data-code="validation_error"' in bad.content.decode()


def test_activation_without_a_frequency_limit_is_refused_next_to_the_limit(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = flow_row(world, max_per_period=None)
    client = logged_in(approver_user)
    form = _form(client.get(f"/app/automations/{flow.pk}/").content.decode())
    response = client.post(f"/app/automations/{flow.pk}/state/", {**form, "operation": "activate", "reason": "go"})
    assert response.status_code == 400
    html = response.content.decode()
    limit = html.split('id="frequency-limit"', 1)[1].split("</dd>", 1)[0]
    assert 'data-code="flow_frequency_required"' in limit
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.version == 1


def test_activate_then_pause_through_the_page(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    form = _form(client.get(f"/app/automations/{flow.pk}/").content.decode())
    response = client.post(
        f"/app/automations/{flow.pk}/state/", {**form, "operation": "activate", "reason": "go", "confirm": "on"}
    )
    assert response.status_code == 200, response.content.decode()[:3000]
    flow.refresh_from_db()
    assert flow.state == FlowState.ACTIVE and flow.updated_by == approver_user
    # The same key again does the write once; a stale token is refused.
    again = client.post(
        f"/app/automations/{flow.pk}/state/", {**form, "operation": "activate", "reason": "go", "confirm": "on"}
    )
    assert again.status_code == 200
    flow.refresh_from_db()
    assert flow.version == 2
    form = _form(client.get(f"/app/automations/{flow.pk}/").content.decode())
    assert client.post(f"/app/automations/{flow.pk}/state/", {**form, "operation": "pause"}).status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.PAUSED
    stale = client.post(f"/app/automations/{flow.pk}/state/", {**form, "key": "other-key-1", "operation": "activate"})
    assert stale.status_code == 400
    assert 'data-code="stale_version_token"' in stale.content.decode().split('id="operation-errors"', 1)[1]


def test_a_role_without_flow_permissions_is_refused(world: dict[str, Any], make_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(make_user(Role.TECHNICAL, username="flowtech"))
    assert client.get("/app/automations/").status_code == 403
    response = client.post(f"/app/automations/{flow.pk}/state/", {"operation": "activate"})
    assert response.status_code == 403
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT
