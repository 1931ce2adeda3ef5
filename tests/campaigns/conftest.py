"""A small world for campaign tests: a priced simulator gateway, consented contacts in an
audience (one opted out, one whose receipts say undelivered), a segment, a per-recipient
short link and a funded account."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group

from compliance.models import ActionType, ApprovalPolicy, Condition
from compliance.roles import Role
from contacts.models import Audience, AudienceMembership
from contacts.optouts import opt_out_record
from contacts.services import segment_create, segment_preview
from gateways.models import Gateway, GatewayRate, Provider
from gateways.platform_config import platform_config_update
from gateways.quotas import account_instance
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor, Channel
from templates.services import short_link_create
from templates.short_links.preview import short_link_preview
from tests.contacts.factories import create_contact

_keys = itertools.count(1)

TEXT = "【ShopHK】春季優惠全場8折 {{link}} 回覆STOP退訂 Reply STOP to opt out"
UTM = {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "spring"}
PHONES = {
    "a": "+85291000001",
    "b": "+85291000002",
    "c": "+85291000003",
    "stopped": "+85291000004",
    "undelivered": "+85259002001",
}


def set_quiet_hours(quiet_hours: dict[str, Any]) -> None:
    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"schedule": {**config["config"]["schedule"], "quiet_hours": quiet_hours}},
        base_version_token=config["base_version_token"],
        idempotency_key=key("quiet"),
    )


HK_QUIET_HOURS = {"HK": {"start": "21:00", "end": "09:00", "time_zone": "Asia/Hong_Kong", "no_sundays": False}}


def key(prefix: str = "c") -> str:
    return f"{prefix}-campaign-{next(_keys):06d}"


def act(user: Any, channel: Channel = Channel.MCP) -> Actor:
    return Actor(user=user, channel=channel, token_name="test")


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


def policy(action: str, condition: str = Condition.ALWAYS, **kw: Any) -> ApprovalPolicy:
    return ApprovalPolicy.objects.create(
        action=action, condition=condition, approver_role=Group.objects.get(name=Role.APPROVER), **kw
    )


@pytest.fixture
def schedule_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.CAMPAIGN_SCHEDULE)


@pytest.fixture
def send_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.CAMPAIGN_SEND)


@pytest.fixture
def world(marketer: Any, crm: Any) -> dict[str, Any]:
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


def fresh_short_link(user: Any, url: str = "https://shop.example.com/other") -> int:
    """A short link no campaign owns yet (a short link serves one campaign only)."""
    preview = short_link_preview(actor=act(user), url=url, utm=UTM)
    made = short_link_create(
        actor=act(user), short_link_preview_id=preview["short_link_preview_id"], idempotency_key=key()
    )
    assert made["status"] == "executed", made
    return int(made["result"]["short_link_id"])


def draft_data(world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "segment_id": world["segment_id"],
        "text": TEXT,
        "brand": "ShopHK",
        "short_link_id": world["short_link_id"],
        "sender_id": "#SHOPHK",
        "send_goal": "Spring sale visits",
        **overrides,
    }
