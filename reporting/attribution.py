"""Conversion attribution: which campaign an order, a payment or a booking is credited to.

The rules (stated with every answer by ``attribution_rules``):

1. Last touch. The SMS touches of the contact are its human clicks on a campaign's per-recipient
   link inside the click window before the conversion, and the campaign messages delivered to its
   phone inside the delivery window before it; the latest touch wins. A bot or link-scanner click
   is never a touch.
2. Another channel. An event of the same contact from another channel (``channel`` not sms,
   e.g. an e-mail click) inside the click window is a competing touch: if it is later than the
   SMS touch the conversion is not claimed (rule other_channel) and is reported as a conflict;
   if it is earlier the SMS touch is claimed and the conflict is still reported.
3. Coupon. Outside both windows, an order carrying a campaign's coupon code (a campaign variable
   named in ``reporting.coupon_variable_keys``) is credited to the latest campaign sent before it
   with that code.
4. Refunds. order_refunded events are deducted from the order they refund (``refund_of``, same
   source), whenever they arrive; a refund of an order not in the data is listed as a limit.
5. An order is one conversion however many events it has (placed, paid): its time is its first
   event, its revenue the amount of its latest order_paid event (else of order_placed).

Computed in chunks with a handful of indexed set queries per chunk (both databases), from a
high-water mark on CommerceEvent ids; rows are recomputed from scratch when the rules change.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from campaigns.automations.models import CommerceEvent, EventType
from campaigns.content import recipient_token
from campaigns.models import Campaign, SendBatch
from gateways.models import MessageState, OutboundMessage
from reporting.aggregates import _advance, _cursor
from reporting.models import AttributionRule, ConversionKind, ReportClickTouch, ReportConversion
from smsplatform.config_service import platform_config_data
from templates.models import ShortLink

ORDER_EVENTS = (EventType.ORDER_PLACED, EventType.ORDER_PAID)
CONVERSION_TYPES = (*ORDER_EVENTS, EventType.ORDER_REFUNDED, EventType.PAYMENT_RECEIVED, EventType.APPOINTMENT_BOOKED)
CHUNK = 500


@dataclass(frozen=True)
class Rules:
    click_window: timedelta
    delivery_window: timedelta
    model: str
    coupon: bool
    coupon_keys: tuple[str, ...]

    def digest(self) -> str:
        raw = json.dumps(
            [
                self.click_window.total_seconds(),
                self.delivery_window.total_seconds(),
                self.model,
                self.coupon,
                list(self.coupon_keys),
            ]
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def current_rules(config: dict[str, Any] | None = None) -> Rules:
    config = config or platform_config_data()
    tracking, reporting = config["tracking"], config["reporting"]
    return Rules(
        click_window=timedelta(hours=int(tracking["attribution_click_window_hours"])),
        delivery_window=timedelta(hours=int(tracking["attribution_delivery_window_hours"])),
        model=str(tracking["attribution_model"]),
        coupon=bool(reporting["coupon_attribution"]),
        coupon_keys=tuple(reporting["coupon_variable_keys"]),
    )


def attribution_rules(rules: Rules | None = None) -> dict[str, Any]:
    """The rules as every answer states them, so two people can reproduce a number."""
    rules = rules or current_rules()
    hours = int(rules.click_window.total_seconds() // 3600)
    delivery = int(rules.delivery_window.total_seconds() // 3600)
    return {
        "model": "last_touch",
        "configured_model": rules.model,
        "click_window_hours": hours,
        "delivery_window_hours": delivery,
        "coupon_attribution": rules.coupon,
        "coupon_variable_keys": list(rules.coupon_keys),
        "rules_hash": rules.digest(),
        "text": (
            f"Last touch: the latest SMS touch before the conversion wins — a human click on the campaign's "
            f"per-recipient link within {hours} h, or a delivered campaign message within {delivery} h. Bot and "
            "link-scanner clicks are never touches. Another channel's touch (an event of the contact with a channel "
            f"other than sms) within {hours} h is a conflict: later than the SMS touch, the conversion is not claimed; "
            "earlier, it is claimed and the conflict reported. "
            + (
                "Outside the windows, an order with a campaign's coupon code goes to the latest campaign with it. "
                if rules.coupon
                else "Coupon attribution is off. "
            )
            + "Refunds are deducted from the order they refund. An order counts once (first event's time; revenue of "
            "its latest order_paid, else order_placed)."
            + (
                ""
                if rules.model == "last_touch"
                else f" The configured model {rules.model} is not applied: reports use last touch."
            )
        ),
    }


def tracking_limits() -> list[str]:
    return [
        "Link-scanner and bot clicks (device class bot) are counted apart and never attributed.",
        "Clicks on links without a per-recipient token cannot be tied to a person; only delivery and coupon "
        "touches attribute their conversions.",
        "Events naming no short-link click token are matched to clicks through the contact's tokens; a purchase "
        "on another device than the click is attributed only through the delivery window or a coupon.",
        "Events without a contact are refused at intake (automations events); they never reach attribution.",
        "Refunds of orders not in the event data cannot be deducted and are listed as unmatched.",
        "Revenue is in the events' currency; ROI is computed only where it equals the campaign's cost currency.",
    ]


# --- computing ---------------------------------------------------------------------------------


def _key(event: CommerceEvent) -> tuple[str, str]:
    if event.type in ORDER_EVENTS and event.order_ref:
        return f"order:{event.source_id}:{event.order_ref}", ConversionKind.ORDER
    if event.type == EventType.ORDER_REFUNDED and event.refund_of:
        return f"order:{event.source_id}:{event.refund_of}", ConversionKind.ORDER
    if event.type == EventType.APPOINTMENT_BOOKED:
        return f"event:{event.pk}", ConversionKind.BOOKING
    if event.type == EventType.PAYMENT_RECEIVED:
        return f"event:{event.pk}", ConversionKind.PAYMENT
    return f"event:{event.pk}", ConversionKind.ORDER


@dataclass
class _Conversion:
    key: str
    kind: str
    events: list[CommerceEvent]
    refunds: list[CommerceEvent]

    @property
    def first(self) -> CommerceEvent | None:
        main = [e for e in self.events if e.type != EventType.ORDER_REFUNDED]
        return min(main, key=lambda e: (e.occurred_at, e.pk)) if main else None

    def amount(self) -> tuple[Decimal, str]:
        paid = [e for e in self.events if e.type in (EventType.ORDER_PAID, EventType.PAYMENT_RECEIVED)]
        pool = paid or [e for e in self.events if e.type != EventType.ORDER_REFUNDED and e.amount is not None]
        if not pool:
            return Decimal(0), ""
        latest = max(pool, key=lambda e: (e.occurred_at, e.pk))
        return latest.amount or Decimal(0), latest.currency


def _load(keys: dict[str, str]) -> list[_Conversion]:
    """Every event of these conversions (an order's placed, paid and refund events)."""
    refs: dict[int, list[str]] = defaultdict(list)
    for k in keys:
        if k.startswith("order:"):
            _, source, ref = k.split(":", 2)
            refs[int(source)].append(ref)
    singles = [int(k.split(":")[1]) for k in keys if k.startswith("event:")]
    q = Q(pk__in=singles)
    for source_id, order_refs in refs.items():
        q |= Q(source_id=source_id, order_ref__in=order_refs, type__in=ORDER_EVENTS)
        q |= Q(source_id=source_id, refund_of__in=order_refs, type=EventType.ORDER_REFUNDED)
    found: dict[str, _Conversion] = {k: _Conversion(k, kind, [], []) for k, kind in keys.items()}
    for event in CommerceEvent.objects.filter(q):
        key, _ = _key(event)
        if key not in found:
            continue
        (found[key].refunds if event.type == EventType.ORDER_REFUNDED else found[key].events).append(event)
    return list(found.values())


@dataclass
class _Touch:
    at: datetime
    kind: str  # delivered | click
    campaign_id: int
    message_id: int | None = None
    link_id: int | None = None


def _coupon_campaigns(rules: Rules) -> dict[str, list[tuple[datetime, int]]]:
    """coupon code -> [(first send time, campaign id)] of campaigns that sent."""
    codes: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    if not rules.coupon:
        return codes
    for pk, variables, dispatched in Campaign.objects.filter(dispatched_at__isnull=False).values_list(
        "pk", "variables", "dispatched_at"
    ):
        for name, value in (variables or {}).items():
            if dispatched is not None and name in rules.coupon_keys and isinstance(value, str) and value.strip():
                codes[value.strip().upper()].append((dispatched, pk))
    return codes


def attribute(conversions: list[_Conversion], rules: Rules) -> list[ReportConversion]:
    """The rows for these conversions (a few set queries for the whole list)."""
    live: list[tuple[_Conversion, CommerceEvent]] = [(c, f) for c in conversions if (f := c.first) is not None]
    if not live:
        return []
    widest = max(rules.click_window, rules.delivery_window)
    phones = {f.phone for _, f in live if f.phone}
    contacts = {f.contact_id for _, f in live}
    earliest = min(f.occurred_at for _, f in live) - widest
    latest = max(f.occurred_at for _, f in live)
    # Campaign messages to these phones (msg_destination_recent index), with their campaign.
    messages: dict[str, list[Any]] = defaultdict(list)
    for m in (
        OutboundMessage.objects.filter(
            destination__in=phones, batch__isnull=False, created_at__gte=earliest - widest, created_at__lte=latest
        )
        .values("id", "destination", "batch_id", "state", "final_at", "contact_id")
        .order_by()
    ):
        messages[m["destination"]].append(m)
    batches = {m["batch_id"] for ms in messages.values() for m in ms}
    batch_campaign = dict(SendBatch.objects.filter(pk__in=batches).values_list("pk", "campaign_id"))
    links = dict(
        Campaign.objects.filter(pk__in=set(batch_campaign.values()), short_link__isnull=False).values_list(
            "pk", "short_link_id"
        )
    )
    # Tokens each contact would carry on each campaign's link; events may also name one directly.
    token_of: dict[tuple[int, str], tuple[int, int]] = {}  # (link, token) -> (campaign, contact)
    for _, f in live:
        for m in messages.get(f.phone, []):
            campaign = batch_campaign.get(m["batch_id"])
            if campaign in links:
                link = links[campaign]
                token_of[(link, recipient_token(campaign, link, f.contact_id))] = (campaign, f.contact_id)
    coded = {e.link_code for c, _ in live for e in c.events if e.link_code}
    link_by_code = {
        code: (pk, camp)
        for code, pk, camp in ShortLink.objects.filter(code__in=coded).values_list("code", "pk", "campaign_id")
    }
    for c, f in live:
        for e in c.events:
            if e.link_code in link_by_code and e.click_token and link_by_code[e.link_code][1]:
                link, campaign = link_by_code[e.link_code]
                token_of[(link, e.click_token)] = (int(campaign or 0), f.contact_id)
    # Human clicks of these tokens up to the latest conversion (rpt_touch_lookup index).
    touches: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    bot_tokens: set[tuple[int, str]] = set()
    if token_of:
        tq = Q()
        by_link: dict[int, set[str]] = defaultdict(set)
        for link, token in token_of:
            by_link[link].add(token)
        for link, tokens in by_link.items():
            tq |= Q(link_id=link, recipient_token__in=tokens)
        for link, token, at, bot in ReportClickTouch.objects.filter(tq, clicked_at__lte=latest).values_list(
            "link_id", "recipient_token", "clicked_at", "bot"
        ):
            if bot:
                bot_tokens.add((link, token))
            else:
                touches[(link, token)].append(at)
    others: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for contact, at, channel in (
        CommerceEvent.objects.filter(contact_id__in=contacts, occurred_at__gte=earliest, occurred_at__lte=latest)
        .exclude(channel__in=["", "sms"])
        .values_list("contact_id", "occurred_at", "channel")
    ):
        others[contact].append((at, channel))
    coupons = _coupon_campaigns(rules)
    now = timezone.now()
    rows = []
    for c, f in live:
        t = f.occurred_at
        found: list[_Touch] = []
        limits: list[str] = []
        for m in messages.get(f.phone, []):
            campaign = batch_campaign.get(m["batch_id"])
            if campaign is None:
                continue
            if (
                m["state"] == MessageState.DELIVERED
                and m["final_at"]
                and t - rules.delivery_window <= m["final_at"] <= t
            ):
                found.append(_Touch(m["final_at"], "delivered", campaign, message_id=m["id"]))
        seen_clicks: set[tuple[int, str]] = set()
        for (link, token), (campaign, contact) in token_of.items():
            if contact != f.contact_id or (link, token) in seen_clicks:
                continue
            seen_clicks.add((link, token))
            touch = touches.get((link, token))
            clicked = max((at for at in touch if at <= t), default=None) if touch else None
            if clicked is not None and t - rules.click_window <= clicked:
                found.append(_Touch(clicked, "click", campaign, link_id=link))
            elif (link, token) in bot_tokens and touch is None:
                limits.append("scanner_click_ignored")
        if any(e.link_code and not e.click_token for e in c.events):
            limits.append("missing_click_token")
        amount, currency = c.amount()
        refunded = sum((r.amount or Decimal(0)) for r in c.refunds)
        if c.refunds and not c.events:
            limits.append("refund_without_order")
        found.sort(key=lambda x: (x.at, x.kind == "click"))
        last = found[-1] if found else None
        competing = [(at, ch) for at, ch in others.get(f.contact_id, []) if t - rules.click_window <= at <= t]
        conflict = max(competing) if competing else None
        rule, claimed, campaign_id = AttributionRule.NONE, False, None
        if last is not None:
            rule = AttributionRule.CLICK if last.kind == "click" else AttributionRule.DELIVERY
            claimed = conflict is None or conflict[0] <= last.at
            if not claimed:
                rule = AttributionRule.OTHER_CHANNEL
            campaign_id = last.campaign_id if claimed else None
        elif rules.coupon:
            code = next((e.coupon_code.strip().upper() for e in c.events if e.coupon_code.strip()), "")
            sent = [(d, pk) for d, pk in coupons.get(code, []) if d <= t]
            if sent:
                rule, claimed, campaign_id = AttributionRule.COUPON, True, max(sent)[1]
        path = ">".join([*[x.kind for x in found][-4:], c.kind])
        rows.append(
            ReportConversion(
                key=c.key,
                kind=c.kind,
                event_id=f.pk,
                contact_id=f.contact_id,
                occurred_at=t,
                hour=t.replace(minute=0, second=0, microsecond=0),
                amount=amount,
                refunded=refunded,
                currency=currency,
                rule=rule,
                campaign_id=campaign_id,
                sms_campaign_id=last.campaign_id if last else campaign_id,
                claimed=claimed,
                touch_at=last.at if last else None,
                touch_message_id=last.message_id if last else None,
                touch_link_id=last.link_id if last else None,
                conflict_channel=conflict[1] if conflict else "",
                conflict_at=conflict[0] if conflict else None,
                other_campaigns=sorted({x.campaign_id for x in found} - {campaign_id, None}),
                path=path[:200],
                limits=sorted(set(limits)),
                computed_at=now,
            )
        )
    # Refunds whose order is absent: one row each so they are listed (nothing to credit).
    for c in conversions:
        if c.first is None and c.refunds:
            first = min(c.refunds, key=lambda e: (e.occurred_at, e.pk))
            rows.append(
                ReportConversion(
                    key=c.key,
                    kind=c.kind,
                    event_id=first.pk,
                    contact_id=first.contact_id,
                    occurred_at=first.occurred_at,
                    hour=first.occurred_at.replace(minute=0, second=0, microsecond=0),
                    refunded=sum((r.amount or Decimal(0)) for r in c.refunds),
                    currency=first.currency,
                    rule=AttributionRule.NONE,
                    limits=["refund_without_order"],
                    computed_at=now,
                )
            )
    return rows


def recompute(keys: dict[str, str], rules: Rules) -> int:
    """Recompute these conversions' rows (replacing what was there)."""
    done = 0
    items = list(keys.items())
    for start in range(0, len(items), CHUNK):
        chunk = dict(items[start : start + CHUNK])
        rows = attribute(_load(chunk), rules)
        with transaction.atomic():
            ReportConversion.objects.filter(key__in=chunk).delete()
            ReportConversion.objects.bulk_create(rows, batch_size=1000)
        done += len(rows)
    return done


def refresh_conversions() -> int:
    """Attribute the conversions that new events belong to; all of them again if the rules changed."""
    rules = current_rules()
    digest = rules.digest()
    newest = CommerceEvent.objects.aggregate(m=Max("id"))["m"] or 0
    with transaction.atomic():
        cursor = _cursor("conversions")
        if cursor.rules != digest:
            # New windows or coupon rules: every row was computed under the old ones.
            # Consumed from the next run on, like any new id: the clicks and messages these events
            # may follow are folded first (this run's refreshes ran before this one).
            ReportConversion.objects.all().delete()
            cursor.position, cursor.seen, cursor.rules = 0, 0, digest
        low, high = _advance(cursor, newest)
    if high <= low:
        return 0
    keys: dict[str, str] = {}
    for event in _events(low, high):
        key, kind = _key(event)
        keys[key] = kind
    return recompute(keys, rules)


def _events(low: int, high: int) -> Iterable[CommerceEvent]:
    return (
        CommerceEvent.objects.filter(id__gt=low, id__lte=high, type__in=CONVERSION_TYPES)
        .only("id", "type", "source_id", "order_ref", "refund_of")
        .iterator(chunk_size=5000)
    )
