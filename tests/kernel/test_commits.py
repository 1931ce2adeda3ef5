"""An unflushed commit (insert_unless_conflict(unflushed=True)): this transaction's commit does
not wait for the WAL flush (PostgreSQL), whichever way the insert goes, the SET rides in the
insert's round trip, and nothing leaks to the connection's next transaction."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from smsplatform.kernel.inserts import insert_unless_conflict
from tests.support.db import postgres_only


def _setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_only_the_transaction_of_the_insert_commits_unflushed_in_one_round_trip() -> None:
    assert _setting() == "on"
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            assert insert_unless_conflict(Group(name="unflushed-1"), unflushed=True)
        assert len(queries) == 1 and "synchronous_commit TO OFF" in queries[0]["sql"]
        assert _setting() == "off"
    assert _setting() == "on", "SET LOCAL: the next transaction on this connection waits for its flush again"
    with transaction.atomic():
        assert not insert_unless_conflict(Group(name="unflushed-1"), unflushed=True)  # lost to the row: still set
        assert _setting() == "off"
        transaction.set_rollback(True)
    assert _setting() == "on"
    with transaction.atomic():
        assert insert_unless_conflict(Group(name="unflushed-2"))
        assert _setting() == "on", "only when asked"
    Group.objects.filter(name__startswith="unflushed-").delete()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_refuses_rather_than_do_nothing_silently() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        insert_unless_conflict(Group(name="unflushed-3"), unflushed=True)
    assert _setting() == "on" and not Group.objects.filter(name="unflushed-3").exists()


@pytest.mark.django_db
def test_elsewhere_it_sends_nothing_more() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL sends the SET: the tests above")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert insert_unless_conflict(Group(name="unflushed-4"), unflushed=True)
    assert len(queries) == 1 and "synchronous_commit" not in queries[0]["sql"]
