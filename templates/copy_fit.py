"""Copy fit: how a template's text fits its parts per gateway and country, with each variable at
its longest allowed value (copy.fit_preview), and the fit scenarios the template list shows.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from gateways.models import Gateway
from gateways.selectors import PriceQuote, segment_prices
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.errors import ErrorCode, not_found
from smsplatform.kernel.segments import SegmentResult
from templates.content_rules import (
    MAX_FIELD_LENGTH,
    current_version,
    fields_validate,
    placeholders,
    plain_line,
    render,
    required_wording,
    segment_analysis,
    text_validate,
)
from templates.errors import TemplateErrorCode, template_error
from templates.models import Language, Purpose, Template, TemplateVersion
from templates.short_links.codes import CODE_LENGTH, RECIPIENT_TOKEN_LENGTH

GATEWAY_DEFAULT_MAX_SEGMENTS = 10  # when a gateway's settings name no "max_segments"

# Fill characters of the longest-variable scenario: the costliest character each charset allows
# that is still one character of the field's max_length (see copy_fit_preview's assumptions).
WORST_CHAR = {"digits": "9", "gsm": "W", "unicode": "字"}

# --- scenarios ---------------------------------------------------------------


def longest_values(fields: list[dict[str, Any]], *, url_value: str | None = None) -> dict[str, str]:
    values = {}
    for f in fields:
        if f["type"] == "url" and url_value is not None:
            values[f["name"]] = url_value
        else:
            values[f["name"]] = WORST_CHAR[f["charset"]] * f["max_length"]
    return values


def fit_scenario(text: str, *, field: str, smart_encoding: bool) -> tuple[dict[str, Any], SegmentResult]:
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


# --- copy.fit_preview ---------------------------------------------------------------


# The placeholder a campaign's free copy fills with its short link (campaigns.content reads it too).
LINK_FIELD = "link"


def short_url_sample(config: dict[str, Any], per_recipient: bool) -> str:
    """The short URL as a campaign sends it: https, the configured short domain, /s/, a code of
    CODE_LENGTH characters and, with per-recipient links, / and a token of RECIPIENT_TOKEN_LENGTH
    (ShortLink.short_url and the token campaigns.dispatch writes in SQL). The sample characters
    are GSM basic, one septet each, as every real code and token character is."""
    base = f"https://{config['short_links']['domain']}/s/{'X' * CODE_LENGTH}"
    return f"{base}/{'r' * RECIPIENT_TOKEN_LENGTH}" if per_recipient else base


def _countries(value: Any) -> list[str]:
    if value is None:
        return ["HK"]
    if not isinstance(value, list) or not value or len(value) > 50:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "countries must be a list of 1-50 ISO country codes.",
            field="countries",
            hint='e.g. ["HK"]',
        )
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, str) or not re.fullmatch(r"[A-Za-z]{2}", c):
            raise template_error(
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
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "Give exactly one of text, template_id or template_version_id.",
            field="text",
            hint="Preview free text, or a template (its current version or a pinned one).",
        )
    language = Language.BILINGUAL.value
    version_info: dict[str, Any] | None = None
    if brand is not None and text is None:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "brand goes only with text (a template has its own).",
            field="brand",
            hint="Remove brand.",
        )
    brand = plain_line(brand, field="brand", max_chars=60, required=False)
    if purpose is not None and (purpose not in Purpose.values or text is None):
        raise template_error(
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
        raise template_error(
            ErrorCode.VALIDATION_ERROR, "max_segments must be 1-10.", field="max_segments", hint="e.g. 2"
        )
    if isinstance(recipients, bool) or not isinstance(recipients, int) or not 1 <= recipients <= 10_000_000:
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "recipients must be an integer from 1 to 10,000,000.",
            field="recipients",
            hint="The number of recipients per country to price.",
        )
    wanted = _countries(countries)
    per_recipient = config["tracking"]["per_recipient_links"] if per_recipient_links is None else per_recipient_links

    variables = variables or {}
    if not isinstance(variables, dict):
        raise template_error(
            ErrorCode.VALIDATION_ERROR, "variables must be an object.", field="variables", hint="name: value"
        )
    short_url = short_url_sample(config, per_recipient)
    if text is not None and LINK_FIELD in placeholders(body) and LINK_FIELD not in {f["name"] for f in declared}:
        # Free copy's {{link}} is the campaign's short link, as campaigns.create_draft reads it.
        declared = [
            *declared,
            {"name": LINK_FIELD, "type": "url", "charset": "gsm", "max_length": len(short_url), "example": short_url},
        ]
    by_name = {f["name"]: f for f in declared}
    url_fields = [f["name"] for f in declared if f["type"] == "url"]
    given: dict[str, str] = {}
    url_values: dict[str, str] = {}  # url fields given a value: sent as the short link, not as given
    for name, value in variables.items():
        where = f"variables.{name}"
        if name not in placeholders(body):
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"The text has no placeholder {{{{{name}}}}}.",
                field=where,
                hint=f"Placeholders: {', '.join(placeholders(body)) or 'none'}.",
            )
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if value is None:
                raise template_error(
                    ErrorCode.VALIDATION_ERROR, f"{where} must be text.", field=where, hint="Send a string."
                )
        value = plain_line(value, field=where, max_chars=MAX_FIELD_LENGTH, required=False)
        if name in url_fields:
            url_values[name] = value
            continue
        spec = by_name.get(name)
        if spec is not None and len(value) > spec["max_length"]:
            raise template_error(
                ErrorCode.VALIDATION_ERROR,
                f"{where} has {len(value)} characters; the field allows {spec['max_length']}.",
                field=where,
                hint="Values are cut to nothing longer than the field's max_length; shorten it.",
            )
        given[name] = value
    missing = [p for p in placeholders(body) if p not in given and p not in by_name]
    if missing:
        raise template_error(
            TemplateErrorCode.PLACEHOLDER_UNDECLARED,
            f"{{{{{missing[0]}}}}} has no value and no field declaration.",
            field=f"variables.{missing[0]}",
            hint="Give its value in variables, or declare it in fields with max_length and example.",
        )

    # A url field always goes out as the campaign's short link, whatever example or value it was
    # given: both scenarios count that URL, not the landing page's.
    short_values = dict.fromkeys(url_fields, short_url)
    given_values = {**{f["name"]: f["example"] for f in declared}, **given, **short_values}
    longest_vals = {**given, **longest_values(declared, url_value=short_url)}
    given_out, given_result = fit_scenario(render(body, given_values), field=field_name, smart_encoding=smart_encoding)
    longest_out, longest_result = fit_scenario(
        render(body, longest_vals), field=field_name, smart_encoding=smart_encoding
    )

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
        with_links_out, _ = fit_scenario(replaced, field=field_name, smart_encoding=smart_encoding)
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
            "url_fields": url_fields,
            "url_values_replaced": [
                {"field": name, "given": value, "given_characters": len(value), "counted_as": short_url}
                for name, value in url_values.items()
            ],
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
            f"url fields (and {{{{{LINK_FIELD}}}}} in free text) hold the short link as it is sent: "
            f"https://<short domain>/s/<{CODE_LENGTH}-character code>"
            + (f"/<{RECIPIENT_TOKEN_LENGTH}-character recipient token>" if per_recipient else "")
            + f" ({len(short_url)} characters); a URL given for them is the landing page, not what is counted.",
            "costs use the longest scenario's segments at the preferred enabled gateway's listed rate, capped at the "
            "gateway's segment limit; a gateway that splits messages itself (Twilio) keeps emoji sequences and "
            "accented letters whole across parts, which can take one part more; " + config["cost"]["estimate_note"],
        ],
    }
