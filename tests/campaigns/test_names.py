"""Campaign names refuse bidi overrides and zero-width characters, on the service and REST."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.models import Campaign
from campaigns.services import campaign_create_draft
from smsplatform.kernel.errors import ApplicationError
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("char", ["\u202e", "\u2067", "\u200d", "\x00"])
def test_campaign_name(world: dict[str, Any], marketer: Any, char: str) -> None:
    with pytest.raises(ApplicationError) as err:
        campaign_create_draft(
            actor=act(marketer), data=draft_data(world, name=f"Sale{char}2026"), idempotency_key=key()
        )
    assert (err.value.code, err.value.field) == ("control_character", "name")
    assert not Campaign.objects.exists()
