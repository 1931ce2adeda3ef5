"""A small world for flow tests: a priced simulator gateway for HK, the registered sender #SHOPHK,
a funded account, an event source, consented contacts, and an approved transactional and an
approved marketing template (built with tests/support/factories.py)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from campaigns.automations.flow_models import Flow, FlowState
from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.automations.spec import flow_token
from compliance.roles import Role
from smsplatform.kernel.actor import Actor, Channel
from templates.models import Purpose, VersionApproval
from tests.support.campaigns import set_quiet_hours
from tests.support.factories import (
    ConsentEvidenceFactory,
    ContactFactory,
    GatewayFactory,
    GatewayRateFactory,
    TemplateFactory,
    TemplateVersionFactory,
    account_fund,
)

_keys = itertools.count(1)
_events = itertools.count(1)
SHIPPED = "【ShopHK】Your order {{order}} has shipped."
REMINDER = "【ShopHK】Your cart is waiting: {{order}}. 回覆STOP退訂 Reply STOP to opt out"


def key(prefix: str = "f") -> str:
    return f"{prefix}-flow-{next(_keys):06d}"


def act(user: Any, channel: Channel = Channel.MCP) -> Actor:
    return Actor(user=user, channel=channel, token_name="test")


@pytest.fixture
def marketer(make_user: Any) -> Any:
    return make_user(Role.MARKETING, username="flowmarketer")


@pytest.fixture
def approver_user(make_user: Any) -> Any:
    return make_user(Role.APPROVER, Role.MARKETING, username="flowapprover")


@pytest.fixture
def world(marketer: Any, known_gateways: None) -> dict[str, Any]:
    gateway = GatewayFactory.create(code="flowgw", countries=["HK"], encodings=["GSM-7", "UCS-2"])
    GatewayRateFactory.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account_fund(balance=Decimal("100000"), monthly_quota_segments=10_000_000)
    set_quiet_hours({})  # most tests send at any hour; the quiet-hours test sets its own
    source = EventSource.objects.create(code="shop", name="Shop")
    transactional = TemplateFactory.create(name="Shipped", purpose=Purpose.TRANSACTIONAL, first_version=None)
    shipped = TemplateVersionFactory.create(
        template=transactional,
        body=SHIPPED,
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20, "example": "ORD-1"}],
    )
    marketing = TemplateFactory.create(name="Cart reminder", purpose=Purpose.MARKETING, first_version=None)
    reminder = TemplateVersionFactory.create(
        template=marketing,
        body=REMINDER,
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20, "example": "ORD-1"}],
    )
    contacts = [ContactFactory.create() for _ in range(3)]
    for contact in contacts:
        ConsentEvidenceFactory.create(contact=contact)
    return {
        "gateway": gateway,
        "source": source,
        "shipped": shipped,
        "reminder": reminder,
        "contacts": contacts,
        "marketer": marketer,
    }


def event(world: dict[str, Any], contact: Any, type_: str, **fields: Any) -> CommerceEvent:
    now = timezone.now()
    return CommerceEvent.objects.create(
        source=world["source"],
        event_id=fields.pop("event_id", f"evt-{next(_events)}"),
        type=type_,
        contact=contact,
        phone=contact.phone,
        occurred_at=fields.pop("occurred_at", now),
        received_at=fields.pop("received_at", now),
        payload_hash="0" * 64,
        **fields,
    )


def flow_row(world: dict[str, Any], **overrides: Any) -> Flow:
    """A flow meeting every activation rule (a transactional 'order shipped' message), as stored."""
    data: dict[str, Any] = {
        "name": f"Flow {next(_keys)}",
        "purpose": "transactional",
        "trigger_event_types": ["order_shipped"],
        "steps": [{"kind": "send"}],
        "template_version": world["shipped"],
        "variables": {"order": "event.order_ref"},
        "sender_id": "#SHOPHK",
        "gateway": world["gateway"],
        "opt_out_exclusion": True,
        "max_per_period": 3,
        "period_hours": 24,
        "monthly_budget": Decimal("1000"),
        "created_by": world["marketer"],
        "updated_by": world["marketer"],
    }
    data.update(overrides)
    return Flow.objects.create(**data)


def active_flow(world: dict[str, Any], **overrides: Any) -> Flow:
    flow = flow_row(world, **overrides)
    flow.state = FlowState.ACTIVE
    flow.activated_at = timezone.now() - timedelta(minutes=5)
    flow.save()
    return flow


def token(flow: Flow) -> str:
    flow.refresh_from_db()
    return flow_token(flow)


def at(hours: float) -> datetime:
    return timezone.now() + timedelta(hours=hours)


__all__ = ["VersionApproval"]
