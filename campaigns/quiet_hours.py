"""Quiet hours: per country (``schedule.quiet_hours`` in the platform config), when a message
due at some moment may go out. Messages are held until the window opens, never dropped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from campaigns.models import SendBatch
from gateways.models import OutboundMessage
from smsplatform.config_service import platform_config_data

DEFAULT_ZONES = {"HK": "Asia/Hong_Kong", "MO": "Asia/Macau", "SG": "Asia/Singapore", "GB": "Europe/London"}


def quiet_release_time(country: str, at: datetime) -> datetime:
    """``at`` if the country is outside its quiet hours then, else when they end (never dropped)."""
    rules = platform_config_data()["schedule"]["quiet_hours"].get(country.upper())
    if not rules:
        return at
    zone = ZoneInfo(rules.get("time_zone") or DEFAULT_ZONES.get(country.upper(), "UTC"))
    local = at.astimezone(zone)
    start = datetime.strptime(rules["start"], "%H:%M").time()
    end = datetime.strptime(rules["end"], "%H:%M").time()
    now_t = local.time()
    in_quiet = (start <= now_t or now_t < end) if start > end else (start <= now_t < end)
    release = local
    if in_quiet:
        release = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
        if release <= local:
            release += timedelta(days=1)
    if rules.get("no_sundays") and release.weekday() == 6:
        release = (release + timedelta(days=1)).replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    return release.astimezone(at.tzinfo) if release != local else at


def quiet_hours_apply(batches: list[SendBatch], countries: list[str]) -> list[dict[str, Any]]:
    """Hold the batches' messages to a country in its quiet hours until they end; the waits."""
    waits = []
    for batch in batches:
        for country in countries:
            release = quiet_release_time(country, batch.not_before)
            if release > batch.not_before:
                n = OutboundMessage.objects.filter(batch=batch, country=country).update(next_attempt_at=release)
                if n:
                    waits.append(
                        {"batch": batch.number, "country": country, "messages": n, "until": release.isoformat()}
                    )
    return waits


def quiet_hours_notices(countries: Iterable[str], at: datetime | None = None) -> list[dict[str, Any]]:
    """For each country whose quiet hours would hold a message due at ``at`` (now when None): a
    structured notice saying which rule, and when the first message can go. A send at night then
    says it waits instead of waiting silently."""
    due = at or timezone.now()
    table = platform_config_data()["schedule"]["quiet_hours"]
    notices = []
    for country in sorted({c.upper() for c in countries}):
        rules = table.get(country)
        if not rules:
            continue
        release = quiet_release_time(country, due)
        if release <= due:
            continue
        zone = rules.get("time_zone") or DEFAULT_ZONES.get(country, "UTC")
        rule = f"{rules['start']}-{rules['end']} {zone}" + (", no Sundays" if rules.get("no_sundays") else "")
        local = release.astimezone(ZoneInfo(zone))
        notices.append(
            {
                "kind": "quiet_hours",
                "country": country,
                "rule": f"schedule.quiet_hours.{country}: {rule}",
                "due_at": due.isoformat(),
                "first_send_at": release.isoformat(),
                "message": (
                    f"{'Sent now' if at is None else 'At its send time'}, messages to {country} fall in its quiet "
                    f"hours ({rule}): they wait, and the first can go at {local:%Y-%m-%d %H:%M} ({zone})."
                ),
            }
        )
    return notices
