"""Reads of the templates app: template lists, copy fit preview, short-link preview.

The content rules live here too (required wording, OTP promotion, field declarations,
URL risk checks), because previews and lists report them and the write services in
``templates.services`` enforce exactly the same functions.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.encoding import iri_to_uri

from compliance.models import ActionRequest, ActionType, RequestState
from gateways.models import Gateway
from gateways.selectors import PriceQuote, segment_prices
from smsplatform.config_schema import DOMAIN_RE
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found
from smsplatform.kernel.previews import preview_store
from smsplatform.kernel.segments import SegmentInputError, SegmentResult, analyse
from smsplatform.kernel.versioning import version_token
from templates.errors import TemplateErrorCode
from templates.models import Language, Purpose, ShortLink, Template, TemplateVersion

LABEL = "sms_templates.template"
PREVIEW_KIND = "short_links"

MAX_BODY_CHARS = 1600  # ten UCS-2 parts and then some; providers cap a message near here
MAX_FIELDS = 20
MAX_FIELD_LENGTH = 500
MAX_URL_CHARS = 2048
CODE_LENGTH = 8  # 56**8 (~10**14) codes: collisions are retried, and the unique index has the last word
RECIPIENT_TOKEN_LENGTH = 8
GATEWAY_DEFAULT_MAX_SEGMENTS = 10  # when a gateway's settings name no "max_segments"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # no 0/O, 1/l/I look-alikes
CODE_RE = re.compile(r"^[A-Za-z0-9]{7,16}$")
RECIPIENT_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{4,32}$")


def _error(code: str, message: str, *, field: str, hint: str, **details: Any) -> ApplicationError:
    return ApplicationError(code, message, field=field, hint=hint, details=details or None)


# --- text ------------------------------------------------------------------


def segment_analysis(
    text: str, *, field: str, smart_encoding: bool = False, keep_clusters: bool = False
) -> SegmentResult:
    """analyse() with its input errors in our error shape (lone surrogates, control characters).

    ``keep_clusters`` counts parts as a provider that splits by itself (Twilio) does; see
    gateways.selectors.provider_keeps_clusters.
    """
    try:
        return analyse(text, smart_encoding=smart_encoding, field=field, keep_clusters=keep_clusters)
    except SegmentInputError as exc:
        raise _error(
            exc.code,
            f"{field}: {exc.message}",
            field=exc.field,
            hint="Remove or retype that character; only printable text, line breaks and tabs are allowed.",
            position=exc.position,
        ) from None


def text_validate(value: Any, *, field: str, max_chars: int = MAX_BODY_CHARS) -> str:
    """Message text: a non-empty string of at most ``max_chars`` valid characters."""
    if not isinstance(value, str):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be text.", field=field, hint="Send a string.")
    text = value.strip()
    if not text:
        raise _error(TemplateErrorCode.TEXT_EMPTY, f"{field} is empty.", field=field, hint="Write the message text.")
    if len(text) > max_chars:
        raise _error(
            TemplateErrorCode.TEXT_TOO_LONG,
            f"{field} has {len(text):,} characters; at most {max_chars:,} are allowed.",
            field=field,
            hint="An SMS body longer than this is never delivered whole; shorten it.",
            characters=len(text),
            limit=max_chars,
        )
    segment_analysis(text, field=field)  # rejects control characters and lone surrogates
    return text


def _plain_line(value: Any, *, field: str, max_chars: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be text.", field=field, hint="Send a string.")
    text = value.strip()
    if required and not text:
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} is required.", field=field, hint=f"Give a {field}.")
    if len(text) > max_chars:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"{field} has {len(text)} characters; at most {max_chars} are allowed.",
            field=field,
            hint=f"Shorten the {field}.",
        )
    if text and ("\n" in text or "\r" in text):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be one line.", field=field, hint="Remove line breaks.")
    if text:
        segment_analysis(text, field=field)
    return text


def _norm(text: str) -> str:
    """Width-, case- and whitespace-insensitive form used to look for required wording."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).casefold().strip()


# --- dynamic fields and placeholders ----------------------------------------

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]{0,39})\s*\}\}")
FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
FIELD_TYPES = ("text", "name", "number", "date", "currency", "code", "url", "otp_code")
CHARSETS = ("digits", "gsm", "unicode")
DEFAULT_CHARSET = {
    "text": "unicode",
    "name": "unicode",
    "number": "digits",
    "date": "gsm",
    "currency": "gsm",
    "code": "gsm",
    "url": "gsm",
    "otp_code": "digits",
}
# Fill characters of the longest-variable scenario: the costliest character each charset allows
# that is still one character of the field's max_length (see copy_fit_preview's assumptions).
WORST_CHAR = {"digits": "9", "gsm": "W", "unicode": "字"}


def placeholders(body: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER_RE.findall(body)))


def fields_validate(value: Any, *, field: str = "fields") -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be a list.", field=field, hint="Send a list of fields.")
    if len(value) > MAX_FIELDS:
        raise _error(
            ErrorCode.VALIDATION_ERROR, f"At most {MAX_FIELDS} fields.", field=field, hint="Remove unused fields."
        )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{field}.{i}"
        if not isinstance(item, dict):
            raise _error(ErrorCode.VALIDATION_ERROR, f"{where} must be an object.", field=where, hint="See the schema.")
        unknown = sorted(set(item) - {"name", "type", "charset", "max_length", "example"})
        if unknown:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.{unknown[0]} is not a field property.",
                field=f"{where}.{unknown[0]}",
                hint="A field has name, type, charset, max_length and example.",
            )
        name = item.get("name")
        if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.name must be lower-case letters, digits or '_', starting with a letter (max 40).",
                field=f"{where}.name",
                hint="e.g. first_name",
            )
        if name in seen:
            raise _error(
                ErrorCode.VALIDATION_ERROR, f"Field {name!r} is declared twice.", field=f"{where}.name", hint="Rename."
            )
        seen.add(name)
        ftype = item.get("type", "text")
        if ftype not in FIELD_TYPES:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.type must be one of {', '.join(FIELD_TYPES)}.",
                field=f"{where}.type",
                hint="Pick the type that matches the values.",
            )
        charset = item.get("charset") or DEFAULT_CHARSET[ftype]
        if charset not in CHARSETS:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.charset must be one of {', '.join(CHARSETS)}.",
                field=f"{where}.charset",
                hint="unicode for names and free text, gsm for Latin text, digits for numbers.",
            )
        max_length = item.get("max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_FIELD_LENGTH:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.max_length must be an integer from 1 to {MAX_FIELD_LENGTH}.",
                field=f"{where}.max_length",
                hint="The longest value the field can take, in characters; previews use it.",
            )
        example = item.get("example")
        if not isinstance(example, str) or not example.strip():
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.example is required.",
                field=f"{where}.example",
                hint="Give a realistic value; previews show the message with it.",
            )
        example = _plain_line(example, field=f"{where}.example", max_chars=max_length)
        value_check(example, charset=charset, field=f"{where}.example")
        out.append({"name": name, "type": ftype, "charset": charset, "max_length": max_length, "example": example})
    return out


def value_check(value: str, *, charset: str, field: str) -> None:
    if charset == "digits" and not value.isdigit():
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be digits only.", field=field, hint="e.g. 123456")
    if charset == "gsm" and segment_analysis(value, field=field).encoding != "GSM-7":
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"{field} has characters outside the GSM alphabet but the field's charset is gsm.",
            field=field,
            hint="Use Latin characters, or declare the field's charset as unicode.",
        )


def render(body: str, values: dict[str, str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), body)


# --- required wording (UEMO, Cap. 593A) and OTP promotion ---------------------

REPLY_VERBS_ZH = ("回覆", "回復", "回复", "覆", "傳送", "發送", "輸入")
REPLY_VERBS_EN = ("reply", "replying", "text", "send", "sms", "txt")


def _opt_out_keywords(config: dict[str, Any]) -> list[str]:
    words = {w for ws in config["unsubscribe"]["keywords"].values() for w in ws}
    return sorted((_norm(w) for w in words if w.strip()), key=len, reverse=True)


def _statement_res(config: dict[str, Any]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return _compiled_statement_res(tuple(_opt_out_keywords(config)))


@lru_cache(maxsize=32)
def _compiled_statement_res(keyword_list: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    keywords = "|".join(re.escape(k) for k in keyword_list)
    quote_open = "[\"'「『“‘]?"
    zh = re.compile(rf"(?:{'|'.join(REPLY_VERBS_ZH)})\s*{quote_open}\s*(?:{keywords})")
    en = re.compile(rf"\b(?:{'|'.join(REPLY_VERBS_EN)})\s+{quote_open}(?:{keywords})(?![a-z0-9])")
    return zh, en


def opt_out_statements(body: str, config: dict[str, Any]) -> dict[str, str | None]:
    """The Chinese and the English unsubscribe statement found in ``body`` (normalised), if any.

    A statement is the configured footer, or an instruction with a configured opt-out keyword:
    a Chinese reply verb (回覆, 傳送, ...) before the keyword, or an English one (Reply, Text, ...).
    """
    text = _norm(body)
    footer = config["unsubscribe"]["footer"]
    zh_re, en_re = _statement_res(config)
    found: dict[str, str | None] = {"zh": None, "en": None}
    for lang, pattern in (("zh", zh_re), ("en", en_re)):
        own = _norm(footer[lang])
        if own and own in text:
            found[lang] = own
        else:
            match = pattern.search(text)
            found[lang] = match.group(0) if match else None
    return found


def required_wording(*, body: str, purpose: str, language: str, brand: str, config: dict[str, Any]) -> dict[str, Any]:
    """What the active rule preset requires of this template, and what is missing."""
    if purpose != Purpose.MARKETING:
        return {"required": [], "missing": [], "statements": opt_out_statements(body, config)}
    statements = opt_out_statements(body, config)
    if config["unsubscribe"]["require_bilingual_footer"]:
        langs = ["zh", "en"]  # Hong Kong (Cap. 593A): the statement in Chinese and in English
    else:
        langs = {"en": ["en"], "zh-hant": ["zh"]}.get(language, ["zh", "en"])
    required = ["brand", *(f"unsubscribe_{lang}" for lang in langs)]
    missing = []
    if not brand or _norm(brand) not in _norm(body):
        missing.append("brand")
    missing += [f"unsubscribe_{lang}" for lang in langs if not statements[lang]]
    return {"required": required, "missing": missing, "statements": statements}


def _describe_missing(missing: list[str], *, brand: str, config: dict[str, Any]) -> str:
    footer = config["unsubscribe"]["footer"]
    words = {
        "brand": f"the brand name {brand!r}" if brand else "the brand name (set brand and include it in body)",
        "unsubscribe_zh": f"the Chinese unsubscribe statement (e.g. {footer['zh']!r})",
        "unsubscribe_en": f"the English unsubscribe statement (e.g. {footer['en']!r})",
    }
    return "; ".join(words[m] for m in missing)


def missing_wording_error(missing: list[str], *, brand: str, config: dict[str, Any]) -> ApplicationError:
    what = _describe_missing(missing, brand=brand, config=config)
    return _error(
        TemplateErrorCode.MISSING_REQUIRED_WORDING,
        f"A marketing template must carry the brand and the unsubscribe statement required by the rule preset; "
        f"missing: {what}.",
        field="body",
        hint=f"Add to body: {what}. Then save again.",
        missing=missing,
    )


URL_IN_TEXT_RE = re.compile(
    r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|hk|io|co|shop|store|app|ly|me|cn|info)\b"
    r"(?:/\S*)?",
    re.IGNORECASE,
)
PROMO_WORDS_EN = tuple(
    "sale|discount|offer|promo|promotion|coupon|voucher|deal|deals|cashback|rebate|clearance|bonus|"
    "free gift|buy now|shop now|limited time".split("|")
)
PROMO_WORDS_ZH = tuple(
    "優惠 折扣 減價 特價 促銷 限時 低至 免費送 贈品 現金回贈 大減價 着數 著數 買一送一 优惠 折扣碼".split()
)
PROMO_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in PROMO_WORDS_EN if w[0].isalnum()) + r")\b"
    r"|\d+\s*%\s*off|\d+(?:\.\d+)?\s*折|" + "|".join(re.escape(w) for w in PROMO_WORDS_ZH),
    re.IGNORECASE,
)


def otp_promotion(body: str, fields: list[dict[str, Any]]) -> list[str]:
    """Promotional content in an OTP template: URLs, URL fields and discount words (zh/en)."""
    found: list[str] = []
    text = unicodedata.normalize("NFKC", body)
    for match in URL_IN_TEXT_RE.finditer(text):
        found.append(f"URL {match.group(0)!r}")
    found += [f"URL field {f['name']!r}" for f in fields if f["type"] == "url"]
    for match in PROMO_RE.finditer(text):
        found.append(f"promotional wording {match.group(0)!r}")
    return found


# --- template content ----------------------------------------------------------


def template_content_validate(raw: dict[str, Any], *, config: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a full template content; raises the first rule broken."""
    name = _plain_line(raw.get("name"), field="name", max_chars=100)
    purpose = raw.get("purpose")
    if purpose not in Purpose.values:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"purpose must be one of {', '.join(Purpose.values)}.",
            field="purpose",
            hint="marketing for promotions, transactional for service messages, otp for codes.",
        )
    language = raw.get("language")
    if language not in Language.values:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"language must be one of {', '.join(Language.values)}.",
            field="language",
            hint="bilingual for messages in Chinese and English.",
        )
    body = text_validate(raw.get("body"), field="body")
    brand = _plain_line(raw.get("brand"), field="brand", max_chars=60, required=False)
    fields = fields_validate(raw.get("fields"))
    max_segments = raw.get("max_segments", 3)
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or not 1 <= max_segments <= 10:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "max_segments must be an integer from 1 to 10.",
            field="max_segments",
            hint="The most SMS parts a message from this template may take; previews flag anything beyond.",
        )

    declared = {f["name"]: f for f in fields}
    used = placeholders(body)
    undeclared = [p for p in used if p not in declared]
    if undeclared:
        raise _error(
            TemplateErrorCode.PLACEHOLDER_UNDECLARED,
            f"body uses {{{{{undeclared[0]}}}}} but no field {undeclared[0]!r} is declared.",
            field="body",
            hint="Declare every placeholder in fields (name, type, max_length, example), or remove it.",
            undeclared=undeclared,
        )
    unused = [f["name"] for f in fields if f["name"] not in used]
    if unused:
        raise _error(
            TemplateErrorCode.FIELD_UNUSED,
            f"Field {unused[0]!r} is declared but body never uses {{{{{unused[0]}}}}}.",
            field="fields",
            hint="Remove the field or use it in body.",
            unused=unused,
        )

    otp_fields = [f for f in fields if f["type"] == "otp_code"]
    if purpose == Purpose.OTP:
        promo = otp_promotion(body, fields)
        if promo:
            raise _error(
                TemplateErrorCode.OTP_PROMOTIONAL,
                f"An OTP template carries no promotion; found {', '.join(promo[:5])}.",
                field="body",
                hint="Keep OTP text to the code, its validity and who sends it; put offers in a marketing template.",
                found=promo,
            )
        if not otp_fields:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                "An OTP template needs a field of type otp_code for the code.",
                field="fields",
                hint='Declare e.g. {"name": "code", "type": "otp_code", "max_length": 6, "example": "123456"}.',
            )
    elif otp_fields:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "Fields of type otp_code belong only in OTP templates.",
            field="fields",
            hint="Use purpose otp, or another field type.",
        )

    if purpose == Purpose.MARKETING and not brand:
        raise missing_wording_error(["brand"], brand=brand, config=config)
    wording = required_wording(body=body, purpose=purpose, language=language, brand=brand, config=config)
    if wording["missing"]:
        raise missing_wording_error(wording["missing"], brand=brand, config=config)
    return {
        "name": name,
        "purpose": purpose,
        "language": language,
        "body": body,
        "brand": brand,
        "fields": fields,
        "max_segments": max_segments,
    }


def sensitive_changes(new: dict[str, Any], old: TemplateVersion | None, *, config: dict[str, Any]) -> list[str]:
    """Why a save touches brand, OTP or compliance wording (the approval policy's facts)."""
    reasons: list[str] = []
    if old is None:
        if new["brand"]:
            reasons.append("brand")
        if new["purpose"] == Purpose.MARKETING:
            reasons.append("compliance_wording")
        if new["purpose"] == Purpose.OTP:
            reasons.append("otp_wording")
        return reasons
    if _norm(new["brand"]) != _norm(old.brand):
        reasons.append("brand")
    if new["purpose"] != old.purpose:
        reasons.append("purpose")
    if opt_out_statements(new["body"], config) != opt_out_statements(old.body, config):
        reasons.append("compliance_wording")
    if (new["purpose"] == Purpose.OTP or old.purpose == Purpose.OTP) and (
        new["body"] != old.body or new["fields"] != old.fields
    ):
        reasons.append("otp_wording")
    return reasons


def content_of(version: TemplateVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "purpose": version.purpose,
        "language": version.language,
        "body": version.body,
        "brand": version.brand,
        "fields": list(version.fields or []),
        "max_segments": version.max_segments,
    }


def current_version(template: Template) -> TemplateVersion:
    return TemplateVersion.objects.get(template=template, version=template.version)


# --- scenarios ---------------------------------------------------------------


def longest_values(fields: list[dict[str, Any]], *, url_value: str | None = None) -> dict[str, str]:
    values = {}
    for f in fields:
        if f["type"] == "url" and url_value is not None:
            values[f["name"]] = url_value
        else:
            values[f["name"]] = WORST_CHAR[f["charset"]] * f["max_length"]
    return values


def _scenario(text: str, *, field: str, smart_encoding: bool) -> tuple[dict[str, Any], SegmentResult]:
    result = segment_analysis(text, field=field, smart_encoding=smart_encoding)
    return (
        {
            "text": result.text,
            "characters": len(result.text),
            "encoding": result.encoding,
            "units": result.units,
            "segments": result.segments,
            "characters_left": result.remaining,
            "single_limit": result.single_limit,
            "part_limit": result.part_limit,
            "non_gsm_characters": [
                {"char": c.char, "code_point": c.code_point, "count": len(c.positions)}
                for c in result.non_gsm_chars[:20]
            ],
            "smart_encoding_applied": result.smart_encoding_applied,
            "replacements": len(result.replacements),
        },
        result,
    )


def _cut(result: SegmentResult, limit: int) -> dict[str, Any]:
    fits = result.segments <= limit
    cut_text = "" if fits else "".join(p.text for p in result.parts[limit:])
    return {"max_segments": limit, "fits": fits, "cut_text": cut_text, "cut_characters": len(cut_text)}


def _cut_wording(
    result: SegmentResult, limit: int, *, purpose: str, language: str, brand: str, config: dict[str, Any]
) -> list[str]:
    if result.segments <= limit:
        return []
    kept = "".join(p.text for p in result.parts[:limit])
    full = required_wording(body=result.text, purpose=purpose, language=language, brand=brand, config=config)
    part = required_wording(body=kept, purpose=purpose, language=language, brand=brand, config=config)
    return [m for m in part["missing"] if m not in full["missing"]]


# --- templates.list --------------------------------------------------------------


def _pending_template_requests() -> dict[int | None, list[int]]:
    pending: dict[int | None, list[int]] = {}
    rows = ActionRequest.objects.filter(action=ActionType.TEMPLATE_SAVE, state=RequestState.PENDING).values_list(
        "pk", "payload", "expires_at"
    )
    now = timezone.now()
    for pk, payload, expires_at in rows:
        if expires_at > now:
            pending.setdefault((payload or {}).get("template_id"), []).append(pk)
    return pending


def template_version_payload(version: TemplateVersion, *, config: dict[str, Any]) -> dict[str, Any]:
    content = content_of(version)
    example = render(version.body, {f["name"]: f["example"] for f in content["fields"]})
    _, example_result = _scenario(example, field="body", smart_encoding=False)
    longest = render(version.body, longest_values(content["fields"], url_value=_short_url_sample(config, True)))
    _, longest_result = _scenario(longest, field="body", smart_encoding=False)
    wording = required_wording(
        body=version.body, purpose=version.purpose, language=version.language, brand=version.brand, config=config
    )
    return {
        "template_id": version.template_id,
        "version": version.version,
        "version_id": version.pk,
        **content,
        "characters": len(version.body),
        "example_text": example,
        "encoding": example_result.encoding,
        "segments_example": example_result.segments,
        "segments_longest": longest_result.segments,
        "opt_out_text": wording["statements"],
        "required_wording": {"required": wording["required"], "missing": wording["missing"]},
        "usable": not wording["missing"],
        "approval_status": version.approval_status,
        "action_request_id": version.action_request_id,
        "reason": version.reason,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by.username if version.created_by else None,
    }


def templates_list(
    *,
    template_id: int | None = None,
    purpose: str | None = None,
    language: str | None = None,
    name_contains: str | None = None,
    include_versions: bool = False,
    limit: int = 50,
) -> dict[str, Any]:
    config = platform_config_data()
    qs = Template.objects.order_by("name")
    if template_id is not None:
        qs = qs.filter(pk=template_id)
        if not qs.exists():
            raise not_found(
                "template", template_id, field="template_id", hint="Call sms_marketing.templates.list without filters."
            )
    if purpose:
        qs = qs.filter(purpose=purpose)
    if language:
        qs = qs.filter(language=language)
    if name_contains:
        qs = qs.filter(name__icontains=name_contains)
    total = qs.count()
    templates = list(qs[: max(1, min(limit, 200))])
    versions = {
        (v.template_id, v.version): v
        for v in TemplateVersion.objects.filter(template__in=templates).select_related("created_by")
    }
    pending = _pending_template_requests()
    out = []
    for template in templates:
        current = versions[(template.pk, template.version)]
        item = {
            **template_version_payload(current, config=config),
            "base_version_token": version_token(LABEL, template.pk, template.version),
            "pending_action_request_ids": pending.get(template.pk, []),
            "updated_at": template.updated_at.isoformat(),
        }
        if include_versions or template_id is not None:
            item["versions"] = [
                {
                    "version": v.version,
                    "version_id": v.pk,
                    "approval_status": v.approval_status,
                    "action_request_id": v.action_request_id,
                    "reason": v.reason,
                    "created_at": v.created_at.isoformat(),
                    "created_by": v.created_by.username if v.created_by else None,
                }
                for (tid, _), v in sorted(versions.items(), key=lambda kv: -kv[0][1])
                if tid == template.pk
            ]
        out.append(item)
    return {
        "templates": out,
        "count": len(out),
        "total": total,
        "pending_new_template_request_ids": pending.get(None, []),
        "note": (
            "Campaigns pin a version_id. Use a template whose purpose fits the message; marketing templates keep "
            "the brand and the unsubscribe statement in Chinese and English. 'usable' is false when the current "
            "rules (config) are not met; save a new version first. Updates need base_version_token."
        ),
    }


def template_version_get(*, version_id: int) -> dict[str, Any]:
    """One pinned version (for campaigns)."""
    version = TemplateVersion.objects.select_related("created_by").filter(pk=version_id).first()
    if version is None:
        raise not_found("template version", version_id, field="template_version_id", hint="See templates.list.")
    return template_version_payload(version, config=platform_config_data())


# --- copy.fit_preview ---------------------------------------------------------------


def _short_url_sample(config: dict[str, Any], per_recipient: bool) -> str:
    base = f"https://{config['short_links']['domain']}/s/{'X' * CODE_LENGTH}"
    return f"{base}/{'r' * RECIPIENT_TOKEN_LENGTH}" if per_recipient else base


def _countries(value: Any) -> list[str]:
    if value is None:
        return ["HK"]
    if not isinstance(value, list) or not value or len(value) > 50:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "countries must be a list of 1-50 ISO country codes.",
            field="countries",
            hint='e.g. ["HK"]',
        )
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, str) or not re.fullmatch(r"[A-Za-z]{2}", c):
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"countries.{i} is not an ISO 3166 code.",
                field=f"countries.{i}",
                hint='Two letters, e.g. "HK".',
            )
        out.append(c.upper())
    return list(dict.fromkeys(out))


def _gateway_limits(codes: set[str]) -> dict[str, int]:
    limits = {}
    for code, settings in Gateway.objects.filter(code__in=codes).values_list("code", "settings"):
        value = (settings or {}).get("max_segments")
        limits[code] = int(value) if isinstance(value, int) and value > 0 else GATEWAY_DEFAULT_MAX_SEGMENTS
    return limits


def copy_fit_preview(
    *,
    text: str | None = None,
    template_id: int | None = None,
    template_version_id: int | None = None,
    fields: list[dict[str, Any]] | None = None,
    variables: dict[str, Any] | None = None,
    max_segments: int | None = None,
    smart_encoding: bool = False,
    recipients: int = 1,
    countries: list[str] | None = None,
    per_recipient_links: bool | None = None,
    purpose: str | None = None,
    brand: str | None = None,
) -> dict[str, Any]:
    """Encoding, segments, characters left, truncation and cost, for the given values and the longest ones."""
    config = platform_config_data()
    sources = sum(x is not None for x in (text, template_id, template_version_id))
    if sources != 1:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "Give exactly one of text, template_id or template_version_id.",
            field="text",
            hint="Preview free text, or a template (its current version or a pinned one).",
        )
    language = Language.BILINGUAL.value
    version_info: dict[str, Any] | None = None
    if brand is not None and text is None:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "brand goes only with text (a template has its own).",
            field="brand",
            hint="Remove brand.",
        )
    brand = _plain_line(brand, field="brand", max_chars=60, required=False)
    if purpose is not None and (purpose not in Purpose.values or text is None):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"purpose must be one of {', '.join(Purpose.values)}, and only with text (a template has its own).",
            field="purpose",
            hint="Required wording is checked for marketing text.",
        )
    purpose = purpose or Purpose.MARKETING.value
    if text is not None:
        body = text_validate(text, field="text")
        declared = fields_validate(fields)
        limit = max_segments
        field_name = "text"
    else:
        if template_version_id is not None:
            version = TemplateVersion.objects.filter(pk=template_version_id).first()
            if version is None:
                raise not_found(
                    "template version", template_version_id, field="template_version_id", hint="See templates.list."
                )
        else:
            template = Template.objects.filter(pk=template_id).first() if template_id is not None else None
            if template is None:
                raise not_found("template", template_id, field="template_id", hint="See templates.list.")
            version = current_version(template)
        body, declared, limit = version.body, list(version.fields), version.max_segments
        purpose, language, brand = version.purpose, version.language, version.brand
        version_info = {"template_id": version.template_id, "version": version.version, "version_id": version.pk}
        field_name = "body"
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10):
        raise _error(ErrorCode.VALIDATION_ERROR, "max_segments must be 1-10.", field="max_segments", hint="e.g. 2")
    if isinstance(recipients, bool) or not isinstance(recipients, int) or not 1 <= recipients <= 10_000_000:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "recipients must be an integer from 1 to 10,000,000.",
            field="recipients",
            hint="The number of recipients per country to price.",
        )
    wanted = _countries(countries)
    per_recipient = config["tracking"]["per_recipient_links"] if per_recipient_links is None else per_recipient_links

    variables = variables or {}
    if not isinstance(variables, dict):
        raise _error(ErrorCode.VALIDATION_ERROR, "variables must be an object.", field="variables", hint="name: value")
    by_name = {f["name"]: f for f in declared}
    given: dict[str, str] = {}
    for name, value in variables.items():
        where = f"variables.{name}"
        if name not in placeholders(body):
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"The text has no placeholder {{{{{name}}}}}.",
                field=where,
                hint=f"Placeholders: {', '.join(placeholders(body)) or 'none'}.",
            )
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if value is None:
                raise _error(ErrorCode.VALIDATION_ERROR, f"{where} must be text.", field=where, hint="Send a string.")
        value = _plain_line(value, field=where, max_chars=MAX_FIELD_LENGTH, required=False)
        spec = by_name.get(name)
        if spec is not None and len(value) > spec["max_length"]:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where} has {len(value)} characters; the field allows {spec['max_length']}.",
                field=where,
                hint="Values are cut to nothing longer than the field's max_length; shorten it.",
            )
        given[name] = value
    missing = [p for p in placeholders(body) if p not in given and p not in by_name]
    if missing:
        raise _error(
            TemplateErrorCode.PLACEHOLDER_UNDECLARED,
            f"{{{{{missing[0]}}}}} has no value and no field declaration.",
            field=f"variables.{missing[0]}",
            hint="Give its value in variables, or declare it in fields with max_length and example.",
        )

    short_url = _short_url_sample(config, per_recipient)
    given_values = {**{f["name"]: f["example"] for f in declared}, **given}
    longest_vals = {**given, **longest_values(declared, url_value=short_url)}
    given_out, given_result = _scenario(render(body, given_values), field=field_name, smart_encoding=smart_encoding)
    longest_out, longest_result = _scenario(render(body, longest_vals), field=field_name, smart_encoding=smart_encoding)

    # Literal URLs: what a short link would save.
    urls = []
    for match in re.finditer(r"https?://\S+", given_out["text"]):
        if match.group(0).startswith(f"https://{config['short_links']['domain']}/s/"):
            continue
        urls.append({"url": match.group(0), "characters": len(match.group(0)), "short_url_characters": len(short_url)})
    with_links = None
    if urls:
        replaced = re.sub(
            r"https?://\S+",
            lambda m: short_url if any(m.group(0) == u["url"] for u in urls) else m.group(0),
            longest_out["text"],
        )
        with_links_out, _ = _scenario(replaced, field=field_name, smart_encoding=smart_encoding)
        with_links = {k: with_links_out[k] for k in ("characters", "encoding", "units", "segments", "characters_left")}

    prices = segment_prices(countries=wanted)
    gateway_limits = _gateway_limits({q.gateway_code for q in prices.values()})
    # A gateway whose provider splits by itself (Twilio) never cuts a grapheme cluster, so the same
    # text can take one part more there: its rows are counted that way (analysed once, on demand).
    clustered: dict[str, SegmentResult] = {}

    def split_for(quote_: PriceQuote, scenario: str, result: SegmentResult) -> SegmentResult:
        if not quote_.keeps_clusters:
            return result
        if scenario not in clustered:
            clustered[scenario] = segment_analysis(
                result.text, field=field_name, smart_encoding=False, keep_clusters=True
            )
        return clustered[scenario]

    truncation: list[dict[str, Any]] = []
    wording_args: dict[str, Any] = {"purpose": purpose, "language": language, "brand": brand, "config": config}
    if limit is not None:
        cut = _cut(longest_result, limit)
        truncation.append(
            {
                "limit": "template",
                **cut,
                "cuts_required_wording": _cut_wording(longest_result, limit, **wording_args),
            }
        )
    costs = []
    for country in wanted:
        quote_ = prices.get(country)
        if quote_ is None:
            costs.append(
                {
                    "country": country,
                    "covered": False,
                    "note": f"No enabled gateway covers {country}: it cannot be sent there, so it is not priced.",
                }
            )
            continue
        gateway_limit = gateway_limits.get(quote_.gateway_code, GATEWAY_DEFAULT_MAX_SEGMENTS)
        gateway_longest = split_for(quote_, "longest", longest_result)
        gateway_given = split_for(quote_, "given", given_result)
        if gateway_longest.segments > gateway_limit:
            truncation.append(
                {
                    "limit": f"gateway {quote_.gateway_code} ({country})",
                    **_cut(gateway_longest, gateway_limit),
                    "cuts_required_wording": _cut_wording(gateway_longest, gateway_limit, **wording_args),
                }
            )
        billed = min(gateway_longest.segments, gateway_limit)
        per_message = (quote_.price_per_segment * billed).quantize(Decimal("0.0001"))
        costs.append(
            {
                "country": country,
                "covered": True,
                "gateway": quote_.gateway_code,
                "currency": quote_.currency,
                "price_per_segment": str(quote_.price_per_segment),
                "segments_billed": billed,
                "cost_per_message": str(per_message),
                "recipients": recipients,
                "cost_total": str((per_message * recipients).quantize(Decimal("0.01"))),
                "example_cost_per_message": str(
                    (quote_.price_per_segment * min(gateway_given.segments, gateway_limit)).quantize(Decimal("0.0001"))
                ),
            }
        )
    wording = required_wording(body=given_out["text"], purpose=purpose, language=language, brand=brand, config=config)
    if text is not None and not brand:
        # Free text without a brand given: the brand cannot be checked, so it is not reported.
        wording["missing"] = [m for m in wording["missing"] if m != "brand"]
    return {
        "source": "text" if text is not None else "template",
        "template": version_info,
        "given": given_out,
        "longest": longest_out,
        "short_links": {
            "short_url_example": short_url,
            "short_url_characters": len(short_url),
            "per_recipient": per_recipient,
            "url_fields": [f["name"] for f in declared if f["type"] == "url"],
            "urls_in_text": urls,
            "longest_with_short_links": with_links,
        },
        "truncation": truncation,
        "fits": all(t["fits"] for t in truncation),
        "costs": costs,
        "required_wording_missing": wording["missing"],
        "assumptions": [
            "longest: every field at its max_length; digits fields as '9', gsm fields as 'W', unicode fields as "
            "'字' (one UTF-16 unit; each emoji or HKSCS astral character would count 2).",
            "url fields hold a short link of the configured short domain"
            + (" with a per-recipient token." if per_recipient else "."),
            "costs use the longest scenario's segments at the preferred enabled gateway's listed rate, capped at the "
            "gateway's segment limit; a gateway that splits messages itself (Twilio) keeps emoji sequences and "
            "accented letters whole across parts, which can take one part more; " + config["cost"]["estimate_note"],
        ],
    }


# --- short links ---------------------------------------------------------------------

SHORTENER_HOSTS = frozenset(
    (
        "bit.ly bitly.com tinyurl.com t.co goo.gl ow.ly is.gd v.gd buff.ly rebrand.ly cutt.ly "
        "shorturl.at tiny.cc rb.gy s.id t.ly bl.ink lnkd.in soo.gd shorte.st adf.ly qr.net t.cn url.cn "
        "dwz.cn reurl.cc ppt.cc lihi.cc lihi1.com 0rz.tw short.io tr.im x.co y2u.be amzn.to "
        "shorturl.com"
    ).split()
)
FINANCE_HOSTS = frozenset(
    (
        "paypal.com paypal.me stripe.com alipay.com alipayhk.com payme.hsbc octopus.com.hk wise.com "
        "venmo.com squareup.com checkout.com adyen.com"
    ).split()
)
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")
UTM_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+-]{0,99}$")
_URL_BAD_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _in_domains(host: str, domains: list[str] | frozenset[str]) -> str | None:
    for domain in domains:
        if host == domain or host.endswith("." + domain):
            return domain
    return None


def _looks_like_ip(host: str) -> bool:
    if host.startswith("["):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    # Browsers also resolve 2130706433, 0x7f.1 or 127.1 as addresses: a host whose last label
    # is numeric or hex is never a domain name.
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return last.isdigit() or bool(re.fullmatch(r"0x[0-9a-f]*", last))


def url_check(url: Any, *, config: dict[str, Any], field: str = "url") -> dict[str, Any]:
    """Validate a landing-page URL; refuses every risky form with its own code."""
    policy = config["short_links"]
    if not isinstance(url, str) or not url.strip():
        raise _error(
            TemplateErrorCode.URL_INVALID, f"{field} is empty.", field=field, hint="Give the landing page URL."
        )
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise _error(
            TemplateErrorCode.URL_INVALID,
            f"{field} has {len(url)} characters; at most {MAX_URL_CHARS}.",
            field=field,
            hint="Shorten the URL's query.",
        )
    if _URL_BAD_CHARS.search(url):
        raise _error(
            TemplateErrorCode.URL_INVALID,
            f"{field} contains whitespace, a backslash or a control character.",
            field=field,
            hint="Percent-encode spaces (%20); backslashes and control characters are never valid in a link.",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _error(
            TemplateErrorCode.URL_INVALID, f"{field} is not a valid URL.", field=field, hint="e.g. https://shop.hk/"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _error(
            TemplateErrorCode.URL_SCHEME,
            f"{field} must start with https:// or http://"
            + (f" (not {parts.scheme}:)." if parts.scheme else "; it has no scheme."),
            field=field,
            hint="Give the full https:// address of the landing page.",
        )
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise _error(
            TemplateErrorCode.URL_CREDENTIALS,
            f"{field} carries credentials (user@host); such links disguise their real host.",
            field=field,
            hint="Remove everything before '@' in the host part.",
        )
    raw_host = parts.hostname or ""
    if not raw_host:
        raise _error(TemplateErrorCode.URL_INVALID, f"{field} has no host.", field=field, hint="e.g. https://shop.hk/")
    if _looks_like_ip(raw_host):
        raise _error(
            TemplateErrorCode.URL_IP_LITERAL,
            f"{field} points at an IP address ({raw_host}); recipients and carriers treat that as phishing.",
            field=field,
            hint="Use the landing page's domain name.",
        )
    try:
        host = raw_host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _error(
            TemplateErrorCode.URL_INVALID, f"{field} has an invalid host name.", field=field, hint="Check the domain."
        ) from None
    allowed_exactly = _in_domains(host, policy["allow_domains"])
    if any(label.startswith("xn--") for label in host.split(".")) and not allowed_exactly:
        raise _error(
            TemplateErrorCode.URL_LOOKALIKE,
            f"{field} uses an internationalised (punycode) host {host!r}, a common look-alike of a known brand.",
            field=field,
            hint="Use the plain ASCII domain, or ask compliance to add this exact domain to short_links.allow_domains.",
        )
    if not DOMAIN_RE.match(host):
        raise _error(
            TemplateErrorCode.URL_INVALID,
            f"{field} host {host!r} is not a public domain name.",
            field=field,
            hint="e.g. https://shop.example.hk/",
        )
    own = policy["domain"]
    shortener = _in_domains(host, SHORTENER_HOSTS) or _in_domains(host, [own])
    if shortener:
        raise _error(
            TemplateErrorCode.URL_SHORTENER,
            f"{field} is already a short link ({shortener}); a chain of redirects hides the real landing page.",
            field=field,
            hint="Give the final landing page URL.",
        )
    denied = _in_domains(host, policy["deny_domains"])
    if denied:
        raise _error(
            TemplateErrorCode.URL_DENIED,
            f"{field} host {host} is on the deny list ({denied}).",
            field=field,
            hint="Use another landing page; the deny list is in config short_links.deny_domains.",
        )
    if policy["allow_domains"] and not allowed_exactly:
        raise _error(
            TemplateErrorCode.URL_NOT_ALLOWED,
            f"{field} host {host} is not on the allow list.",
            field=field,
            hint=f"Allowed: {', '.join(policy['allow_domains'])} (config short_links.allow_domains).",
        )
    warnings = []
    if scheme == "http":
        warnings.append("The landing page is plain http; https is strongly recommended.")
    if port is not None and port not in (80, 443):
        warnings.append(f"The landing page uses port {port}; some carriers filter links with unusual ports.")
    return {"parts": parts, "scheme": scheme, "host": host, "port": port, "warnings": warnings}


def utm_merge(parts: Any, utm: Any, *, config: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The query with the UTM parameters merged in, and the resulting UTM set; refuses bad UTM."""
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    in_url: dict[str, str] = {}
    for key, value in pairs:
        k = key.lower()
        if not k.startswith("utm_"):
            continue
        if k not in UTM_KEYS:
            raise _error(
                TemplateErrorCode.UTM_MALFORMED,
                f"The URL has an unknown UTM parameter {key!r}.",
                field="url",
                hint=f"UTM parameters: {', '.join(UTM_KEYS)}.",
            )
        if k in in_url or key != k:
            raise _error(
                TemplateErrorCode.UTM_MALFORMED,
                f"The URL has {key!r} twice or in upper case.",
                field="url",
                hint="Give each UTM parameter once, in lower case.",
            )
        in_url[k] = value
    utm = utm or {}
    if not isinstance(utm, dict):
        raise _error(ErrorCode.VALIDATION_ERROR, "utm must be an object.", field="utm", hint='{"utm_source": "sms"}')
    merged = dict(in_url)
    added = []
    for key, value in utm.items():
        if key not in UTM_KEYS:
            raise _error(
                TemplateErrorCode.UTM_MALFORMED,
                f"utm.{key} is not a UTM parameter.",
                field=f"utm.{key}",
                hint=f"UTM parameters: {', '.join(UTM_KEYS)}.",
            )
        if key in in_url and in_url[key] != value:
            raise _error(
                TemplateErrorCode.UTM_MALFORMED,
                f"{key} is {in_url[key]!r} in the URL and {value!r} in utm.",
                field=f"utm.{key}",
                hint="Give it once, either in the URL or in utm.",
            )
        if key not in in_url:
            merged[key] = value
            added.append(key)
    for key, value in merged.items():
        where = f"utm.{key}" if key in utm else "url"
        if not isinstance(value, str) or not UTM_VALUE_RE.match(value):
            raise _error(
                TemplateErrorCode.UTM_MALFORMED,
                f"{key} value {value!r} is not well formed.",
                field=where,
                hint="1-100 letters, digits, '.', '_', '-', '+' or '~', starting with a letter or digit (no spaces).",
            )
    missing = [k for k in config["short_links"]["required_utm"] if k not in merged]
    if missing:
        raise _error(
            TemplateErrorCode.UTM_MISSING,
            f"Required UTM parameter(s) missing: {', '.join(missing)}.",
            field="utm",
            hint=f"Add them in utm, e.g. {{{', '.join(f'{m!r}: ...' for m in missing)}}}.",
            missing=missing,
        )
    query = parts.query
    # Appended in the fixed UTM order, so that the target never depends on the order the keys
    # arrived in (PostgreSQL's jsonb does not keep it, and create re-derives the target).
    extra = "&".join(f"{k}={quote(merged[k], safe='')}" for k in UTM_KEYS if k in added)
    if extra:
        query = f"{query}&{extra}" if query else extra
    return query, {k: merged[k] for k in UTM_KEYS if k in merged}


def _sensitive(host: str, parts: Any, *, config: dict[str, Any]) -> list[str]:
    reasons = []
    finance = _in_domains(host, FINANCE_HOSTS)
    if finance:
        reasons.append(f"payment host {finance}")
    tokens = [t for t in re.split(r"[^a-z0-9]+", f"{host} {parts.path} {parts.query}".lower()) if t]
    for keyword in config["short_links"]["sensitive_path_keywords"]:
        kw = keyword.lower()
        hit = next((t for t in tokens if t.startswith(kw)), None)
        if hit:
            reasons.append(f"keyword {keyword!r} ({hit})")
    return reasons


def _expiry(expires_at: Any, expiry_days: Any, *, config: dict[str, Any], now: datetime) -> datetime:
    policy = config["short_links"]
    latest = now + timedelta(days=policy["max_expiry_days"])
    if expires_at is not None and expiry_days is not None:
        raise _error(
            TemplateErrorCode.EXPIRY_INVALID,
            "Give expires_at or expiry_days, not both.",
            field="expires_at",
            hint="One of them.",
        )
    if expires_at is None:
        days = policy["default_expiry_days"] if expiry_days is None else expiry_days
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise _error(
                TemplateErrorCode.EXPIRY_INVALID,
                "expiry_days must be a whole number of days, at least 1.",
                field="expiry_days",
                hint=f"At most {policy['max_expiry_days']} (config short_links.max_expiry_days).",
            )
        if days > policy["max_expiry_days"]:
            raise _error(
                TemplateErrorCode.EXPIRY_INVALID,
                f"expiry_days {days} is beyond the policy's {policy['max_expiry_days']} days.",
                field="expiry_days",
                hint="Choose a shorter life, or ask compliance to change short_links.max_expiry_days.",
            )
        return now + timedelta(days=days)
    if isinstance(expires_at, datetime):
        when = expires_at
    else:
        try:
            when = datetime.fromisoformat(str(expires_at))
        except ValueError:
            raise _error(
                TemplateErrorCode.EXPIRY_INVALID,
                "expires_at is not an ISO 8601 date-time.",
                field="expires_at",
                hint="e.g. 2030-01-31T23:59:00+08:00",
            ) from None
    if timezone.is_naive(when):
        when = when.replace(tzinfo=ZoneInfo(config["schedule"]["time_zone"]))
    if when <= now:
        raise _error(
            TemplateErrorCode.EXPIRY_INVALID,
            f"expires_at {when.isoformat()} is not in the future.",
            field="expires_at",
            hint="A link must stay valid while recipients can click it (UEMO: at least the campaign's life).",
        )
    if when > latest:
        raise _error(
            TemplateErrorCode.EXPIRY_INVALID,
            f"expires_at is beyond the policy's maximum of {policy['max_expiry_days']} days.",
            field="expires_at",
            hint=f"Choose a date before {latest.isoformat()}.",
        )
    return when


def short_link_spec(raw: dict[str, Any], *, config: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Everything short_links.preview shows and short_links.create stores, re-checked against ``config``."""
    now = now or timezone.now()
    checked = url_check(raw.get("url"), config=config)
    parts = checked["parts"]
    query, utm = utm_merge(parts, raw.get("utm"), config=config)
    expires = _expiry(raw.get("expires_at"), raw.get("expiry_days"), config=config, now=now)
    tracking_policy = config["tracking"]
    tracking = raw.get("tracking")
    tracking = tracking_policy["click_tracking"] if tracking is None else tracking
    per_recipient = bool(raw.get("per_recipient", False))
    if not isinstance(tracking, bool):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "tracking must be true or false.",
            field="tracking",
            hint="Omit it for the policy default.",
        )
    if tracking and not tracking_policy["click_tracking"]:
        raise _error(
            TemplateErrorCode.TRACKING_NOT_PERMITTED,
            "Click tracking is switched off by the tracking policy.",
            field="tracking",
            hint="Send tracking: false, or ask compliance to enable tracking.click_tracking.",
        )
    if per_recipient and not (tracking and tracking_policy["per_recipient_links"]):
        raise _error(
            TemplateErrorCode.TRACKING_NOT_PERMITTED,
            "Per-recipient links are not permitted"
            + (" without click tracking." if not tracking else " by the tracking policy."),
            field="per_recipient",
            hint="Send per_recipient: false" + ("" if not tracking else ", or ask compliance to enable it."),
        )
    campaign_id = raw.get("campaign_id")
    if campaign_id is not None and (
        isinstance(campaign_id, bool) or not isinstance(campaign_id, int) or campaign_id < 1
    ):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "campaign_id must be a positive integer.",
            field="campaign_id",
            hint="Omit it, or give a campaign's id.",
        )
    # The checked host (lower case, punycode for an allowed IDN), never the raw netloc.
    netloc = checked["host"] + (f":{checked['port']}" if checked["port"] is not None else "")
    target = iri_to_uri(urlunsplit((checked["scheme"], netloc, parts.path or "/", query, parts.fragment)))
    warnings = list(checked["warnings"])
    if not tracking:
        warnings.append("Click tracking is off: clicks on this link are not recorded.")
    sensitive = _sensitive(checked["host"], parts, config=config)
    return {
        "original_url": raw["url"].strip(),
        "target_url": target,
        "landing_host": checked["host"],
        "utm": utm,
        "expires_at": expires.isoformat(),
        "tracking": tracking,
        "per_recipient": per_recipient,
        "campaign_id": campaign_id,
        "sensitive": bool(sensitive),
        "sensitive_reasons": sensitive,
        "short_domain": config["short_links"]["domain"],
        "warnings": warnings,
    }


def new_short_code() -> str:
    for _ in range(10):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if not ShortLink.objects.filter(code=code).exists():
            return code
    raise ApplicationError(ErrorCode.INTERNAL_ERROR, "Could not allocate a short code.")  # pragma: no cover


def short_link_preview(
    *,
    actor: Actor,
    url: str,
    utm: dict[str, str] | None = None,
    expires_at: str | None = None,
    expiry_days: int | None = None,
    tracking: bool | None = None,
    per_recipient: bool = False,
    campaign_id: int | None = None,
) -> dict[str, Any]:
    """Check a landing page and show its short link; short_links.create takes the returned id."""
    config = platform_config_data()
    raw = {
        "url": url,
        "utm": utm,
        "expires_at": expires_at,
        "expiry_days": expiry_days,
        "tracking": tracking,
        "per_recipient": per_recipient,
        "campaign_id": campaign_id,
    }
    spec = short_link_spec(raw, config=config)
    code = new_short_code()
    short_url = f"https://{spec['short_domain']}/s/{code}"
    result = {
        **spec,
        "code": code,
        "short_url": short_url,
        "short_url_characters": len(short_url),
        "per_recipient_url_example": f"{short_url}/{'r' * RECIPIENT_TOKEN_LENGTH}" if spec["per_recipient"] else None,
        "per_recipient_url_characters": len(short_url) + 1 + RECIPIENT_TOKEN_LENGTH if spec["per_recipient"] else None,
        "characters_saved": len(spec["target_url"]) - len(short_url),
        "needs_approval_hint": (
            "Sensitive landing page: short_links.create follows the approval policy." if spec["sensitive"] else None
        ),
    }
    # Store the validated input with the absolute expiry, so create re-checks exactly what was shown.
    stored_input = {**raw, "url": spec["original_url"], "expires_at": spec["expires_at"], "expiry_days": None}
    preview = preview_store(actor=actor, kind=PREVIEW_KIND, payload=stored_input, result=result)
    return {
        **result,
        "short_link_preview_id": str(preview.pk),
        "preview_expires_at": preview.expires_at.isoformat(),
    }


def short_link_payload(link: ShortLink, *, clicks: int | None = None) -> dict[str, Any]:
    out = {
        "short_link_id": link.pk,
        "code": link.code,
        "short_url": link.short_url,
        "target_url": link.target_url,
        "landing_host": link.landing_host,
        "utm": link.utm,
        "expires_at": link.expires_at.isoformat(),
        "campaign_id": link.campaign_id,
        "tracking": link.tracking,
        "per_recipient": link.per_recipient,
        "sensitive": link.sensitive,
        "owner": link.owner.username,
        "created_at": link.created_at.isoformat(),
    }
    if clicks is not None:
        out["clicks"] = clicks
    return out
