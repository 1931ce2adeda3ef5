"""What a campaign says and what it costs: the checks every campaign write runs again.

``campaign_evaluate`` takes a normalised campaign spec and answers, or refuses with the
field at fault: the message exactly as it will go out (rendered once; a per-recipient
link token is fixed-length GSM text, so every recipient's message has the same parts),
its encoding and segments, the segment's live counts and exclusions, the gateway and
rate per country, and the estimated cost. Create, update, schedule, send and the
approval of each call it, so nothing is judged on stale numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from campaigns.errors import CampaignErrorCode
from contacts.models import Segment
from gateways.models import Gateway
from gateways.rules import sender_id_check_usable
from gateways.selectors import PriceQuote, segment_prices
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found
from smsplatform.kernel.money import money_text
from smsplatform.kernel.segments import SegmentResult
from templates.content_rules import (
    PLACEHOLDER_RE,
    content_of,
    render,
    required_wording,
    segment_analysis,
    text_validate,
    value_check,
)
from templates.copy_fit import LINK_FIELD
from templates.models import Purpose, ShortLink, TemplateVersion
from templates.short_links.codes import RECIPIENT_TOKEN_LENGTH
from templates.short_links.preview import url_check

# Stands for the per-recipient token while the message is measured; it is replaced in SQL
# at dispatch. Same length and alphabet class (GSM basic) as the real token.
TOKEN_MARK = "\x00TOKEN\x00"
TOKEN_SAMPLE = "a" * RECIPIENT_TOKEN_LENGTH
URL_IN_TEXT_RE = re.compile(r"(?i)\b(?:https?://|www\.)\S+")


def _error(code: str, message: str, *, field: str, hint: str, **details: Any) -> ApplicationError:
    return ApplicationError(code, message, field=field, hint=hint, details=details or None)


def short_link_in_use(code: str, owner_id: int) -> ApplicationError:
    return _error(
        CampaignErrorCode.SHORT_LINK_IN_USE,
        f"Short link {code} belongs to campaign {owner_id}; a short link serves one campaign only.",
        field="short_link_id",
        hint=(
            "Create a short link for this campaign (sms_marketing.short_links.preview, then "
            "sms_marketing.short_links.create) and pass its short_link_id, or leave short_link_id empty."
        ),
        owner_campaign_id=owner_id,
    )


def recipient_token_salt(campaign_id: int, link_id: int) -> str:
    """Keyed per campaign and link: tokens cannot be guessed from a contact id."""
    message = f"recipient-token:{campaign_id}:{link_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:24]


def recipient_token(campaign_id: int, link_id: int, contact_id: int) -> str:
    """The same token the dispatch SQL computes (md5 of salt || contact id, first 8 hex)."""
    salt = recipient_token_salt(campaign_id, link_id)
    return hashlib.md5(f"{salt}{contact_id}".encode(), usedforsecurity=False).hexdigest()[:RECIPIENT_TOKEN_LENGTH]


@dataclass
class Evaluation:
    body_template: str  # the rendered body; TOKEN_MARK where a per-recipient token goes
    body_preview: str  # as a recipient sees it (token shown as a sample)
    encoding: str
    segments: int
    max_segments: int
    analysis: dict[str, Any]
    link: ShortLink | None
    per_recipient_token: bool
    counts: dict[str, Any]
    quotes: dict[str, PriceQuote]
    by_country: list[dict[str, Any]]
    cost: dict[str, Decimal]
    recipients: int
    sensitive: bool
    warnings: list[str] = field(default_factory=list)
    # Parts per covered country as its gateway splits them (a Twilio gateway keeps grapheme
    # clusters whole, so it can need one more); ``segments`` is the largest of them.
    segments_by_country: dict[str, int] = field(default_factory=dict)

    @property
    def total_cost(self) -> Decimal:
        return sum(self.cost.values(), Decimal(0))

    def segments_for(self, country: str) -> int:
        return self.segments_by_country.get(country, self.segments)

    def facts(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients,
            "cost": str(self.total_cost),
            # The currency of cost when its quotes share one (None: mixed or nothing priced).
            "currency": next(iter(self.cost)) if len(self.cost) == 1 else None,
            "segments_per_message": self.segments,
            "sensitive": self.sensitive,
        }


def _segment(actor: Actor, segment_id: Any) -> Segment:
    from contacts.selectors import audiences_visible

    if isinstance(segment_id, bool) or not isinstance(segment_id, int):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "segment_id must be an integer.",
            field="segment_id",
            hint="Create one with sms_marketing.segments.create.",
        )
    segment = Segment.objects.filter(pk=segment_id).first()
    visible = set(audiences_visible(actor).values_list("pk", flat=True)) if segment else set()
    if segment is None or not set(segment.criteria.get("audience_ids") or []) <= visible:
        raise not_found(
            "segment", segment_id, field="segment_id", hint="Create one with sms_marketing.segments.create."
        )
    return segment


def _consent_purposes(criteria: Any) -> set[str]:
    if isinstance(criteria, dict):
        found = {str(criteria["consent_purpose"])} if "consent_purpose" in criteria else set()
        for key, value in criteria.items():
            if key != "consent_purpose":
                found |= _consent_purposes(value)
        return found
    if isinstance(criteria, list):
        return set().union(*(_consent_purposes(item) for item in criteria)) if criteria else set()
    return set()


def _consented(segment: Segment) -> None:
    purposes = _consent_purposes(segment.criteria.get("criteria") or {})
    if purposes - {"marketing"}:
        raise _error(
            CampaignErrorCode.SEGMENT_NOT_CONSENTED,
            f"Segment {segment.pk} selects contacts by {sorted(purposes - {'marketing'})[0]} consent; marketing SMS "
            "needs marketing consent.",
            field="segment_id",
            hint="Use a segment built on marketing consent.",
        )


def _link(actor: Actor, link_id: Any, *, send_at: datetime | None, config: dict[str, Any]) -> ShortLink:
    if isinstance(link_id, bool) or not isinstance(link_id, int):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "short_link_id must be an integer.",
            field="short_link_id",
            hint="Create one with sms_marketing.short_links.create.",
        )
    link = ShortLink.objects.filter(pk=link_id).first()
    if link is None:
        raise not_found(
            "short link", link_id, field="short_link_id", hint="Create one with sms_marketing.short_links.create."
        )
    now = timezone.now()
    must_live_until = max(now, send_at or now)
    if link.expires_at <= must_live_until:
        raise _error(
            CampaignErrorCode.SHORT_LINK_EXPIRED,
            f"Short link {link.code} expires at {link.expires_at.isoformat()}, before the campaign sends.",
            field="short_link_id",
            hint="Create a new short link whose expiry is after the send time.",
        )
    # The landing page must still pass today's rules (allow/deny lists may have changed).
    try:
        url_check(link.target_url, config=config, field="short_link_id")
    except ApplicationError as exc:
        raise _error(
            CampaignErrorCode.LANDING_PAGE_INCONSISTENT,
            f"The short link's landing page no longer passes the link rules: {exc.message}",
            field="short_link_id",
            hint="Create a new short link with sms_marketing.short_links.preview/create.",
        ) from None
    return link


def _message(
    spec: dict[str, Any], link: ShortLink | None, *, config: dict[str, Any], campaign_tracking: bool
) -> tuple[str, str, dict[str, Any], int, str]:
    """(body with TOKEN_MARK, body preview, analysis, max segments, template purpose)."""
    short_url = None
    per_recipient = bool(link and link.per_recipient and link.tracking and campaign_tracking)
    if link is not None:
        short_url = link.short_url + (f"/{TOKEN_MARK}" if per_recipient else "")
    version_id = spec.get("template_version_id")
    text = spec.get("text")
    if (version_id is None) == (not text):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "Give exactly one of template_version_id or text.",
            field="text",
            hint="Pin a template version (sms_marketing.templates.list) or write the copy.",
        )
    variables = spec.get("variables") or {}
    if version_id is not None:
        version = TemplateVersion.objects.filter(pk=version_id).select_related("template").first()
        if version is None:
            raise not_found(
                "template version", version_id, field="template_version_id", hint="See sms_marketing.templates.list."
            )
        if version.purpose != Purpose.MARKETING:
            raise _error(
                CampaignErrorCode.TEMPLATE_PURPOSE_MISMATCH,
                f"Template version {version.pk} is for {version.purpose} SMS, not marketing.",
                field="template_version_id",
                hint="Pick a marketing template.",
            )
        content = content_of(version)
        body, brand, language = version.body, version.brand, version.language
        max_segments = int(version.max_segments)
        fields = content.get("fields") or []
    else:
        body = text_validate(text, field="text")
        brand = str(spec.get("brand") or "").strip()
        language = spec.get("language") or "bilingual"
        max_segments = int(spec.get("max_segments") or 3)
        names = set(PLACEHOLDER_RE.findall(body))
        unknown = sorted(names - {LINK_FIELD})
        if unknown:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"Free copy can only use the {{{{{LINK_FIELD}}}}} placeholder, not {{{{{unknown[0]}}}}}.",
                field="text",
                hint="Use a template for other fields, or write the value into the copy.",
            )
        fields = [{"name": LINK_FIELD, "type": "url", "charset": "gsm", "max_length": 60}] if names else []
    url_fields = [f["name"] for f in fields if f["type"] == "url"]
    if not isinstance(variables, dict):
        raise _error(
            ErrorCode.VALIDATION_ERROR, "variables must be an object.", field="variables", hint='{"field": "value"}'
        )
    unknown_vars = sorted(set(variables) - {f["name"] for f in fields if f["type"] != "url"})
    if unknown_vars:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            f"variables.{unknown_vars[0]} is not a field of this message.",
            field=f"variables.{unknown_vars[0]}",
            hint="Only the template's non-link fields take values; links come from short_link_id.",
        )
    values: dict[str, str] = {}
    for f in fields:
        name = f["name"]
        where = f"variables.{name}"
        if f["type"] == "url":
            continue
        value = variables.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"{where} is required (the template's {f['type']} field).",
                field=where,
                hint=f"e.g. {f.get('example') or 'a value'}",
            )
        if len(value) > int(f["max_length"]):
            raise _error(
                CampaignErrorCode.FIELD_TOO_LONG,
                f"{where} is {len(value)} characters; the field allows {f['max_length']}.",
                field=where,
                hint="Shorten the value.",
            )
        value_check(value, charset=f.get("charset", "unicode"), field=where)
        values[name] = value
    if url_fields and link is None:
        raise _error(
            CampaignErrorCode.SHORT_LINK_REQUIRED,
            f"The message has a link field ({{{{{url_fields[0]}}}}}) but no short_link_id.",
            field="short_link_id",
            hint="Create a short link (sms_marketing.short_links.preview/create) and pass its id.",
        )
    if link is not None and not url_fields:
        raise _error(
            CampaignErrorCode.LANDING_PAGE_INCONSISTENT,
            "A short link is attached but the message has no link placeholder, so it would never be sent.",
            field="short_link_id",
            hint=f"Add {{{{{LINK_FIELD}}}}} to the copy (or a url field to the template), or drop short_link_id.",
        )
    for name in url_fields:
        values[name] = short_url or ""
    rendered = render(body, values)
    stray = URL_IN_TEXT_RE.findall(rendered.replace(short_url or "\x01", ""))
    if stray:
        raise _error(
            CampaignErrorCode.LANDING_PAGE_INCONSISTENT,
            f"The copy contains a raw link ({stray[0][:60]}); only the campaign's checked short link may appear.",
            field="text" if text else "variables",
            hint="Put the URL through sms_marketing.short_links.preview/create and use the link placeholder.",
        )
    measured = rendered.replace(TOKEN_MARK, TOKEN_SAMPLE)
    wording = required_wording(body=measured, purpose=Purpose.MARKETING, language=language, brand=brand, config=config)
    if wording["missing"]:
        from templates.content_rules import missing_wording_error

        error = missing_wording_error(wording["missing"], brand=brand, config=config)
        # Name the campaign's input at fault (a campaign has no "body"): its copy or its template.
        error.field = "text" if text else "template_version_id"
        raise error
    result = segment_analysis(measured, field=_content_field(spec))
    analysis = {
        "characters": len(measured),
        "encoding": result.encoding,
        "units": result.units,
        "segments": result.segments,
        "characters_left": result.remaining,
        "parts": [p.text for p in result.parts],
        "non_gsm_characters": [{"char": c.char, "count": len(c.positions)} for c in result.non_gsm_chars[:20]],
        "link_characters": len(short_url.replace(TOKEN_MARK, TOKEN_SAMPLE)) if short_url else 0,
    }
    _fits(result, max_segments, spec)
    return rendered, measured, analysis, max_segments, language


def _content_field(spec: dict[str, Any]) -> str:
    return "text" if spec.get("text") else "template_version_id"


def _fits(result: SegmentResult, max_segments: int, spec: dict[str, Any]) -> None:
    """Refuse a message over its part limit, on the input that made it long: the free copy, or
    a template's values."""
    if result.segments > max_segments:
        cut = "".join(p.text for p in result.parts[max_segments:])
        raise _error(
            CampaignErrorCode.MESSAGE_TOO_LONG,
            f"The message is {result.segments} segments; at most {max_segments} are allowed. "
            f"{len(cut)} characters would be cut.",
            field="text" if spec.get("text") else "variables",
            hint="Shorten the copy or the values (sms_marketing.copy.fit_preview shows what fits).",
            segments=result.segments,
            cut_text=cut,
        )


def _segments_by_country(
    spec: dict[str, Any], measured: str, segments: int, quotes: dict[str, PriceQuote], *, max_segments: int
) -> dict[str, int]:
    """Parts per covered country as its gateway will split the message.

    A provider that splits by itself (Twilio) never cuts a grapheme cluster (ZWJ emoji, skin tone,
    variation selector, combining mark), so the same text can need one part more there than the
    SMPP-style count; the text is analysed that way only when such a gateway carries it.
    """
    by_country = dict.fromkeys(quotes, segments)
    clustered = [country for country, quote in quotes.items() if quote.keeps_clusters]
    if clustered:
        result = segment_analysis(measured, field=_content_field(spec), keep_clusters=True)
        _fits(result, max_segments, spec)
        by_country.update(dict.fromkeys(clustered, result.segments))
    return by_country


def campaign_evaluate(
    actor: Actor, spec: dict[str, Any], *, campaign_id: int | None = None, send_at: datetime | None = None
) -> Evaluation:
    """Every content, audience, sender and cost rule for a campaign, on live data."""
    from contacts.selectors import segment_counts

    config = platform_config_data()
    segment = _segment(actor, spec.get("segment_id"))
    _consented(segment)
    link = None
    if spec.get("short_link_id") is not None:
        link = _link(actor, spec["short_link_id"], send_at=send_at, config=config)
        # A new draft (campaign_id None) may take only a link no campaign owns yet: checked here, at
        # create and update, not first at the send.
        if link.campaign_id is not None and link.campaign_id != campaign_id:
            raise short_link_in_use(link.code, link.campaign_id)
    body, measured, analysis, max_segments, _language = _message(
        spec, link, config=config, campaign_tracking=bool(spec.get("tracking", True))
    )
    counts = segment_counts(actor=actor, criteria=segment.criteria.get("criteria") or {})
    recipients = int(counts["sendable"])
    if recipients <= 0:
        raise _error(
            CampaignErrorCode.SEGMENT_NOT_CONSENTED,
            f"Segment {segment.pk} has no sendable contact now (consent, opt-outs, caps and coverage applied).",
            field="segment_id",
            hint="sms_marketing.segments.preview shows every exclusion by reason.",
            exclusions=counts["exclusions"],
        )
    gateway_code = spec.get("gateway") or None
    if gateway_code is not None:
        gateway = Gateway.objects.filter(code=gateway_code).first()
        if gateway is None or not gateway.enabled:
            raise _error(
                CampaignErrorCode.GATEWAY_NOT_USABLE,
                f"Gateway {gateway_code!r} does not exist or is disabled.",
                field="gateway",
                hint="Pick an enabled gateway from sms_marketing.gateways.list, or leave it empty.",
            )
    sendable_countries = [e["country"] for e in counts["by_country"] if e["sendable"]]
    quotes = segment_prices(countries=sendable_countries, gateway_code=gateway_code)
    uncovered = sorted(set(sendable_countries) - set(quotes))
    if uncovered:
        raise _error(
            CampaignErrorCode.COST_UNKNOWN,
            f"No {'rate on ' + gateway_code if gateway_code else 'enabled gateway rate'} for {', '.join(uncovered)}: "
            "the cost of those messages is not known.",
            field="gateway" if gateway_code else "segment_id",
            hint="Pick a gateway covering every country (sms_marketing.gateways.list), or narrow the segment.",
        )
    for country in sendable_countries:
        sender_id_check_usable(value=str(spec.get("sender_id") or ""), country=country)
        encodings = Gateway.objects.get(code=quotes[country].gateway_code).encodings or ["GSM-7", "UCS-2"]
        if analysis["encoding"] not in encodings:
            raise _error(
                CampaignErrorCode.ENCODING_NOT_SUPPORTED,
                f"Gateway {quotes[country].gateway_code} cannot send {analysis['encoding']}.",
                field="gateway",
                hint="Pick another gateway or change the copy.",
            )
    segments_by_country = _segments_by_country(spec, measured, analysis["segments"], quotes, max_segments=max_segments)
    cost: dict[str, Decimal] = {}
    by_country = []
    for entry in counts["by_country"]:
        country, n = entry["country"], int(entry["sendable"])
        quote = quotes.get(country)
        parts = segments_by_country.get(country, analysis["segments"])
        row = {
            "country": country,
            "contacts": entry["contacts"],
            "sendable": n,
            "excluded": entry["excluded"],
            "segments_per_message": parts,
        }
        if quote is not None and n:
            amount = (quote.price_per_segment * parts * n).quantize(Decimal("0.01"))
            cost[quote.currency] = cost.get(quote.currency, Decimal(0)) + amount
            row.update(
                gateway=quote.gateway_code,
                price_per_segment=str(quote.price_per_segment),
                currency=quote.currency,
                price_per_message=str(quote.price_per_segment * parts),
                estimated_cost=str(amount),
            )
        by_country.append(row)
    warnings = []
    if link is not None and link.per_recipient and not spec.get("tracking", True):
        warnings.append("tracking is off: the per-recipient link is sent without a recipient token")
    return Evaluation(
        body_template=body,
        body_preview=measured,
        encoding=analysis["encoding"],
        segments=max([analysis["segments"], *segments_by_country.values()]),
        max_segments=max_segments,
        analysis=analysis,
        link=link,
        per_recipient_token=TOKEN_MARK in body,
        counts=counts,
        quotes=quotes,
        by_country=by_country,
        cost=cost,
        recipients=recipients,
        sensitive=bool(link and link.sensitive),
        warnings=warnings,
        segments_by_country=segments_by_country,
    )


def budget_check(evaluation: Evaluation, *, budget: Decimal | None, field: str = "budget") -> None:
    """Over cost: above the campaign's budget or the platform's per-campaign ceiling."""
    config = platform_config_data()
    ceiling = Decimal(str(config["cost"]["max_campaign_cost"]))
    total = evaluation.total_cost
    currency = config["cost"]["currency"]
    if budget is not None and total > budget:
        raise _error(
            CampaignErrorCode.OVER_BUDGET,
            f"Estimated cost {money_text(total, currency)} is above the campaign budget "
            f"{money_text(budget, currency)}.",
            field=field,
            hint="Raise the budget (campaigns.update) or narrow the segment.",
            estimated_cost=str(total),
        )
    if total > ceiling:
        raise _error(
            CampaignErrorCode.OVER_COST_CEILING,
            f"Estimated cost {money_text(total, currency)} is above the platform's per-campaign ceiling "
            f"{money_text(ceiling, currency)}.",
            field=field,
            hint="Split the campaign or ask compliance to change cost.max_campaign_cost.",
            estimated_cost=str(total),
        )


def quota_check(evaluation: Evaluation) -> dict[str, Any]:
    """Overage against the month's quota and the balance (refused at schedule and send)."""
    from gateways.quotas import account_instance, headroom

    account = account_instance()
    room = headroom(account)
    if len(set(evaluation.segments_by_country.values())) > 1:  # gateways that split differently
        segments = sum(int(row["sendable"]) * row["segments_per_message"] for row in evaluation.by_country)
    else:
        segments = evaluation.recipients * evaluation.segments
    return {
        "segments_needed": segments,
        "available_segments": room.available_segments,
        "segments_over": max(0, segments - room.available_segments),
        "amount_needed": str(evaluation.total_cost),
        "available_amount": str(room.available_amount),
        "amount_over": str(max(Decimal(0), evaluation.total_cost - room.available_amount)),
        "currency": account.currency,
        "within": segments <= room.available_segments and evaluation.total_cost <= room.available_amount,
    }
