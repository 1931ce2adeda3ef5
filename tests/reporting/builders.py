"""Hand-built timelines for the report tests: campaigns, messages, clicks and events written
directly (the send pipeline is tested elsewhere; these tests are about counting)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.content import recipient_token
from campaigns.models import Campaign, CampaignState, SendBatch
from contacts.models import Contact
from gateways.models import Gateway, MessageState, OutboundMessage
from reporting.aggregates import refresh_all
from templates.models import LinkClick, ShortLink
from tests.support.factories import CampaignFactory, UserFactory

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
_n = itertools.count(1)


def settle() -> None:
    """Two refreshes: id cursors consume what the run before saw."""
    refresh_all()
    refresh_all()


def campaign(*, link: bool = True, variables: dict[str, Any] | None = None, owner: Any = None) -> Campaign:
    owner = owner or UserFactory.create()
    c = CampaignFactory.create(
        owner=owner, state=CampaignState.COMPLETED, dispatched_at=T0 - timedelta(days=30), variables=variables or {}
    )
    if link:
        short = ShortLink.objects.create(
            code=f"c{next(_n)}",
            short_domain="s.example.hk",
            original_url="https://shop.example.hk/sale",
            target_url="https://shop.example.hk/sale?utm_source=sms",
            landing_host="shop.example.hk",
            utm={"utm_source": "sms", "utm_campaign": "spring"},
            expires_at=T0 + timedelta(days=60),
            campaign_id=c.pk,
            per_recipient=True,
            preview_id=uuid.uuid4(),
            owner=owner,
            created_by=owner,
        )
        c.short_link = short
        c.save(update_fields=["short_link"])
    return c


def batch(c: Campaign) -> SendBatch:
    number = SendBatch.objects.filter(campaign=c).count() + 1
    return SendBatch.objects.create(
        campaign=c,
        number=number,
        not_before=T0 - timedelta(days=1),
        quota_reference=f"q{c.pk}-{number}",
        state="completed",
    )


def contact(phone: str | None = None) -> Contact:
    n = next(_n)
    return Contact.objects.create(phone=phone or f"+8529{n:07d}", country="HK", source="test")


def message(
    b: SendBatch,
    person: Contact,
    *,
    at: datetime,
    state: str = MessageState.DELIVERED,
    gateway: str = "simulator",
    cost: str = "0.50",
    error_code: str = "",
) -> OutboundMessage:
    final = state in (MessageState.DELIVERED, MessageState.FAILED, MessageState.EXPIRED)
    return OutboundMessage.objects.create(
        gateway=Gateway.objects.get(code=gateway),
        sender_id="#SHOPHK",
        destination=person.phone,
        country=person.country,
        body="x",
        encoding="GSM-7",
        segments=1,
        cost=Decimal(cost),
        currency="HKD",
        purpose="marketing",
        state=state,
        reference=b.reference,
        quota_reference=b.quota_reference,
        batch=b,
        contact=person,
        error_code=error_code,
        created_at=at - timedelta(seconds=5),
        submitted_at=None if state == MessageState.QUEUED else at - timedelta(seconds=2),
        final_at=at if final else None,
    )


def click(c: Campaign, person: Contact | None, *, at: datetime, device: str = "mobile", unique: bool = False) -> None:
    assert c.short_link_id is not None
    token = recipient_token(c.pk, c.short_link_id, person.pk) if person else None
    LinkClick.objects.create(
        link_id=c.short_link_id, clicked_at=at, device_class=device, recipient_token=token, is_unique=unique
    )


_source: list[EventSource] = []


def source() -> EventSource:
    found = EventSource.objects.filter(code="shop").first()
    return found or EventSource.objects.create(code="shop", name="Shop")


def event(
    person: Contact,
    type_: str,
    *,
    at: datetime,
    order: str = "",
    amount: str | None = None,
    refund_of: str = "",
    coupon: str = "",
    channel: str = "",
    link_code: str = "",
    click_token: str = "",
) -> CommerceEvent:
    return CommerceEvent.objects.create(
        source=source(),
        event_id=f"e{next(_n)}",
        type=type_,
        contact=person,
        phone=person.phone,
        occurred_at=at,
        order_ref=order,
        amount=Decimal(amount) if amount is not None else None,
        currency="HKD" if amount is not None else "",
        refund_of=refund_of,
        coupon_code=coupon,
        channel=channel,
        link_code=link_code,
        click_token=click_token,
        payload_hash="0" * 64,
    )
