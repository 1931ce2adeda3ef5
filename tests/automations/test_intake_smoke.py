from __future__ import annotations

from typing import Any

import pytest

from campaigns.automations.models import CommerceEvent
from tests.automations.conftest import event

pytestmark = pytest.mark.django_db


def test_one_event(post: Any, contact: Any) -> None:
    response = post({"events": [event()]})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["accepted"] == 1, body
    assert CommerceEvent.objects.get().contact_id == contact.pk
