"""Reads of the gateways app."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateways.models import Gateway, GatewayRate


@dataclass(frozen=True)
class PriceQuote:
    gateway_code: str
    price_per_segment: Decimal
    currency: str


def segment_prices(*, countries: list[str], gateway_code: str | None = None) -> dict[str, PriceQuote]:
    """The price per segment for each country, from the preferred enabled gateway covering it.

    A country no enabled gateway covers is absent from the answer: callers report it as not
    covered, never as free.
    """
    wanted = {c.upper() for c in countries}
    rates = (
        GatewayRate.objects.filter(country__in=wanted, gateway__enabled=True)
        .select_related("gateway")
        .order_by("country", "gateway__priority", "price_per_segment", "gateway__code")
    )
    if gateway_code:
        rates = rates.filter(gateway__code=gateway_code)
    quotes: dict[str, PriceQuote] = {}
    for rate in rates:
        if rate.country in quotes or rate.country not in (rate.gateway.countries or []):
            continue
        quotes[rate.country] = PriceQuote(rate.gateway.code, rate.price_per_segment, rate.currency)
    return quotes


def gateway_for(*, country: str, gateway_code: str | None = None) -> Gateway | None:
    quote = segment_prices(countries=[country], gateway_code=gateway_code).get(country.upper())
    if quote is None:
        return None
    return Gateway.objects.get(code=quote.gateway_code)
