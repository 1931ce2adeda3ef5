"""The content rules of a template: text limits and segment analysis, field declarations and
placeholders, the required wording (UEMO, Cap. 593A), OTP promotion, and the validated
content of a version.

Previews and lists report them, and the write services in ``templates.services`` (and the
campaign rules in ``campaigns.content``) enforce exactly the same functions.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from smsplatform.kernel.content import promotion_found
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.segments import SegmentInputError, SegmentResult, analyse
from smsplatform.kernel.text import name_check
from templates.errors import TemplateErrorCode, template_error
from templates.models import Language, Purpose, Template, TemplateVersion

MAX_BODY_CHARS = 1600  # ten UCS-2 parts and then some; providers cap a message near here
MAX_FIELDS = 20
MAX_FIELD_LENGTH = 500

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
        raise template_error(
            exc.code,
            f"{field}: {exc.message}",
            field=exc.field,
            hint="Remove or retype that character; only printable text, line breaks and tabs are allowed.",
            position=exc.position,
        ) from None


def text_validate(value: Any, *, field: str, max_chars: int = MAX_BODY_CHARS) -> str:
    """Message text: a non-empty string of at most ``max_chars`` valid characters."""
    if not isinstance(value, str):
        raise template_error(ErrorCode.VALIDATION_ERROR, f"{field} must be text.", field=field, hint="Send a string.")
    text = value.strip()
    if not text:
        raise template_error(
            TemplateErrorCode.TEXT_EMPTY, f"{field} is empty.", field=field, hint="Write the message text."
        )
    if len(text) > max_chars:
        raise template_error(
            TemplateErrorCode.TEXT_TOO_LONG,
            f"{field} has {len(text):,} characters; at most {max_chars:,} are allowed.",
            field=field,
            hint="An SMS body longer than this is never delivered whole; shorten it.",
            characters=len(text),
            limit=max_chars,
        )
    segment_analysis(text, field=field)  # rejects control characters and lone surrogates
    return text


def plain_line(value: Any, *, field: str, max_chars: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise template_error(ErrorCode.VALIDATION_ERROR, f"{field} must be text.", field=field, hint="Send a string.")
    text = value.strip()
    if required and not text:
        raise template_error(ErrorCode.VALIDATION_ERROR, f"{field} is required.", field=field, hint=f"Give a {field}.")
    if len(text) > max_chars:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            f"{field} has {len(text)} characters; at most {max_chars} are allowed.",
            field=field,
            hint=f"Shorten the {field}.",
        )
    if text and ("\n" in text or "\r" in text):
        raise template_error(
            ErrorCode.VALIDATION_ERROR, f"{field} must be one line.", field=field, hint="Remove line breaks."
        )
    if text:
        name_check(text, field=field)  # no bidi overrides or zero-width characters in a label
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


def placeholders(body: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER_RE.findall(body)))


def fields_validate(value: Any, *, field: str = "fields") -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise template_error(
            ErrorCode.VALIDATION_ERROR, f"{field} must be a list.", field=field, hint="Send a list of fields."
        )
    if len(value) > MAX_FIELDS:
        raise template_error(
            ErrorCode.VALIDATION_ERROR, f"At most {MAX_FIELDS} fields.", field=field, hint="Remove unused fields."
        )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{field}.{i}"
        if not isinstance(item, dict):
            raise template_error(
                ErrorCode.VALIDATION_ERROR, f"{where} must be an object.", field=where, hint="See the schema."
            )
        unknown = sorted(set(item) - {"name", "type", "charset", "max_length", "example"})
        if unknown:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.{unknown[0]} is not a field property.",
                field=f"{where}.{unknown[0]}",
                hint="A field has name, type, charset, max_length and example.",
            )
        name = item.get("name")
        if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.name must be lower-case letters, digits or '_', starting with a letter (max 40).",
                field=f"{where}.name",
                hint="e.g. first_name",
            )
        if name in seen:
            raise template_error(
                ErrorCode.VALIDATION_ERROR, f"Field {name!r} is declared twice.", field=f"{where}.name", hint="Rename."
            )
        seen.add(name)
        ftype = item.get("type", "text")
        if ftype not in FIELD_TYPES:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.type must be one of {', '.join(FIELD_TYPES)}.",
                field=f"{where}.type",
                hint="Pick the type that matches the values.",
            )
        charset = item.get("charset") or DEFAULT_CHARSET[ftype]
        if charset not in CHARSETS:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.charset must be one of {', '.join(CHARSETS)}.",
                field=f"{where}.charset",
                hint="unicode for names and free text, gsm for Latin text, digits for numbers.",
            )
        max_length = item.get("max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_FIELD_LENGTH:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.max_length must be an integer from 1 to {MAX_FIELD_LENGTH}.",
                field=f"{where}.max_length",
                hint="The longest value the field can take, in characters; previews use it.",
            )
        example = item.get("example")
        if not isinstance(example, str) or not example.strip():
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where}.example is required.",
                field=f"{where}.example",
                hint="Give a realistic value; previews show the message with it.",
            )
        example = plain_line(example, field=f"{where}.example", max_chars=max_length)
        value_check(example, charset=charset, field=f"{where}.example")
        out.append({"name": name, "type": ftype, "charset": charset, "max_length": max_length, "example": example})
    return out


def value_check(value: str, *, charset: str, field: str) -> None:
    if charset == "digits" and not value.isdigit():
        raise template_error(
            ErrorCode.VALIDATION_ERROR, f"{field} must be digits only.", field=field, hint="e.g. 123456"
        )
    if charset == "gsm" and segment_analysis(value, field=field).encoding != "GSM-7":
        raise template_error(
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
    return template_error(
        TemplateErrorCode.MISSING_REQUIRED_WORDING,
        f"A marketing template must carry the brand and the unsubscribe statement required by the rule preset; "
        f"missing: {what}.",
        field="body",
        hint=f"Add to body: {what}. Then save again.",
        missing=missing,
    )


def otp_promotion(body: str, fields: list[dict[str, Any]]) -> list[str]:
    """Promotional content in an OTP template: URLs, URL fields and discount words (zh/en)."""
    found = promotion_found(body)
    # Field types first would change the order callers report; keep text URLs, fields, words.
    urls = [f for f in found if f.startswith("URL ")]
    words = [f for f in found if not f.startswith("URL ")]
    return [*urls, *(f"URL field {f['name']!r}" for f in fields if f["type"] == "url"), *words]


# --- template content ----------------------------------------------------------


def template_content_validate(raw: dict[str, Any], *, config: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a full template content; raises the first rule broken."""
    name = plain_line(raw.get("name"), field="name", max_chars=100)
    purpose = raw.get("purpose")
    if purpose not in Purpose.values:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            f"purpose must be one of {', '.join(Purpose.values)}.",
            field="purpose",
            hint="marketing for promotions, transactional for service messages, otp for codes.",
        )
    language = raw.get("language")
    if language not in Language.values:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            f"language must be one of {', '.join(Language.values)}.",
            field="language",
            hint="bilingual for messages in Chinese and English.",
        )
    body = text_validate(raw.get("body"), field="body")
    brand = plain_line(raw.get("brand"), field="brand", max_chars=60, required=False)
    fields = fields_validate(raw.get("fields"))
    max_segments = raw.get("max_segments", 3)
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or not 1 <= max_segments <= 10:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "max_segments must be an integer from 1 to 10.",
            field="max_segments",
            hint="The most SMS parts a message from this template may take; previews flag anything beyond.",
        )

    declared = {f["name"]: f for f in fields}
    used = placeholders(body)
    undeclared = [p for p in used if p not in declared]
    if undeclared:
        raise template_error(
            TemplateErrorCode.PLACEHOLDER_UNDECLARED,
            f"body uses {{{{{undeclared[0]}}}}} but no field {undeclared[0]!r} is declared.",
            field="body",
            hint="Declare every placeholder in fields (name, type, max_length, example), or remove it.",
            undeclared=undeclared,
        )
    unused = [f["name"] for f in fields if f["name"] not in used]
    if unused:
        raise template_error(
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
            raise template_error(
                TemplateErrorCode.OTP_PROMOTIONAL,
                f"An OTP template carries no promotion; found {', '.join(promo[:5])}.",
                field="body",
                hint="Keep OTP text to the code, its validity and who sends it; put offers in a marketing template.",
                found=promo,
            )
        if not otp_fields:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                "An OTP template needs a field of type otp_code for the code.",
                field="fields",
                hint='Declare e.g. {"name": "code", "type": "otp_code", "max_length": 6, "example": "123456"}.',
            )
    elif otp_fields:
        raise template_error(
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
