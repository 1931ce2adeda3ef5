"""Template content, short links and configuration changes as the template tests make them."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from compliance.models import ApprovalPolicy, Condition
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_data, platform_config_get
from templates.services import short_link_create, template_save
from templates.short_links.preview import short_link_preview
from tests.support.actors import actor
from tests.support.factories import ApprovalPolicyFactory

_keys = itertools.count(1)

MARKETING: dict[str, Any] = {
    "name": "Spring sale",
    "purpose": "marketing",
    "language": "bilingual",
    "brand": "ShopHK",
    "body": "【ShopHK】{{first_name}}，春季優惠全場8折！Spring sale 20% off. 回覆STOP退訂 Reply STOP to opt out",
    "fields": [{"name": "first_name", "type": "name", "max_length": 20, "example": "陳大文"}],
    "max_segments": 3,
}

OTP: dict[str, Any] = {
    "name": "Login code",
    "purpose": "otp",
    "language": "bilingual",
    "brand": "ShopHK",
    "body": "【ShopHK】你的驗證碼是 {{code}}，10分鐘內有效。Your ShopHK code is {{code}}.",
    "fields": [{"name": "code", "type": "otp_code", "max_length": 6, "example": "123456"}],
    "max_segments": 1,
}

UTM = {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "spring"}

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


def key() -> str:
    return f"test-key-{next(_keys):06d}"


def content(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(base if base is not None else MARKETING)
    data.update(changes)
    return data


def policy(action: str, condition: str = Condition.SENSITIVE_CONTENT) -> ApprovalPolicy:
    return ApprovalPolicyFactory.create(action=action, condition=condition)


def save(user: Any, data: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return template_save(
        actor=actor(user), idempotency_key=kw.pop("idempotency_key", key()), content=data or content(), **kw
    )


def preview(user: Any, url: str = "https://shop.example.hk/spring?ref=sms", **kw: Any) -> dict[str, Any]:
    kw.setdefault("utm", dict(UTM))
    return short_link_preview(actor=actor(user), url=url, **kw)


def create(user: Any, preview_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
    return short_link_create(
        actor=actor(user), short_link_preview_id=preview_id, idempotency_key=idempotency_key or key()
    )


def make_link(user: Any, url: str = "https://shop.example.hk/spring?ref=sms", **kw: Any) -> dict[str, Any]:
    result = create(user, preview(user, url, **kw)["short_link_preview_id"])
    assert result["status"] == "executed", result
    return dict(result["result"])


def config_change(user: Any, **changes: Any) -> None:
    """Change configuration sections directly (as a technical user, no policy)."""
    current = platform_config_data()
    merged = {}
    for section, values in changes.items():
        merged[section] = {**current[section], **values} if isinstance(values, dict) else values
    result = platform_config_update(
        actor=actor(user),
        changes=merged,
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key=key(),
    )
    assert result["status"] == "executed", result
