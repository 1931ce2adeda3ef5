"""The platform configuration's sections, validated with pydantic.

These models are the single definition of what the configuration holds: the
config service validates with them, config.get's output schema comes from
them, and the Hong Kong defaults below are what a fresh install starts with.
"""

from __future__ import annotations

import re
import zoneinfo
from decimal import Decimal
from functools import cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["21:00"])]
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?!-)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")
COUNTRY = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


@cache
def known_time_zones() -> frozenset[str]:
    # available_timezones() walks the tz database on disk: read it once per process.
    return frozenset(zoneinfo.available_timezones())


SENDER_ID_RE = re.compile(r"^(#[A-Za-z0-9 ]{1,11}|[A-Za-z0-9 ]{1,11}|\+?\d{3,15})$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not DOMAIN_RE.match(value):
        raise ValueError(f"{value!r} is not a host name such as 'sms.example.hk'")
    return value


class ShortLinkPolicy(Section):
    domain: str = Field("s.example.hk", description="Host of the short links the platform issues.")
    allow_domains: list[str] = Field(
        default_factory=list,
        description="Landing-page domains allowed (empty: any not denied).",
    )
    deny_domains: list[str] = Field(default_factory=list, description="Landing-page domains never allowed.")
    default_expiry_days: int = Field(30, ge=1, le=3650)
    max_expiry_days: int = Field(365, ge=1, le=3650)
    required_utm: list[str] = Field(default_factory=lambda: ["utm_source", "utm_medium", "utm_campaign"])
    sensitive_path_keywords: list[str] = Field(
        default_factory=lambda: [
            "pay",
            "payment",
            "checkout",
            "bank",
            "card",
            "loan",
            "wallet",
        ],
        description="Landing pages whose URL contains these need approval for short_links.create.",
    )

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str) -> str:
        return _domain(value)

    @field_validator("allow_domains", "deny_domains")
    @classmethod
    def _check_domains(cls, values: list[str]) -> list[str]:
        return sorted({_domain(v) for v in values})

    @model_validator(mode="after")
    def _expiry(self) -> ShortLinkPolicy:
        if self.default_expiry_days > self.max_expiry_days:
            raise ValueError("default_expiry_days cannot exceed max_expiry_days")
        overlap = set(self.allow_domains) & set(self.deny_domains)
        if overlap:
            raise ValueError(f"domains both allowed and denied: {sorted(overlap)}")
        return self


class UnsubscribeFooter(Section):
    zh: str = Field("回覆STOP退訂", min_length=1, max_length=70)
    en: str = Field("Reply STOP to opt out", min_length=1, max_length=160)


REPLY_LANGUAGES = ("en", "zh-hant")


class KeywordReplies(Section):
    """The SMS answered to a STOP, START or HELP reply, per language (contacts/keywords.py)."""

    enabled: bool = Field(True, description="Answer keyword replies by SMS (transactional, audited).")
    stop: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "You are unsubscribed and will receive no more marketing SMS. Reply START to resubscribe.",
            "zh-hant": "你已取消訂閱，將不再收到推廣短訊。回覆 START 可重新訂閱。",
            "zh-hans": "你已取消订阅，将不再收到推广短信。回复 START 可重新订阅。",
        }
    )
    start: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "You are subscribed again. Reply STOP to opt out.",
            "zh-hant": "你已重新訂閱。回覆 STOP 或 取消 可退訂。",
            "zh-hans": "你已重新订阅。回复 STOP 或 取消 可退订。",
        }
    )
    help: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "Marketing SMS. Reply STOP to opt out, START to resubscribe.",
            "zh-hant": "推廣短訊。回覆 STOP 或 取消 退訂，回覆 START 重新訂閱。",
            "zh-hans": "推广短信。回复 STOP 或 取消 退订，回复 START 重新订阅。",
        }
    )

    @field_validator("stop", "start", "help")
    @classmethod
    def _wording(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned = {lang: text.strip() for lang, text in value.items()}
        missing = [lang for lang in REPLY_LANGUAGES if not cleaned.get(lang)]
        if missing:
            raise ValueError(f"a reply is needed in {', '.join(missing)}")
        if any(len(text) > 300 for text in cleaned.values()):
            raise ValueError("a reply is at most 300 characters")
        return cleaned


class UnsubscribePolicy(Section):
    keywords: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "en": ["STOP", "UNSUBSCRIBE", "END", "QUIT", "CANCEL", "OPTOUT"],
            # Simplified forms (退订, 取消订阅) match these through contacts/keywords.py's fold.
            "zh-hant": ["取消", "退訂", "取消訂閱", "停止", "TD"],
        },
        description="Opt-out keywords per language; matched case-, width- and whitespace-insensitively.",
    )
    start_keywords: list[str] = Field(default_factory=lambda: ["START", "UNSTOP", "開始", "訂閱", "重新訂閱"])
    help_keywords: list[str] = Field(default_factory=lambda: ["HELP", "INFO", "幫助"])
    footer: UnsubscribeFooter = Field(default_factory=UnsubscribeFooter)
    replies: KeywordReplies = Field(default_factory=KeywordReplies)
    require_bilingual_footer: bool = Field(
        True,
        description="Marketing messages carry the unsubscribe statement in Chinese and English (Cap. 593A).",
    )
    facility_valid_days: int = Field(
        30,
        ge=30,
        description="UEMO: the facility works at least 30 days after sending.",
    )
    scope: str = Field(
        "account",
        pattern="^(account|sender_id)$",
        description="An opt-out covers every sender.",
    )

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        cleaned = {lang: sorted({k.strip() for k in words if k.strip()}) for lang, words in value.items()}
        if not any(cleaned.values()):
            raise ValueError("at least one opt-out keyword is required")
        # STOP always works, whatever else is configured (as the carriers require).
        cleaned.setdefault("en", [])
        if "STOP" not in {w.upper() for w in cleaned["en"]}:
            cleaned["en"] = sorted({*cleaned["en"], "STOP"})
        return cleaned


class QuietHours(Section):
    start: HHMM = "21:00"
    end: HHMM = "09:00"
    time_zone: str | None = Field(None, description="Recipients' local zone; default: the country's main zone.")
    no_sundays: bool = False

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is not None and value not in known_time_zones():
            raise ValueError(f"unknown time zone {value!r}")
        return value


class SchedulePolicy(Section):
    time_zone: str = "Asia/Hong_Kong"
    quiet_hours: dict[COUNTRY, QuietHours] = Field(
        default_factory=lambda: {
            "HK": QuietHours(start="21:00", end="09:00", time_zone="Asia/Hong_Kong"),
            "US": QuietHours(start="21:00", end="08:00"),
            "FR": QuietHours(start="22:00", end="08:00", time_zone="Europe/Paris", no_sundays=True),
        },
        description="Messages inside a country's quiet hours wait for the window; they are not dropped.",
    )
    default_batch_size: int = Field(1000, ge=1, le=100_000)
    default_batch_interval_seconds: int = Field(60, ge=0, le=86_400)
    min_lead_minutes: int = Field(5, ge=0, le=10_080, description="A schedule must be at least this far ahead.")

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str) -> str:
        if value not in known_time_zones():
            raise ValueError(f"unknown time zone {value!r}")
        return value


class BusinessHours(Section):
    start: HHMM = "09:00"
    end: HHMM = "19:00"
    weekdays: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], description="0 = Monday.")

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))


class ApprovalDefaults(Section):
    request_ttl_hours: int = Field(72, ge=1, le=24 * 30, description="Pending requests expire after this.")
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    require_reason_on_reject: bool = True


class QuotaPolicy(Section):
    currency: str = Field("HKD", pattern=r"^[A-Z]{3}$")
    monthly_quota_segments: int = Field(100_000, ge=0)
    low_balance_alert: Decimal = Field(Decimal("500"), ge=0)
    hard_stop: bool = Field(True, description="Nothing is sent beyond quota or balance.")


class CostPolicy(Section):
    currency: str = Field("HKD", pattern=r"^[A-Z]{3}$")
    max_campaign_cost: Decimal = Field(Decimal("20000"), ge=0, description="No campaign above this is scheduled.")
    approval_cost_threshold: Decimal = Field(Decimal("5000"), ge=0)
    estimate_note: str = Field(
        "Estimates use the gateway's listed rate per segment; the billed cost can differ "
        "(carrier surcharges, receipts, currency).",
        max_length=500,
    )


class TrackingPolicy(Section):
    click_tracking: bool = True
    per_recipient_links: bool = True
    conversion_tracking: bool = True
    attribution_click_window_hours: int = Field(120, ge=1, le=24 * 90)
    attribution_delivery_window_hours: int = Field(24, ge=0, le=24 * 90)
    attribution_model: str = Field("last_touch", pattern="^(last_touch|first_touch)$")


class ReportingPolicy(Section):
    """How reports and attribution count (the click and delivery windows are in ``tracking``)."""

    opt_out_window_hours: int = Field(
        48, ge=1, le=24 * 30, description="A STOP this soon after a campaign message is attributed to it."
    )
    coupon_attribution: bool = Field(
        True, description="An order using a campaign's coupon code is attributed to it outside the windows."
    )
    coupon_variable_keys: list[str] = Field(
        default_factory=lambda: ["coupon_code", "coupon"],
        description="Campaign variables whose values are the campaign's coupon codes.",
    )


class FrequencyCapDefaults(Section):
    per_day: int = Field(1, ge=0)
    per_week: int = Field(3, ge=0)
    per_campaign: int = Field(1, ge=0)
    transactional_per_day: int = Field(10, ge=0)
    min_hours_between: int = Field(
        24,
        ge=0,
        le=24 * 30,
        description="Klaviyo-style: skip anyone texted this recently.",
    )


class AlertPolicy(Section):
    """What the alert beat watches (reporting.alerts) and when a review notification is "bulk"."""

    enabled: bool = Field(True, description="Let the beat raise alerts to the people responsible.")
    window_hours: int = Field(24, ge=1, le=24 * 30, description="Each alert goes out once per campaign per window.")
    lookback_days: int = Field(7, ge=1, le=90, description="Campaigns dispatched this recently are watched.")
    min_messages: int = Field(50, ge=1, description="Rates are judged only over at least this many messages.")
    cost_anomaly_factor: Decimal = Field(
        Decimal("1.5"), gt=1, le=100, description="Alert when actual cost exceeds the estimate times this."
    )
    optout_spike_rate: Decimal = Field(
        Decimal("0.02"), gt=0, le=1, description="Alert when opt-outs after the send exceed this share of delivered."
    )
    delivery_failure_rate: Decimal = Field(
        Decimal("0.2"), gt=0, le=1, description="Alert when failed and expired exceed this share of final messages."
    )
    poor_roi_threshold: Decimal = Field(
        Decimal("1.0"), ge=0, le=1000, description="Alert when attributed revenue / cost falls below this."
    )
    bulk_recipients: int = Field(
        10, ge=1, le=10_000, description="A review notification to more people than this is held for approval."
    )


class PlatformConfigData(Section):
    default_sender_id: str = Field("", description="Sender ID used when a campaign names none.")
    default_gateway: str = Field("", description="Gateway code used when a campaign names none.")
    short_links: ShortLinkPolicy = Field(default_factory=ShortLinkPolicy)
    unsubscribe: UnsubscribePolicy = Field(default_factory=UnsubscribePolicy)
    schedule: SchedulePolicy = Field(default_factory=SchedulePolicy)
    approval: ApprovalDefaults = Field(default_factory=ApprovalDefaults)
    quota: QuotaPolicy = Field(default_factory=QuotaPolicy)
    cost: CostPolicy = Field(default_factory=CostPolicy)
    tracking: TrackingPolicy = Field(default_factory=TrackingPolicy)
    frequency_caps: FrequencyCapDefaults = Field(default_factory=FrequencyCapDefaults)
    reporting: ReportingPolicy = Field(default_factory=ReportingPolicy)
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)

    @field_validator("default_sender_id")
    @classmethod
    def _sender(cls, value: str) -> str:
        if value and not SENDER_ID_RE.match(value):
            raise ValueError(
                "a sender ID is up to 11 letters/digits/spaces (optionally '#'-prefixed for SSRS) "
                "or a number of 3-15 digits"
            )
        return value

    @field_validator("default_gateway")
    @classmethod
    def _gateway(cls, value: str) -> str:
        if value and not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", value):
            raise ValueError("a gateway code is lower-case letters, digits, '-' or '_'")
        return value


SECTIONS = (
    "short_links",
    "unsubscribe",
    "schedule",
    "approval",
    "quota",
    "cost",
    "tracking",
    "frequency_caps",
    "reporting",
    "alerts",
)
SCALARS = ("default_sender_id", "default_gateway")
