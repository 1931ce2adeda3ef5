"""Campaign sends under faults, with real processes: a Celery worker on Redis (dispatch and batch
advance), the SMPP bind worker as ``manage.py smpp_worker`` subprocesses, and the SMSC simulator,
whose own log of every submit_sm it received is the ground truth for what reached handsets.

* A 20,000-message send while the bind worker is SIGKILLed and restarted at random points, the
  SMSC drops the link and throttles: no message is accepted twice, none is lost (each ends in a
  state; 'unknown' only for what was genuinely in flight at a kill or a drop, never resent), and
  a STOP committed during the send stops every later message to that phone.
* The primary gateway goes down mid-send with a fallback configured: the rest goes out through
  the fallback, still at most once.

Run with ``make test-celery`` (PostgreSQL + Redis). The random points come from a seed printed
on failure; set FAULTS_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from campaigns.models import Campaign, CampaignState
from gateways.adapters.base import InboundEvent
from gateways.delivery.inbound import inbound_receive
from gateways.delivery.reconcile import messages_reconcile
from gateways.models import Gateway, MessageState, OutboundMessage
from smsplatform.celery import app
from smsplatform.kernel.actor import Actor
from tests.support.faults import WINDOW, SmppWorkers, campaign_for, send, smpp_gateway, submissions
from tests.support.smsc_setup import PASSWORD
from tests.support.workers import REAL_WORKER_TEST

pytestmark = REAL_WORKER_TEST
SEED = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(1 << 30))
STOP_GRACE = 1.0  # ARCHITECTURE: "an opt-out one second before send still wins"
THROTTLE_WAIT = 15.0  # how long a throttle waits, past its 1.5 s, for a submit to refuse
FINAL_OR_AMBIGUOUS = {MessageState.DELIVERED, MessageState.FAILED, MessageState.EXPIRED, MessageState.UNKNOWN}


@pytest.fixture
def celery_worker_env() -> dict[str, str]:
    """The Celery worker (tests/integration/conftest.py) also sees the SMPP gateways' credentials."""
    return {"TEST_SMPP_PASSWORD": PASSWORD}


@pytest.fixture(autouse=True)
def _tasks_to_the_worker() -> Iterator[None]:
    """Tasks this process enqueues (dispatch, batch advance) go to the Celery worker through Redis."""
    previous, app.conf.task_always_eager = app.conf.task_always_eager, False
    yield
    app.conf.task_always_eager = previous


def accepted(server: Any) -> int:
    return int(server.stats().get("accepted", 0))


@dataclass
class Progress:
    """Counts what the SMSCs accepted, runs the periodic batch advance as beat would (every second
    here), and tells when a send has settled: nothing queued, nothing accepted for a while."""

    campaign_id: int
    servers: list[Any]
    retired: int = 0  # accepted by simulators no longer running
    last: int = -1
    since: float = field(default_factory=time.monotonic)
    last_advance: float = 0.0

    def tick(self) -> int:
        now = time.monotonic()
        if now - self.last_advance >= 1.0:  # what beat's periodic entry does every few seconds
            app.send_task("campaigns.advance_batches")
            self.last_advance = now
        total = self.retired + sum(accepted(s) for s in self.servers)
        if total != self.last:
            self.last, self.since = total, now
        return total

    def retire(self, server: Any) -> None:
        self.retired += accepted(server)
        self.servers.remove(server)

    def settled(self, quiet: float) -> bool:
        """Nothing queued any more and the SMSC has accepted nothing for ``quiet`` seconds."""
        self.tick()
        queued = OutboundMessage.objects.filter(batch__campaign_id=self.campaign_id, state=MessageState.QUEUED)
        return time.monotonic() - self.since >= quiet and not queued.exists()


def wait_settled(progress: Progress, *, quiet: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress.settled(quiet):
            return True
        time.sleep(0.2)
    return False


def drop_links(server: Any) -> int:
    """The SMSC closes every connection (in its event loop): the link drops under the worker."""
    sessions = list(server.sessions)
    for session in sessions:
        session.close()
    return len(sessions)


def stop_phone(gateway: Gateway, phone: str) -> None:
    """A STOP reply, stored and handled as the bind worker does with an MO (committed on return)."""
    stored = inbound_receive(gateway=gateway, events=[InboundEvent(source=phone, destination="SHOPHK", body="STOP")])
    assert stored and (stored[0].handler_result or {})["inbound_keyword_handler"]["kind"] == "stop"


def test_20k_send_survives_kills_link_drops_and_throttling_at_most_once(
    celery_worker: Any, smpp_workers: SmppWorkers, smsc_factory: Any, make_user: Any
) -> None:
    rng = random.Random(SEED)
    total = 20_000
    smsc = smsc_factory(receipt_delay=(0.0, 0.02), keep_records=1000)
    gateway = smpp_gateway("smpp-a", smsc, priority=1)
    campaign, actor = campaign_for(make_user, total, batch_size=2000, interval=1)
    smpp_workers.start("smpp-a")
    started = time.monotonic()
    send(campaign, actor)

    # The random points, as fractions of the messages the SMSC has accepted.
    events: list[tuple[float, str]] = sorted(
        [(rng.uniform(0.05, 0.85), "kill") for _ in range(3)]
        + [(rng.uniform(0.05, 0.85), "drop") for _ in range(2)]
        + [(rng.uniform(0.1, 0.6), "throttle"), (rng.uniform(0.15, 0.35), "stop")]
    )
    # phone (as the SMSC logs it) -> when its STOP was committed (epoch seconds)
    stopped: dict[str, dict[str, float]] = {"claimed": {}, "unclaimed": {}}
    throttle_until = 0.0
    progress = Progress(campaign.pk, [smsc])
    deadline = time.monotonic() + 90
    kills = drops = 0
    while events and time.monotonic() < deadline:
        done = progress.tick()
        if throttle_until and time.monotonic() >= throttle_until:
            # Lifted once the SMSC has refused a submit as throttled: a throttle that fell while the
            # bind worker was down (restarting after a kill) would otherwise have throttled nothing.
            throttled = smsc.stats()["by_status"].get("ESME_RTHROTTLED", 0)
            if throttled or time.monotonic() >= throttle_until + THROTTLE_WAIT:
                smsc.call(lambda: setattr(smsc.server.config, "max_rate_per_second", None))
                throttle_until = 0.0
        if done < events[0][0] * total:
            time.sleep(0.02)
            continue
        _at, event = events.pop(0)
        if event == "kill":
            smpp_workers.kill("smpp-a")
            kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            smpp_workers.start("smpp-a")
        elif event == "drop":
            drops += int(smsc.call(lambda: drop_links(smsc.server)) > 0)  # none while a worker restarts
        elif event == "throttle":
            smsc.call(lambda: setattr(smsc.server.config, "max_rate_per_second", 300.0))
            throttle_until = time.monotonic() + 1.5
        else:
            # STOPs from recipients whose messages are not sent yet: ten the bind worker has just
            # claimed (checked against opt-outs before these STOPs, written a little later) and ten
            # of the last batch, not due for seconds (so never claimed yet).
            mine = OutboundMessage.objects.filter(batch__campaign=campaign)
            claimed = mine.filter(state=MessageState.SUBMITTING).order_by("-pk")[:10]
            unclaimed = mine.filter(state=MessageState.QUEUED).order_by("-pk")[:10]
            for group, rows in (("claimed", claimed), ("unclaimed", unclaimed)):
                for phone in rows.values_list("destination", flat=True):
                    stop_phone(gateway, phone)
                    stopped[group][phone.lstrip("+")] = time.time()
    assert not events, f"the send stalled before every fault was injected (seed {SEED}): {events}"
    assert len(stopped["unclaimed"]) == 10
    settled = wait_settled(progress, quiet=3.0, timeout=max(10.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # the last receipts
    smpp_workers.stop_all()  # SIGTERM: requeues what it claimed and never wrote
    # Whatever a killed worker left 'submitting' is reconciled (as the periodic reconciler does
    # after SUBMITTING_TIMEOUT): never sent again, counted as 'unknown' below.
    messages_reconcile(actor=Actor.system("test"), older_than=timedelta(0))

    records, per_phone = submissions(smsc)
    messages = list(OutboundMessage.objects.filter(batch__campaign=campaign).values_list("destination", "state"))
    assert len(messages) == total
    states = Counter(state for _d, state in messages)
    by_state: dict[str, set[str]] = {}
    for destination, state in messages:
        by_state.setdefault(state, set()).add(destination.lstrip("+"))
    stats = smsc.stats()
    context = (
        f"seed {SEED}, {elapsed:.0f}s, settled={settled}, kills={kills}, drops={drops}, states={dict(states)}, "
        f"smsc={ {k: stats.get(k) for k in ('accepted', 'refused', 'binds', 'receipts_sent', 'redelivered')} }"
    )
    print(context)
    # The faults happened: throttled submits, and binds again after kills and drops.
    assert stats["by_status"].get("ESME_RTHROTTLED", 0) > 0 and stats["binds"] >= 2, context

    problems = []
    # At most once: no message accepted twice by the SMSC.
    twice = [d for d, n in per_phone.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} messages accepted twice by the SMSC, e.g. {twice[:3]}")
    # A STOP committed during the send stops every later message to that phone: the opt-out is
    # re-checked at claim time, and "an opt-out one second before send still wins" (ARCHITECTURE).
    stop_times = {**stopped["claimed"], **stopped["unclaimed"]}
    late = [r for r in records if r["time"] > stop_times.get(r["destination"], float("inf")) + STOP_GRACE]
    if late:
        delays = [(r["destination"], round(r["time"] - stop_times[r["destination"]], 2)) for r in late[:3]]
        problems.append(
            f"{len({r['destination'] for r in late})} of {len(stop_times)} STOPped phones got a submit_sm more than "
            f"{STOP_GRACE}s after their STOP was committed (phone, seconds later): {delays}"
        )
    not_withdrawn = set(stopped["unclaimed"]) - by_state.get(MessageState.FAILED, set())
    if not_withdrawn:
        problems.append(f"STOPped phones whose queued message was not suppressed at claim: {sorted(not_withdrawn)[:3]}")
    # None lost: every message ended in a state; the only failures are the STOPs; 'unknown' only for
    # what was in flight when a worker was killed or the link dropped (at most a window each), and
    # never resent.
    unfinished = {s: n for s, n in states.items() if s not in FINAL_OR_AMBIGUOUS}
    if unfinished:
        # The simulator sends a receipt for every accepted message, again after a drop if unacknowledged.
        problems.append(f"messages not in a final state: {unfinished} (accepted by the SMSC, receipt never recorded)")
    if not by_state.get(MessageState.FAILED, set()) <= set(stop_times):
        problems.append(f"failures other than STOPs: {sorted(by_state[MessageState.FAILED] - set(stop_times))[:3]}")
    # An 'unknown' message is ambiguous to the platform: written to the SMSC, its answer not recorded.
    # It must have reached the SMSC -- except the few written into the socket but not read when a
    # worker died or the link dropped (at most a window each). One that never left is lost.
    unknown = by_state.get(MessageState.UNKNOWN, set())
    seen = {r["destination"] for r in records}
    never_sent = [d for d in unknown if d not in seen]
    if len(never_sent) > WINDOW * (kills + drops):
        problems.append(
            f"{len(never_sent)} of {len(unknown)} 'unknown' messages never reached the SMSC (at most "
            f"{WINDOW * (kills + drops)} can be lost in a socket at {kills} kills and {drops} drops): never sent"
        )
    if any(per_phone[d] > 1 for d in unknown):
        problems.append("an 'unknown' message was resent")
    not_at_smsc = [d for d in by_state.get(MessageState.DELIVERED, set()) if per_phone[d] != 1]
    if not_at_smsc:
        problems.append(f"{len(not_at_smsc)} 'delivered' messages the SMSC did not accept exactly once")
    if not wait_for_state(campaign.pk, CampaignState.COMPLETED):
        problems.append(f"campaign not completed: {Campaign.objects.get(pk=campaign.pk).state}")
    if problems:
        pytest.fail(f"{context}\n" + "\n".join(problems))


def wait_for_state(campaign_id: int, state: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Campaign.objects.get(pk=campaign_id).state == state:
            return True
        app.send_task("campaigns.advance_batches")
        time.sleep(0.5)
    return False


def test_primary_gateway_down_fails_over_to_the_fallback(
    celery_worker: Any, smpp_workers: SmppWorkers, smsc_factory: Any, make_user: Any
) -> None:
    total = 3000
    primary_smsc, fallback_smsc = smsc_factory(), smsc_factory()
    fallback = smpp_gateway("smpp-b", fallback_smsc, priority=2)
    smpp_gateway("smpp-a", primary_smsc, priority=1, fallback=fallback)
    campaign, actor = campaign_for(make_user, total, batch_size=500, interval=1)
    smpp_workers.start("smpp-a")
    smpp_workers.start("smpp-b")
    send(campaign, actor)
    progress = Progress(campaign.pk, [primary_smsc, fallback_smsc])
    deadline = time.monotonic() + 60
    while progress.tick() < total // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    progress.retire(primary_smsc)
    primary_smsc.stop()  # the primary SMSC goes away: its link drops and binds are refused from now on
    down_at = time.time()
    settled = wait_settled(progress, quiet=5.0, timeout=25)
    time.sleep(1.0)  # the last receipts
    smpp_workers.stop_all()
    messages_reconcile(actor=Actor.system("test"), older_than=timedelta(0))

    _records, per_phone = submissions(primary_smsc, fallback_smsc)
    by_primary = {r["destination"] for r in primary_smsc.submitted()}
    messages = list(
        OutboundMessage.objects.filter(batch__campaign=campaign).values_list("destination", "state", "gateway__code")
    )
    states = Counter(state for _d, state, _g in messages)
    context = f"settled={settled}, states={dict(states)}, by gateway={dict(Counter(g for _d, _s, g in messages))}"
    print(context)
    problems = []
    twice = [d for d, n in per_phone.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} messages accepted twice (by one SMSC or by both), e.g. {twice[:3]}")
    # Receipts of messages the primary accepted may never come (it went away): pending, not lost.
    pending = [d for d, s, _g in messages if s == MessageState.SUBMITTED and d.lstrip("+") not in by_primary]
    if pending:
        problems.append(f"{len(pending)} messages accepted by the fallback without their receipt recorded")
    left = Counter(g for _d, s, g in messages if s in (MessageState.QUEUED, MessageState.SUBMITTING))
    if left:
        problems.append(f"messages never sent, still queued or claimed on: {dict(left)}")
    unknown = [d for d, s, _g in messages if s == MessageState.UNKNOWN]
    never_sent = [d for d in unknown if d.lstrip("+") not in by_primary]
    if len(never_sent) > WINDOW:  # written into the primary's socket as it went away
        problems.append(f"{len(never_sent)} of {len(unknown)} 'unknown' messages never reached an SMSC: lost")
    after_down = [r for r in fallback_smsc.submitted() if r["outcome"] == "accepted" and r["time"] >= down_at]
    if not after_down:
        problems.append("nothing went out through the fallback after the primary went down")
    if problems:
        pytest.fail(f"{context}\n" + "\n".join(problems))
