"""The campaign's share of the SMPP window (gateways.smpp.pacing.BulkPacer) and how the bind
worker's take applies it: a reserve the priority lane always finds free, and a queue-delay budget
that shrinks the campaign's share when its round trips grow and lets it grow back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateways.smpp.pacing import BulkPacer
from gateways.smpp.worker import BindWorker, Job


def test_the_reserve_keeps_slots_for_the_priority_lane() -> None:
    assert BulkPacer(500).ceiling == 450 and BulkPacer(500).cap == 450
    assert BulkPacer(5).ceiling == 5  # a small window keeps all of it
    assert BulkPacer(500, reserve=100).ceiling == 400
    assert BulkPacer(500).room(449) == 1 and BulkPacer(500).room(460) == 0


def test_queueing_shrinks_the_share_and_a_short_queue_lets_it_grow_back() -> None:
    pacer = BulkPacer(500, budget=0.025)
    now = 0.0
    for _ in range(50):  # a fast SMSC: 1 ms round trips, and the cap is what limits sending
        now += 0.011
        pacer.limited()
        pacer.answered(0.001, now)
    assert pacer.cap == pacer.ceiling
    for _ in range(200):  # it falls behind: 200 ms round trips (parts queue at the SMSC)
        now += 0.2
        pacer.answered(0.2, now)
    assert pacer.cap == pacer.floor
    for _ in range(400):  # it keeps up again
        now += 0.011
        pacer.limited()
        pacer.answered(0.001, now)
    assert pacer.cap == pacer.ceiling


def test_a_far_smsc_that_keeps_up_keeps_the_whole_share() -> None:
    """A long round trip is not a queue: only its growth over the floor counts."""
    pacer = BulkPacer(500, budget=0.025)
    now = 0.0
    for i in range(500):
        now += 0.01
        pacer.limited()
        pacer.answered(0.150 + (i % 5) * 0.002, now)
    assert pacer.cap == pacer.ceiling


def test_no_budget_no_shrinking() -> None:
    pacer = BulkPacer(100, budget=0)
    for i in range(100):
        pacer.answered(1.0 + i, float(i))
    assert pacer.cap == pacer.ceiling


def _job(purpose: str, pk: int) -> Job:
    return Job(SimpleNamespace(pk=pk, purpose=purpose), [b"x"])  # type: ignore[arg-type]


def test_the_take_passes_priority_parts_and_holds_campaign_parts_at_the_share() -> None:
    worker: Any = BindWorker.__new__(BindWorker)
    import threading
    from collections import deque

    worker.lock = threading.Lock()
    otp, campaign = _job("otp", 1), [_job("marketing", 10 + i) for i in range(5)]
    worker.ready = deque([(otp, 0)] + [(job, 0) for job in campaign])
    taken, capped = worker._take(10, 2)
    assert [job.message.pk for job, _ in taken] == [1, 10, 11] and capped
    assert len(worker.ready) == 3
    taken, capped = worker._take(10, 0)
    assert taken == [] and capped
    taken, capped = worker._take(10, None)
    assert len(taken) == 3 and not capped
