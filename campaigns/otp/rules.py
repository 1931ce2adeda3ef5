"""The content rules of an OTP template, enforced by every path that saves one (MCP, REST, admin)
and again when an approver approves it.

Refused: promotion (outside links, short links, offers: the kernel's promotion_found through the
templates app's OTP check), a body without the code placeholder or with any other placeholder,
a body that does not fit one segment in its encoding (rendered with the longest code) when the
template requires a single segment, and limits, countries, gateways or sender IDs that do not
exist or make no sense.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from campaigns.otp.codes import ALPHABETS, CODE_PLACEHOLDER, MINUTES_PLACEHOLDER, body_render
from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import Alphabet, OtpPurpose
from gateways.models import Gateway, SenderId, SenderIdStatus
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.segments import SegmentInputError, count_segments
from smsplatform.kernel.text import name_check
from templates.content_rules import otp_promotion

CONTENT_KEYS = (
    "name",
    "purpose",
    "body_en",
    "body_zh_hant",
    "code_length",
    "alphabet",
    "validity_minutes",
    "max_checks",
    "max_sends",
    "limits",
    "gateway",
    "fallback_gateway",
    "allowed_countries",
    "sender_id",
    "single_segment_required",
)
LIMIT_KEYS = ("phone", "ip", "token", "country")
DEFAULT_LIMITS: dict[str, dict[str, int]] = {
    "phone": {"count": 5, "window_seconds": 3600},
    "ip": {"count": 20, "window_seconds": 3600},
    "token": {"count": 1000, "window_seconds": 3600},
    "country": {"count": 5000, "window_seconds": 3600},
}
BODY_FIELDS = {"body_en": "English", "body_zh_hant": "Traditional Chinese"}
BRACES_RE = re.compile(r"\{[^{}]*\}")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
MAX_BODY_CHARS = 320


def _invalid(message: str, field: str, hint: str) -> ApplicationError:
    return ApplicationError(ErrorCode.VALIDATION_ERROR, message, field=field, hint=hint)


def _int(raw: dict[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{name} must be a whole number from {low} to {high}.", name, f"Default {default}.")
    return value


def _limits(value: Any) -> dict[str, dict[str, int]]:
    if value is None:
        return {k: dict(v) for k, v in DEFAULT_LIMITS.items()}
    if not isinstance(value, dict):
        raise _invalid("limits must be an object.", "limits", 'e.g. {"phone": {"count": 5, "window_seconds": 3600}}.')
    unknown = sorted(set(value) - set(LIMIT_KEYS))
    if unknown:
        raise _invalid(
            f"limits.{unknown[0]} is not a limit.", f"limits.{unknown[0]}", f"Limits: {', '.join(LIMIT_KEYS)}."
        )
    out: dict[str, dict[str, int]] = {}
    for key in LIMIT_KEYS:
        # Every key is required: a template with no limit on a dimension would be open to pumping there.
        item = value.get(key, DEFAULT_LIMITS[key])
        if not isinstance(item, dict) or set(item) != {"count", "window_seconds"}:
            raise _invalid(
                f"limits.{key} must be {{count, window_seconds}}.", f"limits.{key}", "Both are whole numbers."
            )
        count, window = item["count"], item["window_seconds"]
        for name, number, high in (("count", count, 1_000_000), ("window_seconds", window, 30 * 86_400)):
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= high:
                raise _invalid(
                    f"limits.{key}.{name} must be 1-{high}.", f"limits.{key}.{name}", "Give a positive whole number."
                )
        out[key] = {"count": count, "window_seconds": window}
    return out


def _gateway(value: Any, field: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not Gateway.objects.filter(code=value, enabled=True).exists():
        raise _invalid(f"No enabled gateway {value!r}.", field, "Pick a code from sms_marketing.gateways.list.")
    return value


def _countries(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid(
            "allowed_countries must list at least one ISO country code.",
            "allowed_countries",
            'Only the countries you serve, e.g. ["HK"]: geo permissions are the first defence against pumping.',
        )
    out = []
    for item in value:
        if not isinstance(item, str) or not COUNTRY_RE.match(item):
            raise _invalid(f"{item!r} is not an ISO country code.", "allowed_countries", "Use codes like HK, MO, SG.")
        if item not in out:
            out.append(item)
    return sorted(out)


def _sender(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(
            "sender_id is required.", "sender_id", "Pick a registered one from sms_marketing.sender_ids.list."
        )
    value = value.strip()
    if not SenderId.objects.filter(value=value, status=SenderIdStatus.REGISTERED).exists():
        raise _invalid(
            f"Sender ID {value!r} is not registered.", "sender_id", "Pick one from sms_marketing.sender_ids.list."
        )
    return value


def body_check(body: Any, *, field: str, code_length: int, alphabet: str, minutes: int, single_segment: bool) -> str:
    """One body: text with the code placeholder, no other placeholder, no promotion, and (when
    required) one segment in its encoding with the longest code."""
    if not isinstance(body, str) or not body.strip():
        raise _invalid(f"{field} is empty.", field, f"Write the {BODY_FIELDS[field]} message with {CODE_PLACEHOLDER}.")
    body = body.strip()
    if len(body) > MAX_BODY_CHARS:
        raise _invalid(
            f"{field} is longer than {MAX_BODY_CHARS} characters.", field, "An OTP says the code, little else."
        )
    if body.count(CODE_PLACEHOLDER) != 1:
        raise ApplicationError(
            OtpErrorCode.CODE_PLACEHOLDER_MISSING,
            f"{field} must contain the code placeholder {CODE_PLACEHOLDER} exactly once.",
            field=field,
            hint=f"e.g. 'Your code is {CODE_PLACEHOLDER}. Valid for {MINUTES_PLACEHOLDER} minutes.'",
        )
    unknown = [p for p in BRACES_RE.findall(body) if p not in (CODE_PLACEHOLDER, MINUTES_PLACEHOLDER)]
    if unknown:
        raise ApplicationError(
            OtpErrorCode.PLACEHOLDER_UNKNOWN,
            f"{field} has the placeholder {unknown[0]}; only {CODE_PLACEHOLDER} and {MINUTES_PLACEHOLDER} exist.",
            field=field,
            hint="An OTP carries no personal or marketing fields (minimal content).",
        )
    # The longest code the template can produce; every alphabet is GSM-7, so any such code is the worst case.
    sample = body_render(body, code=ALPHABETS[alphabet][-1] * code_length, minutes=minutes)
    found = otp_promotion(body, []) or otp_promotion(sample, [])
    if found:
        raise ApplicationError(
            OtpErrorCode.OTP_PROMOTIONAL,
            f"An OTP template carries no promotion; {field} has {', '.join(found[:3])}.",
            field=field,
            hint="Remove links and offer wording: an OTP says the code and how long it is valid, nothing else.",
        )
    try:
        encoding, units, segments = count_segments(sample, field=field)
    except SegmentInputError as exc:
        raise ApplicationError(
            exc.code, f"{field}: {exc.message}", field=field, hint="Remove that character."
        ) from None
    if single_segment and segments != 1:
        limit = 160 if encoding == "GSM-7" else 70
        raise ApplicationError(
            OtpErrorCode.NOT_SINGLE_SEGMENT,
            f"{field} needs {segments} segments in {encoding} ({units} of {limit} units with a "
            f"{code_length}-character code); this template requires one.",
            field=field,
            hint="Shorten the text (a Chinese character forces UCS-2: 70 units per SMS).",
            details={"encoding": encoding, "units": units, "segments": segments, "limit": limit},
        )
    return body


def otp_content_validate(raw: Any) -> dict[str, Any]:
    """Validate and normalise a full OTP template content; raises the first rule broken."""
    if not isinstance(raw, dict):
        raise _invalid("content must be an object.", "content", f"Properties: {', '.join(CONTENT_KEYS)}.")
    unknown = sorted(set(raw) - set(CONTENT_KEYS))
    if unknown:
        raise _invalid(
            f"{unknown[0]} is not an OTP template property.", unknown[0], f"Properties: {', '.join(CONTENT_KEYS)}."
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        raise _invalid("name must be 1-100 characters.", "name", "Name the template, e.g. 'Login code'.")
    name = name_check(name.strip(), field="name")
    purpose = raw.get("purpose")
    if purpose not in OtpPurpose.values:
        raise _invalid(f"purpose must be one of {', '.join(OtpPurpose.values)}.", "purpose", "OTP purposes only.")
    alphabet = raw.get("alphabet", Alphabet.DIGITS)
    if alphabet not in Alphabet.values:
        raise _invalid(
            f"alphabet must be one of {', '.join(Alphabet.values)}.", "alphabet", "digits is the usual choice."
        )
    code_length = _int(raw, "code_length", default=6, low=4, high=10)
    validity = _int(raw, "validity_minutes", default=10, low=1, high=60)
    single = raw.get("single_segment_required", settings.SMS_OTP_SINGLE_SEGMENT_DEFAULT)
    if not isinstance(single, bool):
        raise _invalid(
            "single_segment_required must be true or false.", "single_segment_required", "Default from settings."
        )
    bodies = {
        field: body_check(
            raw.get(field),
            field=field,
            code_length=code_length,
            alphabet=alphabet,
            minutes=validity,
            single_segment=single,
        )
        for field in BODY_FIELDS
    }
    gateway = _gateway(raw.get("gateway"), "gateway")
    fallback = _gateway(raw.get("fallback_gateway"), "fallback_gateway")
    if fallback and fallback == gateway:
        raise _invalid(
            "fallback_gateway must differ from gateway.", "fallback_gateway", "Pick another gateway, or none."
        )
    return {
        "name": name,
        "purpose": purpose,
        **bodies,
        "code_length": code_length,
        "alphabet": alphabet,
        "validity_minutes": validity,
        "max_checks": _int(raw, "max_checks", default=5, low=1, high=10),
        "max_sends": _int(raw, "max_sends", default=5, low=1, high=10),
        "limits": _limits(raw.get("limits")),
        "gateway": gateway,
        "fallback_gateway": fallback,
        "allowed_countries": _countries(raw.get("allowed_countries")),
        "sender_id": _sender(raw.get("sender_id")),
        "single_segment_required": single,
    }
