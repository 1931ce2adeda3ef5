"""Several reads in one round trip to PostgreSQL.

Under a campaign an OTP request's statements each wait their turn for a CPU the bulk lane keeps
busy, so its latency grows with the number of round trips more than with the work of each
(docs/OTP.md, "Round trips"). Reads that do not depend on one another can share one: on
PostgreSQL, Django's cursors bind parameters on the client, so one ``execute`` may carry several
statements separated by ``;`` and ``nextset()`` walks their results. The server runs each in turn
with a snapshot of its own (READ COMMITTED), exactly as separate executes would, so a statement
after a lock sees everything committed before the lock was granted.

``fetch_together(*items)`` takes querysets (model instances, ``values_list``, ``values``) and raw
statements (``Raw(sql, params)``) and answers one list per item, in order. Elsewhere (SQLite,
where a round trip costs nothing, or a PostgreSQL connection set to bind on the server) it runs
them one after the other with the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    ValuesIterable,
    ValuesListIterable,
    get_related_populators,
)


@dataclass(frozen=True)
class Raw:
    """A statement of ours and its parameters (``%s`` placeholders)."""

    sql: str
    params: Sequence[Any] = field(default_factory=tuple)


class Rows(list[tuple[Any, ...]]):
    """A raw statement's rows, with its column names (``columns``; empty for a statement without result)."""

    columns: tuple[str, ...] = ()


def _joinable(using: str) -> bool:
    connection = connections[using]
    return connection.vendor == "postgresql" and not connection.settings_dict.get("OPTIONS", {}).get(
        "server_side_binding"
    )


def _rows(cursor: Any) -> Rows:
    rows = Rows(cursor.fetchall() if cursor.description else [])
    rows.columns = tuple(column[0] for column in cursor.description or ())
    return rows


def statements_run(statements: Sequence[Raw], *, using: str = "default") -> list[Rows]:
    """Run ``statements`` and answer each one's rows: in one round trip on PostgreSQL."""
    if not statements:
        return []
    connection = connections[using]
    with connection.cursor() as cursor:
        if not _joinable(using):
            results = []
            for statement in statements:
                cursor.execute(statement.sql, list(statement.params))
                results.append(_rows(cursor))
            return results
        params: list[Any] = []
        for statement in statements:
            params += statement.params
        cursor.execute("; ".join(statement.sql for statement in statements), params)
        results = [_rows(cursor)]
        for _statement in statements[1:]:
            cursor.nextset()
            results.append(_rows(cursor))
        return results


_NOTHING = "nothing"
_ITERABLES = (ModelIterable, ValuesListIterable, FlatValuesListIterable, ValuesIterable)


def _objects(queryset: QuerySet[Any], compiler: Any, rows: list[tuple[Any, ...]]) -> list[Any]:
    """What iterating ``queryset`` answers, from the rows its compiler's SQL returned (Django's
    iterables, minus the execute: ModelIterable, ValuesListIterable, ValuesIterable)."""
    if compiler.has_extra_select:
        rows = [row[: compiler.col_count] for row in rows]
    iterable = queryset._iterable_class
    if iterable is ModelIterable:
        db = queryset.db
        select, klass_info, annotations = compiler.select, compiler.klass_info, compiler.annotation_col_map
        model = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        names = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, db)  # type: ignore[call-arg]  # Django 5.2's signature
        objects = []
        for row in compiler.results_iter([rows]):
            obj = model.from_db(db, names, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in (annotations or {}).items():
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects
    tuples = list(compiler.results_iter([rows], tuple_expected=True))
    if iterable is FlatValuesListIterable:
        return [row[0] for row in tuples]
    if iterable is ValuesIterable:
        query = queryset.query
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
        return [dict(zip(names, row, strict=False)) for row in tuples]
    return tuples


def fetch_together(*items: QuerySet[Any] | Raw, using: str = "default") -> list[list[Any]]:
    """Evaluate querysets and raw statements in one round trip on PostgreSQL (module docstring).

    A queryset answers what ``list(queryset)`` would (model instances with their select_related
    rows, tuples, flat values or dicts); a ``Raw`` answers its ``Rows``. Querysets with
    ``_known_related_objects``, prefetches or a named-tuple ``values_list`` are not supported
    (ValueError)."""
    if not _joinable(using):
        return [list(item) if isinstance(item, QuerySet) else statements_run([item], using=using)[0] for item in items]
    statements: list[Raw] = []
    plans: list[tuple[QuerySet[Any], Any] | str | None] = []
    for item in items:
        if isinstance(item, Raw):
            statements.append(item)
            plans.append(None)
            continue
        if (
            item._iterable_class not in _ITERABLES
            or item._known_related_objects  # type: ignore[attr-defined]
            or item._prefetch_related_lookups  # type: ignore[attr-defined]
            or item.db != using
        ):
            raise ValueError(f"fetch_together cannot evaluate this queryset: {item.query}")
        compiler = item.query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # a filter that can match nothing (``__in=[]``): no statement
            plans.append(_NOTHING)
            continue
        statements.append(Raw(sql, params))
        plans.append((item, compiler))
    results = iter(statements_run(statements, using=using))
    answers: list[list[Any]] = []
    for plan in plans:
        if plan is _NOTHING:
            answers.append([])
        elif plan is None:
            answers.append(next(results))
        else:
            assert not isinstance(plan, str)
            answers.append(_objects(plan[0], plan[1], next(results)))
    return answers


def firsts_together(*querysets: QuerySet[Any] | None, using: str = "default") -> list[Any]:
    """The first row of each queryset (None when it has none, or when the queryset is None: nothing
    is run for it), in one round trip on PostgreSQL. Slice each to one row (``[:1]``) beforehand."""
    wanted = [queryset for queryset in querysets if queryset is not None]
    answers = iter(fetch_together(*wanted, using=using))
    firsts = []
    for queryset in querysets:
        rows = next(answers) if queryset is not None else []
        firsts.append(rows[0] if rows else None)
    return firsts
