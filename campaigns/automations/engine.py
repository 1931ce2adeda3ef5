"""Running flows: the beat scan (events -> enrolments and exits) and the tick (due enrolments ->
outbound messages).

The scan reads new events after a stored cursor (plus a short overlap of recently received
ones: event ids are assigned before their batch commits, so a lower id can become visible after
a higher one). Each (flow, event) enrols once: the rows are inserted with ON CONFLICT DO
NOTHING against the unique constraints, so a replayed or re-scanned event changes nothing. An
event that arrives out of order after its exit event enrols as exited.

The tick claims due enrolments of one active flow at a time, the flow row locked first (a pause
or archive waits for the tick and vice versa), the enrolments with SKIP LOCKED (concurrent ticks
take disjoint rows). Every rule is checked again at send time, set-based for the whole claim:
flow still active, template still valid, contact's phone unchanged, exit events, filters,
opt-outs, consent (marketing), platform frequency caps, the flow's own limits, quiet hours
(marketing: held until the window opens, never dropped), coverage and sender ID, and the monthly
budget. Messages are inserted in bulk into the outbound queue with their quota held, in the
claim's transaction; the gateway's sender is told after commit. A worker killed mid-tick rolls
the whole claim back: nothing is queued twice.
"""

from __future__ import annotations

import logging
import time as clock
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import DateTimeField, F, Q, Value
from django.utils import timezone

from campaigns.automations.flow_models import (
    Enrolment,
    EnrolmentState,
    Flow,
    FlowPurpose,
    FlowState,
    ScanCursor,
    TriggerAnchor,
)
from campaigns.automations.models import CommerceEvent
from campaigns.automations.rules import Renderer, template_problem
from campaigns.automations.sql import any_of, enrolments_insert, messages_insert, total_cost
from campaigns.quiet_hours import quiet_release_time
from compliance.optouts import active_opt_outs
from contacts.models import ConsentEvidence, ConsentPurpose, Contact
from gateways.models import MessagePurpose, MessageState, OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError

logger = logging.getLogger(__name__)

# How long the scan keeps reading a gap in the event ids (a batch still committing, or rolled back).
GAP_WAIT = timedelta(minutes=5)
MAX_GAPS = 1000
SCAN_LIMIT = 20_000
# Claims of one flow grow from FIRST_CLAIM (the bind worker gets its first messages quickly) to
# CLAIM_LIMIT (a claim's ~20 statements and its quota reservation are paid once per 5,000
# messages: on a loaded machine every round trip waits for a core).
FIRST_CLAIM = 500
CLAIM_LIMIT = 5_000
CLAIMS_PER_ROUND = 10
# A date trigger whose moment passed longer ago than this when its event arrives is not sent late.
LATE_GRACE = timedelta(hours=1)
QUOTA_RETRY = timedelta(minutes=1)
SENDABLE_FLOW_STATES = (FlowState.ACTIVE, FlowState.PAUSED)
EVENT_FIELDS = ("id", "type", "contact_id", "occurred_at", "received_at", "order_ref", "appointment_at", "pickup_at")


def message_reference(flow_id: int, enrolment_id: int, step: int) -> str:
    return f"automation:{flow_id}:{enrolment_id}:{step}"


# --- the scan --------------------------------------------------------------------------------------


def _first_send(flow: Flow, start: int = 0) -> tuple[int | None, int]:
    """The index of the next send step from ``start`` and the minutes of the waits before it."""
    minutes = 0
    for index in range(start, len(flow.steps)):
        step = flow.steps[index]
        if step["kind"] == "send":
            return index, minutes
        minutes += int(step["minutes"])
    return None, minutes


def _exit_matches(flow: Flow, trigger: dict[str, Any], exits: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first exit event (of this flow's exit conditions) that ends an enrolment on ``trigger``:
    same contact (and reference when the condition says so), at or after the trigger, not it."""
    for condition in flow.exit_conditions or []:
        for event in exits:
            if event["type"] != condition["event_type"] or event["id"] == trigger["id"]:
                continue
            if event["contact_id"] != trigger["contact_id"] or event["occurred_at"] < trigger["occurred_at"]:
                continue
            if condition["match"] == "reference" and (
                not trigger["order_ref"] or event["order_ref"] != trigger["order_ref"]
            ):
                continue
            return event
    return None


def _exit_events(flows: list[Flow], contact_ids: set[int]) -> dict[int, list[dict[str, Any]]]:
    types = {c["event_type"] for f in flows for c in f.exit_conditions or []}
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not types or not contact_ids:
        return out
    ids = sorted(contact_ids)
    for start in range(0, len(ids), 5000):
        rows = CommerceEvent.objects.filter(any_of("contact_id", ids[start : start + 5000]), type__in=types).values(
            *EVENT_FIELDS
        )
        for row in rows:
            out[row["contact_id"]].append(row)
    return out


def _payload_matches(flow: Flow, payload: dict[str, Any]) -> bool:
    return all(payload.get(k) == v for k, v in (flow.trigger_payload_match or {}).items())


def _filtered_in(flow: Flow, contact_ids: set[int]) -> set[int]:
    if not flow.filters:
        return contact_ids
    from contacts.criteria import criteria_q

    ids = sorted(contact_ids)
    passing: set[int] = set()
    for start in range(0, len(ids), 5000):
        passing.update(
            Contact.objects.filter(any_of("pk", ids[start : start + 5000]))
            .filter(criteria_q(flow.filters))
            .values_list("pk", flat=True)
        )
    return passing


def enrolments_for_events(flow: Flow, events: list[dict[str, Any]], *, now: datetime) -> list[dict[str, Any]]:
    """The enrolments (waiting, or skipped/exited with the reason) these trigger events start, as
    column -> value rows (sql.enrolments_insert; a model instance per row cost more than the insert)."""
    events = [
        e
        for e in events
        if e["type"] in (flow.trigger_event_types or [])
        and (flow.activated_at is None or e["received_at"] >= flow.activated_at)
        and _payload_matches(flow, e.get("payload") or {})
    ]
    if events:
        # Events this flow already enrolled (a re-read gap): nothing to insert again.
        done = set(
            Enrolment.objects.filter(any_of("event_id", [e["id"] for e in events]), flow=flow).values_list(
                "event_id", flat=True
            )
        )
        events = [e for e in events if e["id"] not in done]
    if not events:
        return []
    contact_ids = {e["contact_id"] for e in events}
    phones = dict(Contact.objects.filter(any_of("pk", sorted(contact_ids))).values_list("pk", "phone"))
    passing = _filtered_in(flow, contact_ids)
    exits = _exit_events([flow], contact_ids)
    send_index, wait_minutes = _first_send(flow)
    rows = []
    for event in events:
        anchor = event.get(flow.trigger_anchor)
        state, reason, detail = EnrolmentState.WAITING, "", ""
        due = (anchor or event["occurred_at"]) + timedelta(minutes=flow.trigger_offset_minutes + wait_minutes)
        trigger_date = due.date() if flow.is_date_trigger else None
        exit_event = _exit_matches(flow, event, exits.get(event["contact_id"], []))
        if anchor is None:
            state, reason, detail = EnrolmentState.SKIPPED, "no_anchor_date", f"the event has no {flow.trigger_anchor}"
        elif exit_event is not None:
            state, reason = EnrolmentState.EXITED, f"exit:{exit_event['type']}"
            detail = f"exit event #{exit_event['id']} arrived first (out of order)"
        elif event["contact_id"] not in passing:
            state, reason, detail = EnrolmentState.SKIPPED, "filtered", "the contact does not match the flow's filters"
        elif flow.is_date_trigger and due < now - LATE_GRACE:
            state, reason, detail = EnrolmentState.SKIPPED, "too_late", f"the trigger moment {due.isoformat()} passed"
        rows.append(
            {
                "flow_id": flow.pk,
                "flow_version": flow.version,
                "event_id": event["id"],
                "contact_id": event["contact_id"],
                "phone": phones.get(event["contact_id"], ""),
                "reference": event["order_ref"] or "",
                "trigger_date": trigger_date,
                "trigger_occurred_at": event["occurred_at"],
                "state": state.value,
                "step_index": send_index or 0,
                "due_at": due,
                "sent": 0,
                "reason": reason,
                "detail": detail[:300],
                "entered_at": now,
                "finished_at": None if state == EnrolmentState.WAITING else now,
            }
        )
    return rows


def enrolments_exit(*, flow: Flow, exit_events: list[dict[str, Any]], now: datetime) -> int:
    """End the enrolments these exit events end: waiting ones stop, and a message of theirs still
    queued is withdrawn (once this commits, no claim can take it: the claim is a conditional
    UPDATE of queued rows, and this UPDATE waits for a claim holding them)."""
    from gateways.quotas import quota_unhold_many

    contact_ids = {e["contact_id"] for e in exit_events}
    candidates = list(
        Enrolment.objects.filter(
            flow=flow, contact_id__in=contact_ids, state__in=[EnrolmentState.WAITING, EnrolmentState.COMPLETED]
        ).values("id", "contact_id", "reference", "trigger_occurred_at", "event_id", "state", "phone", "sent")
    )
    by_contact: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in exit_events:
        by_contact[event["contact_id"]].append(event)
    ended: dict[int, str] = {}
    for c in candidates:
        trigger = {
            "id": c["event_id"],
            "contact_id": c["contact_id"],
            "occurred_at": c["trigger_occurred_at"],
            "order_ref": c["reference"],
        }
        match = _exit_matches(flow, trigger, by_contact.get(c["contact_id"], []))
        if match is not None:
            ended[c["id"]] = match["type"]
    if not ended:
        return 0
    # Locks in a fixed order (by pk); waits for a tick holding any of them, then re-reads.
    locked = list(
        Enrolment.objects.select_for_update(of=("self",))
        .filter(pk__in=sorted(ended), state__in=[EnrolmentState.WAITING, EnrolmentState.COMPLETED])
        .order_by("pk")
        .values_list("pk", "state", "phone", "sent")
    )
    refs = [message_reference(flow.pk, pk, step) for pk, _s, _p, sent in locked for step in range(len(flow.steps))]
    phones = sorted({phone for _pk, _s, phone, _n in locked})
    withdrawn_by_ref: dict[str, tuple[int, Decimal]] = {}
    withdrawn_enrolments: set[int] = set()
    if refs:
        queued = list(
            OutboundMessage.objects.select_for_update()
            .filter(destination__in=phones, state=MessageState.QUEUED, reference__in=refs)
            .values_list("pk", "reference", "quota_reference", "segments", "cost")
        )
        if queued:
            OutboundMessage.objects.filter(pk__in=[q[0] for q in queued], state=MessageState.QUEUED).update(
                state=MessageState.FAILED,
                error_code="flow_exit",
                error_reason="withdrawn: the flow's exit condition was met before sending",
                final_at=now,
            )
            for _pk, reference, quota_reference, segments, cost in queued:
                s, a = withdrawn_by_ref.get(quota_reference, (0, Decimal(0)))
                withdrawn_by_ref[quota_reference] = (s + segments, a + cost)
                withdrawn_enrolments.add(int(reference.split(":")[2]))
            quota_unhold_many(actor=Actor.system("automations.exit"), totals=withdrawn_by_ref)
    exiting = [pk for pk, state, _p, _n in locked if state == EnrolmentState.WAITING or pk in withdrawn_enrolments]
    by_type: dict[str, list[int]] = defaultdict(list)
    for pk in exiting:
        by_type[ended[pk]].append(pk)
    for event_type, ids in by_type.items():
        Enrolment.objects.filter(pk__in=ids).update(
            state=EnrolmentState.EXITED, reason=f"exit:{event_type}"[:40], finished_at=now
        )
    return len(exiting)


def _gaps_open(gaps: list[list[Any]], now: datetime) -> list[list[Any]]:
    return [g for g in gaps if now - datetime.fromisoformat(g[2]) < GAP_WAIT]


def _gaps_after(
    gaps: list[list[Any]], found: set[int], previous_last: int, new_ids: list[int], now: datetime
) -> list[list[Any]]:
    """The gaps still open: the old ones minus the ids now found, plus the holes in the new ids."""
    out: list[list[Any]] = []
    for lo, hi, seen in gaps:
        start = lo
        for event_id in sorted(i for i in found if lo <= i <= hi):
            if event_id > start:
                out.append([start, event_id - 1, seen])
            start = event_id + 1
        if start <= hi:
            out.append([start, hi, seen])
    previous = previous_last
    for event_id in new_ids:
        if event_id > previous + 1:
            out.append([previous + 1, event_id - 1, now.isoformat()])
        previous = event_id
    return out[-MAX_GAPS:]


def events_scan(*, now: datetime | None = None, limit: int = SCAN_LIMIT) -> dict[str, int]:
    """Read the events after the cursor (and in the gaps it saw): exits first, then enrolments.
    Idempotent; one scan at a time (the cursor row is locked)."""
    now = now or timezone.now()
    with transaction.atomic():
        ScanCursor.objects.get_or_create(name="events")
        cursor = ScanCursor.objects.select_for_update().get(name="events")
        flows = list(Flow.objects.filter(state__in=SENDABLE_FLOW_STATES).select_related("template_version", "gateway"))
        new = list(
            CommerceEvent.objects.filter(pk__gt=cursor.last_event_id)
            .order_by("pk")
            .values(*EVENT_FIELDS, "payload")[:limit]
        )
        gaps = _gaps_open(list(cursor.gaps or []), now)
        late: list[dict[str, Any]] = []
        if gaps:
            in_gaps = Q()
            for lo, hi, _seen in gaps:
                in_gaps |= Q(pk__gte=lo, pk__lte=hi)
            late = list(CommerceEvent.objects.filter(in_gaps).values(*EVENT_FIELDS, "payload"))
        events = late + new
        counts = {"events": len(new), "late_events": len(late), "enrolled": 0, "exited": 0}
        for flow in flows:
            exit_types = {c["event_type"] for c in flow.exit_conditions or []}
            exits = [e for e in events if e["type"] in exit_types]
            if exits:
                counts["exited"] += enrolments_exit(flow=flow, exit_events=exits, now=now)
            rows = enrolments_for_events(flow, events, now=now)
            if rows:
                # ON CONFLICT DO NOTHING: the unique constraints make a re-scan or replay a no-op.
                enrolments_insert(rows)
                counts["enrolled"] += len(rows)
        new_ids = [e["id"] for e in new]
        cursor.gaps = _gaps_after(gaps, {e["id"] for e in late}, cursor.last_event_id, new_ids, now)
        if new_ids:
            cursor.last_event_id = new_ids[-1]
        cursor.updated_at = now
        cursor.save(update_fields=["last_event_id", "gaps", "updated_at"])
    return counts


# --- the tick ------------------------------------------------------------------------------------


def _skip(skips: dict[int, tuple[str, str]], pk: int, reason: str, detail: str = "") -> None:
    skips.setdefault(pk, (reason, detail[:300]))


def _consented(contact_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for start in range(0, len(contact_ids), 5000):
        out.update(
            ConsentEvidence.objects.filter(
                any_of("contact_id", contact_ids[start : start + 5000]), purpose=ConsentPurpose.MARKETING
            ).values_list("contact_id", flat=True)
        )
    return out


def _history(phones: list[str], since: datetime) -> list[tuple[str, str, datetime, str]]:
    """(destination, purpose, created_at, reference) of every message to these phones since
    ``since`` that did not fail before leaving (what the caps count), read destination by
    destination on msg_destination_recent: a range over all recent messages would grow with
    every claim (right after a bulk send the planner's statistics do not know the table grew)."""
    from campaigns.automations.sql import recent_messages

    out: list[tuple[str, str, datetime, str]] = []
    for start in range(0, len(phones), 5000):
        out.extend(recent_messages(phones[start : start + 5000], since))
    return out


def _caps_and_counts(flow: Flow, purpose: str, phones: list[str], now: datetime) -> tuple[dict[str, str], Counter[str]]:
    """Phone -> the platform cap window it is at (gateways.frequency's windows over the send
    history), and per phone the messages this flow sent it within its own period."""
    from gateways.frequency import frequency_windows

    windows = [w for w in frequency_windows() if purpose in w.purposes and w.limit > 0]
    period = timedelta(hours=int(flow.period_hours or 0))
    widest = max([timedelta(hours=w.hours) for w in windows] + [period])
    rows = _history(phones, now - widest)
    capped: dict[str, str] = {}
    for window in windows:
        since = now - timedelta(hours=window.hours)
        counts = Counter(d for d, p, at, _r in rows if p in window.purposes and at >= since)
        for phone, n in counts.items():
            if n >= window.limit:
                capped.setdefault(phone, window.name)
    own = Counter(d for d, _p, at, r in rows if r.startswith(flow.reference_prefix) and at >= now - period)
    return capped, own


def _month_spent(flow: Flow, now: datetime) -> Decimal:
    """What the flow queued this month: its counter (reset when a new month starts; the tick holds
    the flow's row lock, so concurrent ticks add up exactly)."""
    month = now.date().replace(day=1)
    if flow.spent_month != month:
        flow.spent_month, flow.spent_amount = month, Decimal(0)
    return Decimal(flow.spent_amount)


def _flow_tick(flow_id: int, *, now: datetime, limit: int) -> dict[str, Any]:
    """One claim of one flow's due enrolments, checked and sent in one transaction."""
    from gateways.adapters import adapter_for
    from gateways.delivery.queue import message_submit_enqueue
    from gateways.frequency import frequency_blocked_purpose
    from gateways.quotas import quota_reserve
    from gateways.rules import sender_id_check_usable
    from gateways.selectors import segment_prices
    from smsplatform.kernel.content import promotion_found
    from smsplatform.kernel.segments import SegmentInputError, count_segments, count_segments_clusters

    out: dict[str, Any] = {"claimed": 0, "sent": 0, "skipped": Counter(), "held": 0, "exited": 0}
    # The flow row first (fixed order: flow, then its enrolments): a pause or archive committing
    # meanwhile waits, and one that committed first is seen here.
    flow = (
        Flow.objects.select_for_update(of=("self",), no_key=True)
        .select_related("template_version", "gateway")
        .filter(pk=flow_id)
        .first()
    )
    if flow is None or flow.state != FlowState.ACTIVE:
        return out
    renderer = Renderer(flow) if flow.template_version is not None else None
    event_fields = ["id", *(renderer.event_fields if renderer else [])]
    # The claim reads each enrolment with its contact and event in one statement; only the
    # enrolment rows are locked (SKIP LOCKED: a concurrent tick takes the next ones). The trigger's
    # time only matters to exit conditions (parsing 5,000 timestamps is not free).
    occurred: Any = "trigger_occurred_at" if flow.exit_conditions else Value(None, output_field=DateTimeField())
    joined = (
        Enrolment.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(flow_id=flow_id, state=EnrolmentState.WAITING, due_at__lte=now)
        .order_by("due_at", "id")
        .values_list(
            "id",
            "contact_id",
            "phone",
            "reference",
            "step_index",
            "event_id",
            occurred,
            "contact__phone",
            "contact__country",
            "contact__name",
            *(f"event__{f}" for f in event_fields),
        )[:limit]
    )
    claimed: list[dict[str, Any]] = []
    contacts: dict[int, dict[str, Any]] = {}
    events: dict[int, dict[str, Any]] = {}
    for values in joined:
        pk, contact_id, phone, reference, step_index, event_id, occurred, c_phone, c_country, c_name = values[:10]
        claimed.append(
            {
                "id": pk,
                "contact_id": contact_id,
                "phone": phone,
                "reference": reference,
                "step_index": step_index,
                "event_id": event_id,
                "trigger_occurred_at": occurred,
            }
        )
        contacts[contact_id] = {"id": contact_id, "phone": c_phone, "country": c_country, "name": c_name}
        events[event_id] = dict(zip(event_fields, values[10:], strict=True))
    if not claimed:
        return out
    out["claimed"] = len(claimed)
    skips: dict[int, tuple[str, str]] = {}
    holds: dict[int, datetime] = {}
    problem = template_problem(flow)
    gateway = flow.gateway
    if problem or gateway is None or not gateway.enabled:
        reason = "template_invalid" if problem else "gateway_not_usable"
        for row in claimed:
            _skip(skips, row["id"], reason, problem or "the flow's gateway is disabled")
    marketing = flow.purpose == FlowPurpose.MARKETING
    purpose = MessagePurpose.MARKETING if marketing else MessagePurpose.TRANSACTIONAL
    if frequency_blocked_purpose(purpose):
        for row in claimed:
            _skip(skips, row["id"], "frequency_cap", f"a {purpose} frequency cap is 0")
    contact_ids = sorted({r["contact_id"] for r in claimed})
    exits = _exit_events([flow], set(contact_ids))
    passing = _filtered_in(flow, set(contact_ids))
    phones = sorted({c["phone"] for c in contacts.values()})
    opted_out = set(active_opt_outs().filter(any_of("phone", phones)).values_list("phone", flat=True))
    consented = _consented(contact_ids) if marketing else set(contact_ids)
    capped, flow_counts = _caps_and_counts(flow, purpose, phones, now)
    sent_refs: set[str] = set()
    if flow.once_per_order:
        refs = sorted({r["reference"] for r in claimed if r["reference"]})
        sent_refs = set(
            Enrolment.objects.filter(any_of("reference", refs), flow=flow, sent__gt=0).values_list(
                "reference", flat=True
            )
        )
    countries = sorted({c["country"] for c in contacts.values()})
    quotes = segment_prices(countries=countries, gateway_code=gateway.code) if gateway else {}
    sender_ok: dict[str, str | None] = {}
    for country in countries:
        try:
            sender_id_check_usable(value=flow.sender_id, country=country)
            sender_ok[country] = None
        except ApplicationError as exc:
            sender_ok[country] = exc.message
    budget_left = (flow.monthly_budget - _month_spent(flow, now)) if flow.monthly_budget is not None else None
    encodings = (gateway.encodings or ["GSM-7", "UCS-2"]) if gateway else []
    # One promotion check over every claimed event's values (the patterns are unanchored: a match
    # in one message's values is a match in the joined text); only when it finds something is
    # each message checked on its own.
    values_of: dict[int, dict[str, str] | None] = {}
    if renderer is not None:
        for row in claimed:
            contact, event = contacts.get(row["contact_id"]), events.get(row["event_id"])
            if contact is not None and event is not None:
                values_of[row["id"]] = renderer.values(event, contact)
    promo_possible = not marketing and bool(
        promotion_found("\n".join(" ".join(v.values()) for v in values_of.values() if v))
    )
    segment_cache: dict[str, tuple[str, int]] = {}
    messages: list[dict[str, Any]] = []
    sent_rows: list[dict[str, Any]] = []
    exited: dict[int, str] = {}
    for row in claimed:
        pk = row["id"]
        if pk in skips:
            continue
        contact = contacts.get(row["contact_id"])
        event = events.get(row["event_id"])
        if contact is None or event is None:
            _skip(skips, pk, "contact_gone", "the contact or its event no longer exists")
            continue
        trigger = {
            "id": row["event_id"],
            "contact_id": row["contact_id"],
            "occurred_at": row["trigger_occurred_at"],
            "order_ref": row["reference"],
        }
        exit_event = _exit_matches(flow, trigger, exits.get(row["contact_id"], []))
        if exit_event is not None:
            exited[pk] = exit_event["type"]
            continue
        phone, country = contact["phone"], contact["country"]
        if phone != row["phone"]:
            _skip(skips, pk, "phone_changed", "the contact's phone changed since the enrolment")
        elif row["contact_id"] not in passing:
            _skip(skips, pk, "filtered", "the contact no longer matches the flow's filters")
        elif phone in opted_out:
            _skip(skips, pk, "opted_out", "the number is on the suppression list")
        elif row["contact_id"] not in consented:
            _skip(skips, pk, "no_consent", "no marketing consent evidence")
        elif phone in capped:
            _skip(skips, pk, "frequency_cap", f"platform cap {capped[phone]}")
        elif flow_counts[phone] >= int(flow.max_per_period or 0):
            _skip(skips, pk, "flow_frequency", f"already {flow_counts[phone]} in {flow.period_hours} h from this flow")
        elif flow.once_per_order and row["reference"] and row["reference"] in sent_refs:
            _skip(skips, pk, "once_per_order", "this order was already sent to by this flow")
        elif country not in quotes:
            _skip(skips, pk, "not_covered", f"gateway {gateway.code if gateway else ''} does not cover {country}")
        elif sender_ok.get(country):
            _skip(skips, pk, "sender_id_not_usable", str(sender_ok[country]))
        if pk in skips:
            continue
        if marketing:
            release = quiet_release_time(country, now)
            if release > now:
                holds[pk] = release  # held until the window opens, never dropped
                continue
        assert renderer is not None
        values = values_of.get(pk)
        if values is None:
            _skip(skips, pk, "variable_missing", "the event lacks a value the template needs")
            continue
        body = renderer.render(values)
        # The template itself was checked once (template_problem); here the event's values, which
        # a business system chose, must not bring a link or an offer into a transactional SMS.
        if not marketing and values and promo_possible and promotion_found(" ".join(values.values())):
            _skip(skips, pk, "promotional_content", "a transactional message carries no promotion")
            continue
        quote = quotes[country]
        key = f"{quote.keeps_clusters}:{body}"
        if key not in segment_cache:
            encoding: str
            try:
                encoding, _units, segments = count_segments(body)
                if quote.keeps_clusters:
                    segments = count_segments_clusters(body)[2]
            except SegmentInputError:
                encoding, segments = "", 0
            segment_cache[key] = (encoding, segments)
        encoding, segments = segment_cache[key]
        if not segments or encoding not in encodings:
            _skip(skips, pk, "encoding", f"{gateway.code if gateway else ''} cannot send this text")
            continue
        cost = (quote.price_per_segment * segments).quantize(Decimal("0.0001"))
        if budget_left is not None:
            if cost > budget_left:
                _skip(skips, pk, "budget_cap", "the flow's monthly budget is spent")
                continue
            budget_left -= cost
        flow_counts[phone] += 1
        if row["reference"]:
            sent_refs.add(row["reference"])
        assert gateway is not None
        messages.append(
            {
                "destination": phone,
                "country": country,
                "body": body,
                "encoding": encoding,
                "segments": segments,
                "cost": cost,
                "currency": quote.currency,
                "reference": message_reference(flow.pk, pk, row["step_index"]),
                "contact_id": row["contact_id"],
            }
        )
        sent_rows.append(row)
    message_ids: list[int] = []
    if messages and gateway is not None:
        reference = f"automation:{flow.pk}:tick:{uuid.uuid4().hex[:16]}"
        try:
            with transaction.atomic():
                quota_reserve(
                    actor=Actor.system("automations.tick"),
                    reference=reference,
                    segments=sum(m["segments"] for m in messages),
                    amount=total_cost(messages),
                )
        except ApplicationError as exc:
            # Out of quota or balance: nothing is sent; the enrolments wait and are tried again.
            logger.warning("flow %s: quota refused (%s); %s enrolments wait", flow.pk, exc.code, len(messages))
            for row in sent_rows:
                holds[row["id"]] = now + QUOTA_RETRY
            messages, sent_rows = [], []
            out["quota_refused"] = exc.code
        if messages:
            flow.spent_amount = Decimal(flow.spent_amount) + total_cost(messages)
            Flow.objects.filter(pk=flow.pk).update(spent_month=flow.spent_month, spent_amount=flow.spent_amount)
        message_ids = messages_insert(
            messages,
            gateway_id=gateway.pk,
            sender_id=flow.sender_id,
            purpose=purpose,
            quota_reference=reference,
            request_receipt=gateway.receipts_supported,
            now=now,
        )
    # Advance the sent enrolments, grouped by step (one UPDATE per group).
    by_step: dict[int, list[int]] = defaultdict(list)
    for row in sent_rows:
        by_step[row["step_index"]].append(row["id"])
    for step, ids in by_step.items():
        next_index, wait = _first_send(flow, step + 1)
        if next_index is None:
            Enrolment.objects.filter(any_of("pk", ids)).update(
                state=EnrolmentState.COMPLETED, sent=F("sent") + 1, step_index=len(flow.steps), finished_at=now
            )
        else:
            Enrolment.objects.filter(any_of("pk", ids)).update(
                sent=F("sent") + 1, step_index=next_index, due_at=now + timedelta(minutes=wait)
            )
    by_reason: dict[tuple[str, str], list[int]] = defaultdict(list)
    for pk, (reason, detail) in skips.items():
        by_reason[(reason, detail)].append(pk)
    for (reason, detail), ids in by_reason.items():
        Enrolment.objects.filter(any_of("pk", ids)).update(
            state=EnrolmentState.SKIPPED, reason=reason, detail=detail, finished_at=now
        )
        out["skipped"][reason] += len(ids)
    by_exit: dict[str, list[int]] = defaultdict(list)
    for pk, event_type in exited.items():
        by_exit[event_type].append(pk)
    for event_type, ids in by_exit.items():
        Enrolment.objects.filter(any_of("pk", ids)).update(
            state=EnrolmentState.EXITED, reason=f"exit:{event_type}"[:40], finished_at=now
        )
    out["exited"] = len(exited)
    by_release: dict[datetime, list[int]] = defaultdict(list)
    for pk, release in holds.items():
        by_release[release].append(pk)
    for release, ids in by_release.items():
        Enrolment.objects.filter(any_of("pk", ids)).update(due_at=release)
    out["held"] = len(holds)
    out["sent"] = len(messages)
    if messages and gateway is not None and not adapter_for(gateway).sends_from_worker:
        ids = message_ids
        gateway_id = gateway.pk

        def _enqueue() -> None:
            for start in range(0, len(ids), 500):
                message_submit_enqueue(gateway_id, ids[start : start + 500])

        # After commit only: the sender must see the rows (and a rollback must send nothing).
        transaction.on_commit(_enqueue)
    return out


def enrolments_send_due(
    *, now: datetime | None = None, budget_seconds: float = 20.0, flow_ids: list[int] | None = None
) -> dict[str, Any]:
    """The tick: for each active flow with due enrolments (only ``flow_ids`` when given), claim and
    send until none is due or the time budget is spent (the next tick goes on)."""
    deadline = clock.monotonic() + budget_seconds
    totals: dict[str, Any] = {"claimed": 0, "sent": 0, "held": 0, "exited": 0, "skipped": Counter()}
    if flow_ids is not None and not flow_ids:
        totals["skipped"] = {}
        return totals
    while clock.monotonic() < deadline:
        now_at = now or timezone.now()
        due = Enrolment.objects.filter(state=EnrolmentState.WAITING, due_at__lte=now_at, flow__state=FlowState.ACTIVE)
        if flow_ids is not None:
            due = due.filter(any_of("flow_id", sorted(flow_ids)))
        due_flows = list(due.values_list("flow_id", flat=True).distinct().order_by())
        progressed = False
        for flow_id in sorted(due_flows):
            # Up to CLAIMS_PER_ROUND claims of this flow before the next flow's turn (not one
            # claim per look at the due flows: that look reads every waiting enrolment).
            for claim in range(CLAIMS_PER_ROUND):
                limit = min(CLAIM_LIMIT, FIRST_CLAIM << claim)
                with transaction.atomic():
                    result = _flow_tick(flow_id, now=now_at, limit=limit)
                for key in ("claimed", "sent", "held", "exited"):
                    totals[key] += result[key]
                totals["skipped"].update(result["skipped"])
                # Held rows come back later; only rows that left 'waiting' (or moved on) are progress.
                moved = result["claimed"] > result["held"]
                progressed = progressed or moved
                if not moved or result["claimed"] < limit or clock.monotonic() >= deadline:
                    break
            if clock.monotonic() >= deadline:
                break
        if not progressed:
            break
    totals["skipped"] = dict(totals["skipped"])
    return totals


def flow_tick(*, now: datetime | None = None) -> dict[str, Any]:
    """Beat's entry point: the scan, then the due sends."""
    scanned = events_scan(now=now)
    sent = enrolments_send_due(now=now)
    return {"scan": scanned, "send": sent}


# --- the priority path: a transactional event sent at once ----------------------------------------

# The priority tick's time budget: it sends what its events made due, not a backlog (the beat's).
PRIORITY_BUDGET_SECONDS = 5.0


def priority_flows(event_types: set[str] | None) -> list[Any]:
    """The active transactional flows an event makes due at once (an event-time trigger, no wait
    before the first send): the flows whose events the intake hands to the priority tick instead
    of leaving them for the beat's. Their ids for events of ``event_types``; with None, every such
    flow as (id, its trigger event types)."""
    if event_types is not None and not event_types:
        return []
    out: list[Any] = []
    for pk, types, steps, anchor, offset in Flow.objects.filter(
        state=FlowState.ACTIVE, purpose=FlowPurpose.TRANSACTIONAL
    ).values_list("pk", "trigger_event_types", "steps", "trigger_anchor", "trigger_offset_minutes"):
        if anchor != TriggerAnchor.OCCURRED_AT or offset > 0 or not steps or steps[0].get("kind") != "send":
            continue
        if event_types is None:
            out.append((pk, frozenset(types or [])))
        elif event_types.intersection(types or []):
            out.append(pk)
    return sorted(out)


def events_send_now(*, event_pks: list[int], flow_ids: list[int], now: datetime | None = None) -> dict[str, Any]:
    """The priority tick (tasks.automations_tick_priority): run for events of transactional flows
    just committed by the intake. Enrols these events in these flows itself (only them, whatever
    the scan's backlog: the same enrolments_for_events as the scan, exit events already stored
    included, inserted ON CONFLICT DO NOTHING, so whichever of the two comes first enrols each
    (flow, event) once and the other finds it done), then sends the due enrolments of the flows
    these events left waiting through the same claim as the beat's tick (flow row lock, SKIP
    LOCKED, every rule checked again at send time, exactly once). A burst of batches makes one
    task per batch; each reads its own events only, and one finding its enrolments sent stops
    after a few indexed reads. The beat's tick remains the safety net (a lost task delays the
    message to it, never drops it)."""
    out: dict[str, Any] = {"enrolled": 0, "send": None}
    if not event_pks or not flow_ids:
        return out
    now_at = now or timezone.now()
    pks = sorted(event_pks)
    flows = list(Flow.objects.filter(any_of("pk", sorted(flow_ids)), state__in=SENDABLE_FLOW_STATES).order_by("pk"))
    if not flows:
        return out
    events = list(CommerceEvent.objects.filter(any_of("pk", pks)).values(*EVENT_FIELDS, "payload"))
    for flow in flows:
        rows = enrolments_for_events(flow, events, now=now_at)
        if rows:
            enrolments_insert(rows)
            out["enrolled"] += len(rows)
    waiting = sorted(
        set(
            Enrolment.objects.filter(
                any_of("event_id", pks),
                any_of("flow_id", [flow.pk for flow in flows]),
                state=EnrolmentState.WAITING,
                due_at__lte=now_at,
            )
            .values_list("flow_id", flat=True)
            .order_by()
        )
    )
    if waiting:
        out["send"] = enrolments_send_due(now=now, budget_seconds=PRIORITY_BUDGET_SECONDS, flow_ids=waiting)
    return out


def enrolments_drop(*, flow: Flow, now: datetime) -> dict[str, int]:
    """Archiving: every waiting enrolment is dropped, and the flow's messages still queued are
    withdrawn (their quota hold released). Runs in the caller's transaction, the flow row locked."""
    from gateways.quotas import quota_unhold_many

    dropped = Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING).update(
        state=EnrolmentState.DROPPED, reason="archived", finished_at=now
    )
    if flow.gateway_id is None:
        return {"dropped_enrolments": dropped, "withdrawn_messages": 0}
    # On the (gateway, state, id) index: the queued rows of the flow's gateway, then its own.
    queued = list(
        OutboundMessage.objects.select_for_update()
        .filter(gateway_id=flow.gateway_id, state=MessageState.QUEUED, reference__startswith=flow.reference_prefix)
        .values_list("pk", "quota_reference", "segments", "cost")
    )
    if queued:
        OutboundMessage.objects.filter(any_of("pk", [q[0] for q in queued]), state=MessageState.QUEUED).update(
            state=MessageState.FAILED,
            error_code="flow_archived",
            error_reason="withdrawn: the flow was archived before sending",
            final_at=now,
        )
        totals: dict[str, tuple[int, Decimal]] = {}
        for _pk, reference, segments, cost in queued:
            s, a = totals.get(reference, (0, Decimal(0)))
            totals[reference] = (s + segments, a + cost)
        quota_unhold_many(actor=Actor.system("automations.archive"), totals=totals)
    return {"dropped_enrolments": dropped, "withdrawn_messages": len(queued)}
