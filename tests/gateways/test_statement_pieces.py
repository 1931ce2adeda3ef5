"""The bulk lane's work in pieces (gateways.smpp.worker STATEMENT_ROWS): a claim of a batch is several
claims of at most statement_rows rows, a flush several transactions, and a yield that begins between
two pieces holds the rest back, so a code waits for one piece rather than the whole batch."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import OperationalError

from gateways.adapters.base import InboundEvent, ReceiptEvent
from gateways.models import Gateway, MessageState, OutboundMessage
from gateways.smpp.worker import PIECES_AFTER_YIELD, STATEMENT_ROWS, BindWorker, Job
from tests.support.smpp import campaign_messages_queued, smpp_gateway
from tests.support.smpp import queue as smpp_queue
from tests.support.smsc_setup import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def _worker(statement_rows: int, *, codes_flowing: bool = True, **kw: Any) -> BindWorker:
    """A worker with no link; ``codes_flowing``: a yield was just asked for (codes are being sent),
    so its work comes in pieces."""
    gateway = smpp_gateway(SimpleNamespace(host="127.0.0.1", port=9))  # never connected
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, statement_rows=statement_rows, **kw)
    if codes_flowing:
        worker._yield_asked = time.monotonic()
    return worker


def _answered(worker: BindWorker) -> list[Job]:
    """Every held message answered by the SMSC (one part each), as the link records it."""
    jobs = []
    for number, (job, index) in enumerate(list(worker.ready)):
        job.provider_ids[index] = f"P{number:04d}"
        job.answered, job.done = 1, True
        jobs.append(job)
    worker.ready.clear()
    return jobs


def _ten_answered(prefix: str) -> tuple[BindWorker, list[Job]]:
    """A worker in pieces of 4 that has claimed ten campaign messages and had each answered."""
    worker = _worker(4, batch_size=10)
    for i in range(10):
        smpp_queue(f"{prefix}{i:04d}", purpose="marketing")
    worker._claim()
    return worker, _answered(worker)


def _receipt(pid: str) -> ReceiptEvent:
    return ReceiptEvent(provider_message_id=pid, status=MessageState.DELIVERED, provider_status="DELIVRD")


def test_the_default_piece_is_smaller_than_the_default_batch() -> None:
    worker = _worker(STATEMENT_ROWS)
    assert worker.statement_rows == STATEMENT_ROWS < worker.batch_size


def test_a_batch_is_claimed_in_pieces_and_held_as_each_commits() -> None:
    worker = _worker(3, batch_size=10)
    queued = [smpp_queue(f"+8529210{i:04d}", purpose="marketing") for i in range(11)]
    assert worker._claim() == 10
    assert worker.stats.claims == 4  # 3 + 3 + 3 + 1
    assert [job.message.pk for job, _ in worker.ready] == [m.pk for m in queued[:10]]
    assert worker._claim_after == queued[9].pk
    assert OutboundMessage.objects.filter(state=MessageState.SUBMITTING).count() == 10


def test_with_no_code_in_sight_a_batch_is_one_claim_and_one_flush() -> None:
    """Pieces cost a campaign's rate: they are cut only while codes are being sent (a yield asked
    for in the last PIECES_AFTER_YIELD seconds, granted or not)."""
    worker = _worker(3, codes_flowing=False, batch_size=10, lane="bulk")
    for i in range(10):
        smpp_queue(f"+8529214{i:04d}", purpose="marketing")
    assert worker._claim() == 10 and worker.stats.claims == 1
    worker.completed, worker.open_jobs = _answered(worker), 10
    worker.flush()
    assert worker.stats.flushes == 1 and worker.open_jobs == 0
    # A code asks for a yield (here the bucket is empty, so none is granted): pieces again...
    worker._yield_tokens = 0.0
    assert worker.yield_to_priority() is False
    assert worker._piece_rows() == 3
    # ... until PIECES_AFTER_YIELD seconds pass with no code.
    worker._yield_asked -= PIECES_AFTER_YIELD
    assert worker._piece_rows() > worker.batch_size


def test_a_yield_that_begins_during_a_claim_stops_it_at_the_next_piece(monkeypatch: Any) -> None:
    worker = _worker(3, batch_size=10, lane="bulk")
    queued = [smpp_queue(f"+8529211{i:04d}", purpose="marketing") for i in range(10)]
    claim_rows = worker._claim_rows

    def first_then_yield(**kw: Any) -> Any:
        result = claim_rows(**kw)
        worker._yield_until = time.monotonic() + 60  # a code is being made
        return result

    monkeypatch.setattr(worker, "_claim_rows", first_then_yield)
    assert worker._claim() == 3
    assert worker.stats.claims == 1, "no claim after the yield began"
    worker._yield_until = 0.0
    monkeypatch.setattr(worker, "_claim_rows", claim_rows)
    assert worker._claim() == 7
    assert [job.message.pk for job, _ in worker.ready] == [m.pk for m in queued]


def test_the_pieces_of_a_flush_keep_each_receipt_with_its_answer() -> None:
    worker = _worker(2)

    def job(pid: str) -> Job:
        made = Job(SimpleNamespace(purpose="marketing"), [b""])  # type: ignore[arg-type]
        made.provider_ids = [pid]
        return made

    jobs = [job(f"P{n}") for n in range(5)]
    receipts = [_receipt("P4"), _receipt("OLD1"), _receipt("P0"), _receipt("OLD2"), _receipt("OLD3")]
    mos = [InboundEvent(source="+85291234567", destination="SHOP", body=f"mo {n}") for n in range(3)]
    pieces = worker._pieces(jobs, receipts, mos)
    assert [([j.provider_ids[0] for j in c], [e.provider_message_id for e in r], len(m)) for c, r, m in pieces] == [
        (["P0", "P1"], ["P0"], 0),
        (["P2", "P3"], [], 0),
        (["P4"], ["P4"], 0),
        ([], ["OLD1", "OLD2"], 0),
        ([], ["OLD3"], 0),
        ([], [], 2),
        ([], [], 1),
    ]
    # Small enough for one statement: one piece, as it came.
    assert worker._pieces(jobs[:1], receipts[:1], []) == [(jobs[:1], receipts[:1], [])]


def test_a_flush_in_pieces_writes_everything_one_transaction_a_piece(monkeypatch: Any) -> None:
    worker, jobs = _ten_answered("+8529212")
    worker.completed = list(jobs)
    worker.receipts = [_receipt(pid) for job in jobs[::3] for pid in job.provider_ids if pid]
    worker.acks_held = [(1, 7)]
    waits: list[int] = []
    monkeypatch.setattr(worker, "_wait_out_yield", lambda: waits.append(worker.stats.flushes))
    worker.open_jobs = 10
    worker.flush(yielding=True)
    assert worker.stats.flushes == 3  # 4 + 4 + 2 answers
    assert waits == [1, 2], "between two pieces, never before the first"
    assert worker.open_jobs == 0 and worker.acks_ready == [(1, 7)]
    states = dict(OutboundMessage.objects.values_list("pk", "state"))
    delivered = {job.message.pk for job in jobs[::3]}
    assert all(states[pk] == (MessageState.DELIVERED if pk in delivered else MessageState.SUBMITTED) for pk in states)
    worker.completed = [jobs[0]]
    worker.flush()  # the flush thread's last flush, and SQLite's inline one: no waiting
    assert waits == [1, 2]


def test_a_piece_that_cannot_be_written_keeps_itself_the_rest_and_the_acks(monkeypatch: Any) -> None:
    worker, jobs = _ten_answered("+8529213")
    worker.completed, worker.acks_held, worker.open_jobs = list(jobs), [(1, 9)], 10
    write, calls = worker._write, []

    def second_piece_loses_the_database(*args: Any) -> None:
        calls.append(len(args[0]))
        if len(calls) > 1:
            raise OperationalError("server closed the connection unexpectedly")
        write(*args)

    monkeypatch.setattr(worker, "_write", second_piece_loses_the_database)
    monkeypatch.setattr("gateways.smpp.worker.time.sleep", lambda _s: None)
    with pytest.raises(OperationalError):
        worker.flush()
    assert calls == [4, 4, 4, 4], "the second piece tried three times, the third never"
    assert worker.open_jobs == 6 and worker.acks_ready == []
    assert sorted(j.message.pk for j in worker.completed) == sorted(j.message.pk for j in jobs[4:])
    assert worker.acks_held == [(1, 9)]
    assert OutboundMessage.objects.filter(state=MessageState.SUBMITTED).count() == 4
    monkeypatch.setattr(worker, "_write", write)
    worker.flush()
    assert worker.open_jobs == 0 and worker.acks_ready == [(1, 9)]
    assert OutboundMessage.objects.filter(state=MessageState.SUBMITTED).count() == 10


def test_a_worker_in_small_pieces_sends_a_campaign_whole(smsc: Any) -> None:
    """End to end through the simulator, codes being sent: 50 messages in claims of 7, every one
    sent once."""
    gateway = smpp_gateway(smsc)
    campaign_messages_queued(gateway, 50)
    worker = BindWorker(
        Gateway.objects.get(pk=gateway.pk),
        password=PASSWORD,
        batch_size=20,
        statement_rows=7,
        flush_interval=0.05,
        poll_interval=0.05,
    )
    worker._yield_asked = time.monotonic()  # codes are being sent
    stats = worker.run(stop=threading.Event(), idle_exit_after=0.5)
    assert stats.accepted_messages == 50 and stats.claims >= 8
    destinations = [r["destination"] for r in smsc.submitted()]
    assert len(destinations) == len(set(destinations)) == 50
