"""What the campaign tests share: the campaign text, the world's phone numbers, keys, actors,
policies, quiet hours and a draft's fields (the world itself is the ``world`` fixture in
tests/campaigns/conftest.py)."""

from __future__ import annotations

import itertools
from typing import Any

from compliance.models import ApprovalPolicy, Condition
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor, Channel
from templates.services import short_link_create
from templates.short_links.preview import short_link_preview
from tests.support.factories import ApprovalPolicyFactory

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


def policy(action: str, condition: str = Condition.ALWAYS, **kw: Any) -> ApprovalPolicy:
    return ApprovalPolicyFactory.create(action=action, condition=condition, **kw)


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


def fresh_short_link(user: Any, url: str = "https://shop.example.com/other") -> int:
    """A short link no campaign owns yet (a short link serves one campaign only)."""
    preview = short_link_preview(actor=act(user), url=url, utm=UTM)
    made = short_link_create(
        actor=act(user), short_link_preview_id=preview["short_link_preview_id"], idempotency_key=key()
    )
    assert made["status"] == "executed", made
    return int(made["result"]["short_link_id"])
