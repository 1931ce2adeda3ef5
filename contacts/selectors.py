"""Reads of contacts: search (minimal, masked) and get (full, with a version token)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet

from compliance.models import OptOut
from compliance.optouts import FULL_PHONE_PERMISSION, opt_out_summary, phone_for_actor, suppressed_phone_exists
from contacts.models import Audience, AudienceMembership, ConsentEvidence, ConsentPurpose, Contact
from gateways.models import OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.phones import phone_parse
from smsplatform.kernel.versioning import version_token

if TYPE_CHECKING:
    from gateways.frequency import CapWindow

LABEL = "contacts.contact"
VIEW_PERMISSION = "contacts.view_contact"
SEND_HISTORY_LIMIT = 20


def contact_token(contact: Contact) -> str:
    return version_token(LABEL, contact.pk, contact.version)


def marketing_consent_exists() -> Exists:
    return Exists(ConsentEvidence.objects.filter(contact=OuterRef("pk"), purpose=ConsentPurpose.MARKETING))


def contacts_annotated() -> QuerySet[Contact]:
    """Contacts with ``has_consent`` and ``opted_out`` computed in SQL; sendable = both right."""
    return Contact.objects.annotate(has_consent=marketing_consent_exists(), opted_out=suppressed_phone_exists())


def _require_view(actor: Actor) -> None:
    if not actor.has_perm(VIEW_PERMISSION):
        raise permission_denied(VIEW_PERMISSION)


def _minimal(actor: Actor, contact: Any) -> dict[str, Any]:
    return {
        "contact_id": contact.pk,
        "phone": phone_for_actor(actor, contact.phone),
        "country": contact.country,
        "language": contact.language,
        "has_consent": bool(contact.has_consent),
        "opted_out": bool(contact.opted_out),
        "sendable": bool(contact.has_consent and not contact.opted_out),
    }


def contacts_search(
    *,
    actor: Actor,
    phone: str | None = None,
    crm_key: str | None = None,
    tag: str | None = None,
    audience_id: int | None = None,
    opted_out: bool | None = None,
    has_consent: bool | None = None,
    sent_within_days: int | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """The minimum to pick a contact: id, phone (masked unless permitted), country, language,
    consent and opt-out flags. Phone lookups are one unique-index probe."""
    _require_view(actor)
    criteria = (phone, crm_key, tag, audience_id, opted_out, has_consent, sent_within_days)
    if not any(v is not None and v != "" for v in criteria):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "Give at least one search criterion.",
            field="phone",
            hint="Search by phone, crm_key, tag, audience_id, opted_out, has_consent or sent_within_days.",
        )
    e164 = phone_parse(phone, field="phone").e164 if phone else None
    if e164 is not None and not any(v is not None and v != "" for v in criteria[1:]):
        items = [_minimal(actor, row) for row in _by_phone(e164)]
        return _search_result(actor, items, limit=1)
    qs = contacts_annotated()
    if e164 is not None:
        qs = qs.filter(phone=e164)
    if crm_key:
        qs = qs.filter(crm_key=crm_key)
    if tag:
        qs = qs.filter(tags__contains=[tag]) if _json_contains_supported() else qs.filter(tags__icontains=f'"{tag}"')
    if audience_id is not None:
        qs = qs.filter(memberships__audience_id=audience_id)
    if opted_out is not None:
        qs = qs.filter(Q(opted_out=opted_out))  # an annotation
    if has_consent is not None:
        qs = qs.filter(Q(has_consent=has_consent))
    if sent_within_days is not None:
        from datetime import timedelta

        # The MCP schema says 1-365; REST passes any integer, and a huge one overflows the date.
        if not 1 <= int(sent_within_days) <= 365:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "sent_within_days must be between 1 and 365.",
                field="sent_within_days",
                hint="Give a number of days from 1 to 365.",
            )

        from django.utils import timezone

        since = timezone.now() - timedelta(days=int(sent_within_days))
        qs = qs.filter(Exists(OutboundMessage.objects.filter(destination=OuterRef("phone"), created_at__gte=since)))
    limit = max(1, min(int(limit), 100))
    items = [_minimal(actor, c) for c in qs.order_by("id")[: limit + 1]]
    return _search_result(actor, items, limit=limit)


def _search_result(actor: Actor, items: list[dict[str, Any]], *, limit: int) -> dict[str, Any]:
    return {
        "contacts": items[:limit],
        "count": min(len(items), limit),
        "truncated": len(items) > limit,
        "phones_masked": not actor.has_perm(FULL_PHONE_PERMISSION),
        "note": "Minimal fields only; read one contact with sms_marketing.contacts.get for its version token.",
    }


class _Found(NamedTuple):
    pk: int
    phone: str
    country: str
    language: str
    has_consent: bool
    opted_out: bool


def _by_phone(e164: str) -> list[_Found]:
    """A search by phone alone: the unique-index probe and the two flags in one prepared-shape
    statement. The same result as contacts_annotated().filter(phone=...), without building an
    ORM query per call, which cost more than the database on the 5 ms budget."""
    with connection.cursor() as cursor:
        cursor.execute(_BY_PHONE, [ConsentPurpose.MARKETING.value, e164])
        return [_Found(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5])) for row in cursor.fetchall()]


_BY_PHONE = (
    f"SELECT c.id, c.phone, c.country, c.language, "  # noqa: S608 - table names only
    f"EXISTS (SELECT 1 FROM {ConsentEvidence._meta.db_table} e WHERE e.contact_id = c.id AND e.purpose = %s), "
    f"EXISTS (SELECT 1 FROM {OptOut._meta.db_table} o WHERE o.phone = c.phone AND o.lifted_at IS NULL) "
    f"FROM {Contact._meta.db_table} c WHERE c.phone = %s"
)


def _json_contains_supported() -> bool:
    from django.db import connection

    return bool(connection.features.supports_json_field_contains)


def contact_access(*, actor: Actor, contact_id: int) -> Contact:
    _require_view(actor)
    contact = contacts_annotated().filter(pk=contact_id).first()
    if contact is None:
        raise not_found("contact", contact_id, field="contact_id", hint="Use sms_marketing.contacts.search.")
    return contact


CONSENT_EVIDENCE_PERMISSION = "contacts.view_consentevidence"


def contact_consent_evidence(*, actor: Actor, contact: Contact) -> list[dict[str, Any]] | None:
    """The consent records of ``contact`` (wording shown, source, proof), or None for an actor
    without ``contacts.view_consentevidence``: personal data that only CRM and compliance read.
    Whether consent exists (``has_consent``) stays visible to every contact reader."""
    if not actor.has_perm(CONSENT_EVIDENCE_PERMISSION):
        return None
    return [
        {
            "consent_id": c.pk,
            "channel": c.channel,
            "purpose": c.purpose,
            "wording": c.wording,
            "source": c.source,
            "obtained_at": c.obtained_at.isoformat(),
            "proof_reference": c.proof_reference,
            "recorded_at": c.recorded_at.isoformat(),
            "recorded_via": c.actor_channel,
        }
        for c in contact.consents.order_by("-obtained_at", "-id")
    ]


def contact_get(*, actor: Actor, contact_id: int) -> dict[str, Any]:
    contact: Any = contact_access(actor=actor, contact_id=contact_id)
    consents = contact_consent_evidence(actor=actor, contact=contact)
    opt_outs = [opt_out_summary(o, actor) for o in OptOut.objects.filter(phone=contact.phone).order_by("-id")]
    history = [
        {
            "message_id": m.pk,
            "created_at": m.created_at.isoformat(),
            "purpose": m.purpose,
            "state": m.state,
            "reference": m.reference,
        }
        for m in OutboundMessage.objects.filter(destination=contact.phone).order_by("-created_at")[:SEND_HISTORY_LIMIT]
    ]
    return {
        "contact_id": contact.pk,
        "phone": phone_for_actor(actor, contact.phone),
        "phones_masked": not actor.has_perm(FULL_PHONE_PERMISSION),
        "country": contact.country,
        "language": contact.language,
        "name": contact.name,
        "tags": list(contact.tags or []),
        "source": contact.source,
        "crm_key": contact.crm_key,
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
        "has_consent": bool(contact.has_consent),
        "opted_out": bool(contact.opted_out),
        "sendable": bool(contact.has_consent and not contact.opted_out),
        # Withheld (an empty list, flagged) rather than absent, so the output keeps one shape.
        "consent_evidence": consents or [],
        "consent_evidence_withheld": consents is None,
        "opt_outs": opt_outs,
        "send_history": history,
        "version": contact.version,
        "base_version_token": contact_token(contact),
        "note": (
            "Update with sms_marketing.contacts.upsert sending contact_id and base_version_token; a newer "
            "opt-out makes the token stale. Only explicit new consent with evidence (lift_opt_out) lifts a STOP."
        ),
    }


# --- audiences ----------------------------------------------------------------------------------

AUDIENCE_PERMISSION = "contacts.view_audience"


def audiences_visible(actor: Actor) -> QuerySet[Audience]:
    """Audiences the actor may see: those open to every contact viewer, and those shared with
    one of the actor's roles."""
    if not actor.has_perm(AUDIENCE_PERMISSION):
        raise permission_denied(AUDIENCE_PERMISSION)
    qs = Audience.objects.all()
    user = actor.user
    if user is None or getattr(user, "is_superuser", False):
        return qs
    restricted = Audience.visible_to.through.objects.filter(audience_id=OuterRef("pk"))
    mine = restricted.filter(group__in=user.groups.all())
    return qs.filter(~Exists(restricted) | Exists(mine))


def audiences_list(*, actor: Actor) -> dict[str, Any]:
    audiences = list(audiences_visible(actor).order_by("name"))
    stats = _audience_stats([a.pk for a in audiences])
    items = []
    for a in audiences:
        members, with_consent, opted_out, sendable = stats.get(a.pk, (0, 0, 0, 0))
        items.append(
            {
                "audience_id": a.pk,
                "name": a.name,
                "description": a.description,
                "source": a.source,
                "region": a.region,
                "sync_source": a.sync_source,
                "purchase_behaviour": a.purchase_behaviour,
                "members": members,
                "sendable": sendable,
                "consent": {
                    "with_consent": with_consent,
                    "without_consent": members - with_consent,
                    "opted_out": opted_out,
                },
            }
        )
    return {
        "audiences": items,
        "count": len(items),
        "note": (
            "Counts only; no phone numbers. Sendable = marketing consent evidence and no active opt-out; "
            "segments.preview also removes duplicates, uncovered countries and frequency-capped contacts."
        ),
    }


def _audience_stats(audience_ids: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """(members, with consent, opted out, sendable) per audience, in one grouped statement.

    The memberships are joined by contact id to the consenting contacts and to the opted-out
    contacts (the active opt-outs' phones resolved to contact ids first, a small set), so the
    contacts table itself is only probed for those phones."""
    if not audience_ids:
        return {}
    consenting, consenting_params = _sql(_consenting_contacts())
    suppressed, suppressed_params = _sql(Contact.objects.filter(phone__in=_suppressed_phones()).order_by().values("id"))
    marks = ", ".join(["%s"] * len(audience_ids))
    # Only Django-compiled SQL and our own table name are interpolated; values are parameters.
    statement = (
        "SELECT ms.audience_id, COUNT(*), "  # noqa: S608
        "SUM(CASE WHEN k.contact_id IS NOT NULL THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN s.id IS NOT NULL THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN k.contact_id IS NOT NULL AND s.id IS NULL THEN 1 ELSE 0 END) "
        f"FROM {AudienceMembership._meta.db_table} ms "
        f"LEFT JOIN ({consenting}) k ON k.contact_id = ms.contact_id "
        f"LEFT JOIN ({suppressed}) s ON s.id = ms.contact_id "
        f"WHERE ms.audience_id IN ({marks}) GROUP BY ms.audience_id"
    )
    with _analytic_cursor() as cursor:
        cursor.execute(statement, [*consenting_params, *suppressed_params, *audience_ids])
        return {row[0]: (int(row[1]), int(row[2] or 0), int(row[3] or 0), int(row[4] or 0)) for row in cursor}


def _consenting_contacts() -> QuerySet[Any]:
    """Contacts with marketing consent evidence, once each (an ordered index-only scan on PostgreSQL)."""
    return ConsentEvidence.objects.filter(purpose=ConsentPurpose.MARKETING).order_by().values("contact_id").distinct()


def _suppressed_phones() -> QuerySet[Any]:
    return OptOut.objects.filter(lifted_at__isnull=True).values("phone")


def _sql(queryset: QuerySet[Any]) -> tuple[str, tuple[Any, ...]]:
    """A queryset's SQL and parameters, to embed as a subquery of a hand-written statement.
    Django compiles it, so quoting and parameter adaptation stay Django's."""
    sql, params = queryset.query.sql_with_params()
    return sql, tuple(params)


@contextmanager
def _analytic_cursor() -> Iterator[Any]:
    """A cursor for one large read-only aggregate over up to millions of contacts.

    On PostgreSQL, inside its own (sub)transaction and only for that statement:

    - JIT off: compiling ~100 expressions costs more than it saves on a sub-second query;
    - work_mem high enough for the aggregates of a million contacts to stay in memory;
    - hash joins off: the big inputs (contacts by id, memberships by contact, consent by
      contact) all come ordered from indexes, and merging them measured 1.5-2x cheaper than
      hashing a million rows (the planner's costs do not see the cache misses); small inputs
      still get nested loops or merges;
    - no parallel workers: each would rebuild the inputs that are not parallel-aware.

    SET LOCAL would last until the end of an enclosing transaction, so the settings are put
    back after the statement; if it fails, rolling back the savepoint puts them back."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            yield cursor
            return
        for name, value in ANALYTIC_SETTINGS:
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
        yield cursor
        for name, _value in ANALYTIC_SETTINGS:
            cursor.execute(f"SET LOCAL {name} TO DEFAULT")


ANALYTIC_SETTINGS = (
    ("jit", "off"),
    ("work_mem", "192MB"),
    ("enable_hashjoin", "off"),
    # Parallel workers would each rebuild the non-parallel-aware inputs (memberships, consent).
    ("max_parallel_workers_per_gather", "0"),
)


# --- segment counts (the body of segments.preview) --------------------------------------------

# Each excluded contact is counted under the first reason that applies, in this order; a phone
# present in several audiences of the scope is counted once and its extra rows as duplicates.
EXCLUSION_ORDER = (
    "duplicate_phone",
    "invalid",
    "blocked",
    "opted_out",
    "no_consent",
    "country_not_covered",
    "frequency_capped",
)


def segment_counts(*, actor: Actor, criteria: dict[str, Any]) -> dict[str, Any]:
    """Matched rows, sendable contacts and every exclusion by reason, per country, in SQL.

    ``criteria`` is already normalised. One statement, one pass over the matched contacts (see
    _segment_rows): each contact gets its number of memberships in the scope (rows beyond the
    first are duplicate phones), whether its phone has an active invalid / blocked / other
    opt-out, whether it has marketing consent evidence and whether its phone is at a frequency
    cap (every window counted in one scan of the send history); a CASE gives it exactly one
    primary reason, the first in ``EXCLUSION_ORDER`` that applies (or sendable), and the result
    is grouped by (reason, country, cap windows reached). Python only adds up those groups.
    """
    from contacts.criteria import criteria_audience_ids
    from gateways.frequency import frequency_capped_windows
    from gateways.models import GatewayRate, MessagePurpose
    from gateways.selectors import segment_prices

    visible = set(audiences_visible(actor).values_list("pk", flat=True))
    referenced = criteria_audience_ids(criteria)
    hidden = sorted(referenced - visible)
    if hidden:
        raise not_found(
            "audience", hidden[0], field="criteria.audiences", hint="Pick ids from sms_marketing.audiences.list."
        )
    scope = sorted(referenced or visible)
    countries = list(
        GatewayRate.objects.filter(gateway__enabled=True).values_list("country", flat=True).distinct().order_by()
    )
    prices = segment_prices(countries=countries)
    capped_windows = frequency_capped_windows(purpose=MessagePurpose.MARKETING)
    windows = [window for window, _ in capped_windows]
    capped = [destinations for _, destinations in capped_windows]
    rows = _segment_rows(criteria, scope, covered=sorted(prices), capped=capped, windows=windows)
    limits = {w.name: w for w in windows}

    exclusions = dict.fromkeys(EXCLUSION_ORDER, 0)
    by_window = dict.fromkeys(limits, 0)
    by_country: dict[str, dict[str, Any]] = {}
    sendable = distinct = membership_rows = 0
    for primary, country, reached, n, memberships in rows:
        distinct += n
        membership_rows += memberships
        entry = by_country.setdefault(country, {"country": country, "contacts": 0, "sendable": 0, "excluded": 0})
        entry["contacts"] += n
        if primary == "sendable":
            sendable += n
            entry["sendable"] += n
            continue
        entry["excluded"] += n
        exclusions[primary] += n
        if primary == "frequency_capped":
            for name, hit in zip(limits, reached, strict=True):
                if hit:
                    by_window[name] += n
    exclusions["duplicate_phone"] = membership_rows - distinct
    total_cost: dict[str, Decimal] = {}
    for country, entry in by_country.items():
        quote = prices.get(country)
        entry["covered"] = quote is not None
        if quote is not None:
            cost = (quote.price_per_segment * entry["sendable"]).quantize(Decimal("0.01"))
            entry.update(
                gateway=quote.gateway_code,
                price_per_segment=str(quote.price_per_segment),
                currency=quote.currency,
                estimated_cost=str(cost),
            )
            total_cost[quote.currency] = total_cost.get(quote.currency, Decimal(0)) + cost
    return {
        "criteria": criteria,
        "audience_ids": scope,
        "matched": membership_rows,
        "distinct_phones": distinct,
        "sendable": sendable,
        "excluded": membership_rows - sendable,
        "exclusions": exclusions,
        "exclusion_order": list(EXCLUSION_ORDER),
        "frequency_capped_by_window": {
            name: {"count": by_window[name], "rule": window.describe()} for name, window in limits.items()
        },
        "by_country": sorted(by_country.values(), key=lambda e: (-e["contacts"], e["country"])),
        "estimated_cost": {currency: str(amount) for currency, amount in sorted(total_cost.items())},
        "cost_basis": "one SMS segment per sendable contact; the campaign's copy fit preview gives the real count",
    }


def _within_scope(criteria: dict[str, Any], scope: list[int], within: Q) -> Q:
    """criteria_q, minus a top-level ``audiences`` condition naming exactly the scope: the scope
    join already requires it, and evaluating it twice would read the memberships twice.
    ``within`` (a Q on contact_id) narrows the criteria's subqueries to the statement's ids."""
    from contacts.criteria import criteria_q

    def redundant(part: dict[str, Any]) -> bool:
        return set(part) == {"audiences"} and sorted(part["audiences"]) == scope

    if redundant(criteria):
        return Q()
    if set(criteria) == {"all"}:
        parts = [part for part in criteria["all"] if not redundant(part)]
        return criteria_q({"all": parts}, within=within) if parts else Q()
    return criteria_q(criteria, within=within)


class _Statement:
    """SQL text and its parameters, appended in step so placeholders and values stay in order."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, params: Iterable[Any] = ()) -> _Statement:
        self.parts.append(sql)
        self.params.extend(params)
        return self

    def query(self, queryset: QuerySet[Any]) -> _Statement:
        sql, params = _sql(queryset)
        return self.add(f"({sql})", params)

    @property
    def sql(self) -> str:
        return "".join(self.parts)


# Below this many contact ids one statement is quicker than starting a second connection.
SPLIT_MIN_CONTACTS = 200_000


def _segment_rows(
    criteria: dict[str, Any],
    scope: list[int],
    *,
    covered: list[str],
    capped: list[QuerySet[Any]],
    windows: list[CapWindow],
) -> list[tuple[str, str, tuple[bool, ...], int, int]]:
    """(primary reason, country, cap windows reached, contacts, scope memberships) groups.

    Every contact's reason depends on that contact alone, so the groups of disjoint id ranges
    add up. On PostgreSQL, outside a transaction and over enough contacts, the statement runs as
    two halves of the id range on two connections at once (one per core), both reading one
    exported snapshot: the same answer as one statement, in about half the time."""
    if not scope:
        return []
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        bounds = Contact.objects.aggregate(lo=Min("pk"), hi=Max("pk"))
        lo, hi = bounds["lo"], bounds["hi"]
        if lo is not None and hi - lo >= SPLIT_MIN_CONTACTS:
            middle = _median_member(scope) or (lo + hi) // 2
            halves = [
                _segment_statement(criteria, scope, covered=covered, capped=capped, windows=windows, ids=ids)
                for ids in ((None, middle), (middle, None))
            ]
            if all(half is not None for half in halves):
                return _merge_groups(_run_on_one_snapshot([h for h in halves if h is not None]), len(windows))
    statement = _segment_statement(criteria, scope, covered=covered, capped=capped, windows=windows)
    if statement is None:
        return []
    with _analytic_cursor() as cursor:
        cursor.execute(statement.sql, statement.params)
        return _merge_groups([cursor.fetchall()], len(windows))


def _median_member(scope: list[int]) -> int | None:
    """The middle contact id of the scope's memberships, from a 1% page sample (a few ms): the
    halves then hold about as many contacts each, however the ids are spread (imports append)."""
    table = AudienceMembership._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY contact_id) FROM {table} "  # noqa: S608
            "TABLESAMPLE SYSTEM (1) REPEATABLE (7) WHERE audience_id = ANY(%s)",
            [scope],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


# The statement's reason codes (integers group faster than text): the position in _REASONS, or
# for a frequency-capped contact _CAPPED plus one bit per window at its cap (bit i: window i).
_REASONS = ("sendable", "invalid", "blocked", "opted_out", "no_consent", "country_not_covered")
_CAPPED = 1 << 20


def _merge_groups(
    results: list[list[tuple[Any, ...]]], windows: int
) -> list[tuple[str, str, tuple[bool, ...], int, int]]:
    """Add up (reason code, country, contacts, memberships) rows by reason, country and the
    cap windows reached."""
    merged: dict[tuple[Any, ...], list[int]] = {}
    for rows in results:
        for code, country, n, memberships in rows:
            if code >= _CAPPED:
                key = ("frequency_capped", country, tuple(bool(code >> i & 1) for i in range(windows)))
            else:
                key = (_REASONS[code], country, (False,) * windows)
            total = merged.setdefault(key, [0, 0])
            total[0] += int(n)
            total[1] += int(memberships or 0)
    return [(key[0], key[1], key[2], n, memberships) for key, (n, memberships) in merged.items()]


def _run_on_one_snapshot(statements: list[_Statement]) -> list[list[tuple[Any, ...]]]:
    """Run each statement on a connection of its own, all at once, all reading the snapshot the
    first one exports (REPEATABLE READ, read only), with the analytic settings."""
    connections = [connection.get_new_connection(connection.get_connection_params()) for _ in statements]
    try:
        for conn in connections:
            conn.autocommit = True  # the transactions below are begun explicitly
        cursors = [conn.cursor() for conn in connections]
        for cursor in cursors:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursors[0].execute("SELECT pg_export_snapshot()")
        snapshot = cursors[0].fetchone()[0]
        for cursor in cursors[1:]:
            cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        for cursor in cursors:
            for name, value in ANALYTIC_SETTINGS:
                cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
        results: list[list[tuple[Any, ...]] | BaseException | None] = [None] * len(statements)

        def run(index: int) -> None:
            try:
                cursors[index].execute(statements[index].sql, statements[index].params)
                results[index] = cursors[index].fetchall()
            except BaseException as exc:  # re-raised on the calling thread
                results[index] = exc

        threads = [threading.Thread(target=run, args=(i,), name=f"segment-part-{i}") for i in range(1, len(statements))]
        for thread in threads:
            thread.start()
        run(0)
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, list)]
    finally:
        for conn in connections:
            with suppress(Exception):
                conn.close()


def _segment_statement(
    criteria: dict[str, Any],
    scope: list[int],
    *,
    covered: list[str],
    capped: list[QuerySet[Any]],
    windows: list[CapWindow],
    ids: tuple[int | None, int | None] = (None, None),
) -> _Statement | None:
    """The statement of _segment_rows, over contact ids in [ids[0], ids[1]) when given.

    The big inputs are joined by contact id and merge in id order (the matched contacts, their
    memberships in the scope, the consenting contacts); the small phone-keyed sets (active
    opt-outs by reason, capped destinations) are hashed once and probed per contact. Nothing
    in the plan depends on how many contacts match: a small audience is read through its
    memberships, a million contacts are streamed once. None when nothing can match."""
    from compliance.models import OptOutReason

    low, high = ids
    in_range = Q(pk__gte=low) if low is not None else Q()
    if high is not None:
        in_range &= Q(pk__lt=high)
    member_range = Q(contact_id__gte=low) if low is not None else Q()
    if high is not None:
        member_range &= Q(contact_id__lt=high)
    try:
        matched = (
            Contact.objects.filter(_within_scope(criteria, scope, member_range), in_range)
            .order_by()
            .values("id", "phone", "country")
        )
        _sql(matched)
    except EmptyResultSet:
        return None
    memberships = (
        AudienceMembership.objects.filter(member_range, audience_id__in=scope)
        .order_by()
        .values("contact_id")
        .annotate(n=Count("*"))
    )
    consenting = _consenting_contacts().filter(member_range)
    active = OptOut.objects.filter(lifted_at__isnull=True).order_by().values("phone")
    operational = [OptOutReason.INVALID, OptOutReason.BLOCKED]
    s = _Statement()
    # The capped destinations of every window, tagged with the window's position; windows with
    # the same rule (a day's cap of 1 and a 24-hour gap) are computed once and share a tag.
    tags: list[int] = []
    for i, window in enumerate(windows):
        rule = (window.hours, window.limit, window.purposes)
        same = [j for j in range(i) if (windows[j].hours, windows[j].limit, windows[j].purposes) == rule]
        tags.append(same[0] if same else i)
        if not same:
            # Only window positions (ints) are interpolated; the window's query is Django's.
            s.add("WITH capped AS (" if i == 0 else " UNION ALL ").add(f"SELECT destination, {i} AS w FROM ")  # noqa: S608
            s.query(capped[i]).add(f" c{i}")
    if windows:
        s.add(") ")

    def consent_and_coverage() -> None:
        s.add(f" WHEN k.contact_id IS NULL THEN {_REASONS.index('no_consent')}")
        if covered:
            marks = ", ".join(["%s"] * len(covered))
            s.add(f" WHEN m.country NOT IN ({marks}) THEN {_REASONS.index('country_not_covered')}", covered)
        else:
            s.add(f" WHEN 1 = 1 THEN {_REASONS.index('country_not_covered')}")

    # The phone-keyed reasons are hashed lookups per contact. Most contacts are in none of those
    # sets, so one lookup in their union (active opt-outs, capped destinations) decides for them;
    # only the few it finds are looked up again, reason by reason, in EXCLUSION_ORDER. A phone in
    # the union but in no opt-out set is a capped destination: its code is _CAPPED plus one bit
    # per window at whose cap the phone is, so the windows are looked up for those contacts only
    # and the rows are grouped once, by reason code and country.
    s.add("SELECT CASE WHEN m.phone IN (SELECT * FROM ").query(active)
    s.add(" a UNION ALL SELECT destination FROM capped" if windows else " a").add(") THEN CASE")
    for reason, opt_outs in (
        ("invalid", active.filter(reason=OptOutReason.INVALID)),
        ("blocked", active.filter(reason=OptOutReason.BLOCKED)),
        ("opted_out", active.exclude(reason__in=operational)),
    ):
        s.add(" WHEN m.phone IN ").query(opt_outs).add(f" THEN {_REASONS.index(reason)}")
    consent_and_coverage()
    if windows:
        s.add(f" ELSE {_CAPPED}")
        for i, tag in enumerate(tags):
            s.add(f" + CASE WHEN m.phone IN (SELECT destination FROM capped WHERE w = {tag}) THEN {1 << i} ELSE 0 END")  # noqa: S608
        s.add(" END")
    else:
        s.add(" ELSE 0 END")
    consent_and_coverage()
    s.add(" ELSE 0 END AS reason, m.country, COUNT(*), SUM(ms.n) FROM ").query(matched).add(" m JOIN ")
    s.query(memberships).add(" ms ON ms.contact_id = m.id LEFT JOIN ").query(consenting)
    s.add(" k ON k.contact_id = m.id GROUP BY 1, 2")
    return s


def segments_pick_list(*, actor: Actor, limit: int = 200) -> list[dict[str, Any]]:
    """Saved segments to choose from (newest first): id, name, the counts their preview showed and
    their criteria (to preview again, live). Needs the segment view permission."""
    from contacts.models import Segment
    from contacts.services import SEGMENT_VIEW_PERMISSION

    if not actor.has_perm(SEGMENT_VIEW_PERMISSION):
        raise permission_denied(SEGMENT_VIEW_PERMISSION)
    return [
        {
            "segment_id": s.pk,
            "name": s.name,
            "sendable": s.sendable_count,
            "matched": s.matched_count,
            "criteria": (s.criteria or {}).get("criteria", s.criteria),
        }
        for s in Segment.objects.order_by("-created_at", "-id")[: max(1, min(limit, 500))]
    ]
