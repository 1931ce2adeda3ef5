"""The test harness's own guards: state one test leaves behind must not decide another's result."""

from __future__ import annotations

import threading

from celery._state import _set_task_join_will_block, task_join_will_block  # type: ignore[attr-defined]  # not in celery-types
from celery.result import EagerResult


def test_threads_racing_eager_tasks_can_leave_celerys_join_guard_set() -> None:
    """What the guard is for: two threads in ``denied_join_result`` at once, interleaved the way
    the scheduler may run them, leave the process-wide flag set when both are done."""
    from celery.result import denied_join_result

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with denied_join_result():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with denied_join_result():  # saves True (the first is inside)
            second_in.set()
            first_out.wait(5)  # the first restores False, then this one restores True

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert task_join_will_block() is True
    # Left set on purpose: the next test shows the harness clears it.


def test_each_test_starts_with_the_join_guard_clear() -> None:
    assert task_join_will_block() is False
    # An eager result can be read with .get() again, as test_campaign_flow does.
    assert EagerResult("guard", 42, "SUCCESS").get() == 42
    _set_task_join_will_block(True)  # and the guard clears what this test leaves, too
