"""insert_unless_conflict: one statement that loses a unique race quietly (no savepoint), and the
idempotency keys built on it, raced for real on PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.idempotency import run_idempotent
from smsplatform.kernel.inserts import insert_unless_conflict
from smsplatform.models import IdempotencyRecord
from tests.support.db import postgres_only, race


def record(key: str, **fields: Any) -> IdempotencyRecord:
    return IdempotencyRecord(
        **{"namespace": "tests", "key": key, "operation": "op", "request_hash": "h" * 64, **fields}
    )


@pytest.mark.django_db
def test_inserts_then_skips_a_duplicate_in_one_statement_leaving_the_transaction_usable() -> None:
    user = get_user_model().objects.create(username="inserter")
    first = record("key-00000001", user=user)
    with transaction.atomic():
        assert insert_unless_conflict(first) is True
        assert first.pk is not None and not first._state.adding
        duplicate = record("key-00000001", user=user, operation="other")
        with CaptureQueriesContext(connection) as queries:
            assert insert_unless_conflict(duplicate) is False
        assert len(queries) == 1 and "SAVEPOINT" not in queries[0]["sql"]
        assert duplicate.pk is None
        # The transaction goes on: the next statement works and the first row is untouched.
        assert IdempotencyRecord.objects.filter(key="key-00000001").values_list("operation", flat=True).get() == "op"
    assert insert_unless_conflict(record("key-00000002", user=user)) is True


@pytest.mark.django_db
def test_a_governed_write_claims_its_key_without_a_savepoint() -> None:
    user = get_user_model().objects.create(username="claimer")
    acting = Actor(user=user, channel=Channel.API, token_name="t")
    with CaptureQueriesContext(connection) as queries:
        out = run_idempotent(actor=acting, key="claim-0000001", operation="op", payload={}, execute=lambda: {"n": 1})
    assert out == {"n": 1}
    # One savepoint: the durable transaction's own (inside a test's transaction it is one; in
    # production it is the BEGIN). None around the key's insert.
    assert len([q for q in queries if q["sql"].startswith("SAVEPOINT")]) == 1
    assert IdempotencyRecord.objects.get(key="claim-0000001").response == {"n": 1}
    # The same key again replays the stored answer; execute does not run.
    again = run_idempotent(
        actor=acting, key="claim-0000001", operation="op", payload={}, execute=lambda: pytest.fail("ran twice")
    )
    assert again == {"n": 1}


@pytest.mark.django_db(transaction=True)
@postgres_only
def test_ten_concurrent_writes_with_one_key_run_once_and_all_answer_alike() -> None:
    user = get_user_model().objects.create(username="racer")
    ran: list[int] = []
    lock = threading.Lock()

    def execute(i: int) -> dict[str, Any]:
        with lock:
            ran.append(i)
        # Hold the key's row uncommitted a moment: the others' inserts wait on it, then replay.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.2)")
        return {"winner": i}

    def one(i: int) -> Any:
        acting = Actor(user=user, channel=Channel.API, token_name="t")
        return run_idempotent(actor=acting, key="race-key-0001", operation="op", payload={}, execute=lambda: execute(i))

    results = race(10, one)
    assert len(ran) == 1, results
    assert all(result == {"winner": ran[0]} for result in results), results
    assert IdempotencyRecord.objects.filter(key="race-key-0001").count() == 1
