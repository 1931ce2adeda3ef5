"""A small world for campaign tests: a priced simulator gateway, consented contacts in an
audience (one opted out, one whose receipts say undelivered), a segment, a per-recipient
short link and a funded account (built with tests/support/factories.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from compliance.models import ActionType, ApprovalPolicy
from compliance.roles import Role
from contacts.models import Contact
from templates.services import short_link_create
from templates.short_links.preview import short_link_preview
from tests.support.campaigns import PHONES, UTM, act, key, policy, set_quiet_hours
from tests.support.factories import (
    NO_EXCLUSIONS,
    AudienceFactory,
    AudienceMembershipFactory,
    ConsentEvidenceFactory,
    GatewayFactory,
    GatewayRateFactory,
    OptOutFactory,
    SegmentFactory,
    account_fund,
)


@pytest.fixture
def marketer(make_user: Any) -> Any:
    return make_user(Role.MARKETING, username="marketer1")


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


@pytest.fixture
def approver_user(make_user: Any) -> Any:
    """A marketing manager who approves: may also confirm a live send explicitly."""
    return make_user(Role.APPROVER, Role.MARKETING, username="approver1")


@pytest.fixture
def schedule_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.CAMPAIGN_SCHEDULE)


@pytest.fixture
def send_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.CAMPAIGN_SEND)


@pytest.fixture
def world(marketer: Any, crm: Any, known_gateways: None) -> dict[str, Any]:
    """Stored rows, as the services would have left them: the campaign tests call services only
    for what they test (the short link is made by its services: its code comes from them)."""
    gateway = GatewayFactory.create(
        code="camp-sim", name="Campaign simulator", countries=["HK"], settings={"receipt_latency_ms": 0}
    )
    GatewayRateFactory.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.35"), currency="HKD")
    # Sends in these tests happen "now": quiet hours would hold them whenever CI runs at HK night.
    # The quiet-hours tests switch them back on.
    set_quiet_hours({})
    account_fund(balance=Decimal("1000"), monthly_quota_segments=100_000)
    audience = AudienceFactory.create(name="Members", source="crm", region="HK")
    contacts = {}
    for name, phone in PHONES.items():
        contact = ConsentEvidenceFactory.create(
            contact__phone=phone, contact__tags=["member"], contact__created_by=crm
        ).contact
        AudienceMembershipFactory.create(audience=audience, contact=contact)
        contacts[name] = contact.pk
    OptOutFactory.create(contact=Contact.objects.get(pk=contacts["stopped"]))
    sendable = len(PHONES) - 1  # all but the opted-out one
    segment = SegmentFactory.create(
        name="Members",
        audiences=[audience.pk],
        matched_count=len(PHONES),
        sendable_count=sendable,
        exclusions={**NO_EXCLUSIONS, "opted_out": 1},
        estimated_cost={"HKD": f"{Decimal('0.35') * sendable:.2f}"},
        created_by=marketer,
    )
    link_preview = short_link_preview(
        actor=act(marketer), url="https://shop.example.com/spring", utm=UTM, per_recipient=True
    )
    link = short_link_create(
        actor=act(marketer), short_link_preview_id=link_preview["short_link_preview_id"], idempotency_key=key()
    )
    assert link["status"] == "executed", link
    return {
        "gateway": gateway,
        "audience": audience,
        "contacts": contacts,
        "segment_id": segment.pk,
        "short_link_id": link["result"]["short_link_id"],
    }
