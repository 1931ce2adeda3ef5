"""A short link serves one campaign: a draft naming another campaign's link is refused at
create and at update (service, MCP, REST), never first at the send."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from campaigns.models import Campaign
from campaigns.services import campaign_create_draft, campaign_update
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.server import run_tool
from templates.models import ShortLink
from tests.support.campaigns import act, draft_data, fresh_short_link, key
from tests.support.mcp import tool_answer

pytestmark = pytest.mark.django_db


def _mcp(user: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(f"sms_marketing.{name}", args, SimpleNamespace(user=user, auth=None))
    return tool_answer(result)


def _free_link(marketer: Any) -> int:
    return fresh_short_link(marketer)


def _first(world: dict[str, Any], marketer: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())
    return dict(out["result"])


def test_create_refuses_a_link_owned_by_another_campaign_on_every_interface(
    world: dict[str, Any], marketer: Any, api_for: Any
) -> None:
    first = _first(world, marketer)
    assert ShortLink.objects.get(pk=world["short_link_id"]).campaign_id == first["campaign_id"]
    with pytest.raises(ApplicationError) as err:
        campaign_create_draft(actor=act(marketer), data=draft_data(world, name="Copy"), idempotency_key=key())
    assert (err.value.code, err.value.field) == ("short_link_in_use", "short_link_id")
    assert f"campaign {first['campaign_id']}" in err.value.message and "short_links.create" in (err.value.hint or "")

    answer = _mcp(marketer, "campaigns.create_draft", {**draft_data(world, name="Copy"), "idempotency_key": key()})
    assert answer["error"]["code"] == "short_link_in_use" and answer["error"]["field"] == "short_link_id"

    response = api_for(marketer).post(
        "/api/v1/campaigns/", {**draft_data(world, name="Copy"), "idempotency_key": key()}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["field"] == "short_link_id"
    assert Campaign.objects.count() == 1


def test_update_refuses_another_campaigns_link_and_claims_a_free_one(
    world: dict[str, Any], marketer: Any, api_for: Any
) -> None:
    first = _first(world, marketer)
    other_link = _free_link(marketer)
    second = campaign_create_draft(
        actor=act(marketer), data=draft_data(world, name="Second", short_link_id=other_link), idempotency_key=key()
    )["result"]
    common = {"campaign_id": second["campaign_id"], "base_version_token": second["base_version_token"]}
    with pytest.raises(ApplicationError) as err:
        campaign_update(
            actor=act(marketer), changes={"short_link_id": world["short_link_id"]}, idempotency_key=key(), **common
        )
    assert (err.value.code, err.value.field) == ("short_link_in_use", "short_link_id")
    answer = _mcp(
        marketer,
        "campaigns.update",
        {**common, "changes": {"short_link_id": world["short_link_id"]}, "idempotency_key": key()},
    )
    assert answer["error"]["code"] == "short_link_in_use"
    response = api_for(marketer).patch(
        f"/api/v1/campaigns/{second['campaign_id']}/",
        {
            "base_version_token": common["base_version_token"],
            "changes": {"short_link_id": world["short_link_id"]},
            "idempotency_key": key(),
        },
        format="json",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "short_link_in_use"
    assert Campaign.objects.get(pk=second["campaign_id"]).short_link_id == other_link
    assert ShortLink.objects.get(pk=world["short_link_id"]).campaign_id == first["campaign_id"]

    # A free link named at update becomes this campaign's own, so no other draft can take it.
    third_link = _free_link(marketer)
    campaign_update(actor=act(marketer), changes={"short_link_id": third_link}, idempotency_key=key(), **common)
    assert ShortLink.objects.get(pk=third_link).campaign_id == second["campaign_id"]
    with pytest.raises(ApplicationError) as err:
        campaign_create_draft(
            actor=act(marketer), data=draft_data(world, name="Third", short_link_id=third_link), idempotency_key=key()
        )
    assert err.value.code == "short_link_in_use"


def test_the_losing_claim_of_a_raced_free_link_is_refused(world: dict[str, Any], marketer: Any) -> None:
    """Two drafts evaluated the same free link; the second claim finds it taken and refuses."""
    from campaigns.services.common import campaign_link_claim

    link = ShortLink.objects.get(pk=_free_link(marketer))  # evaluated while still free
    first = _first(world, marketer)
    ShortLink.objects.filter(pk=link.pk).update(campaign_id=first["campaign_id"])  # the winner's claim
    loser = Campaign.objects.get(pk=first["campaign_id"])
    loser.pk = None  # another campaign row, in memory only
    loser.id = first["campaign_id"] + 1000
    with pytest.raises(ApplicationError) as err:
        campaign_link_claim(loser, SimpleNamespace(link=link))  # type: ignore[arg-type]
    assert err.value.code == "short_link_in_use"
