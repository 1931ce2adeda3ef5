"""How many campaign parts the bind worker keeps in flight, so the priority lane finds a short queue.

An SMSC answers submit_sm in the order it reads them: an OTP written behind N campaign parts in
flight waits for those N to be read first. With a window of 500 and an SMSC taking a few thousand a
second, that is a queue of a few hundred milliseconds that no claim order can jump. So the worker
keeps two limits (``BulkPacer``):

- a **reserve**: campaign (non-priority) parts never take the last ``window // 10`` slots of the
  window, so a priority part is written the moment it is ready, never after a free slot;
- a **queue-delay budget** (Vegas-style): the round trip of a campaign part is measured; when the
  smoothed round trip exceeds the smallest seen lately by more than ``budget`` seconds (parts are
  queueing at the SMSC or on the way), the campaign's share of the window shrinks (in proportion,
  by 15 to 50 % a round trip); while the queue
  is short and the share is what limits sending, it grows back to the window (less the reserve).
  An SMSC that keeps up sees no change: its round trip stays at its floor and the campaign keeps
  the whole window; one that falls behind gets a short queue at the same throughput (it was
  answering at its own pace anyway).

Priority parts are limited by the window only. Per gateway: ``settings["priority_reserve"]``
(slots) and ``settings["bulk_queue_delay_ms"]`` (0 turns the budget off).
"""

from __future__ import annotations

import math

DEFAULT_QUEUE_DELAY_MS = 25.0
MIN_RTT_EPOCH = 10.0  # seconds: the floor of the round trip is the smallest of the last two epochs
SMOOTHING = 0.125  # the weight of a new round-trip sample (as TCP's SRTT)


class BulkPacer:
    """The campaign's share of the window (``cap``), from the round trips of its parts. Used by the
    link thread alone: no lock."""

    def __init__(self, window: int, *, reserve: int | None = None, budget: float = DEFAULT_QUEUE_DELAY_MS / 1000):
        self.window = max(1, window)
        reserve = self.window // 10 if reserve is None else reserve
        self.ceiling = max(1, self.window - max(0, reserve))
        self.floor = min(self.ceiling, 8)
        self.budget = max(0.0, budget)
        self.cap = self.ceiling
        self.srtt: float | None = None
        self._min_now = math.inf  # this epoch's smallest round trip
        self._min_before = math.inf  # the previous epoch's
        self._epoch_start: float | None = None
        self._next_adjust = 0.0
        self._bound = False  # the cap limited a write since the last adjustment

    @property
    def min_rtt(self) -> float:
        return min(self._min_now, self._min_before)

    def room(self, bulk_in_flight: int) -> int:
        """How many more campaign parts may be written now."""
        room = self.cap - bulk_in_flight
        return room if room > 0 else 0

    def limited(self) -> None:
        """The cap (not the window, the rate or an empty queue) stopped a write."""
        self._bound = True

    def answered(self, rtt: float, now: float) -> None:
        """A campaign part's submit_sm_resp came ``rtt`` seconds after its submit_sm was written."""
        if rtt < 0:
            return
        if self._epoch_start is None:
            self._epoch_start = now
        elif now - self._epoch_start >= MIN_RTT_EPOCH:
            self._min_before, self._min_now, self._epoch_start = self._min_now, math.inf, now
        self._min_now = min(self._min_now, rtt)
        self.srtt = rtt if self.srtt is None else self.srtt + SMOOTHING * (rtt - self.srtt)
        if self.budget <= 0 or now < self._next_adjust:
            return
        # Adjust about once per round trip (and at most every 10 ms).
        self._next_adjust = now + max(0.01, self.srtt)
        target = self.min_rtt + self.budget
        if self.srtt > target:
            # In proportion to the excess (Little: the parts in flight that keep the round trip
            # at the target), by at most half and at least 15 % a step: a full window's queue at
            # the start of a campaign is gone within a few round trips.
            self.cap = max(self.floor, int(self.cap * min(0.85, max(0.5, target / self.srtt))))
        elif self._bound:
            self.cap = min(self.ceiling, self.cap + max(1, self.cap // 8))
        self._bound = False
