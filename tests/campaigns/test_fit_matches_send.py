"""copy.fit_preview counts a campaign's {{link}} as the message is really sent."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import TestCase

from campaigns.dispatch import batches_advance
from campaigns.services import campaign_create_draft, campaign_send_approved
from gateways.models import OutboundMessage
from templates.copy_fit import copy_fit_preview
from tests.support.campaigns import TEXT, act, draft_data, key

pytestmark = pytest.mark.django_db


def test_the_fit_preview_counts_the_characters_each_recipient_gets(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    landing = "https://shop.example.com/spring?utm_source=sms&utm_medium=sms&utm_campaign=spring"
    fit = copy_fit_preview(text=TEXT, brand="ShopHK", variables={"link": landing}, per_recipient_links=True)
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    with TestCase.captureOnCommitCallbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,
            idempotency_key=key(),
        )
    batches_advance(budget_seconds=5)
    bodies = list(
        OutboundMessage.objects.filter(batch__campaign_id=draft["campaign_id"]).values_list("body", "segments")
    )
    assert bodies
    for body, segments in bodies:
        assert len(body) == fit["given"]["characters"] == fit["longest"]["characters"], (body, fit["given"]["text"])
        assert segments == fit["given"]["segments"]
