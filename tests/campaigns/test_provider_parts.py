"""Pre-send estimates count parts as the campaign's gateway splits them.

Twilio splits a message itself and never cuts a grapheme cluster, so a body with a ZWJ emoji across
our SMPP-style part boundary takes one part more there: the draft, the cost preview, the quota
check and the dispatched message rows must all use that count on a Twilio gateway, and keep the
exact SMPP count on the simulator (or SMPP, Kannel).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from campaigns.content import TOKEN_SAMPLE, _segments_by_country, campaign_evaluate, quota_check
from campaigns.dispatch import campaign_dispatch
from campaigns.models import Campaign, CampaignState
from campaigns.selectors import cost_preview
from campaigns.services import campaign_create_draft
from campaigns.spec import campaign_spec
from gateways.models import Gateway, GatewayRate, OutboundMessage, Provider, QuotaReservation
from gateways.selectors import PriceQuote, provider_keeps_clusters
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.segments import count_segments, count_segments_clusters
from templates.models import ShortLink
from tests.support.campaigns import act, draft_data, key

pytestmark = pytest.mark.django_db

FAMILY = "👨\u200d👩\u200d👧"
FOOTER = " 回覆STOP退訂 Reply STOP to opt out"


@pytest.fixture
def twilio(world: dict[str, Any]) -> Gateway:
    gateway = Gateway.objects.create(
        code="camp-twilio", name="Twilio", provider=Provider.TWILIO, countries=["HK"], priority=200
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.35"), currency="HKD")
    return gateway


def straddling_text() -> str:
    """Copy of 2 SMPP parts but 3 Twilio parts: the family emoji starts 2 units before our first
    boundary (after 【ShopHK】 and 57 characters), so Twilio moves it whole to the second part."""
    text = "【ShopHK】" + "親" * 57 + FAMILY
    text += "親" * (2 * 67 - units(text) - units(FOOTER)) + FOOTER
    assert count_segments(text) == ("UCS-2", 134, 2) and count_segments_clusters(text)[2] == 3
    return text


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _draft(world: dict[str, Any], marketer: Any, **overrides: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(marketer), data=draft_data(world, **overrides), idempotency_key=key())
    assert out["status"] == "executed", out
    return dict(out["result"])


def test_only_twilio_splits_by_grapheme_cluster() -> None:
    assert provider_keeps_clusters(Provider.TWILIO)
    assert not any(provider_keeps_clusters(p) for p in (Provider.SMPP, Provider.KANNEL, Provider.SIMULATOR))
    assert PriceQuote("g", Decimal(1), "HKD", provider=Provider.TWILIO).keeps_clusters


def test_twilio_draft_and_cost_preview_count_one_more_part(
    world: dict[str, Any], marketer: Any, twilio: Gateway
) -> None:
    text, n = straddling_text(), 2
    on_sim = _draft(world, marketer, text=text, gateway="camp-sim", short_link_id=None)
    on_twilio = _draft(world, marketer, text=text, gateway="camp-twilio", short_link_id=None)
    assert on_sim["body_preview"] == on_twilio["body_preview"] == text
    assert on_sim["segments_per_message"] == n  # the SMPP count, unchanged
    assert on_twilio["segments_per_message"] == n + 1

    preview = cost_preview(actor=act(marketer), campaign_id=on_twilio["campaign_id"])
    assert preview["message"]["segments_per_message"] == n + 1
    rate = Decimal("0.35")
    assert preview["estimated_cost"] == {"HKD": str(4 * (n + 1) * rate)}  # 4 recipients
    (hk,) = preview["by_country"]
    assert hk["gateway"] == "camp-twilio" and hk["segments_per_message"] == n + 1
    assert Decimal(hk["price_per_message"]) == (n + 1) * rate
    assert preview["quota"]["segments_needed"] == 4 * (n + 1)

    sim_preview = cost_preview(actor=act(marketer), campaign_id=on_sim["campaign_id"])
    assert sim_preview["estimated_cost"] == {"HKD": str(4 * n * rate)}
    assert sim_preview["quota"]["segments_needed"] == 4 * n


def test_twilio_dispatch_writes_and_holds_the_twilio_count(
    world: dict[str, Any], marketer: Any, twilio: Gateway
) -> None:
    text, n = straddling_text(), 2
    draft = _draft(world, marketer, text=text, gateway="camp-twilio", short_link_id=None)
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    # Approval itself is tested elsewhere: mark it approved and dispatch as beat would.
    Campaign.objects.filter(pk=campaign.pk).update(state=CampaignState.APPROVED, approved_version=campaign.version)
    out = campaign_dispatch(campaign_id=campaign.pk, version=campaign.version)
    assert out["dispatched"] is True, out
    rows = list(
        OutboundMessage.objects.filter(batch__campaign=campaign).values_list("gateway__code", "segments", "cost")
    )
    assert len(rows) == 4
    assert {row[:2] for row in rows} == {("camp-twilio", n + 1)}
    assert {row[2] for row in rows} == {(n + 1) * Decimal("0.35")}
    assert out["segments"] == 4 * (n + 1)
    assert QuotaReservation.objects.get(reference=f"campaign:{campaign.pk}:send").segments == 4 * (n + 1)


def test_copy_that_fits_by_smpp_count_can_be_too_long_on_twilio(
    world: dict[str, Any], marketer: Any, twilio: Gateway
) -> None:
    text, n = straddling_text(), 2
    on_sim = _draft(world, marketer, text=text, gateway="camp-sim", short_link_id=None, max_segments=n)
    assert on_sim["segments_per_message"] == n
    with pytest.raises(ApplicationError) as err:
        campaign_create_draft(
            actor=act(marketer),
            data=draft_data(world, text=text, gateway="camp-twilio", short_link_id=None, max_segments=n),
            idempotency_key=key(),
        )
    assert err.value.code == "message_too_long"


def test_parts_per_country_follow_each_countrys_gateway(world: dict[str, Any], marketer: Any) -> None:
    text, n = straddling_text(), 2
    quotes = {
        "HK": PriceQuote("camp-sim", Decimal("0.35"), "HKD", provider=Provider.SIMULATOR),
        "MO": PriceQuote("mo-twilio", Decimal("0.50"), "HKD", provider=Provider.TWILIO),
        "SG": PriceQuote("sg-smpp", Decimal("0.40"), "HKD", provider=Provider.SMPP),
    }
    spec = {"text": text}
    assert _segments_by_country(spec, text, n, quotes, max_segments=10) == {"HK": n, "MO": n + 1, "SG": n}
    # A body with no cluster across a boundary costs the same everywhere.
    plain = "親" * 100
    assert _segments_by_country(spec, plain, 2, quotes, max_segments=10) == {"HK": 2, "MO": 2, "SG": 2}


def test_evaluation_without_twilio_is_unchanged(world: dict[str, Any], marketer: Any) -> None:
    text, n = straddling_text(), 2
    draft = _draft(world, marketer, text=text, short_link_id=None)
    evaluation = campaign_evaluate(act(marketer), campaign_spec(Campaign.objects.get(pk=draft["campaign_id"])))
    assert evaluation.segments == n and evaluation.segments_by_country == {"HK": n}
    assert quota_check(evaluation)["segments_needed"] == 4 * n


def test_twilio_short_link_effect_is_counted_the_twilio_way(
    world: dict[str, Any], marketer: Any, twilio: Gateway
) -> None:
    link = ShortLink.objects.get(pk=world["short_link_id"])
    sample = f"{link.short_url}/{TOKEN_SAMPLE}"
    head = "【ShopHK】{{link}} "
    before = 65 - units(head.replace("{{link}}", sample))  # the emoji starts 2 units before our boundary
    text = head + "親" * before + FAMILY
    text += "親" * (2 * 67 - units(text.replace("{{link}}", sample)) - units(FOOTER)) + FOOTER
    measured = text.replace("{{link}}", sample)
    assert count_segments(measured)[2] == 2 and count_segments_clusters(measured)[2] == 3
    draft = _draft(world, marketer, text=text, gateway="camp-twilio")
    assert draft["body_preview"] == measured and draft["segments_per_message"] == 3
    effect = cost_preview(actor=act(marketer), campaign_id=draft["campaign_id"])["short_link_effect"]
    # Without the link the emoji no longer straddles a boundary: 2 parts, one saved per recipient.
    assert effect["segments_with_link"] == 3 and effect["segments_without_link"] == 2
    assert effect["extra_cost"] == {"HKD": "1.40"}  # 4 recipients x 1 part x 0.35


def test_a_single_message_queued_on_twilio_holds_the_twilio_count(world: dict[str, Any], twilio: Gateway) -> None:
    """message_queue (test SMS, OTP, STOP replies) counts with the chosen gateway's split too."""
    from django.db import transaction

    from gateways.delivery.queue import message_queue
    from smsplatform.kernel.actor import Actor

    system, text = Actor.system("test"), straddling_text()
    with transaction.atomic():
        on_twilio = message_queue(
            actor=system,
            gateway_code="camp-twilio",
            sender_id="#SHOPHK",
            destination="+85291234567",
            body=text,
            purpose="transactional",
        )
        on_simulator = message_queue(
            actor=system,
            gateway_code="camp-sim",
            sender_id="#SHOPHK",
            destination="+85291234568",
            body=text,
            purpose="transactional",
        )
    assert (on_twilio.segments, on_twilio.cost) == (3, Decimal("1.0500"))
    assert on_simulator.segments == 2
    held = QuotaReservation.objects.get(reference=on_twilio.quota_reference)
    assert held.segments == 3


def test_a_free_copy_limit_is_kept_by_every_later_check(world: dict[str, Any], marketer: Any) -> None:
    """max_segments of free copy is stored with the campaign: an update and the dispatch check the
    copy against it (they re-read the campaign), not against the default 3."""
    from campaigns.services import campaign_update

    text = "【ShopHK】" + "新品" * 100 + FOOTER  # 4 UCS-2 parts
    assert count_segments(text)[2] == 4
    with pytest.raises(ApplicationError, match="at most 3"):
        campaign_create_draft(
            actor=act(marketer),
            data=draft_data(world, text=text, gateway="camp-sim", short_link_id=None),
            idempotency_key=key(),
        )
    draft = _draft(world, marketer, text=text, gateway="camp-sim", short_link_id=None, max_segments=4)
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert campaign.max_segments == 4 and campaign_spec(campaign)["max_segments"] == 4
    updated = campaign_update(
        actor=act(marketer),
        campaign_id=campaign.pk,
        base_version_token=draft["base_version_token"],
        changes={"name": "Four parts"},
        idempotency_key=key(),
    )
    assert updated["status"] == "executed", updated
    campaign.refresh_from_db()
    Campaign.objects.filter(pk=campaign.pk).update(state=CampaignState.APPROVED, approved_version=campaign.version)
    out = campaign_dispatch(campaign_id=campaign.pk, version=campaign.version)
    assert out["dispatched"] is True, out
    assert set(OutboundMessage.objects.filter(batch__campaign=campaign).values_list("segments", flat=True)) == {4}


@pytest.mark.parametrize("limit", [0, 11, True, "4"])
def test_a_free_copy_limit_outside_1_to_10_is_refused_naming_the_field(
    world: dict[str, Any], marketer: Any, limit: Any
) -> None:
    with pytest.raises(ApplicationError) as caught:
        campaign_create_draft(
            actor=act(marketer),
            data=draft_data(world, gateway="camp-sim", short_link_id=None, max_segments=limit),
            idempotency_key=key(),
        )
    assert caught.value.field == "max_segments"


def test_the_link_effect_adds_up_every_country_billed_in_one_currency(
    world: dict[str, Any], marketer: Any, crm: Any
) -> None:
    """Two countries priced in HKD: the link's extra cost is the sum of both, not the last one."""
    from contacts.models import AudienceMembership
    from contacts.services import segment_create, segment_preview
    from tests.support.contacts import create_contact

    gateway = world["gateway"]
    gateway.countries = ["HK", "MO"]
    gateway.save(update_fields=["countries"])
    GatewayRate.objects.create(gateway=gateway, country="MO", price_per_segment=Decimal("0.50"), currency="HKD")
    from gateways.models import SenderId, SenderIdKind, SenderIdStatus

    SenderId.objects.create(
        value="ShopHK",
        kind=SenderIdKind.ALPHANUMERIC,
        brand="Shop",
        status=SenderIdStatus.REGISTERED,
        regions=["HK", "MO"],
    )
    for phone in ("+85366123451", "+85366123452"):
        contact_id = create_contact(crm, phone=phone, tags=["member"])
        AudienceMembership.objects.create(audience=world["audience"], contact_id=contact_id)
    preview = segment_preview(actor=act(marketer), criteria={"audiences": [world["audience"].pk]})
    segment = segment_create(
        actor=act(marketer), segment_preview_id=preview["segment_preview_id"], name="HK and MO", idempotency_key=key()
    )
    assert segment["status"] == "executed", segment
    link = ShortLink.objects.get(pk=world["short_link_id"])
    sample = f"{link.short_url}/{TOKEN_SAMPLE}"
    head = "【ShopHK】{{link}} "
    # 75 units with the link (2 parts), at most 70 without it (1 part).
    text = head + "親" * (75 - units(head.replace("{{link}}", sample)) - units(FOOTER)) + FOOTER
    draft = _draft(world, marketer, text=text, segment_id=segment["result"]["segment_id"], sender_id="ShopHK")
    preview_out = cost_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    effect = preview_out["short_link_effect"]
    assert (effect["segments_with_link"], effect["segments_without_link"]) == (2, 1)
    sendable = {row["country"]: row["sendable"] for row in preview_out["by_country"]}
    assert sendable["MO"] == 2 and sendable["HK"] > 0
    expected = (Decimal("0.35") * sendable["HK"] + Decimal("0.50") * sendable["MO"]).quantize(Decimal("0.01"))
    assert effect["extra_cost"] == {"HKD": str(expected)}
