"""fetch_together and statements_run: the answers of separate evaluations, in one round trip on
PostgreSQL; and a statement after a lock in the same round trip reads after the lock is granted."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from gateways.models import Gateway, GatewayRate
from smsplatform.kernel.roundtrips import Raw, Rows, fetch_together, firsts_together, statements_run
from tests.support.db import postgres_only

pytestmark = pytest.mark.django_db


def _rates() -> None:
    hk = Gateway.objects.create(code="rt-hk", name="HK", provider="simulator", countries=["HK"], priority=1)
    sg = Gateway.objects.create(code="rt-sg", name="SG", provider="simulator", countries=["SG"], priority=2)
    GatewayRate.objects.create(gateway=hk, country="HK", price_per_segment=Decimal("0.3000"), currency="HKD")
    GatewayRate.objects.create(gateway=sg, country="SG", price_per_segment=Decimal("0.0500"), currency="SGD")


def test_every_kind_of_queryset_answers_what_list_would() -> None:
    _rates()
    Group.objects.create(name="rt-group")
    querysets: list[Any] = [
        GatewayRate.objects.select_related("gateway").order_by("country"),  # instances and their related rows
        Permission.objects.filter(codename__startswith="add_").order_by("pk")[:3],
        GatewayRate.objects.order_by("country").values_list("country", "price_per_segment"),
        Group.objects.filter(name="rt-group").values_list("name", flat=True),
        Gateway.objects.order_by("code").values("code", "countries"),  # a JSON column: its converter runs
        Group.objects.none(),
        Group.objects.filter(pk__in=[]),
    ]
    expected = [list(qs.all()) for qs in querysets]
    raw = Raw("SELECT %s AS one, %s AS two", [1, "two"])
    with CaptureQueriesContext(connection) as queries:
        answers = fetch_together(*querysets, raw)
    assert answers[:-1] == expected
    rates = answers[0]
    assert [rate.gateway.code for rate in rates] == ["rt-hk", "rt-sg"]
    assert isinstance(rates[0].price_per_segment, Decimal) and rates[0].gateway.countries == ["HK"]
    assert answers[4][0] == {"code": "rt-hk", "countries": ["HK"]}
    raw_rows = answers[-1]
    assert isinstance(raw_rows, Rows) and list(raw_rows) == [(1, "two")] and raw_rows.columns == ("one", "two")
    if connection.vendor == "postgresql":
        assert len(queries.captured_queries) == 1, "one round trip"
    else:
        assert len(queries.captured_queries) == 6, "one after the other (the two empty ones run nothing)"


def test_a_statement_without_rows_answers_none_and_no_columns() -> None:
    with transaction.atomic():
        first, second = statements_run([Raw("SELECT 1 WHERE 1 = 0"), Raw("SELECT 2")])
    assert first == [] and first.columns and second == [(2,)]
    assert statements_run([]) == []


def test_a_queryset_it_cannot_build_is_refused_not_guessed() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("elsewhere every queryset is simply listed")
    with pytest.raises(ValueError, match="cannot evaluate"):
        fetch_together(Group.objects.prefetch_related("permissions"))


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_read_after_a_lock_in_the_same_round_trip_sees_what_committed_before_the_lock() -> None:
    """READ COMMITTED: each statement of the round trip takes its snapshot when it starts, so the
    read after pg_advisory_xact_lock sees a row the lock holder committed while we waited."""
    key = 0x726F756E64
    locked, release = threading.Event(), threading.Event()

    def holder() -> None:
        other = connections.create_connection("default")
        try:
            other.set_autocommit(False)
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
                locked.set()
                release.wait(5)
                cursor.execute("INSERT INTO auth_group (name) VALUES ('rt-committed-meanwhile')")
            other.commit()
        finally:
            other.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(5)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    try:
        with transaction.atomic():
            _lock, names = statements_run(
                [Raw("SELECT pg_advisory_xact_lock(%s)", [key]), Raw("SELECT name FROM auth_group")]
            )
    finally:
        thread.join(5)
        timer.cancel()
    assert ("rt-committed-meanwhile",) in names
    Group.objects.filter(name="rt-committed-meanwhile").delete()


def test_firsts_together_answers_each_first_row_or_none_and_runs_nothing_for_none() -> None:
    Group.objects.create(name="rt-first")
    with CaptureQueriesContext(connection) as queries:
        first, nothing, skipped = firsts_together(
            Group.objects.filter(name="rt-first")[:1], Group.objects.filter(name="rt-none")[:1], None
        )
    assert first.name == "rt-first" and nothing is None and skipped is None
    assert len(queries.captured_queries) == (1 if connection.vendor == "postgresql" else 2)
