"""Reads of the gateways app."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from gateways.models import BindState, BindWorkerStatus, Gateway, GatewayRate, Provider

# A bind worker writes its status every HEARTBEAT seconds (gateways.smpp.worker); one silent for
# longer than this is taken for dead.
BIND_WORKER_SILENT_AFTER = timedelta(seconds=30)

# Providers that split a message into parts themselves, keeping grapheme clusters (ZWJ emoji, skin
# tones, variation selectors, combining marks) whole: a body can need one part more there than our
# SMPP-style split, so estimates for their gateways count with smsplatform.kernel.segments' keep_clusters.
# After sending, such a provider's own count is billed (SendOutcome.billed_segments).
CLUSTER_SPLITTING_PROVIDERS = frozenset({Provider.TWILIO.value})


def provider_keeps_clusters(provider: str) -> bool:
    """Whether a gateway of this provider splits messages itself, never cutting a grapheme cluster."""
    return provider in CLUSTER_SPLITTING_PROVIDERS


@dataclass(frozen=True)
class PriceQuote:
    gateway_code: str
    price_per_segment: Decimal
    currency: str
    provider: str = ""
    # The gateway row read with the rate (same statement): a caller that queues on it needs no
    # second read. Not part of the quote's value.
    gateway: Gateway | None = field(default=None, compare=False, repr=False)

    @property
    def keeps_clusters(self) -> bool:
        """Count this gateway's parts with whole grapheme clusters (see CLUSTER_SPLITTING_PROVIDERS)."""
        return provider_keeps_clusters(self.provider)


def segment_rates(*, countries: list[str], gateway_code: str | None = None) -> QuerySet[GatewayRate]:
    """The enabled rates to ``countries`` (with their gateways), in preference order: what
    ``segment_quotes`` reads. A queryset, so a caller can read it beside others in one round trip."""
    wanted = {c.upper() for c in countries}
    rates = (
        GatewayRate.objects.filter(country__in=wanted, gateway__enabled=True)
        .select_related("gateway")
        .order_by("country", "gateway__priority", "price_per_segment", "gateway__code")
    )
    if gateway_code:
        rates = rates.filter(gateway__code=gateway_code)
    return rates


def segment_quotes(rates: Iterable[GatewayRate]) -> dict[str, PriceQuote]:
    """The first rate per country whose gateway covers it, from ``segment_rates``' rows."""
    quotes: dict[str, PriceQuote] = {}
    for rate in rates:
        if rate.country in quotes or rate.country not in (rate.gateway.countries or []):
            continue
        quotes[rate.country] = PriceQuote(
            rate.gateway.code,
            rate.price_per_segment,
            rate.currency,
            provider=rate.gateway.provider,
            gateway=rate.gateway,
        )
    return quotes


def segment_prices(*, countries: list[str], gateway_code: str | None = None) -> dict[str, PriceQuote]:
    """The price per segment for each country, from the preferred enabled gateway covering it.

    A country no enabled gateway covers is absent from the answer: callers report it as not
    covered, never as free.
    """
    return segment_quotes(segment_rates(countries=countries, gateway_code=gateway_code))


def gateway_for(*, country: str, gateway_code: str | None = None) -> Gateway | None:
    quote = segment_prices(countries=[country], gateway_code=gateway_code).get(country.upper())
    if quote is None:
        return None
    return Gateway.objects.get(code=quote.gateway_code)


def _credential_state(gateway: Gateway) -> dict[str, dict[str, object]]:
    import os

    # Only the variable names and whether they are set: never the values.
    return {
        name: {"env": env_name, "configured": bool(os.environ.get(env_name))}
        for name, env_name in sorted((gateway.credentials_env or {}).items())
    }


def bind_status(gateway: Gateway, workers: Iterable[BindWorkerStatus] | None = None) -> dict[str, Any] | None:
    """An SMPP gateway's bind as its workers last reported it (None for other providers):
    ``bound`` (some live worker holds a bind), ``down`` (live workers, none bound: retrying,
    perhaps failing over), ``no_worker`` (no worker has reported for a while: nothing is sent)."""
    if gateway.provider != Provider.SMPP:
        return None
    rows = list(workers if workers is not None else gateway.bind_workers.all())
    now = timezone.now()
    live = [w for w in rows if w.state != BindState.STOPPED and now - w.heartbeat_at <= BIND_WORKER_SILENT_AFTER]
    last_seen = max((w.heartbeat_at for w in rows), default=None)
    if not live:
        return {
            "state": "no_worker",
            "workers": 0,
            "since": last_seen.isoformat() if last_seen else None,
            "last_error": "",
            "failing_over_to": None,
            "note": "No bind worker is running for this gateway (manage.py smpp_worker --gateway CODE): "
            "its queued messages wait.",
        }
    bound = [w for w in live if w.state == BindState.BOUND]
    if bound:
        return {
            "state": "bound",
            "workers": len(live),
            "since": min(w.state_since for w in bound).isoformat(),
            "last_error": "",
            "failing_over_to": None,
            "note": "",
        }
    latest = max(live, key=lambda w: w.heartbeat_at)
    return {
        "state": "down",
        "workers": len(live),
        "since": min(w.state_since for w in live).isoformat(),
        "last_error": latest.last_error,
        "failing_over_to": latest.failing_over_to or None,
        "note": "The bind is down and being retried"
        + (f"; due messages go to {latest.failing_over_to}." if latest.failing_over_to else "."),
    }


def gateways_list(*, include_disabled: bool = True) -> list[dict[str, Any]]:
    qs = (
        Gateway.objects.select_related("fallback")
        .prefetch_related("rates", "bind_workers")
        .order_by("priority", "code")
    )
    if not include_disabled:
        qs = qs.filter(enabled=True)
    return [
        {
            "code": g.code,
            "name": g.name,
            "provider": g.provider,
            "enabled": g.enabled,
            "countries": sorted(g.countries or []),
            "rates": [
                {"country": r.country, "price_per_segment": str(r.price_per_segment), "currency": r.currency}
                for r in sorted(g.rates.all(), key=lambda r: r.country)
            ],
            "receipts_supported": g.receipts_supported,
            "max_rate_per_second": g.max_rate_per_second,
            "window_size": g.window_size,
            "encodings": list(g.encodings or []),
            "fallback": g.fallback.code if g.fallback else None,
            "priority": g.priority,
            "credentials": _credential_state(g),
            "bind": bind_status(g, g.bind_workers.all()),
        }
        for g in qs
    ]


def sender_ids_list(*, country: str | None = None) -> list[dict[str, Any]]:
    from gateways.models import SenderId
    from gateways.rules import sender_id_usability

    out: list[dict[str, Any]] = []
    for s in SenderId.objects.order_by("value"):
        regions = sorted(set(s.regions or []) | ({country.upper()} if country else set()))
        usable = {region: sender_id_usability(s, region) for region in regions}
        if country and not usable[country.upper()].usable and country.upper() not in (s.regions or []):
            continue
        out.append(
            {
                "value": s.value,
                "kind": s.kind,
                "brand": s.brand,
                "status": s.status,
                "ssrs_status": (
                    "registered"
                    if s.value.startswith("#") and s.ssrs_registered_regions
                    else ("pending" if s.value.startswith("#") else "not_applicable")
                ),
                "regions": sorted(s.regions or []),
                "ssrs_registered_regions": sorted(s.ssrs_registered_regions or []),
                "restrictions": s.restrictions,
                "usable": {r: {"usable": u.usable, "reason": u.reason} for r, u in usable.items()},
                "registered_at": s.registered_at.isoformat() if s.registered_at else None,
                "expires_at": s.expires_at.isoformat() if s.expires_at else None,
            }
        )
    return out
