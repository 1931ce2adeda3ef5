"""A campaign's specification: what a caller may set and how it is normalised, the spec and
snapshot read back from a campaign, and its version token.

Every campaign write normalises its input here first; reads (campaigns.get, cost_preview)
and the dispatch read a campaign back into the same spec the rules are evaluated on.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.models import Campaign
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.text import name_check
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token

LABEL = "campaigns.campaign"


# What a caller may set. Review, approval, opt-out and version data are not in this list.
CONTENT_FIELDS = (
    "name",
    "segment_id",
    "template_version_id",
    "text",
    "brand",
    "language",
    "max_segments",
    "variables",
    "short_link_id",
    "sender_id",
    "gateway",
    "tracking",
    "send_goal",
    "budget",
)
SCHEDULE_DRAFT_FIELDS = ("send_at", "time_zone", "batch_size", "batch_interval_seconds", "notify")
NOTE_FIELDS = ("review_notes",)
UPDATABLE = CONTENT_FIELDS + SCHEDULE_DRAFT_FIELDS + NOTE_FIELDS
PROTECTED = (
    "state",
    "version",
    "approved_version",
    "approved_by",
    "approved_at",
    "owner",
    "created_by",
    "opt_out",
    "unsubscribe",
)


def campaign_token(campaign: Campaign) -> str:
    """The base_version_token reads return and versioned writes send back."""
    return version_token(LABEL, campaign.pk, campaign.version)


def campaign_error(code: str, message: str, *, field: str, hint: str, **details: Any) -> ApplicationError:
    """A campaign rule's refusal: its code, the field at fault and the step that fixes it."""
    return ApplicationError(code, message, field=field, hint=hint, details=details or None)


# --- input normalisation ------------------------------------------------------------------


def _int_or_none(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise campaign_error(ErrorCode.VALIDATION_ERROR, f"{field} must be an integer.", field=field, hint="e.g. 12")
    return value


def text_normalise(value: Any, field: str, *, max_chars: int, required: bool = False) -> str:
    """A stripped string of at most ``max_chars`` (``None`` reads as empty)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise campaign_error(ErrorCode.VALIDATION_ERROR, f"{field} must be a string.", field=field, hint="Send text.")
    value = value.strip()
    if required and not value:
        raise campaign_error(ErrorCode.VALIDATION_ERROR, f"{field} is required.", field=field, hint=f"Give a {field}.")
    if len(value) > max_chars:
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR, f"{field} is over {max_chars} characters.", field=field, hint="Shorten it."
        )
    return value


def _budget(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR, "budget must be a number.", field="budget", hint="e.g. 1500"
        ) from None
    if not amount.is_finite() or amount <= 0 or amount > Decimal("100000000"):
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR, "budget must be a positive amount.", field="budget", hint="e.g. 1500"
        )
    return str(amount.quantize(Decimal("0.01")))


def spec_normalise(raw: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Only the known content fields, each type-checked; unknown or protected ones are refused."""
    unknown = sorted(set(raw) - set(UPDATABLE))
    if unknown:
        name = unknown[0]
        hint = (
            "Review, approval, opt-out and version data are never set by an update."
            if name in PROTECTED
            else f"Updatable fields: {', '.join(UPDATABLE)}."
        )
        raise campaign_error(ErrorCode.VALIDATION_ERROR, f"{name} cannot be set here.", field=name, hint=hint)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "name":
            out[name] = name_check(text_normalise(value, "name", max_chars=100, required=True), field="name")
        elif name in ("segment_id", "template_version_id", "short_link_id"):
            out[name] = _int_or_none(value, name)
        elif name == "max_segments":
            out[name] = _int_or_none(value, name)
            if out[name] is not None and not 1 <= out[name] <= 10:
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR,
                    f"max_segments is {out[name]}; it must be from 1 to 10.",
                    field=name,
                    hint="Leave it empty for 3.",
                )
        elif name in ("text",):
            out[name] = value if value is None else text_normalise(value, "text", max_chars=5000)
            if out[name] == "":
                out[name] = None
        elif name in ("brand",):
            out[name] = text_normalise(value, "brand", max_chars=60)
        elif name == "language":
            if value not in ("en", "zh-hant", "bilingual"):
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR,
                    "language must be en, zh-hant or bilingual.",
                    field="language",
                    hint="bilingual",
                )
            out[name] = value
        elif name == "variables":
            if value is None:
                value = {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR,
                    "variables must map field names to text values.",
                    field="variables",
                    hint='{"offer": "20% off"}',
                )
            out[name] = dict(value)
        elif name == "sender_id":
            out[name] = text_normalise(value, "sender_id", max_chars=16, required=True)
        elif name == "gateway":
            out[name] = text_normalise(value, "gateway", max_chars=50) or None
        elif name == "tracking":
            if not isinstance(value, bool):
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR, "tracking must be true or false.", field=name, hint="true"
                )
            out[name] = value
        elif name == "send_goal":
            out[name] = text_normalise(value, "send_goal", max_chars=300)
        elif name == "review_notes":
            out[name] = text_normalise(value, "review_notes", max_chars=5000)
        elif name == "budget":
            out[name] = _budget(value)
        elif name in SCHEDULE_DRAFT_FIELDS:
            out.update(schedule_normalise({name: value}, partial=True))
    if not partial:
        for required in ("name", "segment_id", "sender_id"):
            if out.get(required) in (None, ""):
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR, f"{required} is required.", field=required, hint=f"Give {required}."
                )
        out.setdefault("tracking", True)
    return out


def schedule_normalise(raw: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    config = platform_config_data()["schedule"]
    out: dict[str, Any] = {}
    if "time_zone" in raw or not partial:
        tz_name = raw.get("time_zone") or config["time_zone"]
        try:
            ZoneInfo(str(tz_name))
        except Exception:
            raise campaign_error(
                ErrorCode.VALIDATION_ERROR,
                f"Unknown time zone {tz_name!r}.",
                field="time_zone",
                hint="An IANA name such as Asia/Hong_Kong.",
            ) from None
        out["time_zone"] = str(tz_name)
    if "send_at" in raw or not partial:
        value = raw.get("send_at")
        if value in (None, "") and partial:
            out["send_at"] = None
        else:
            parsed = parse_datetime(str(value)) if isinstance(value, str) else None
            if parsed is None:
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR,
                    "send_at must be an ISO 8601 date and time.",
                    field="send_at",
                    hint="e.g. 2026-12-01T10:00:00+08:00 (without an offset, time_zone applies).",
                )
            if timezone.is_naive(parsed):
                parsed = parsed.replace(tzinfo=ZoneInfo(out.get("time_zone") or config["time_zone"]))
            out["send_at"] = parsed.isoformat()
    for name, default, low, high in (
        ("batch_size", config["default_batch_size"], 1, 1_000_000),
        ("batch_interval_seconds", config["default_batch_interval_seconds"], 0, 86_400),
    ):
        if name in raw or not partial:
            value = raw.get(name, default)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise campaign_error(
                    ErrorCode.VALIDATION_ERROR,
                    f"{name} must be an integer from {low} to {high}.",
                    field=name,
                    hint=f"Default {default}.",
                )
            out[name] = value
    if "notify" in raw or not partial:
        notify = raw.get("notify") or []
        if not isinstance(notify, list) or len(notify) > 20 or not all(isinstance(n, str) for n in notify):
            raise campaign_error(
                ErrorCode.VALIDATION_ERROR,
                "notify must be a list of at most 20 usernames or e-mail addresses.",
                field="notify",
                hint='["approver@example.com"]',
            )
        out["notify"] = [n.strip()[:200] for n in notify if n.strip()]
    return out


# --- reading a campaign back into a spec ------------------------------------------------------


def campaign_spec(campaign: Campaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "segment_id": campaign.segment_id,
        "template_version_id": campaign.template_version_id,
        "text": campaign.text or None,
        "max_segments": campaign.max_segments,
        "brand": campaign.brand,
        "language": campaign.language,
        "variables": campaign.variables,
        "short_link_id": campaign.short_link_id,
        "sender_id": campaign.sender_id,
        "gateway": campaign.gateway.code if campaign.gateway else None,
        "tracking": campaign.tracking,
        "send_goal": campaign.send_goal,
        "budget": str(campaign.budget) if campaign.budget is not None else None,
    }


def campaign_snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        **campaign_spec(campaign),
        "review_notes": campaign.review_notes,
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "time_zone": campaign.time_zone,
        "batch_size": campaign.batch_size,
        "batch_interval_seconds": campaign.batch_interval_seconds,
        "notify": campaign.notify,
        "body_preview": campaign.body_preview,
        "encoding": campaign.encoding,
        "segments_per_message": campaign.segments_per_message,
    }


def campaign_token_check(campaign: Campaign, token: Any) -> None:
    """Refuse a missing, malformed or stale token (a stale one is answered with the current)."""
    version = parse_version_token(token, label=LABEL, pk=campaign.pk)
    if version != campaign.version:
        raise stale_token_error(label=LABEL, pk=campaign.pk, current_version=campaign.version)
