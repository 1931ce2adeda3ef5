"""Frequency caps: per contact per day, per week, per campaign, a minimum gap, and transactional.

The caps are read from the configuration (``frequency_caps``). Who is over a cap is
computed in SQL from the send history (``gateways.OutboundMessage``; the index on
(purpose, created_at) with destination and state, contacts migration 0003, makes each window
an index-only range scan): a dispatch excludes
``destination IN (frequency_capped_destinations(...))`` without a per-contact loop, and a
segment preview probes the same per-window sets (``frequency_capped_windows()``).
OTP is never capped here; transactional SMS has its own daily cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, QuerySet
from django.utils import timezone

from gateways.models import MessagePurpose, MessageState, OutboundMessage
from smsplatform.config_service import platform_config_data

# A message that never left (refused before any gateway accepted it) does not count
# towards a cap; everything else, pending included, does.
_NOT_SENT = [MessageState.FAILED]


@dataclass(frozen=True)
class CapWindow:
    name: str
    hours: int
    limit: int
    purposes: tuple[str, ...]

    def describe(self) -> str:
        return f"at most {self.limit} {'/'.join(self.purposes)} SMS per {self.hours} h"


def frequency_windows(caps: dict[str, Any] | None = None) -> list[CapWindow]:
    caps = caps or platform_config_data()["frequency_caps"]
    marketing = (str(MessagePurpose.MARKETING),)
    windows = [
        CapWindow("per_day", 24, int(caps["per_day"]), marketing),
        CapWindow("per_week", 24 * 7, int(caps["per_week"]), marketing),
        CapWindow(
            "transactional_per_day", 24, int(caps["transactional_per_day"]), (str(MessagePurpose.TRANSACTIONAL),)
        ),
    ]
    if int(caps.get("min_hours_between") or 0) > 0:
        # "Skip anyone texted this recently" is a cap of 1 over the gap.
        windows.append(CapWindow("min_hours_between", int(caps["min_hours_between"]), 1, marketing))
    return windows


def frequency_caps_get() -> dict[str, Any]:
    caps = platform_config_data()["frequency_caps"]
    return {
        "caps": caps,
        "windows": [
            {"name": w.name, "hours": w.hours, "limit": w.limit, "purposes": list(w.purposes), "rule": w.describe()}
            for w in frequency_windows(caps)
        ],
        "per_campaign": {"limit": int(caps["per_campaign"]), "rule": "at most this many SMS per contact per campaign"},
        "applies_to": "marketing and transactional SMS; OTP is exempt",
        "note": (
            "Live sends and segment previews exclude contacts over any cap, computed in SQL from the send "
            "history; a cap of 0 blocks that purpose entirely. Caps are configuration (sms_marketing.config.get "
            "reads them); "
            "there is no MCP tool to change them: compliance changes them in the admin's Platform configuration "
            "or with PATCH /api/v1/config/ (a governed change, held for approval when a policy says so)."
        ),
    }


def frequency_capped_windows(
    *,
    purpose: str = MessagePurpose.MARKETING,
    now: datetime | None = None,
    caps: dict[str, Any] | None = None,
) -> list[tuple[CapWindow, QuerySet[Any]]]:
    """Each cap window of ``purpose`` with a ``values("destination")`` queryset of the phones
    already at its cap: the window's own range of the send history (an index-only range scan),
    grouped by destination with a plain count. Windows with a cap of zero are left out (they
    forbid the purpose outright, which callers check with frequency_blocked_purpose)."""
    now = now or timezone.now()
    return [
        (
            window,
            OutboundMessage.objects.filter(
                purpose__in=window.purposes, created_at__gte=now - timedelta(hours=window.hours)
            )
            .exclude(state__in=_NOT_SENT)
            .values("destination")
            .annotate(n=Count("destination"))  # not id: countable from the index alone
            .filter(n__gte=window.limit)
            .values("destination"),
        )
        for window in frequency_windows(caps)
        if purpose in window.purposes and window.limit > 0
    ]


def frequency_capped_exists(
    *,
    destination: Any,
    purpose: str = MessagePurpose.MARKETING,
    now: datetime | None = None,
    caps: dict[str, Any] | None = None,
) -> list[Exists]:
    """Per cap window of ``purpose``, whether the phone ``destination`` (an ``OuterRef``) is already
    at its cap, as a correlated ``EXISTS`` (the window's messages of that phone, skipping
    ``limit - 1``: at least ``limit`` of them). The same rule as ``frequency_capped_windows``,
    asked for a few phones (msg_destination_recent finds each phone's recent messages) instead
    of grouping the whole window's send history."""
    now = now or timezone.now()
    return [
        Exists(
            OutboundMessage.objects.filter(
                destination=destination,
                purpose__in=window.purposes,
                created_at__gte=now - timedelta(hours=window.hours),
            )
            .exclude(state__in=_NOT_SENT)
            .order_by()[window.limit - 1 : window.limit]
        )
        for window in {(w.hours, w.limit, w.purposes): w for w in frequency_windows(caps)}.values()
        if purpose in window.purposes and window.limit > 0
    ]


def frequency_capped_destinations(
    *,
    purpose: str = MessagePurpose.MARKETING,
    now: datetime | None = None,
    caps: dict[str, Any] | None = None,
    campaign_reference: str | None = None,
) -> dict[str, QuerySet[Any]]:
    """Per cap window, a ``values("destination")`` queryset of phones already at the cap.

    Each is a subquery, meant for ``phone__in=...`` inside a larger SQL statement. A cap of
    zero means no message of that purpose may be sent, which callers check separately.
    """
    out = {w.name: qs for w, qs in frequency_capped_windows(purpose=purpose, now=now, caps=caps)}
    if campaign_reference:
        limit = int((caps or platform_config_data()["frequency_caps"])["per_campaign"])
        out["per_campaign"] = (
            OutboundMessage.objects.filter(reference__startswith=campaign_reference)
            .exclude(state__in=_NOT_SENT)
            .values("destination")
            .annotate(n=Count("id"))
            .filter(n__gte=max(limit, 1))
            .values("destination")
        )
    return out


def frequency_blocked_purpose(purpose: str, caps: dict[str, Any] | None = None) -> bool:
    """A cap configured as 0 forbids the purpose outright."""
    return any(w.limit <= 0 and purpose in w.purposes for w in frequency_windows(caps))
