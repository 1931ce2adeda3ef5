"""OTP abuse defence: velocity limits and SMS-pumping blocks (docs/OTP.md, "Abuse defence").

``abuse_check`` runs before every OTP send. It refuses a send whose number is on the deny list
or under an active PumpingBlock, then takes one slot in every counter of the send (phone, client
IP, API token, country; the number's range and its conversion prefix) or none at all.

Counters. One row per (scope, key, window length, window start), bumped by a single statement,
``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count`` (PostgreSQL, and
SQLite >= 3.35), never read-then-written: on PostgreSQL concurrent senders queue on the row's
lock and each reads back its own count. Windows slide, approximated from two fixed windows:
``estimate = count(current) + count(previous) * (time left in the current window / window)``.

Refusals. All slots are taken in one statement, in a fixed (scope, key) order so that two
senders never lock in opposite orders, which commits on its own (autocommit: no BEGIN and COMMIT
round trips, and the row locks, the shared country row's among them, last that statement only).
When one is over its limit every slot is given back at once by the same statement with -1, so a
refused attempt consumes no budget -- neither the limit that refused it nor the others (a phone
refused for its own limit does not eat its IP's or token's budget, and hammering a refused phone
does not push its retry time further out). The one difference from a rolled-back transaction: a
send racing a refused one on the same key can, for that moment, read the refused attempt's count
and be refused too (never let through: no more than a limit's sends ever pass). Refusals are
counted apart, for the metrics (``rate_limit_refusals``).

Pumping. (a) More than ``range_burst`` sends to one range (the E.164 number without its last
``range_digits`` digits) within the range window blocks the range; (b) destinations whose
price per segment (any enabled gateway's GatewayRate) is above ``high_cost_price``, or whose
prefix is listed in ``high_cost_prefixes``, trip at ``high_cost_range_burst`` instead, and
``deny_prefixes`` / ``deny_countries`` are refused outright; (c) a conversion prefix (the number
without its last ``conversion_digits`` digits) with at least ``conversion_min_sends`` sends and
fewer than ``conversion_min_ratio`` of them verified (``abuse_record_verified``) is blocked.
A block is a PumpingBlock row, audited, and notifies the operations and technical role holders
once; an operator lifts it (``pumping_block_lift``).

Transactions. ``abuse_check`` commits its own work: the slots it takes, a block it creates and
the refusal it counts must survive the ApplicationError it raises, which rolls back the caller's
transaction. So call it outside any transaction -- in an idempotent service, after
``idempotent_replay`` and before ``run_idempotent`` -- never inside one (Django refuses: it
opens an empty durable block first, which costs no round trip).

Nothing here logs or audits an OTP code or a full phone number: phones and client IPs are
stored in the counters as keyed hashes, and facts carry ``phone_mask``-ed samples only.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.crypto import salted_hmac
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import CounterScope, OtpRateCounter, PumpingBlock, PumpingBlockReason
from compliance.roles import Role
from gateways.models import Gateway, GatewayRate
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.commits import ASYNC_COMMIT
from smsplatform.kernel.errors import ApplicationError, ErrorCode, from_pydantic, not_found, permission_denied
from smsplatform.kernel.notifications import notification_record
from smsplatform.kernel.phones import phone_mask
from smsplatform.kernel.roundtrips import Raw, statements_run

logger = logging.getLogger(__name__)

LIFT_PERMISSION = "otp.lift_pumpingblock"
SYSTEM_TASK = "otp.abuse_check"
# Refusals are counted per hour, for the metrics.
REFUSAL_WINDOW_SECONDS = 3600
# Who hears about a new block (compliance/roles.py).
BLOCK_NOTIFY_ROLES = (Role.OPERATIONS, Role.TECHNICAL)


# Configuration -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VelocityLimit(_Strict):
    count: int = Field(ge=1, le=1_000_000)
    window_seconds: int = Field(ge=1, le=7 * 86_400)


def _prefixes(values: list[str]) -> list[str]:
    cleaned = sorted({v.strip().replace(" ", "") for v in values if v.strip()})
    for value in cleaned:
        if not (value.startswith("+") and value[1:].isdigit() and 1 <= len(value) - 1 <= 15):
            raise ValueError(f"{value!r} is not an E.164 prefix such as '+882'")
    return cleaned


class AbuseSettings(_Strict):
    """Platform defaults, overridden by the SMS_OTP_ABUSE setting (a JSON object in the
    environment variable of the same name). Per-template ``limits`` override the four velocity
    limits."""

    phone: VelocityLimit = VelocityLimit(count=5, window_seconds=3600)
    ip: VelocityLimit = VelocityLimit(count=20, window_seconds=3600)
    token: VelocityLimit = VelocityLimit(count=1000, window_seconds=3600)
    country: VelocityLimit = VelocityLimit(count=2000, window_seconds=3600)
    range_digits: int = Field(3, ge=1, le=6, description="A range is the number without this many last digits.")
    range_burst: int = Field(10, ge=1, description="Sends to one range within range_window_seconds.")
    range_window_seconds: int = Field(600, ge=1, le=7 * 86_400)
    high_cost_price: Decimal = Field(Decimal("1.00"), ge=0, description="Per segment, in high_cost_currency.")
    high_cost_currency: str = Field("HKD", pattern=r"^[A-Z]{3}$")
    high_cost_prefixes: list[str] = Field(default_factory=list, description="Treated as high cost whatever the rate.")
    high_cost_range_burst: int = Field(3, ge=1, description="The range burst for high-cost destinations.")
    deny_prefixes: list[str] = Field(default_factory=list, description="Never sent to.")
    deny_countries: list[str] = Field(default_factory=list, description="ISO codes never sent to.")
    conversion_digits: int = Field(4, ge=1, le=8, description="A conversion prefix drops this many last digits.")
    conversion_window_seconds: int = Field(3600, ge=60, le=7 * 86_400)
    conversion_min_sends: int = Field(50, ge=1)
    conversion_min_ratio: float = Field(0.2, ge=0, le=1)
    refusal_retention_days: int = Field(30, ge=1, le=366)

    _check_prefixes = field_validator("high_cost_prefixes", "deny_prefixes")(_prefixes)

    @field_validator("deny_countries")
    @classmethod
    def _countries(cls, values: list[str]) -> list[str]:
        cleaned = sorted({v.strip().upper() for v in values if v.strip()})
        if any(len(v) != 2 or not v.isalpha() for v in cleaned):
            raise ValueError("countries are ISO 3166 two-letter codes such as 'HK'")
        return cleaned


_SETTINGS_CACHE: dict[str, Any] = {}
_UNSET: dict[str, Any] = {}


def abuse_settings() -> AbuseSettings:
    """The validated SMS_OTP_ABUSE setting. Validated once per settings object (a check and a send
    read it every time; validating cost a tenth of a millisecond): a new value (override_settings,
    a test's settings fixture) is a new object and is validated afresh. Treat the answer as read-only."""
    raw = getattr(settings, "SMS_OTP_ABUSE", None) or _UNSET
    cached = _SETTINGS_CACHE.get("raw")
    if cached is raw and "parsed" in _SETTINGS_CACHE:
        parsed: AbuseSettings = _SETTINGS_CACHE["parsed"]
        return parsed
    try:
        parsed = AbuseSettings.model_validate(raw)
    except ValidationError as exc:  # a deployment error: say which key is wrong
        raise from_pydantic(exc, prefix="SMS_OTP_ABUSE.") from None
    _SETTINGS_CACHE.clear()
    _SETTINGS_CACHE.update(raw=raw, parsed=parsed)
    return parsed


# Which template limit key names which error field and counter scope.
VELOCITY = (
    ("phone", "phone", CounterScope.PHONE),
    ("ip", "client_ip", CounterScope.CLIENT_IP),
    ("token", "token", CounterScope.TOKEN),
    ("country", "country", CounterScope.COUNTRY),
)


def _limits(limits: dict[str, Any] | None, defaults: AbuseSettings) -> dict[str, VelocityLimit]:
    out = {}
    given = limits or {}
    for name, _field, _scope in VELOCITY:
        raw = given.get(name)
        if raw is None:
            out[name] = getattr(defaults, name)
            continue
        try:
            out[name] = VelocityLimit.model_validate(raw)
        except ValidationError as exc:
            raise from_pydantic(exc, prefix=f"limits.{name}.") from None
    return out


# Keys ----------------------------------------------------------------------------------------


def _digest(kind: str, value: str) -> str:
    """A keyed hash: the counters never hold a phone number or an IP address in clear."""
    return salted_hmac(f"otp.abuse.{kind}", value, algorithm="sha256").hexdigest()


def _ip_key(client_ip: str) -> str:
    """IPv4 per address; IPv6 per /64 (one subscriber usually holds a whole /64)."""
    try:
        address = ipaddress.ip_address(client_ip.strip())
    except ValueError:
        return _digest("ip", client_ip.strip())
    if address.version == 6:
        return _digest("ip", str(ipaddress.ip_network(f"{address}/64", strict=False)))
    return _digest("ip", str(address))


def number_range(phone: str, digits: int) -> str:
    """The E.164 number without its last ``digits`` digits (never shorter than '+' and 1 digit)."""
    return phone[: max(2, len(phone) - digits)]


# The counter primitive ---------------------------------------------------------------------


def _epoch(now: datetime | None) -> int:
    return int((now or timezone.now()).timestamp())


@dataclass(frozen=True, order=True)
class _Slot:
    scope: str
    key: str
    window_seconds: int
    limit: int | None = None  # None: counted, not limited (detectors)
    field: str = ""

    def window_start(self, now_s: int) -> int:
        return now_s - now_s % self.window_seconds

    @property
    def counter(self) -> tuple[str, str, int]:
        """The counter row's key without its window start (a slot's limit is not part of it)."""
        return (self.scope, self.key, self.window_seconds)


# Table and column names are ours ("key" and "count" quoted: SQL words on some databases); the
# values go as parameters. PostgreSQL and SQLite (>= 3.35) both read this statement.
_TABLE = OtpRateCounter._meta.db_table
_UPSERT = (
    f'INSERT INTO "{_TABLE}" (scope, "key", window_seconds, window_start, "count", expires_at) '  # noqa: S608 - our names only
    "VALUES (%s, %s, %s, %s, 1, %s) "
    'ON CONFLICT (scope, "key", window_seconds, window_start) '
    f'DO UPDATE SET "count" = "{_TABLE}"."count" + 1 RETURNING "count"'
)


def _take(slot: _Slot, now_s: int, *, expires_at: int | None = None) -> int:
    """Add one to the slot's current window and return the new count, in one statement."""
    start = slot.window_start(now_s)
    # The row lock taken by ON CONFLICT DO UPDATE is held to the end of the transaction: a
    # concurrent sender on the same key waits here, then reads back the count after ours.
    expiry = expires_at if expires_at is not None else start + 2 * slot.window_seconds
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [slot.scope, slot.key, slot.window_seconds, start, expiry])
        row = cursor.fetchone()
    assert row is not None  # RETURNING always yields the row written
    return int(row[0])


def _take_all(slots: list[_Slot], now_s: int, *, delta: int = 1) -> dict[tuple[str, str, int], int]:
    """Add ``delta`` to every slot's current window in one statement and answer the new counts by
    ``_Slot.counter``: the rows are inserted or locked in the VALUES order, which the caller keeps
    sorted. Outside a transaction (the send path) the statement is its own transaction, and on
    PostgreSQL its commit need not wait for the WAL flush (the SET rides in the same round trip:
    a crash loses these counts only with the sends they counted, whose codes never left,
    smsplatform.kernel.commits). ``delta=-1`` gives back what a refused attempt took."""
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(slots))
    sql = (
        f'INSERT INTO "{_TABLE}" (scope, "key", window_seconds, window_start, "count", expires_at) '  # noqa: S608 - our names only
        f"VALUES {rows} "
        'ON CONFLICT (scope, "key", window_seconds, window_start) '
        f'DO UPDATE SET "count" = "{_TABLE}"."count" + %s RETURNING scope, "key", window_seconds, "count"'
    )
    params: list[Any] = []
    for slot in slots:
        start = slot.window_start(now_s)
        params += [slot.scope, slot.key, slot.window_seconds, start, max(delta, 0), start + 2 * slot.window_seconds]
    params.append(delta)
    statements = [Raw(sql, params)]
    if delta > 0 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        statements.insert(0, Raw(ASYNC_COMMIT))  # one query string: one implicit transaction
    found = statements_run(statements)[-1]
    return {(scope, key, window): int(count) for scope, key, window, count in found}


def _previous_statement(slots: list[_Slot], now_s: int) -> Raw:
    """The count of each slot's previous window (those windows are closed), in one query.
    Raw SQL: building this OR of exact keys through the ORM cost more than the query."""
    match = " OR ".join(['(scope = %s AND "key" = %s AND window_seconds = %s AND window_start = %s)'] * len(slots))
    params: list[Any] = []
    for slot in slots:
        params += [slot.scope, slot.key, slot.window_seconds, slot.window_start(now_s) - slot.window_seconds]
    return Raw(f'SELECT scope, "key", window_seconds, "count" FROM "{_TABLE}" WHERE {match}', params)  # noqa: S608 - our names only


def _counts(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str, int], int]:
    return {(scope, key, window): int(count) for scope, key, window, count in rows}


def _estimate(current: int, previous: int, elapsed: int, window: int) -> float:
    """Sliding-window estimate from two fixed windows."""
    return current + previous * (window - elapsed) / window


def _retry_after(limit: int, committed: int, previous: int, elapsed: int, window: int) -> int:
    """Seconds until one more attempt fits, given ``committed`` sends in the current window."""
    if committed + 1 <= limit and previous > 0:
        # Within this window: previous * (window - elapsed - t) / window <= limit - committed - 1.
        wait = window - elapsed - (limit - committed - 1) * window / previous
        return max(1, math.ceil(wait))
    # In the next window the current one becomes the previous: 1 + committed * (window - e) / window <= limit.
    into_next = max(0.0, window - (limit - 1) * window / committed) if committed else 0.0
    return max(1, math.ceil(window - elapsed + into_next))


# Refusals and blocks -------------------------------------------------------------------------


class _Over(Exception):
    def __init__(self, slot: _Slot, retry_after: int, facts: dict[str, Any]) -> None:
        super().__init__(slot.scope)
        self.slot = slot
        self.retry_after = retry_after
        self.facts = facts


class _LowConversion(Exception):
    def __init__(self, facts: dict[str, Any]) -> None:
        super().__init__("low conversion")
        self.facts = facts


def _count_refusal(limit_name: str, now_s: int, cfg: AbuseSettings) -> None:
    slot = _Slot(CounterScope.REFUSAL, limit_name, REFUSAL_WINDOW_SECONDS)
    expires = slot.window_start(now_s) + cfg.refusal_retention_days * 86_400
    with transaction.atomic(durable=True):
        _take(slot, now_s, expires_at=expires)


def _screen_statement(phone: str, country: str, cfg: AbuseSettings) -> Raw:
    """The two reads before the counters, in one statement: the oldest active block whose prefix
    starts the number (an indexed IN of its prefixes) and the highest enabled rate to the country
    (the high-cost test, _is_high_cost)."""
    starts = [phone[:n] for n in range(2, len(phone) + 1)]
    marks = ", ".join(["%s"] * len(starts))
    # Raw SQL on the send path, as the counters: the ORM's query building cost more than the query.
    # (GatewayRate.objects.filter(country=..., currency=..., gateway__enabled=True).aggregate(Max(...)))
    return Raw(
        f'SELECT (SELECT id FROM "{PumpingBlock._meta.db_table}" WHERE lifted_at IS NULL '  # noqa: S608 - our names only
        f"AND prefix IN ({marks}) ORDER BY created_at, id LIMIT 1), "
        f'(SELECT MAX(r.price_per_segment) FROM "{GatewayRate._meta.db_table}" r '
        f'JOIN "{Gateway._meta.db_table}" g ON g.id = r.gateway_id '
        "WHERE r.country = %s AND r.currency = %s AND g.enabled = %s)",
        [*starts, country, cfg.high_cost_currency, True],
    )


def _notify_recipients() -> list[str]:
    emails = (
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[r.value for r in BLOCK_NOTIFY_ROLES])
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )
    return sorted(set(emails))


def _facts_text(facts: dict[str, Any]) -> str:
    return "\n".join(f"- {key.replace('_', ' ')}: {value}" for key, value in facts.items())


def _block_create(*, prefix: str, country: str, reason: str, facts: dict[str, Any]) -> PumpingBlock:
    """Create the active block for ``prefix`` (audited, owners notified once), or return the
    one another sender created first."""
    with transaction.atomic(durable=True):
        try:
            # A savepoint: two senders tripping the same range at once race on the partial unique
            # index (one active block per prefix); the loser takes the winner's row and notifies nobody.
            with transaction.atomic():
                block = PumpingBlock.objects.create(prefix=prefix, country=country, reason=reason, facts=facts)
        except IntegrityError:
            existing = PumpingBlock.objects.filter(prefix=prefix, lifted_at__isnull=True).first()
            if existing is None:  # pragma: no cover - lifted between the insert and this read
                raise
            return existing
        recipients = _notify_recipients()
        notification_id = None
        if recipients:
            label = PumpingBlockReason(reason).label
            notification_id = notification_record(
                recipients=recipients,
                subject=f"OTP sends to {prefix} blocked: {label}",
                body=(
                    f"OTP sends to numbers starting {prefix} ({country or 'unknown country'}) are refused from now on: "
                    f"{label.lower()} (suspected SMS pumping).\n\n{_facts_text(facts)}\n\n"
                    f"Block #{block.pk}. If the traffic is genuine, lift it in the admin (OTP and verification > "
                    "Pumping blocks > Lift) with your reason."
                ),
                object_type="otp_pumping_block",
                object_id=block.pk,
            ).pk
        audit_record(
            actor=Actor.system(SYSTEM_TASK),
            action="otp.pumping_block.create",
            object_type="otp_pumping_block",
            object_id=block.pk,
            after={
                "prefix": prefix,
                "country": country,
                "reason": reason,
                "facts": facts,
                "notified": len(recipients),
                "notification_id": notification_id,
            },
            reason=f"SMS pumping defence: {PumpingBlockReason(reason).label.lower()}",
        )
    logger.warning("OTP pumping block #%s on %s (%s)", block.pk, prefix, reason)
    return block


def _blocked_error(block: PumpingBlock) -> ApplicationError:
    return ApplicationError(
        OtpErrorCode.OTP_RANGE_BLOCKED,
        "Codes to this number's range are paused: its traffic looks like SMS pumping.",
        field="phone",
        hint=(
            "No retry time: an operator must lift the block (admin: OTP and verification > Pumping blocks) "
            "once the traffic is known to be genuine."
        ),
        details={"block_id": block.pk},
    )


def _is_high_cost(phone: str, top: Any, cfg: AbuseSettings) -> tuple[bool, str | None]:
    """Whether the destination is high cost, and the highest rate found (as text), given the highest
    enabled rate to its country (``top``, read by _screen)."""
    listed = any(phone.startswith(p) for p in cfg.high_cost_prefixes)
    if top is None:
        return listed, None
    # SQLite answers a number, PostgreSQL a Decimal: both read as "1.5000".
    price = Decimal(str(top)).quantize(Decimal("0.0001"))
    return listed or price > cfg.high_cost_price, str(price)


# The two calls otp.send and the verify endpoint make ----------------------------------------


def abuse_check(
    *,
    limits: dict[str, Any],
    phone: str,
    country: str,
    client_ip: str | None,
    token_name: str | None,
    now: datetime | None = None,
) -> None:
    """Before an OTP send to ``phone`` (E.164, already parsed): take a slot in every velocity and
    pumping counter, or raise ApplicationError -- ``rate_limited`` (field phone / client_ip /
    token / country, ``details.retry_after`` in seconds), ``otp_range_blocked`` (an active
    PumpingBlock covers the number, or this send tripped one) or ``otp_prefix_denied``.

    Commits its own transactions: call it outside any transaction (see the module docstring)."""
    with transaction.atomic(durable=True):
        pass  # Django's refusal of a caller's open transaction (an empty block: no round trip)
    cfg = abuse_settings()
    window_limits = _limits(limits, cfg)
    now_s = _epoch(now)

    if any(phone.startswith(p) for p in cfg.deny_prefixes) or country.upper() in cfg.deny_countries:
        _count_refusal("denied", now_s, cfg)
        raise ApplicationError(
            OtpErrorCode.OTP_PREFIX_DENIED,
            "Codes are not sent to this destination.",
            field="phone",
            hint="The destination's prefix or country is on the platform's deny list (SMS_OTP_ABUSE).",
        )
    range_prefix = number_range(phone, cfg.range_digits)
    conversion_prefix = number_range(phone, cfg.conversion_digits)
    slots = []
    token_key = token_name or ""
    if len(token_key) > 64:  # the key column's width: a long name is hashed, never cut (two could collide)
        token_key = _digest("token", token_key)
    keys = {
        "phone": _digest("phone", phone),
        "ip": _ip_key(client_ip) if client_ip else "",
        "token": token_key,
        "country": country.upper(),
    }
    for name, field, scope in VELOCITY:
        if keys[name]:
            limit = window_limits[name]
            slots.append(_Slot(scope, keys[name], limit.window_seconds, limit.count, field))
    range_counter = _Slot(CounterScope.RANGE, range_prefix, cfg.range_window_seconds)  # its limit: after the screen
    sent_slot = _Slot(CounterScope.PREFIX_SENT, conversion_prefix, cfg.conversion_window_seconds)
    verified_slot = _Slot(CounterScope.PREFIX_VERIFIED, conversion_prefix, cfg.conversion_window_seconds)
    # The screen and the previous windows' counts in one round trip (smsplatform.kernel.roundtrips).
    screened, previous_rows = statements_run(
        [
            _screen_statement(phone, country, cfg),
            _previous_statement([*slots, range_counter, sent_slot, verified_slot], now_s),
        ]
    )
    block_id, top = screened[0] if screened else (None, None)
    if block_id is not None:
        _count_refusal("blocked", now_s, cfg)
        raise _blocked_error(PumpingBlock.objects.get(pk=block_id))
    previous = _counts(previous_rows)

    high_cost, top_rate = _is_high_cost(phone, top, cfg)
    burst = cfg.high_cost_range_burst if high_cost else cfg.range_burst
    slots.append(_Slot(CounterScope.RANGE, range_prefix, cfg.range_window_seconds, burst, "phone"))
    slots.append(sent_slot)
    # Locks in one fixed order (STYLE 6): two senders sharing two keys never wait on each other crosswise.
    slots.sort()

    # One statement takes every slot and commits (module docstring, "Refusals"); a refusal gives them back.
    counts = _take_all(slots, now_s)
    try:
        try:
            for slot in slots:
                count = counts[slot.counter]
                if slot.limit is None:
                    continue
                before = previous.get(slot.counter, 0)
                elapsed = now_s - slot.window_start(now_s)
                if _estimate(count, before, elapsed, slot.window_seconds) > slot.limit:
                    retry = _retry_after(slot.limit, count - 1, before, elapsed, slot.window_seconds)
                    facts: dict[str, Any] = {
                        "sends": count,
                        "previous_window_sends": before,
                        "threshold": slot.limit,
                        "window_seconds": slot.window_seconds,
                    }
                    raise _Over(slot, retry, facts)
            _check_conversion(cfg, counts[sent_slot.counter], previous, sent_slot, verified_slot, now_s)
        except Exception:
            _take_all(slots, now_s, delta=-1)  # a refused (or failed) attempt consumes no budget
            raise
    except _Over as over:
        if over.slot.scope == CounterScope.RANGE:
            reason = PumpingBlockReason.HIGH_COST_BURST if high_cost else PumpingBlockReason.RANGE_BURST
            burst_facts: dict[str, Any] = {
                **over.facts,
                "sample": phone_mask(phone),
                "high_cost": high_cost,
                "top_rate": top_rate,
            }
            block = _block_create(prefix=range_prefix, country=country.upper(), reason=reason, facts=burst_facts)
            _count_refusal("blocked", now_s, cfg)
            raise _blocked_error(block) from None
        _count_refusal(over.slot.field, now_s, cfg)
        raise _rate_limited(over) from None
    except _LowConversion as low:
        low_facts: dict[str, Any] = {**low.facts, "sample": phone_mask(phone)}
        block = _block_create(
            prefix=conversion_prefix, country=country.upper(), reason=PumpingBlockReason.LOW_CONVERSION, facts=low_facts
        )
        _count_refusal("blocked", now_s, cfg)
        raise _blocked_error(block) from None


def _check_conversion(
    cfg: AbuseSettings,
    sent_now: int,
    previous: dict[tuple[str, str, int], int],
    sent_slot: _Slot,
    verified_slot: _Slot,
    now_s: int,
) -> None:
    """(c) Raise _LowConversion when the prefix has had enough sends and too few verified."""
    window = sent_slot.window_seconds
    elapsed = now_s - sent_slot.window_start(now_s)
    sends = _estimate(sent_now, previous.get(sent_slot.counter, 0), elapsed, window)
    if sends < cfg.conversion_min_sends:
        return
    verified_now = (
        OtpRateCounter.objects.filter(
            scope=verified_slot.scope,
            key=verified_slot.key,
            window_seconds=window,
            window_start=verified_slot.window_start(now_s),
        )
        .values_list("count", flat=True)
        .first()
        or 0
    )
    verified = _estimate(verified_now, previous.get(verified_slot.counter, 0), elapsed, window)
    if verified / sends < cfg.conversion_min_ratio:
        raise _LowConversion(
            {
                "sends": round(sends, 1),
                "verified": round(verified, 1),
                "ratio": round(verified / sends, 3),
                "min_ratio": cfg.conversion_min_ratio,
                "min_sends": cfg.conversion_min_sends,
                "window_seconds": window,
            }
        )


def _rate_limited(over: _Over) -> ApplicationError:
    what = {"phone": "this number", "client_ip": "this client", "token": "this API token", "country": "this country"}
    seconds = over.retry_after
    return ApplicationError(
        OtpErrorCode.RATE_LIMITED,
        f"Too many codes requested for {what.get(over.slot.field, 'this sender')}: "
        f"at most {over.slot.limit} per {over.slot.window_seconds} seconds.",
        field=over.slot.field,
        hint=f"Retry in {seconds} seconds.",
        details={"retry_after": seconds, "limit": over.slot.limit, "window_seconds": over.slot.window_seconds},
    )


def verified_slot(phone: str) -> _Slot:
    """The counter slot a successful check of this phone adds one to (conversion ratio)."""
    cfg = abuse_settings()
    return _Slot(
        CounterScope.PREFIX_VERIFIED, number_range(phone, cfg.conversion_digits), cfg.conversion_window_seconds
    )


def verified_window(now: datetime | None = None) -> dict[str, Any]:
    """The verified-prefix counter's slot at ``now`` less its key, for a statement that computes
    the key itself from the phone (abuse.number_range in SQL: ``left(phone, greatest(2,
    length(phone) - digits))``): scope, digits, window, its start and the row's expiry, as _take
    writes them."""
    cfg = abuse_settings()
    slot = _Slot(CounterScope.PREFIX_VERIFIED, "", cfg.conversion_window_seconds)
    start = slot.window_start(_epoch(now))
    return {
        "scope": slot.scope,
        "digits": cfg.conversion_digits,
        "window": slot.window_seconds,
        "start": start,
        "expiry": start + 2 * slot.window_seconds,
    }


def abuse_record_verified(*, phone: str, now: datetime | None = None) -> None:
    """After a successful code check: count it for the prefix's verify/send conversion ratio.
    Runs in the caller's transaction (a verification that rolls back is not counted)."""
    slot = verified_slot(phone)
    # One statement: inside the caller's transaction no savepoint is needed (nothing to undo apart).
    with transaction.atomic(savepoint=False):
        _take(slot, _epoch(now))


# The operator's lift ------------------------------------------------------------------------


def pumping_block_lift(*, actor: Actor, block_id: int, reason: str) -> dict[str, Any]:
    """Lift an active block (permission otp.lift_pumpingblock), audited with the reason. The
    range's detector counters restart from zero, so the lifted range sends again at once; a
    renewed burst blocks it again."""
    if not actor.has_perm(LIFT_PERMISSION):
        raise permission_denied(LIFT_PERMISSION)
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(
            ErrorCode.INVALID_ARGUMENT,
            "A reason is required to lift a pumping block.",
            field="reason",
            hint="Say why the traffic is genuine (it is audited).",
        )
    with transaction.atomic(durable=True):
        block = PumpingBlock.objects.select_for_update().filter(pk=block_id).first()
        if block is None:
            raise not_found(
                "pumping block", block_id, field="block_id", hint="The admin's OTP pumping blocks page lists them."
            )
        if block.lifted_at is not None:
            raise ApplicationError(
                OtpErrorCode.PUMPING_BLOCK_LIFTED,
                f"Pumping block #{block.pk} was already lifted at {block.lifted_at.isoformat()}.",
                field="block_id",
                hint="Nothing to do: sends to the range are allowed again.",
            )
        block.lifted_at = timezone.now()
        block.lifted_by_id = actor.user_id
        block.lift_reason = reason[:2000]
        block.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
        # Set-based: the detectors keyed on this prefix start again from zero.
        cleared, _ = OtpRateCounter.objects.filter(
            scope__in=[CounterScope.RANGE, CounterScope.PREFIX_SENT, CounterScope.PREFIX_VERIFIED], key=block.prefix
        ).delete()
        audit_record(
            actor=actor,
            action="otp.pumping_block.lift",
            object_type="otp_pumping_block",
            object_id=block.pk,
            before={"prefix": block.prefix, "lifted_at": None},
            after={"prefix": block.prefix, "lifted_at": block.lifted_at, "counters_cleared": cleared},
            reason=reason,
        )
    return {
        "block_id": block.pk,
        "prefix": block.prefix,
        "lifted_at": block.lifted_at.isoformat(),
        "lifted_by": getattr(actor.user, "username", None),
    }


# Housekeeping and reads ---------------------------------------------------------------------


def otp_rate_counters_prune(*, now: datetime | None = None) -> int:
    """Delete every counter row past its expiry, in one statement (beat: otp.prune_rate_counters)."""
    deleted, _ = OtpRateCounter.objects.filter(expires_at__lt=_epoch(now)).delete()
    return deleted


def pumping_blocks_active() -> list[dict[str, Any]]:
    """Active blocks, newest first (admin and metrics)."""
    return [
        {
            "block_id": b.pk,
            "prefix": b.prefix,
            "country": b.country,
            "reason": b.reason,
            "facts": b.facts,
            "created_at": b.created_at.isoformat(),
        }
        for b in PumpingBlock.objects.filter(lifted_at__isnull=True).order_by("-created_at", "-pk")
    ]


def rate_limit_refusals(*, hours: int = 24, now: datetime | None = None) -> dict[str, int]:
    """Refused OTP sends in the last ``hours`` hours (whole hours, the current one included), by
    what refused them: phone, client_ip, token, country (velocity limits), blocked (a pumping
    block), denied (the deny list)."""
    now_s = _epoch(now)
    since = now_s - now_s % REFUSAL_WINDOW_SECONDS - (max(hours, 1) - 1) * REFUSAL_WINDOW_SECONDS
    rows = (
        OtpRateCounter.objects.filter(scope=CounterScope.REFUSAL, window_start__gte=since)
        .values("key")
        .annotate(total=Sum("count"))
        .order_by("key")
    )
    return {row["key"]: int(row["total"]) for row in rows}


def abuse_overview(*, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
    """What the operations page shows: active blocks and the refusals of the last hours."""
    moment = now or timezone.now()
    return {
        "active_blocks": pumping_blocks_active(),
        "refusals": rate_limit_refusals(hours=hours, now=moment),
        "since": (moment - timedelta(hours=max(hours, 1))).isoformat(),
    }
