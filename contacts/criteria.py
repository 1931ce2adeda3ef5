"""The segment criteria language: JSON in, one Django ``Q`` on Contact out (pure SQL).

A criteria document is a *group* or a *condition*::

    {"all": [<criteria>, ...]}      every part holds (AND)
    {"any": [<criteria>, ...]}      at least one part holds (OR)

Conditions (each an object with exactly one key):

    {"audiences": [3, 7]}                         member of any of these audiences
    {"tags": {"any": [..], "all": [..], "none": [..]}}   tag tests (each part optional)
    {"language": ["en", "zh-hant"]}               contact language in the list
    {"country": ["HK", "SG"]}                     ISO country of the phone
    {"order_status": ["paid", "pending"]}         has an order fact with one of these statuses
    {"payment_status": ["paid", "failed"]}        has a payment fact with one of these statuses
    {"pickup": ["ready", "collected"]}            has a pickup fact with one of these statuses
    {"offer": ["SPRING10"]}                       used one of these offer codes
    {"days_since_last_purchase": {"min": 30, "max": 90}}   last order (not cancelled) that long ago
    {"appointment_within_days": 7}                an appointment due in the next N days
    {"repurchase_due_within_days": 14}            a repurchase date due in the next N days
    {"consent_purpose": "marketing"}              has consent evidence for that purpose

Example: VIPs in Hong Kong who bought 30-90 days ago or hold an uncollected pickup::

    {"all": [{"country": ["HK"]}, {"tags": {"any": ["vip"]}},
             {"any": [{"days_since_last_purchase": {"min": 30, "max": 90}}, {"pickup": ["ready"]}]}]}

Opt-outs, consent for marketing, duplicates, coverage and frequency caps are *not*
criteria: segments.preview always applies them as exclusions and reports each.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import BooleanField, F, Func, Max, Q, QuerySet, Value
from django.utils import timezone

from contacts.models import (
    NOT_A_PURCHASE,
    AudienceMembership,
    ConsentEvidence,
    ConsentPurpose,
    CustomerFact,
    FactKind,
)
from smsplatform.kernel.errors import ApplicationError, ErrorCode

MAX_DEPTH = 5
MAX_LIST = 1000
FACT_STATUS_CONDITIONS = {
    "order_status": FactKind.ORDER,
    "payment_status": FactKind.PAYMENT,
    "pickup": FactKind.PICKUP,
}
CONDITIONS = (
    "audiences",
    "tags",
    "language",
    "country",
    *FACT_STATUS_CONDITIONS,
    "offer",
    "days_since_last_purchase",
    "appointment_within_days",
    "repurchase_due_within_days",
    "consent_purpose",
)


def _bad(path: str, message: str) -> ApplicationError:
    return ApplicationError(
        ErrorCode.VALIDATION_ERROR,
        f"{path}: {message}",
        field=path,
        hint="See the criteria language in docs (contacts/criteria.py): groups all/any, conditions "
        + ", ".join(CONDITIONS)
        + ".",
    )


def _strings(value: Any, path: str, *, upper: bool = False) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise _bad(path, f"must be a non-empty list of at most {MAX_LIST} strings")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _bad(f"{path}.{i}", "must be a non-empty string")
        out.append(item.strip().upper() if upper else item.strip())
    return sorted(set(out))


def _days(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3650:
        raise _bad(path, "must be a whole number of days between 0 and 3650")
    return value


def criteria_normalise(criteria: Any, path: str = "criteria", depth: int = 0) -> dict[str, Any]:
    """Validate and return the canonical form (sorted lists), naming the field at fault."""
    if depth > MAX_DEPTH:
        raise _bad(path, f"groups nest at most {MAX_DEPTH} deep")
    if not isinstance(criteria, dict) or len(criteria) != 1:
        raise _bad(path, "must be an object with exactly one key: all, any or a condition")
    ((key, value),) = criteria.items()
    sub = f"{path}.{key}"
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise _bad(sub, "must be a non-empty list")
        return {key: [criteria_normalise(part, f"{sub}.{i}", depth + 1) for i, part in enumerate(value)]}
    if key == "audiences":
        if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
            raise _bad(sub, "must be a non-empty list of audience ids")
        return {key: sorted(set(value))}
    if key == "tags":
        if not isinstance(value, dict) or not value or set(value) - {"any", "all", "none"}:
            raise _bad(sub, "must be an object with any, all and/or none lists")
        return {key: {mode: _strings(tags, f"{sub}.{mode}") for mode, tags in sorted(value.items())}}
    if key in ("language", "order_status", "payment_status", "pickup", "offer"):
        return {key: _strings(value, sub)}
    if key == "country":
        countries = _strings(value, sub, upper=True)
        if not all(len(c) == 2 and c.isalpha() for c in countries):
            raise _bad(sub, "must be ISO country codes like HK")
        return {key: countries}
    if key == "days_since_last_purchase":
        if not isinstance(value, dict) or not value or set(value) - {"min", "max"}:
            raise _bad(sub, "must be an object with min and/or max days")
        bounds = {b: _days(v, f"{sub}.{b}") for b, v in sorted(value.items())}
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise _bad(sub, "min is greater than max")
        return {key: bounds}
    if key in ("appointment_within_days", "repurchase_due_within_days"):
        return {key: _days(value, sub)}
    if key == "consent_purpose":
        if value not in ConsentPurpose.values:
            raise _bad(sub, f"must be one of {', '.join(ConsentPurpose.values)}")
        return {key: value}
    raise _bad(sub, "is not a known condition")


def criteria_audience_ids(criteria: dict[str, Any]) -> set[int]:
    ((key, value),) = criteria.items()
    if key in ("all", "any"):
        return set().union(*(criteria_audience_ids(part) for part in value))
    return set(value) if key == "audiences" else set()


def _tags_q(mode: str, tags: list[str]) -> Q:
    if connection.vendor == "postgresql":
        # jsonb ?| / ?& test the array's string elements, using the GIN index if there is one.
        if mode == "all":
            return Q(tags__has_keys=tags)
        q = Q(tags__has_any_keys=tags)
        return ~q if mode == "none" else q
    q = Q(_JsonArrayMatch(tags, every=mode == "all"))
    return ~q if mode == "none" else q


class _JsonArrayMatch(Func):
    """SQLite: does the ``tags`` JSON array hold any (or every) of these strings? Built on the
    column expression, so Django relabels it correctly inside subqueries; the tags are bound
    parameters."""

    output_field = BooleanField()

    def __init__(self, tags: list[str], *, every: bool) -> None:
        super().__init__(F("tags"), *[Value(t) for t in tags])
        self.every = every

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
        parts: list[str] = []
        params: list[Any] = []
        for expression in self.get_source_expressions():
            sql, p = compiler.compile(expression)
            parts.append(sql)
            params.extend(p)
        # Only compiled column and placeholder text is interpolated; values stay parameters.
        column, values = parts[0], ", ".join(parts[1:])
        elements = f"FROM json_each({column}) WHERE value IN ({values})"
        if self.every:
            return f"((SELECT COUNT(DISTINCT value) {elements}) = {len(parts) - 1})", params
        return f"EXISTS (SELECT 1 {elements})", params


def _contacts_with(queryset: QuerySet[Any], within: Q) -> Q:
    """``id IN (SELECT contact_id ...)``: uncorrelated, so PostgreSQL runs it once as a hashed
    lookup or a semi-join, even under OR, where a correlated EXISTS would probe per contact."""
    return Q(pk__in=queryset.filter(within).order_by().values("contact_id"))


def criteria_q(criteria: dict[str, Any], *, within: Q | None = None) -> Q:
    """Compile normalised criteria to a Q on Contact: uncorrelated subqueries, no Python per contact.

    ``within`` (a Q on ``contact_id``) narrows every subquery to the contact ids the caller
    already limits the contacts to (a part of the id range): the same answer for those
    contacts, and each subquery reads only their rows."""
    within = within or Q()
    ((key, value),) = criteria.items()
    if key in ("all", "any"):
        q = criteria_q(value[0], within=within)
        for part in value[1:]:
            more = criteria_q(part, within=within)
            q = (q & more) if key == "all" else (q | more)
        return q
    now = timezone.now()
    if key == "audiences":
        return _contacts_with(AudienceMembership.objects.filter(audience_id__in=value), within)
    if key == "tags":
        q = Q()
        for mode, tags in value.items():
            q &= _tags_q(mode, tags)
        return q
    if key == "language":
        return Q(language__in=value)
    if key == "country":
        return Q(country__in=value)
    if key in FACT_STATUS_CONDITIONS:
        return _contacts_with(CustomerFact.objects.filter(kind=FACT_STATUS_CONDITIONS[key], status__in=value), within)
    if key == "offer":
        offers = CustomerFact.objects.filter(kind__in=[FactKind.OFFER, FactKind.ORDER], offer_code__in=value)
        return _contacts_with(offers, within)
    if key == "days_since_last_purchase":
        # One grouped pass over the purchases: the last one is at least min and at most max days old.
        last = (
            CustomerFact.objects.filter(within, kind=FactKind.ORDER)
            .exclude(status__in=NOT_A_PURCHASE)
            .order_by()
            .values("contact_id")
            .annotate(last=Max("occurred_at"))
        )
        if "min" in value:
            last = last.filter(last__lte=now - timedelta(days=value["min"]))
        if "max" in value:
            last = last.filter(last__gte=now - timedelta(days=value["max"]))
        return Q(pk__in=last.values("contact_id"))
    if key in ("appointment_within_days", "repurchase_due_within_days"):
        kind = FactKind.APPOINTMENT if key == "appointment_within_days" else FactKind.REPURCHASE
        due = CustomerFact.objects.filter(kind=kind, due_at__gte=now, due_at__lte=now + timedelta(days=value))
        return _contacts_with(due, within)
    if key == "consent_purpose":
        return _contacts_with(ConsentEvidence.objects.filter(purpose=value), within)
    raise AssertionError(key)  # pragma: no cover - criteria_normalise refuses unknown keys
