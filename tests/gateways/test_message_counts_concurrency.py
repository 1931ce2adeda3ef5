"""The campaign message counters under concurrent writers (PostgreSQL): two transactions change
messages of the same batch at once while a fold runs between them; neither waits on a counter row,
and once both commit the counters equal a COUNT over the messages (gateways.message_counts)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction
from django.db.models import Count

from gateways.message_counts import batch_message_counts, message_counts_fold
from gateways.models import BatchMessageCount, Gateway, MessageState, OutboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 990_001  # counters and messages name a batch without a database constraint


def _messages(gateway: Gateway, n: int) -> list[int]:
    OutboundMessage.objects.bulk_create(
        OutboundMessage(
            gateway=gateway,
            sender_id="SHOP",
            destination=f"+8529100{i:04d}",
            country="HK",
            body="x",
            encoding="GSM-7",
            segments=1,
            purpose="marketing",
            quota_reference="q",
            batch_id=BATCH,
        )
        for i in range(n)
    )
    return list(OutboundMessage.objects.filter(batch_id=BATCH).order_by("pk").values_list("pk", flat=True))


def _counted() -> dict[str, int]:
    out = dict.fromkeys(MessageState.values, 0)
    for state, n in OutboundMessage.objects.filter(batch_id=BATCH).values_list("state").annotate(n=Count("id")):
        out[state] = n
    return out


def test_concurrent_writers_and_a_fold_keep_the_counters_exact(sim: Gateway) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL (SQLite has one writer)")
    ids = _messages(sim, 40)
    # Committed history for the fold to sum: several rows per key, one key back at zero.
    OutboundMessage.objects.filter(pk__in=ids[:5]).update(state=MessageState.FAILED)
    OutboundMessage.objects.filter(pk__in=ids[:5]).update(state=MessageState.QUEUED)
    assert BatchMessageCount.objects.filter(batch_id=BATCH).count() == 5
    both_written = threading.Barrier(3, timeout=20)
    folded = threading.Event()
    errors: list[BaseException] = []

    def writer(chunk: list[int], state: str) -> None:
        try:
            with transaction.atomic():
                OutboundMessage.objects.filter(pk__in=chunk).update(state=state)
                both_written.wait()  # both hold their uncommitted changes while the fold runs
                assert folded.wait(20)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=writer, args=(ids[:20], MessageState.SUBMITTED)),
        threading.Thread(target=writer, args=(ids[20:], MessageState.DELIVERED)),
    ]
    for t in threads:
        t.start()
    both_written.wait()
    assert message_counts_fold() == 4  # folds the committed rows; sees neither writer's: left for next time
    assert BatchMessageCount.objects.filter(batch_id=BATCH).count() == 1
    assert batch_message_counts([BATCH])[BATCH].states == _counted()  # still all queued, to this reader
    folded.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert batch_message_counts([BATCH])[BATCH].states == _counted()
    assert _counted()[MessageState.SUBMITTED] == 20 and _counted()[MessageState.DELIVERED] == 20
    message_counts_fold()
    assert batch_message_counts([BATCH])[BATCH].states == _counted()
    assert BatchMessageCount.objects.filter(batch_id=BATCH).count() == 2  # one row per key, zeroes dropped
