"""A small world for campaign tests: a priced simulator gateway, consented contacts in an
audience (one opted out, one whose receipts say undelivered), a segment, a per-recipient
short link and a funded account."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from compliance.models import ActionType, ApprovalPolicy
from compliance.optouts import opt_out_record
from compliance.roles import Role
from contacts.models import Audience, AudienceMembership
from contacts.services import segment_create, segment_preview
from gateways.models import Gateway, GatewayRate, Provider
from gateways.quotas import account_instance
from smsplatform.kernel.actor import Actor
from templates.selectors import short_link_preview
from templates.services import short_link_create
from tests.support.campaigns import PHONES, UTM, act, key, policy, set_quiet_hours
from tests.support.contacts import create_contact


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
    gateway = Gateway.objects.create(
        code="camp-sim",
        name="Campaign simulator",
        provider=Provider.SIMULATOR,
        countries=["HK"],
        settings={"receipt_latency_ms": 0},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.35"), currency="HKD")
    # Sends in these tests happen "now": quiet hours would hold them whenever CI runs at HK night.
    # The quiet-hours tests switch them back on.
    set_quiet_hours({})
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("1000"), 100_000
    account.save()
    audience = Audience.objects.create(name="Members", source="crm", region="HK")
    contacts = {}
    for name, phone in PHONES.items():
        contacts[name] = create_contact(crm, phone=phone, tags=["member"])
        AudienceMembership.objects.create(audience=audience, contact_id=contacts[name])
    opt_out_record(actor=Actor.system("test"), phone=PHONES["stopped"], reason="stop", source="sms")
    preview = segment_preview(actor=act(marketer), criteria={"audiences": [audience.pk]})
    segment = segment_create(
        actor=act(marketer), segment_preview_id=preview["segment_preview_id"], name="Members", idempotency_key=key()
    )
    assert segment["status"] == "executed", segment
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
        "segment_id": segment["result"]["segment_id"],
        "short_link_id": link["result"]["short_link_id"],
    }
