"""Admin lists name the currency of every amount they show."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.campaigns.test_admin import sent

pytestmark = pytest.mark.django_db


def test_message_and_reservation_lists_show_amounts_with_currency(
    world: dict[str, Any], marketer: Any, approver_user: Any, make_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sent(world, marketer, approver_user, django_capture_on_commit_callbacks)
    client = Client()
    client.force_login(make_user(superuser=True))
    messages = client.get(reverse("admin:gateways_outboundmessage_changelist")).content.decode()
    assert '<td class="field-cost_text">0.7000 HKD</td>' in messages  # 2 parts x 0.35
    reservations = client.get(reverse("admin:gateways_quotareservation_changelist")).content.decode()
    assert '<td class="field-amount_text">2.8000 HKD</td>' in reservations
