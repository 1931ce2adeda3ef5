"""The action request page: a config change is a diff of the changed keys; other actions are readable rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.models import ActionRequest
from compliance.presenters import config_changes_diff
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from tests.support.actors import actor

pytestmark = pytest.mark.django_db


def page(user: Any, request_id: int) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("admin:compliance_actionrequest_change", args=[request_id]))
    assert response.status_code == 200
    return str(response.content.decode())


def test_diff_lists_only_the_changed_keys() -> None:
    before = {"schedule": {"quiet_hours": {"HK": {"start": "21:00", "end": "09:00"}}, "min_lead_minutes": 5}}
    after = {"schedule": {"quiet_hours": {"HK": {"start": "22:00", "end": "09:00"}}, "min_lead_minutes": 5}}
    assert config_changes_diff(before, after) == [
        {"setting": "schedule.quiet_hours.HK.start", "before": "21:00", "after": "22:00"}
    ]


def test_config_request_page_shows_a_diff_not_the_whole_section(
    approver: Any, technical: Any, config_policy: Any
) -> None:
    current = platform_config_get()
    schedule = current["config"]["schedule"]
    held = platform_config_update(
        actor=actor(technical),
        changes={"schedule": {**schedule, "min_lead_minutes": schedule["min_lead_minutes"] + 10}},
        base_version_token=current["base_version_token"],
        idempotency_key="page-config-0001",
    )
    html = page(approver, held["action_request_id"])
    assert "Change 1 setting of configuration version" in html
    assert "<code>schedule.min_lead_minutes</code>" in html
    assert "schedule.quiet_hours" not in html  # unchanged keys are not listed
    assert 'id="decision"' in html


def test_an_action_without_a_presenter_is_shown_as_readable_rows(approver: Any, technical: Any) -> None:
    request = ActionRequest.objects.create(
        action="sender_id.apply",
        payload={"value": "#SHOP", "regions": ["HK"], "base_version_token": "x"},
        facts={"overwrites_existing": False},
        summary="Apply for #SHOP",
        required_role=approver.groups.get(),
        requested_by=technical,
        channel="api",
        expires_at="2999-01-01T00:00:00Z",
    )
    html = page(approver, request.pk)
    assert '<th scope="row">value</th><td>#SHOP</td>' in html
    assert '<th scope="row">regions</th><td>HK</td>' in html
    assert '<th scope="row">overwrites existing</th><td>no</td>' in html
