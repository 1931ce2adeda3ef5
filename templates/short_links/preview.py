"""The short-link reads behind short_links.preview and short_links.create: the target URL's
risk checks, the UTM merge, the expiry, the validated spec, the stored preview and the
link's payload.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.encoding import iri_to_uri

from smsplatform.config_schema import DOMAIN_RE
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ErrorCode
from smsplatform.kernel.previews import preview_store
from templates.errors import TemplateErrorCode, template_error
from templates.models import ShortLink
from templates.short_links.codes import RECIPIENT_TOKEN_LENGTH, new_short_code

PREVIEW_KIND = "short_links"

MAX_URL_CHARS = 2048


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
        raise template_error(
            TemplateErrorCode.URL_INVALID, f"{field} is empty.", field=field, hint="Give the landing page URL."
        )
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise template_error(
            TemplateErrorCode.URL_INVALID,
            f"{field} has {len(url)} characters; at most {MAX_URL_CHARS}.",
            field=field,
            hint="Shorten the URL's query.",
        )
    if _URL_BAD_CHARS.search(url):
        raise template_error(
            TemplateErrorCode.URL_INVALID,
            f"{field} contains whitespace, a backslash or a control character.",
            field=field,
            hint="Percent-encode spaces (%20); backslashes and control characters are never valid in a link.",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise template_error(
            TemplateErrorCode.URL_INVALID, f"{field} is not a valid URL.", field=field, hint="e.g. https://shop.hk/"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise template_error(
            TemplateErrorCode.URL_SCHEME,
            f"{field} must start with https:// or http://"
            + (f" (not {parts.scheme}:)." if parts.scheme else "; it has no scheme."),
            field=field,
            hint="Give the full https:// address of the landing page.",
        )
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise template_error(
            TemplateErrorCode.URL_CREDENTIALS,
            f"{field} carries credentials (user@host); such links disguise their real host.",
            field=field,
            hint="Remove everything before '@' in the host part.",
        )
    raw_host = parts.hostname or ""
    if not raw_host:
        raise template_error(
            TemplateErrorCode.URL_INVALID, f"{field} has no host.", field=field, hint="e.g. https://shop.hk/"
        )
    if _looks_like_ip(raw_host):
        raise template_error(
            TemplateErrorCode.URL_IP_LITERAL,
            f"{field} points at an IP address ({raw_host}); recipients and carriers treat that as phishing.",
            field=field,
            hint="Use the landing page's domain name.",
        )
    try:
        host = raw_host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise template_error(
            TemplateErrorCode.URL_INVALID, f"{field} has an invalid host name.", field=field, hint="Check the domain."
        ) from None
    allowed_exactly = _in_domains(host, policy["allow_domains"])
    if any(label.startswith("xn--") for label in host.split(".")) and not allowed_exactly:
        raise template_error(
            TemplateErrorCode.URL_LOOKALIKE,
            f"{field} uses an internationalised (punycode) host {host!r}, a common look-alike of a known brand.",
            field=field,
            hint="Use the plain ASCII domain, or ask compliance to add this exact domain to short_links.allow_domains.",
        )
    if not DOMAIN_RE.match(host):
        raise template_error(
            TemplateErrorCode.URL_INVALID,
            f"{field} host {host!r} is not a public domain name.",
            field=field,
            hint="e.g. https://shop.example.hk/",
        )
    own = policy["domain"]
    shortener = _in_domains(host, SHORTENER_HOSTS) or _in_domains(host, [own])
    if shortener:
        raise template_error(
            TemplateErrorCode.URL_SHORTENER,
            f"{field} is already a short link ({shortener}); a chain of redirects hides the real landing page.",
            field=field,
            hint="Give the final landing page URL.",
        )
    denied = _in_domains(host, policy["deny_domains"])
    if denied:
        raise template_error(
            TemplateErrorCode.URL_DENIED,
            f"{field} host {host} is on the deny list ({denied}).",
            field=field,
            hint="Use another landing page; the deny list is in config short_links.deny_domains.",
        )
    if policy["allow_domains"] and not allowed_exactly:
        raise template_error(
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
            raise template_error(
                TemplateErrorCode.UTM_MALFORMED,
                f"The URL has an unknown UTM parameter {key!r}.",
                field="url",
                hint=f"UTM parameters: {', '.join(UTM_KEYS)}.",
            )
        if k in in_url or key != k:
            raise template_error(
                TemplateErrorCode.UTM_MALFORMED,
                f"The URL has {key!r} twice or in upper case.",
                field="url",
                hint="Give each UTM parameter once, in lower case.",
            )
        in_url[k] = value
    utm = utm or {}
    if not isinstance(utm, dict):
        raise template_error(
            ErrorCode.VALIDATION_ERROR, "utm must be an object.", field="utm", hint='{"utm_source": "sms"}'
        )
    merged = dict(in_url)
    added = []
    for key, value in utm.items():
        if key not in UTM_KEYS:
            raise template_error(
                TemplateErrorCode.UTM_MALFORMED,
                f"utm.{key} is not a UTM parameter.",
                field=f"utm.{key}",
                hint=f"UTM parameters: {', '.join(UTM_KEYS)}.",
            )
        if key in in_url and in_url[key] != value:
            raise template_error(
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
            raise template_error(
                TemplateErrorCode.UTM_MALFORMED,
                f"{key} value {value!r} is not well formed.",
                field=where,
                hint="1-100 letters, digits, '.', '_', '-', '+' or '~', starting with a letter or digit (no spaces).",
            )
    missing = [k for k in config["short_links"]["required_utm"] if k not in merged]
    if missing:
        raise template_error(
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
        raise template_error(
            TemplateErrorCode.EXPIRY_INVALID,
            "Give expires_at or expiry_days, not both.",
            field="expires_at",
            hint="One of them.",
        )
    if expires_at is None:
        days = policy["default_expiry_days"] if expiry_days is None else expiry_days
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise template_error(
                TemplateErrorCode.EXPIRY_INVALID,
                "expiry_days must be a whole number of days, at least 1.",
                field="expiry_days",
                hint=f"At most {policy['max_expiry_days']} (config short_links.max_expiry_days).",
            )
        if days > policy["max_expiry_days"]:
            raise template_error(
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
            raise template_error(
                TemplateErrorCode.EXPIRY_INVALID,
                "expires_at is not an ISO 8601 date-time.",
                field="expires_at",
                hint="e.g. 2030-01-31T23:59:00+08:00",
            ) from None
    if timezone.is_naive(when):
        when = when.replace(tzinfo=ZoneInfo(config["schedule"]["time_zone"]))
    if when <= now:
        raise template_error(
            TemplateErrorCode.EXPIRY_INVALID,
            f"expires_at {when.isoformat()} is not in the future.",
            field="expires_at",
            hint="A link must stay valid while recipients can click it (UEMO: at least the campaign's life).",
        )
    if when > latest:
        raise template_error(
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
        raise template_error(
            ErrorCode.VALIDATION_ERROR,
            "tracking must be true or false.",
            field="tracking",
            hint="Omit it for the policy default.",
        )
    if tracking and not tracking_policy["click_tracking"]:
        raise template_error(
            TemplateErrorCode.TRACKING_NOT_PERMITTED,
            "Click tracking is switched off by the tracking policy.",
            field="tracking",
            hint="Send tracking: false, or ask compliance to enable tracking.click_tracking.",
        )
    if per_recipient and not (tracking and tracking_policy["per_recipient_links"]):
        raise template_error(
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
        raise template_error(
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
