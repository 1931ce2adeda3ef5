"""commit_unflushed: this transaction's commit does not wait for the WAL flush (PostgreSQL), and
nothing leaks to the connection's next transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from smsplatform.kernel.commits import commit_unflushed
from tests.support.db import postgres_only


def _setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_only_the_transaction_it_is_called_in_commits_unflushed() -> None:
    assert _setting() == "on"
    with transaction.atomic():
        commit_unflushed()
        assert _setting() == "off"
    assert _setting() == "on", "SET LOCAL: the next transaction on this connection waits for its flush again"
    with transaction.atomic():
        commit_unflushed()
        assert _setting() == "off"
        transaction.set_rollback(True)
    assert _setting() == "on"


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_refuses_rather_than_do_nothing_silently() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        commit_unflushed()
    assert _setting() == "on"


@pytest.mark.django_db
def test_elsewhere_it_sends_nothing() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL sends the SET: the tests above")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        commit_unflushed()
    assert len(queries) == 0
