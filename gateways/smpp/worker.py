"""The SMPP bind worker: one long-running process per gateway (manage.py smpp_worker).

Work arrives through the database: messages queued for an SMPP gateway are claimed here
(queued -> submitting, committed, SKIP LOCKED) and submitted over one transceiver bind with a
window of outstanding submit_sm. Celery never blocks on a socket: it only queues rows.

Threads. The thread that calls ``run`` claims batches ahead of need (a cursor over the queue;
every part's submit_sm body is built once, at claim time) and handles link drops. The flush
thread, on a connection of its own, writes what came back (answers with the receipts that came
with them, the other receipts, MOs) in one transaction every ``flush_interval``, so a commit
never holds up a claim; inside a transaction (tests) or on SQLite that stays on the calling
thread. The link thread owns the socket once smpplib has connected and bound it: it writes
submit_sm within the window, the rate limit and any throttling back-off, reads submit_sm_resp /
deliver_sm / enquire_link with the hand-written codec in ``gateways.smpp.wire`` and answers
deliver_sm itself. The priority thread (PostgreSQL outside a transaction, like the flush thread;
else the calling thread on every pass) claims the priority lane -- OTP, transactional, test
(gateways.models.PRIORITY_PURPOSES) -- every PRIORITY_POLL_INTERVAL and puts those parts at the
front of the ready ones, ringing the link thread's doorbell: a code never waits behind the
campaign rows claimed ahead. They meet in a few lists under one lock, handed over in batches.

At most once: a part whose submit_sm was written but never answered (link drop, crash) is
ambiguous, so its message becomes 'unknown' and is never resent; a message none of whose
parts were written goes back to 'queued' when the worker stops, and is sent on the next bind
when the link drops. A worker that is killed cannot say which is which, so it keeps a journal
(``gateways.smpp.journal``) of what it claimed and what it wrote: whoever recovers it (the next
worker to start, the reconciler) requeues the never-written and makes the written 'unknown'.

Fail-over: when the bind has been down for ``settings["failover_after"]`` seconds (default 10)
and the gateway has an enabled fallback, the messages the worker holds and every due message
for a country the fallback covers go to the fallback (none of their parts was written here),
until the bind is back. Which messages may go is ``gateways.failover``'s rule, the one
``outcomes_record`` applies to a gateway that answers 'unavailable'.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import select
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import psycopg
import smpplib.client
import smpplib.consts
import smpplib.exceptions
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.utils import timezone

from compliance.optouts import opt_out_last_id, opt_outs_active_after
from gateways.adapters.base import InboundEvent, ReceiptEvent, SendOutcome
from gateways.delivery.claim import (
    WITHDRAWN_AFTER_CLAIM,
    ClaimedMessage,
    messages_claim_rows,
    messages_suppress_claimed,
)
from gateways.delivery.inbound import inbound_receive
from gateways.delivery.outcomes import outcomes_record
from gateways.delivery.quarantine import QuarantineItem, delivery_quarantine
from gateways.delivery.queue import (
    YIELD_RELEASE_PREFIX,
    bulk_yield_channel,
    bulk_yield_release,
    worker_wake_channel,
)
from gateways.delivery.receipts import receipt_bytes_text, receipt_text_safe
from gateways.delivery.reconcile import messages_fail_over, messages_mark_unknown, messages_requeue
from gateways.failover import fallback_usable
from gateways.models import PRIORITY_PURPOSES, BindState, Gateway, MessagePurpose, MessageState, QuarantineKind
from gateways.services import bind_worker_status_record
from gateways.smpp import wire
from gateways.smpp.constants import (
    DELIVER_SM,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESM_CLASS_RECEIPT,
    ESME_RINVCMDID,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    GENERIC_NACK,
    MAX_PDU_LENGTH,
    MESSAGE_STATES,
    RESP_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    UNBIND,
    UNBIND_RESP,
)
from gateways.smpp.encoding import decode_short_message, encode_body, with_udh
from gateways.smpp.journal import Journal, journals_recover
from gateways.smpp.pacing import DEFAULT_QUEUE_DELAY_MS, BulkPacer
from smsplatform.kernel.actor import Actor

logger = logging.getLogger(__name__)

# What a write can raise: Django's wrapped errors, and psycopg's own from the COPY and array
# statements that use the driver's cursor directly.
DB_ERRORS = (DatabaseError, psycopg.Error)

RETRYABLE = {ESME_RTHROTTLED, ESME_RMSGQFUL}  # written again by the link after backing off
THROTTLE_MAX_RETRIES = 10  # per message and bind (settings["throttle_max_retries"])
THROTTLE_MAX_SECONDS = 60.0  # per message and bind (settings["throttle_max_seconds"])
THROTTLE_REQUEUE_AFTER = 30.0  # seconds before a message that left the bind throttled is tried again
# The SMSC's temporary trouble: the message goes back to the queue and is tried again later
# (an attempt counted, backed off, failed after MAX_ATTEMPTS) -- when none of its parts was taken.
TEMPORARY = {ESME_RSYSERR: 30.0, ESME_RX_T_APPN: 30.0}  # seconds before the next attempt
RECEIPT_STATES = {
    "DELIVRD": MessageState.DELIVERED,
    "UNDELIV": MessageState.FAILED,
    "REJECTD": MessageState.FAILED,
    "DELETED": MessageState.FAILED,
    "EXPIRED": MessageState.EXPIRED,
    "ACCEPTD": MessageState.SUBMITTED,
    "ENROUTE": MessageState.SUBMITTED,
    "UNKNOWN": MessageState.SUBMITTED,
}
# SMPP message_state TLV values
TLV_STATES = {value: name for name, value in MESSAGE_STATES.items()}
TLV_DELIVERED = MESSAGE_STATES["DELIVRD"]
RECEIPT_TEXT = re.compile(r"id:(?P<id>\S+).*?stat:(?P<stat>[A-Z]+)(?:.*?err:(?P<err>\w+))?", re.S)
READ_SIZE = 256 * 1024
ACK_FLUSH_AT = 256  # deliver_sm read and not acknowledged yet: flush now rather than at the interval
RESCAN_INTERVAL = 2.0  # seconds between claims from the start of the queue (see BindWorker._claim)
RECOVER_INTERVAL = 30.0  # seconds between looks for dead workers' journals
HEARTBEAT_INTERVAL = 5.0  # seconds between status reports (gateways.selectors.BIND_WORKER_SILENT_AFTER)
# Opt-outs committed after a message was claimed: looked for this often, and the held messages to
# those numbers are withdrawn before they are written ("an opt-out one second before send wins").
OPTOUT_WATCH_INTERVAL = 0.2
OPTOUT_ID_SLACK = 1000  # opt-out ids below the highest seen by this much are looked at again (commit order)
# The priority lane (gateways.models.PRIORITY_PURPOSES): claimed on every pass of the main loop,
# at most this often (one probe of the small partial index msg_priority_queued), whatever the
# worker already holds, and written ahead of it.
PRIORITY_POLL_INTERVAL = 0.02
PRIORITY_TIMINGS = 1000  # priority messages whose claim and link times WorkerStats summarises
# On PostgreSQL the priority thread also LISTENs for wake-ups (gateways.delivery.queue.worker_wake)
# and claims at once when one comes; it waits for them in slices of at most this many seconds.
WAKE_SLICE = 0.25
# Lanes (``lane``): one worker per gateway sends everything ("all"); a gateway can also be split
# into a priority worker (OTP, transactional, test: gateways.models.PRIORITY_PURPOSES) and a bulk
# worker, each on a bind of its own. The priority lane's submit_sm then never queue in a TCP
# stream behind the campaign's, and its process can keep the CPU while the bulk one runs at a
# lower priority (``manage.py smpp_worker --lane bulk --nice 10``). The bulk worker leaves priority
# rows alone unless one has been queued longer than the gateway's ``priority_grace_seconds``
# (default PRIORITY_GRACE): a stopped priority worker delays codes by that much, never forever.
#
# While a priority message is being made (campaigns.otp's send calls
# gateways.delivery.queue.bulk_yield before its checks and writes), the bulk worker holds its
# campaign work back for ``bulk_yield_ms`` (default BULK_YIELD_MS): no claim, no flush, no campaign
# part written; priority parts it holds still go. So the request, the priority worker and the SMSC
# have the machine (and the database) to themselves for the code. The yield ends early once the
# priority worker has written the codes announced to the SMSC (it NOTIFYs ``sent:<n>`` on the same
# channel: gateways.delivery.queue.bulk_yield_release), so a code that goes out in 30 ms holds the
# campaign back 30 ms, and ``bulk_yield_ms`` is only the longest a yield lasts (a refused request,
# which sends nothing). At most ``bulk_yield_share`` of the time (default BULK_YIELD_SHARE, a token
# bucket over one second; an early end gives back what it did not use) goes to yielding: a flood
# of codes slows a campaign by that share at most, never stops it. 0 turns it off.
#
# A yield cannot stop a statement already running, so while codes are being sent (a yield asked for
# in the last PIECES_AFTER_YIELD seconds) the bulk lane's work comes in pieces of at most
# ``statement_rows`` rows (default STATEMENT_ROWS): a claim of batch_size rows is several claims, a
# flush of 2,000 answers several transactions, and between two pieces a yield that began holds the
# rest back. The batch keeps its size (how much the worker holds, how often it flushes); a code waits
# for one piece, not the whole batch. Pieces cost the campaign about 30% of its rate at full speed
# (bench/smpp_throughput.py: 7,200 against 5,000 msg/s), so with no code in sight it claims and
# writes whole batches.
LANES = ("all", "priority", "bulk")
STATEMENT_ROWS = 500
PIECES_AFTER_YIELD = 10.0
PRIORITY_GRACE = 2.0
BULK_YIELD_MS = 250.0
BULK_YIELD_SHARE = 0.3


class Job:
    """One claimed message on its way through the bind: its parts' submit_sm bodies and answers."""

    __slots__ = (
        "answered",
        "bodies",
        "claimed",
        "done",
        "failed",
        "message",
        "priority",
        "provider_ids",
        "segment",
        "strike_mark",
        "strikes",
        "throttled_since",
        "throttles",
        "written",
    )

    def __init__(
        self,
        message: ClaimedMessage,
        bodies: list[bytes],
        segment: int = 0,
        claimed: tuple[float, float, float] | None = None,
    ) -> None:
        self.message = message
        self.claimed = claimed  # a priority claim's (start, statement end, commit) on time.monotonic()
        self.priority = (
            getattr(message, "purpose", None) in PRIORITY_PURPOSES
        )  # the lane: not held back by the BulkPacer
        self.segment = segment  # the journal segment its claim is recorded in
        self.bodies = bodies
        self.provider_ids: list[str | None] = [None] * len(bodies)
        self.answered = 0  # parts accepted
        self.written: set[int] = set()  # parts written and not refused (in flight or accepted)
        self.failed: SendOutcome | None = None
        self.done = False
        self.throttles = 0  # submits of its parts refused with ESME_RTHROTTLED / ESME_RMSGQFUL on this bind
        self.strikes = 0  # ... of which the bind accepted other parts in between (it is this destination)
        self.strike_mark = -1
        self.throttled_since = 0.0


class PiecesClaimed(NamedTuple):
    """What BindWorker._claim_pieces did: messages held, suppressed, rows taken (both), the
    highest id the in-order pick took, and whether a yield cut it short."""

    held: int
    suppressed: int
    taken: int
    last_id: int
    cut: bool


@dataclass
class WorkerStats:
    submitted_parts: int = 0
    accepted_messages: int = 0
    failed_messages: int = 0
    throttled: int = 0
    receipts: int = 0
    inbound: int = 0
    reconnects: int = 0
    unknown_messages: int = 0
    requeued_messages: int = 0
    suppressed_messages: int = 0
    failed_over_messages: int = 0
    recovered_requeued: int = 0
    recovered_unknown: int = 0
    claimed_messages: int = 0
    claims: int = 0
    flushes: int = 0
    quarantined: int = 0
    wakeups: int = 0  # priority claims started by a NOTIFY rather than the poll
    bulk_cap: int = 0  # campaign parts allowed in flight now (gateways.smpp.pacing), 0 before the first bind
    bulk_cap_min: int = 0  # the smallest it has been
    yields: int = 0  # times the bulk lane held campaign work back for a priority message (bulk_yield)
    yields_released: int = 0  # of them, ended early: the priority lane had written the codes
    # Where a priority message's time goes in this worker (the last PRIORITY_TIMINGS of them, ms):
    # its claim's statement, the claim's commit (the WAL flush that must precede the submit_sm),
    # then from the commit to its last part's bytes in the socket (the link thread's turn); the
    # p99 and the slowest of each.
    priority_claim_ms_p99: float = 0.0
    priority_claim_ms_max: float = 0.0
    priority_commit_ms_p99: float = 0.0
    priority_commit_ms_max: float = 0.0
    priority_link_ms_p99: float = 0.0
    priority_link_ms_max: float = 0.0


class LinkDown(Exception):
    pass


class BindWorker:
    def __init__(
        self,
        gateway: Gateway,
        *,
        password: str,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        poll_interval: float = 0.2,
        drain_timeout: float = 5.0,
        journal: bool = True,
        lane: str = "all",
        statement_rows: int = STATEMENT_ROWS,
    ) -> None:
        if lane not in LANES:
            raise ValueError(f"lane must be one of {', '.join(LANES)}, not {lane!r}")
        self.gateway = gateway
        self.lane = lane
        cfg = gateway.settings or {}
        self.priority_grace = timedelta(seconds=float(cfg.get("priority_grace_seconds", PRIORITY_GRACE)))
        self.bulk_yield = max(0.0, float(cfg.get("bulk_yield_ms", BULK_YIELD_MS)) / 1000)
        self.bulk_yield_share = min(1.0, max(0.0, float(cfg.get("bulk_yield_share", BULK_YIELD_SHARE))))
        self._yield_until = 0.0  # monotonic time until which campaign work waits (lane "bulk")
        self._yield_asked = float("-inf")  # when a yield was last asked for (granted or not)
        self._yield_tokens = self.bulk_yield_share  # seconds of yielding left in the bucket
        self._yield_refilled = time.monotonic()
        self._yield_open = 0  # codes announced during this yield and not yet written by the priority lane
        self._yield_over = threading.Event()  # set when a yield ends early (the flusher waits on it)
        self.yielder: threading.Thread | None = None
        # Lane "priority": codes written to the SMSC and not yet announced to the bulk lane, and
        # the thread that announces them (bulk_yield_release).
        self._codes_written = 0
        self._codes_written_due = threading.Event()
        self.releaser: threading.Thread | None = None
        self.host, self.port = cfg.get("host", "127.0.0.1"), int(cfg.get("port", 2775))
        self.system_id, self.password = cfg.get("system_id", ""), password
        self.system_type = cfg.get("system_type", "")
        self.enquire_link_interval = float(cfg.get("enquire_link_interval", 30))
        self.window = max(1, gateway.window_size)
        # The campaign's share of the window (gateways.smpp.pacing): a reserve for the priority
        # lane and a queue-delay budget.
        reserve = cfg.get("priority_reserve")
        self.priority_reserve = None if reserve is None else max(0, int(reserve))
        self.bulk_queue_delay = float(cfg.get("bulk_queue_delay_ms", DEFAULT_QUEUE_DELAY_MS)) / 1000
        self.pacer = BulkPacer(self.window, reserve=self.priority_reserve, budget=self.bulk_queue_delay)
        self._bulk_sent: dict[int, float] = {}  # sequence -> when written, campaign parts in flight
        self.rate = float(gateway.max_rate_per_second or 100)
        self.batch_size, self.flush_interval, self.poll_interval = batch_size, flush_interval, poll_interval
        self.statement_rows = max(1, statement_rows)
        self.drain_timeout = drain_timeout
        self.failover_after = float(cfg.get("failover_after", 10))
        # A message the SMSC keeps throttling leaves the bind after this many refusals that came
        # right after an acceptance, with others accepted since its previous one (so the
        # destination, not the bind's rate, is throttled), after
        # five times as many refusals in all, or after this many seconds: back to the queue,
        # backed off, the attempt counted (failed once the attempts are spent), so a destination
        # throttled forever never holds the bind (gateways.delivery.outcomes._retry_later).
        self.throttle_max_retries = max(1, int(cfg.get("throttle_max_retries", THROTTLE_MAX_RETRIES)))
        self.throttle_max_seconds = float(cfg.get("throttle_max_seconds", THROTTLE_MAX_SECONDS))
        self.use_journal = journal
        self.journal: Journal | None = None
        self._claim_segment = 0
        self.actor = Actor.system(f"smpp_worker:{gateway.code}")
        self.stats = WorkerStats()
        # (claim, commit, commit -> in the socket) seconds of the last priority messages (WorkerStats.priority_*)
        self.priority_timings: deque[tuple[float, float, float]] = deque(maxlen=PRIORITY_TIMINGS)
        self.client: smpplib.client.Client | None = None
        self.sock: socket.socket | None = None
        self.link: threading.Thread | None = None
        # Shared between the two threads, under self.lock:
        self.lock = threading.Lock()
        self.ready: deque[tuple[Job, int]] = deque()  # parts to write, in order
        self.completed: list[Job] = []  # messages whose every part was answered (or one refused)
        self.receipts: list[ReceiptEvent] = []
        self.inbound: list[InboundEvent] = []
        # deliver_sm acknowledged only once what they carried is committed (a kill before the
        # commit leaves them unacknowledged: the SMSC delivers them again). (link, sequence):
        self.acks_held: list[tuple[int, int]] = []  # read, not committed yet
        self.acks_ready: list[tuple[int, int]] = []  # committed: the link thread answers them
        self._link_generation = 0
        self.link_error: str | None = None
        self.unsent: set[int] = set()  # sequences whose bytes never left (set by the link thread as it ends)
        # Owned by the link thread while it runs (the main thread touches them only when it is down):
        self.inflight: dict[int, tuple[Job, int]] = {}
        self.open_jobs = 0  # claimed and not completed (main thread)
        self.pause_until = 0.0
        self.backoff = 0.05
        self._accepted_parts = 0  # parts accepted on any bind so far (throttle strikes, see above)
        self._last_answer_ok = True
        self._sequence = 1
        self._stopping_link = False
        self._sending = True
        self._enquire_answered = False
        self.wake = threading.Event()  # the link thread wants the main thread (work, trouble)
        self.flush_due = threading.Event()  # ... or the flush thread (a batch of answers is ready)
        self.flusher: threading.Thread | None = None
        self._flusher_stop = False
        self._low_water = max(2 * self.window, batch_size // 2)
        self._claim_after = 0  # the claim cursor (see _claim)
        self._last_rescan = 0.0
        self._last_priority_claim = 0.0
        # The priority lane's own thread (PostgreSQL, outside a transaction: see run), and the
        # link thread's doorbell: priority parts put at the front wake it at once instead of
        # after its select's timeout.
        self.prioritizer: threading.Thread | None = None
        self._prioritizer_stop = threading.Event()
        self._doorbell_r, self._doorbell_w = socket.socketpair()
        self._doorbell_r.setblocking(False)
        self._doorbell_w.setblocking(False)
        # What operators see (BindWorkerStatus, gateways.list, the admin):
        # (the lane shows in it when the gateway is split: two workers, one per lane)
        lane_tag = "" if lane == "all" else f"{lane}:"
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{lane_tag}{secrets.token_hex(4)}"
        self._bind_state = BindState.BINDING
        self._bind_state_since = timezone.now()
        self._started_at = self._bind_state_since
        self._last_error = ""
        self._failing_over_to = ""
        self._last_report = 0.0
        self._optout_floor: int | None = None
        self._optouts_seen: set[int] = set()
        self._last_optout_watch = 0.0

    # --- connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and bind with smpplib, then hand the socket to the link thread."""
        client = smpplib.client.Client(self.host, self.port, timeout=5, allow_unknown_opt_params=True)
        try:
            client.connect()
            client.bind_transceiver(system_id=self.system_id, password=self.password, system_type=self.system_type)
        except Exception:
            if client._socket is not None:  # refused or failed bind: close quietly, no unbind
                with contextlib.suppress(OSError):
                    client._socket.close()
                client._socket = None
            client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED
            raise
        sock = client._socket
        assert sock is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.client, self.sock = client, sock
        self._sequence = int(client.sequence_generator.next_sequence())
        self.link_error = None
        self._stopping_link = False
        self.inflight = {}
        self.pause_until = 0.0
        self._link_generation += 1
        with self.lock:  # acknowledgements for the previous link are void: its deliver_sm come again
            self.acks_held, self.acks_ready = [], []
        self.link = threading.Thread(target=self._link_loop, args=(sock,), name="smpp-link", daemon=True)
        self.link.start()
        logger.info("bound to %s:%s as %s", self.host, self.port, self.system_id)

    def close(self) -> None:
        """Unbind (best effort: a dead link cannot unbind cleanly) and close."""
        link, self.link = self.link, None
        if link is not None and link.is_alive():
            self._stopping_link = True  # the link thread sends unbind and waits for unbind_resp
            link.join(2.0)
        client, sock, self.client, self.sock = self.client, self.sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if client is not None:
            client._socket = None  # closed above; smpplib would warn about a bound socket
            client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED

    # --- the link thread --------------------------------------------------------------

    def _next_sequence(self) -> int:
        seq = self._sequence = self._sequence + 1 if self._sequence < 0x7FFFFFFF else 1
        return seq

    def _link_loop(self, sock: socket.socket) -> None:
        try:
            self._link_run(sock)
        except Exception as exc:  # the link is gone: tell the main thread
            with self.lock:
                self.link_error = repr(exc)
            self.wake.set()

    def _link_run(self, sock: socket.socket) -> None:
        out = bytearray()
        buf = bytearray()
        inflight = self.inflight
        window, rate = self.window, self.rate
        tokens, token_time = float(window), time.monotonic()
        last_traffic = time.monotonic()
        enquire_pending: float | None = None
        unbind_sent: float | None = None
        pack_header = wire.pack_header
        stats = self.stats
        generation = self._link_generation
        # Where each submit_sm ends in the stream of bytes written to this link: a part whose
        # bytes had not all gone into the socket when the link went cannot have reached the
        # SMSC (a PDU cut short is never processed), so it is not 'maybe sent' (_link_unsent).
        ends: deque[tuple[int, int]] = deque()  # (end offset, sequence), in written order
        sent_total = 0
        self.unsent = set()
        # A new link starts with the whole window (less the reserve) and learns its round trip anew.
        pacer = self.pacer = BulkPacer(window, reserve=self.priority_reserve, budget=self.bulk_queue_delay)
        bulk_sent = self._bulk_sent = {}
        capped = False
        releasing = self.releaser is not None  # lane "priority": tell the bulk lane when codes are out
        codes = 0
        timed: list[tuple[float, float, float]] = []  # claims of priority messages written, until in the socket
        try:
            while True:
                now = time.monotonic()
                if self.acks_ready:
                    with self.lock:
                        acks, self.acks_ready = self.acks_ready, []
                    for link_generation, seq in acks:
                        if link_generation == generation:
                            out += wire.deliver_sm_resp(seq)
                if self._stopping_link and unbind_sent is None:
                    out += wire.unbind(self._next_sequence())
                    unbind_sent = now
                if unbind_sent is not None and now - unbind_sent > 1.0:
                    return
                # Write what the window, the rate, any back-off and the campaign's share allow.
                capped = False
                if self._sending and unbind_sent is None and now >= self.pause_until and self.ready:
                    free = window - len(inflight)
                    if free > 0:
                        tokens = min(float(window), tokens + (now - token_time) * rate)
                        token_time = now
                        n = min(free, int(tokens))
                        if n > 0:
                            yielding = now < self._yield_until
                            taken, capped = self._take(n, 0 if yielding else pacer.room(len(bulk_sent)))
                            if capped and not yielding:
                                pacer.limited()
                            tokens -= len(taken)
                            if self.journal is not None and taken:
                                # Journaled before the bytes can leave: a kill after this line leaves
                                # these 'maybe sent' (unknown), never 'not sent' (requeued).
                                self.journal.written([job.message.pk for job, _index in taken])
                            for job, index in taken:
                                seq = self._sequence = self._sequence + 1 if self._sequence < 0x7FFFFFFF else 1
                                body = job.bodies[index]
                                out += pack_header(16 + len(body), SUBMIT_SM, 0, seq)
                                out += body
                                inflight[seq] = (job, index)
                                if not job.priority:
                                    bulk_sent[seq] = now
                                elif index == len(job.bodies) - 1:
                                    if releasing:
                                        codes += job.message.purpose == MessagePurpose.OTP  # its last part
                                    if job.claimed is not None:
                                        timed.append(job.claimed)
                                ends.append((sent_total + len(out), seq))
                            stats.submitted_parts += len(taken)
                if out:
                    try:
                        sent = sock.send(out)
                    except BlockingIOError:
                        sent = 0
                    del out[:sent]
                    sent_total += sent
                    if timed and not out:  # their last parts are in the socket
                        written = time.monotonic()
                        self.priority_timings.extend(
                            (done - start, commit - done, written - commit) for start, done, commit in timed
                        )
                        timed.clear()
                    while ends and ends[0][0] <= sent_total:
                        ends.popleft()
                    last_traffic = now
                if codes and not out:  # every byte of them is in the socket: the bulk lane may go on
                    with self.lock:
                        self._codes_written += codes
                    codes = 0
                    self._codes_written_due.set()
                # Wait for the SMSC (or for room to write); not at all when more can be written now.
                timeout = 0.05
                if (
                    not out
                    and self.ready
                    and len(inflight) < window
                    and not capped  # held back by the campaign's share: an answer (readable) frees room
                    and self._sending
                    and unbind_sent is None
                ):
                    if now < self.pause_until:
                        timeout = min(timeout, self.pause_until - now)
                    elif tokens < 1:
                        timeout = min(timeout, (1 - tokens) / rate)
                    else:
                        timeout = 0.0
                if now < self._yield_until:  # yielding: back when it ends
                    timeout = min(timeout, self._yield_until - now)
                readable, _w, _x = select.select([sock, self._doorbell_r], [sock] if out else [], [], timeout)
                if self._doorbell_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        self._doorbell_r.recv(4096)  # rung: the loop goes round and writes what is ready
                if sock in readable:
                    try:
                        data = sock.recv(READ_SIZE)
                    except BlockingIOError:
                        data = None
                    if data is not None:
                        if not data:
                            raise LinkDown("the SMSC closed the connection")
                        buf += data
                        last_traffic = time.monotonic()
                        if self._handle_input(buf, out):
                            return  # unbind answered (ours) or unbind from the SMSC
                # Keep an idle link alive; a link that does not answer is dead.
                now = time.monotonic()
                if enquire_pending is not None and now - enquire_pending > max(10.0, self.enquire_link_interval):
                    raise LinkDown("enquire_link not answered")
                if enquire_pending is None and now - last_traffic > self.enquire_link_interval:
                    out += wire.enquire_link(self._next_sequence())
                    enquire_pending = now
                if self._enquire_answered:
                    self._enquire_answered = False
                    enquire_pending = None
        finally:
            self.unsent = {seq for end, seq in ends if end > sent_total}

    def _take(self, n: int, bulk_room: int | None = None) -> tuple[list[tuple[Job, int]], bool]:
        """Up to ``n`` ready parts, of which at most ``bulk_room`` campaign (non-priority) parts
        (None: no such limit); and whether that limit stopped the take. Priority parts are at the
        front of the ready ones (_hold), so stopping at the first campaign part passes none by."""
        taken: list[tuple[Job, int]] = []
        capped = False
        with self.lock:
            ready = self.ready
            while ready and len(taken) < n:
                item = ready[0]
                if not item[0].priority and not item[0].done and bulk_room is not None:
                    if bulk_room <= 0:
                        capped = True
                        break
                    bulk_room -= 1
                ready.popleft()
                if not item[0].done:  # a part of a message already refused (or suppressed) is not sent
                    item[0].written.add(item[1])  # under the lock: from here on it is the link's
                    taken.append(item)
        return taken, capped

    def _handle_input(self, buf: bytearray, out: bytearray) -> bool:
        """Process every complete PDU in ``buf``; returns True when the link is to close."""
        size = len(buf)
        pos = 0
        unpack = wire.unpack_header
        inflight = self.inflight
        bulk_sent, pacer = self._bulk_sent, self.pacer
        completed: list[Job] = []
        receipts: list[ReceiptEvent] = []
        inbound: list[InboundEvent] = []
        retry: list[tuple[Job, int]] = []
        refused: list[int] = []  # messages none of whose parts is taken any more (throttled)
        held: list[tuple[int, int]] = []
        generation = self._link_generation
        closing = False
        stats = self.stats
        while size - pos >= 16:
            length, command_id, status, sequence = unpack(buf, pos)
            if length < 16 or length > MAX_PDU_LENGTH:
                raise LinkDown(f"framing error (command_length {length})")
            if size - pos < length:
                break
            if command_id == SUBMIT_SM_RESP:
                item = inflight.pop(sequence, None)
                written_at = bulk_sent.pop(sequence, None)
                if written_at is not None:
                    now = time.monotonic()
                    pacer.answered(now - written_at, now)
                    if pacer.cap != stats.bulk_cap:
                        stats.bulk_cap = pacer.cap
                        stats.bulk_cap_min = min(stats.bulk_cap_min or pacer.cap, pacer.cap)
                if item is not None:
                    job, index = item
                    if status == ESME_ROK:
                        end = buf.find(b"\x00", pos + 16, pos + length)
                        job.provider_ids[index] = bytes(buf[pos + 16 : end if end >= 0 else pos + length]).decode(
                            "latin-1"
                        )
                        job.answered += 1
                        self._accepted_parts += 1
                        self._last_answer_ok = True
                        self.backoff = 0.05
                        if job.answered == len(job.bodies) and not job.done:
                            job.done = True
                            completed.append(job)
                    elif status in RETRYABLE:
                        # Refused, so not submitted: the same part goes again after backing off --
                        # behind the other ready messages, and only so often (see __init__).
                        stats.throttled += 1
                        job.written.discard(index)
                        now = time.monotonic()
                        if not job.throttles:
                            job.throttled_since = now
                        job.throttles += 1
                        if self._last_answer_ok and self._accepted_parts != job.strike_mark:
                            # Refused between acceptances (not in a run of refusals, as when
                            # the SMSC limits the whole bind's rate): it is this destination.
                            job.strikes += 1
                            job.strike_mark = self._accepted_parts
                        self._last_answer_ok = False
                        if job.done:
                            pass
                        elif (
                            job.strikes >= self.throttle_max_retries
                            or job.throttles >= 5 * self.throttle_max_retries
                            or now - job.throttled_since >= self.throttle_max_seconds
                        ):
                            reason = (
                                f"{_describe(status)}: refused {job.throttles} times in "
                                f"{now - job.throttled_since:.0f}s on this bind"
                            )
                            code = f"smpp_{status:#04x}"
                            # Nothing of it taken: back to the queue; a part already taken: it
                            # cannot be sent again, so the message fails.
                            job.failed = (
                                SendOutcome.temporary(code, reason, retry_after=THROTTLE_REQUEUE_AFTER)
                                if not job.written
                                else SendOutcome.permanent(code, reason)
                            )
                            job.done = True
                            completed.append(job)
                        else:
                            retry.append(item)
                        if not job.written:
                            refused.append(job.message.pk)
                        if now >= self.pause_until:  # one back-off step per throttling episode
                            self.pause_until = now + self.backoff
                            self.backoff = min(self.backoff * 2, 5.0)
                    elif not job.done:
                        job.written.discard(index)
                        if status in TEMPORARY and not job.written:  # no part of it was taken or is in flight
                            job.failed = SendOutcome.temporary(
                                f"smpp_{status:#04x}", _describe(status), retry_after=TEMPORARY[status]
                            )
                        else:
                            job.failed = SendOutcome.permanent(f"smpp_{status:#04x}", _describe(status))
                        job.done = True
                        completed.append(job)
            elif command_id == DELIVER_SM:
                body = bytes(buf[pos + 16 : pos + length])
                if self._on_deliver(body, receipts, inbound):
                    held.append((generation, sequence))  # answered once committed (flush)
                else:
                    out += wire.deliver_sm_resp(sequence)
            elif command_id == ENQUIRE_LINK:
                out += wire.enquire_link_resp(sequence)
            elif command_id == ENQUIRE_LINK_RESP:
                self._enquire_answered = True
            elif command_id == UNBIND:
                out += wire.unbind_resp(sequence)
                closing = True
            elif command_id == UNBIND_RESP:
                closing = True
            elif command_id == GENERIC_NACK:
                item = inflight.pop(sequence, None)
                bulk_sent.pop(sequence, None)
                if item is not None and not item[0].done:
                    job = item[0]
                    job.written.discard(item[1])
                    job.failed = SendOutcome.permanent(f"smpp_{status:#04x}", _describe(status or 0x08))
                    job.done = True
                    completed.append(job)
            elif not command_id & RESP_BIT:
                out += wire.generic_nack(sequence, ESME_RINVCMDID)
            pos += length
        del buf[:pos]
        if completed or receipts or inbound or retry or held:
            with self.lock:
                self.completed.extend(completed)
                self.receipts.extend(receipts)
                self.inbound.extend(inbound)
                self.acks_held.extend(held)
                if len(self.acks_held) >= ACK_FLUSH_AT:
                    self.flush_due.set()  # the SMSC may wait for these before sending more
                if retry:
                    self.ready.extend(retry)  # behind the others: a throttled destination starves nobody
            stats.receipts += len(receipts)
            stats.inbound += len(inbound)
        if refused and self.journal is not None:
            # Refused, so not sent: a kill now must requeue these, not make them 'unknown'.
            self.journal.unwritten(sorted(set(refused)))
        if len(self.ready) < self._low_water:
            self.wake.set()
        if len(self.completed) >= self.batch_size:
            self.flush_due.set()
            self.wake.set()
        if closing and self._stopping_link is False:
            raise LinkDown("unbind from the SMSC")
        return closing

    def _on_deliver(self, body: bytes, receipts: list[ReceiptEvent], inbound: list[InboundEvent]) -> bool:
        """Collect what a deliver_sm carries; True when there is something to commit first."""
        try:
            pdu = wire.parse_deliver_sm(body)
        except (ValueError, IndexError):
            logger.warning("malformed deliver_sm (%d octets) ignored", len(body))
            return False
        if pdu.esm_class & ESM_CLASS_RECEIPT:
            receipt = receipt_from(pdu)
            if receipt is not None:
                receipts.append(receipt)
                return True
            return False
        source = pdu.source
        inbound.append(
            InboundEvent(
                source=f"+{source}" if source.isdigit() else source,
                destination=pdu.destination,
                body=decode_short_message(pdu.short_message, pdu.data_coding, pdu.esm_class),
                raw={"data_coding": pdu.data_coding},
            )
        )
        return True

    # --- main loop (the database thread) -----------------------------------------------

    def run(self, *, stop: threading.Event, idle_exit_after: float | None = None) -> WorkerStats:
        """Run until ``stop`` is set (or, for benchmarks/tests, after ``idle_exit_after`` idle seconds)."""
        last_flush = time.monotonic()
        last_empty_claim = 0.0
        idle_since: float | None = None
        delay = 0.5
        next_bind = 0.0
        down_since: float | None = None
        self._report(BindState.BINDING)
        self._recover()  # messages a killed worker claimed and never wrote go back to the queue
        last_recover = time.monotonic()
        if self.use_journal:
            self.journal = Journal(self.gateway.code)
        # Answers are written by a thread of their own (its own connection) while this one claims
        # and the link sends: a flush's commit never holds up the next claim. Inside a transaction
        # (tests) other connections cannot see its rows, and SQLite has one writer anyway, so
        # there everything stays on this thread.
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            self._flusher_stop = False
            self.flusher = threading.Thread(target=self._flush_loop, name="smpp-flush", daemon=True)
            self.flusher.start()
            # The priority lane on a thread (and connection) of its own: a claim-ahead of a
            # batch of campaign rows on this thread never holds up an OTP's claim.
            self._prioritizer_stop.clear()
            if self.lane != "bulk":
                self.prioritizer = threading.Thread(target=self._priority_loop, name="smpp-priority", daemon=True)
                self.prioritizer.start()
                if self.lane == "priority":  # a split gateway: tell its bulk lane when codes are out
                    self.releaser = threading.Thread(target=self._release_loop, name="smpp-release", daemon=True)
                    self.releaser.start()
            elif self.bulk_yield > 0 and self.bulk_yield_share > 0:
                self.yielder = threading.Thread(target=self._yield_loop, name="smpp-yield", daemon=True)
                self.yielder.start()
        try:
            while not stop.is_set():
                if time.monotonic() - self._last_report >= HEARTBEAT_INTERVAL:
                    self._report()
                if self.link is None:
                    now = time.monotonic()
                    if now >= next_bind:
                        try:
                            self.connect()
                            delay, down_since = 0.5, None
                            self._report(BindState.BOUND, error="", failing_over_to="")
                        except (OSError, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError) as exc:
                            logger.warning("bind to %s failed (%s); retrying in %.1fs", self.gateway.code, exc, delay)
                            self.client = self.sock = None
                            down_since = down_since or now
                            next_bind = now + delay
                            delay = min(delay * 2, 30)
                            self._report(BindState.DOWN, error=f"bind failed: {exc}")
                    if self.link is None:
                        # Down: after a while, what this gateway cannot send goes to its fallback.
                        moved = 0
                        if down_since is not None and time.monotonic() - down_since >= self.failover_after:
                            moved = self._fail_over(f"no bind for {time.monotonic() - down_since:.0f}s")
                        if not moved:
                            stop.wait(max(0.05, min(next_bind - time.monotonic(), self.poll_interval * 5)))
                        continue
                if self.link_error is not None:
                    error = self.link_error
                    self._handle_link_down(error)
                    down_since = time.monotonic()
                    self._report(BindState.DOWN, error=f"link dropped: {error}")
                    continue
                now = time.monotonic()
                if now - last_recover >= RECOVER_INTERVAL:
                    last_recover = now
                    self._recover()
                if now - self._last_optout_watch >= OPTOUT_WATCH_INTERVAL:
                    self._last_optout_watch = now
                    self._watch_optouts()
                # The priority lane first, on every pass: an OTP never waits for the campaign rows
                # this worker holds (it goes to the front of them), nor for the low-water mark.
                self._poll_priority()
                # Claim the next batch before this one runs dry, so the window never idles.
                if (
                    self.lane != "priority"
                    and now >= self._yield_until
                    and len(self.ready) < self._low_water
                    and self.open_jobs < 3 * self.batch_size
                    and now - last_empty_claim >= self.poll_interval
                ):
                    try:
                        if not self._claim():
                            last_empty_claim = now
                    except DatabaseError:
                        # The database went away: what is claimed stays claimed; try again shortly.
                        logger.exception("claim for %s failed", self.gateway.code)
                        if connection.in_atomic_block:
                            raise
                        connection.close()
                        last_empty_claim = now
                now = time.monotonic()
                if self.flusher is None and (
                    now - last_flush >= self.flush_interval or len(self.completed) >= self.batch_size
                ):
                    # An inline flush (SQLite, tests) takes a while, and so may the claim before it:
                    # the priority lane is looked at on either side of it too.
                    self._poll_priority()
                    self.flush()
                    last_flush = now
                    self._poll_priority()
                busy = bool(self.ready or self.inflight or self.open_jobs or self.completed or self.receipts)
                busy = busy or now < self._yield_until  # holding work back is not being idle
                if not busy:
                    idle_since = idle_since or now
                    if idle_exit_after is not None and now - idle_since >= idle_exit_after:
                        break
                else:
                    idle_since = None
                if self.flusher is not None:  # the flush thread flushes: wait for the link's call or the poll
                    self.wake.wait(self.poll_interval)
                else:
                    self.wake.wait(
                        max(0.001, min(self.flush_interval - (time.monotonic() - last_flush), self.poll_interval))
                    )
                self.wake.clear()
        except BaseException:
            # Whatever stops this loop stops the priority lane's claims with it: nothing is
            # claimed into a worker that no longer sends (its journal gives back what it holds).
            self._stop_prioritizer()
            raise
        self._shutdown()
        self._report(BindState.STOPPED)
        return self.stats

    def _report(
        self, state: BindState | None = None, *, error: str | None = None, failing_over_to: str | None = None
    ) -> None:
        """Tell operators how this worker's bind is (BindWorkerStatus): on every change and as a
        heartbeat. A failed write is only logged: reporting never stops sending."""
        now = timezone.now()
        if state is not None and state != self._bind_state:
            self._bind_state, self._bind_state_since = state, now
        if error is not None:
            self._last_error = error[:300]
        if failing_over_to is not None:
            self._failing_over_to = failing_over_to
        self._last_report = time.monotonic()
        self._priority_timings_to_stats()
        try:
            _refresh_db_connection()
            bind_worker_status_record(
                actor=self.actor,
                gateway_id=self.gateway.pk,
                owner=self.owner,
                host=socket.gethostname(),
                pid=os.getpid(),
                state=self._bind_state,
                state_since=self._bind_state_since,
                started_at=self._started_at,
                last_error=self._last_error,
                failing_over_to=self._failing_over_to,
                stats=asdict(self.stats),
                starting=state == BindState.BINDING,  # starting: forget workers long gone
            )
        except DatabaseError:
            logger.warning("could not record the status of %s's bind worker", self.gateway.code, exc_info=True)
            if connection.in_atomic_block:
                raise
            connection.close()

    def _priority_timings_to_stats(self) -> None:
        timings = list(self.priority_timings)
        if not timings:
            return
        stats = self.stats
        for index, name in enumerate(("claim", "commit", "link")):
            values = sorted(timing[index] * 1000 for timing in timings)
            setattr(stats, f"priority_{name}_ms_p99", round(values[min(len(values) - 1, int(len(values) * 0.99))], 1))
            setattr(stats, f"priority_{name}_ms_max", round(values[-1], 1))

    def _poll_priority(self) -> None:
        """The every-pass priority claim, at most every PRIORITY_POLL_INTERVAL seconds (on this
        thread only when the priority thread does not run: SQLite, tests)."""
        now = time.monotonic()
        if (
            self.lane == "bulk"
            or self.prioritizer is not None
            or now - self._last_priority_claim < PRIORITY_POLL_INTERVAL
        ):
            return
        self._last_priority_claim = now
        try:
            self._claim_priority()
        except DatabaseError:
            logger.exception("priority claim for %s failed", self.gateway.code)
            if connection.in_atomic_block:
                raise
            connection.close()

    @staticmethod
    def _own_connection() -> Any:
        """A psycopg connection in autocommit, outside Django's per-thread one: for a thread that
        LISTENs or NOTIFYs while the thread's Django connection may be in a transaction."""
        own = connection.get_new_connection(connection.get_connection_params())
        own.autocommit = True
        return own

    def _listen(self, channel: str | None = None) -> Any:
        """A connection of the priority thread's own that LISTENs on the gateway's wake channel
        (gateways.delivery.queue.worker_wake: the OTP send NOTIFYs it when it commits); None when
        it cannot be had (the thread then only polls)."""
        try:
            listener = self._own_connection()
            listener.execute(f'LISTEN "{channel or worker_wake_channel(self.gateway.pk)}"')
            return listener
        except Exception:  # polling still finds the messages
            logger.warning("cannot LISTEN for %s's wake-ups; polling only", self.gateway.code, exc_info=True)
            return None

    def _wait_for_priority(self, listener: Any) -> tuple[bool, Any]:
        """Until a wake-up (a NOTIFY), PRIORITY_POLL_INTERVAL or _stop_prioritizer, whichever comes
        first: (woken, the listener to use next). Waits in slices of at most WAKE_SLICE seconds, so a
        stop is seen soon whatever the poll interval."""
        due = time.monotonic() + PRIORITY_POLL_INTERVAL
        while not self._prioritizer_stop.is_set():
            left = due - time.monotonic()
            if left <= 0:
                return False, listener
            if listener is None:
                self._prioritizer_stop.wait(min(left, WAKE_SLICE))
                continue
            try:
                for _note in listener.notifies(timeout=min(left, WAKE_SLICE), stop_after=1):
                    return True, listener
            except psycopg.Error:
                logger.warning(
                    "the wake-up connection of %s dropped; listening again", self.gateway.code, exc_info=True
                )
                with contextlib.suppress(Exception):
                    listener.close()
                self._prioritizer_stop.wait(0.5)
                return False, self._listen()
        return False, listener

    def _priority_loop(self) -> None:
        """The priority thread: claim the priority lane as soon as a wake-up arrives (LISTEN, see
        _listen) and every PRIORITY_POLL_INTERVAL anyway (a message queued without one: a retry
        falling due, a fail-over) while the link is up, until _stop_prioritizer."""
        listener = self._listen()
        try:
            while not self._prioritizer_stop.is_set():
                woken, listener = self._wait_for_priority(listener)
                if self._prioritizer_stop.is_set():
                    break
                if woken:
                    self.stats.wakeups += 1
                if self.link is None or self.link_error is not None:
                    continue  # down: what is queued waits for the bind (or the fail-over) in the queue
                self._last_priority_claim = time.monotonic()
                try:
                    self._claim_priority()
                except DB_ERRORS:
                    logger.exception("priority claim for %s failed; trying again", self.gateway.code)
                    with contextlib.suppress(Exception):
                        connection.close()
                    self._prioritizer_stop.wait(0.5)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    listener.close()
            connection.close()

    def _stop_prioritizer(self) -> None:
        prioritizer, self.prioritizer = self.prioritizer, None
        yielder, self.yielder = self.yielder, None
        releaser, self.releaser = self.releaser, None
        self._prioritizer_stop.set()
        self._codes_written_due.set()
        for thread in (prioritizer, yielder, releaser):
            if thread is not None:
                thread.join()

    def yield_to_priority(self, now: float | None = None) -> bool:
        """A priority message is being made (bulk_yield): hold campaign work back for bulk_yield
        seconds, if the bucket (bulk_yield_share of each second) has that much left. Returns whether
        it yields."""
        now = time.monotonic() if now is None else now
        self._yield_tokens = min(
            self.bulk_yield_share, self._yield_tokens + (now - self._yield_refilled) * self.bulk_yield_share
        )
        self._yield_refilled = now
        self._yield_asked = now
        if now >= self._yield_until:
            self._yield_open = 0  # what the last yield waited for went out, or never will
        self._yield_open += 1
        if self.bulk_yield <= 0 or self._yield_tokens + 1e-9 < self.bulk_yield:
            return False
        self._yield_tokens -= self.bulk_yield
        self._yield_over.clear()
        self._yield_until = max(self._yield_until, now + self.bulk_yield)
        self.stats.yields += 1
        return True

    def yield_release(self, codes: int, now: float | None = None) -> bool:
        """The priority lane has written ``codes`` codes to the SMSC (its ``sent:<n>`` NOTIFY): once
        every code announced during this yield is out, the yield ends now, and the bucket gets
        back the time it did not use. Returns whether it ended the yield."""
        now = time.monotonic() if now is None else now
        self._yield_open = max(0, self._yield_open - max(0, codes))
        if self._yield_open or now >= self._yield_until:
            return False
        self._yield_tokens = min(self.bulk_yield_share, self._yield_tokens + (self._yield_until - now))
        self._yield_until = now
        self._yield_over.set()
        self.wake.set()
        with contextlib.suppress(BlockingIOError, OSError):
            self._doorbell_w.send(b"\x01")
        self.stats.yields_released += 1
        return True

    def _release_loop(self) -> None:
        """Lane "priority": announce the codes the link has written (bulk_yield_release), from a
        connection of this thread's own, so the link never waits on the database."""
        notifier = None
        try:
            while not self._prioritizer_stop.is_set():
                self._codes_written_due.wait(WAKE_SLICE)
                self._codes_written_due.clear()
                with self.lock:
                    codes, self._codes_written = self._codes_written, 0
                if not codes:
                    continue
                try:
                    if notifier is None:
                        notifier = self._own_connection()
                    bulk_yield_release(self.gateway.code, codes, cursor=notifier)
                except psycopg.Error:
                    # The bulk lane's yield then ends at its own time limit instead.
                    logger.warning("cannot announce written codes for %s", self.gateway.code, exc_info=True)
                    with contextlib.suppress(Exception):
                        if notifier is not None:
                            notifier.close()
                    notifier = None
        finally:
            if notifier is not None:
                with contextlib.suppress(Exception):
                    notifier.close()

    def _yield_loop(self) -> None:
        """The bulk lane's listener: a NOTIFY on the gateway's bulk_yield channel makes it yield."""
        listener = None
        try:
            while not self._prioritizer_stop.is_set():
                if listener is None:
                    listener = self._listen(bulk_yield_channel(self.gateway.code))
                    if listener is None:
                        self._prioritizer_stop.wait(5.0)
                        continue
                try:
                    for note in listener.notifies(timeout=WAKE_SLICE, stop_after=1):
                        if note.payload.startswith(YIELD_RELEASE_PREFIX):
                            self.yield_release(int(note.payload[len(YIELD_RELEASE_PREFIX) :] or 0))
                        else:
                            self.yield_to_priority()
                except psycopg.Error:
                    logger.warning("the yield connection of %s dropped", self.gateway.code, exc_info=True)
                    with contextlib.suppress(Exception):
                        listener.close()
                    listener = None
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    listener.close()

    def _claim_priority(self) -> int:
        """Claim the queued priority messages (a probe of the partial index msg_priority_queued),
        leaving the cursor alone, and put them at the front of the ready parts."""
        _refresh_db_connection()
        segment: list[int] = []
        stamps = [time.monotonic()]  # the claim's start, its statement's end (before the commit)
        result = self._claim_rows(limit=self.batch_size, priority_only=True, segment=segment, stamps=stamps)
        self.stats.suppressed_messages += result.suppressed
        if not result.messages:
            return int(result.suppressed)
        claimed_at = (stamps[0], stamps[-1], time.monotonic())
        return self._hold(list(result.messages), segment[-1] if segment else self._claim_segment, claimed_at=claimed_at)

    def _claim(self) -> int:
        """Claim up to a batch, resuming after the last claimed id; from the start of the queue
        now and then when that runs short. Priority rows come first in every claim and go to the
        front of the ready parts (see _hold). The bulk lane takes priority rows only once they have
        waited out the grace (see LANES)."""
        _refresh_db_connection()
        first = self._claim_pieces(self.batch_size, after_id=self._claim_after)
        self._claim_after = max(self._claim_after, first.last_id)
        claimed, suppressed = first.held, first.suppressed
        now = time.monotonic()
        if (
            not first.cut
            and first.taken < self.batch_size
            and self._claim_after
            and now - self._last_rescan >= RESCAN_INTERVAL
        ):
            # New messages always come after the cursor; retries that fell due and messages put
            # back in the queue can sit behind it: look from the start now and then (not on every
            # poll: that walks the dead index entries of everything claimed since the last vacuum).
            self._last_rescan = now
            again = self._claim_pieces(self.batch_size - first.taken, after_id=0)
            claimed += again.held
            suppressed += again.suppressed
        self.stats.suppressed_messages += suppressed
        return claimed or suppressed

    def _claim_pieces(self, limit: int, *, after_id: int) -> PiecesClaimed:
        """Claim up to ``limit`` rows after ``after_id`` in claims of at most statement_rows, each
        held (handed to the link) as it commits; stop early when one comes back short, or when a
        yield has begun (lane "bulk": the rest waits for the next pass)."""
        held = suppressed = taken = last_id = 0
        while taken < limit:
            piece = min(self._piece_rows(), limit - taken)
            segment: list[int] = []
            result = self._claim_rows(limit=piece, after_id=max(after_id, last_id), segment=segment)
            last_id = max(last_id, result.last_id)
            suppressed += result.suppressed
            got = len(result.messages) + result.suppressed
            taken += got
            if result.messages:
                held += self._hold(list(result.messages), segment[-1] if segment else self._claim_segment)
            if got < piece:
                break
            if taken < limit and time.monotonic() < self._yield_until:
                return PiecesClaimed(held, suppressed, taken, last_id, cut=True)
        return PiecesClaimed(held, suppressed, taken, last_id, cut=False)

    def _hold(
        self, claimed: list[ClaimedMessage], segment: int, *, claimed_at: tuple[float, float, float] | None = None
    ) -> int:
        """Build the claimed messages' submit_sm bodies (once, here) and hand their parts to the
        link: priority messages ahead of every part not written yet (and the link woken for
        them), the rest behind them. ``segment``: the journal segment their claim is in;
        ``claimed_at``: a priority claim's start, statement end and commit (WorkerStats.priority_*)."""
        urgent: list[tuple[Job, int]] = []
        parts: list[tuple[Job, int]] = []
        source_fields, body_of = wire.source_fields, wire.submit_sm_body
        lane = PRIORITY_PURPOSES
        for message in claimed:
            encoded = encode_body(message.body)
            source = source_fields(message.sender_id)
            bodies = [
                body_of(
                    source,
                    message.destination,
                    short,
                    esm_class=encoded.esm_class,
                    data_coding=encoded.data_coding,
                    receipt=message.request_receipt,
                )
                for short in with_udh(encoded)
            ]
            job = Job(message, bodies, segment, claimed_at if message.purpose in lane else None)
            (urgent if message.purpose in lane else parts).extend((job, index) for index in range(len(bodies)))
        with self.lock:
            if urgent:
                self.ready.extendleft(reversed(urgent))
            self.ready.extend(parts)
            self.open_jobs += len(claimed)
        if urgent:
            with contextlib.suppress(BlockingIOError):
                self._doorbell_w.send(b"\x01")  # full: it has been rung already
        self.stats.claimed_messages += len(claimed)
        return len(claimed)

    def _claim_rows(
        self,
        *,
        limit: int,
        after_id: int = 0,
        countries: list[str] | None = None,
        priority_only: bool = False,
        segment: list[int] | None = None,
        stamps: list[float] | None = None,
    ) -> Any:
        """One claim, journaled before it commits (see gateways.smpp.journal). ``segment``: the
        journal segment of this claim is appended to it (the priority thread claims beside the
        main one, so self._claim_segment may be the other's)."""
        journal = self.journal
        journaled: list[int] = []
        mine: list[int] = []

        def record(ids: list[int]) -> None:
            if stamps is not None:
                stamps.append(time.monotonic())
            if journal is not None:
                mine.append(journal.claimed(ids))
                self._claim_segment = mine[-1]
                journaled.extend(ids)
                if segment is not None:
                    segment.append(mine[-1])

        try:
            result = messages_claim_rows(
                gateway_id=self.gateway.pk,
                limit=limit,
                actor=self.actor,
                after_id=after_id,
                countries=countries,
                on_claim=record,
                priority_only=priority_only,
                priority_grace=self.priority_grace if self.lane == "bulk" else None,
            )
        except BaseException:
            if journal is not None and journaled:  # rolled back: nothing of it is ours
                journal.settled((pk, mine[-1]) for pk in journaled)
            raise
        self.stats.claims += 1
        return result

    def _recover(self) -> None:
        if not self.use_journal:
            return
        try:
            recovery = journals_recover()
        except (DatabaseError, OSError):
            logger.exception("recovering dead workers' journals failed; trying again later")
            if not connection.in_atomic_block:
                connection.close()
            return
        self.stats.recovered_requeued += recovery.requeued
        self.stats.recovered_unknown += recovery.unknown
        if recovery.requeued:
            self._claim_after = 0  # requeued rows sit behind the cursor

    def _watch_optouts(self) -> int:
        """Withdraw held marketing and test messages (no part handed to the link yet) to numbers that opted
        out after their claim. The claim checked opt-outs already; this closes the gap between the
        claim and the write, which the claim-ahead makes seconds long."""
        try:
            _refresh_db_connection()
            if self._optout_floor is None:
                self._optout_floor = max(0, opt_out_last_id() - OPTOUT_ID_SLACK)
            rows = opt_outs_active_after(after_id=self._optout_floor)
            fresh = [row for row in rows if row[0] not in self._optouts_seen]
            if rows:
                self._optout_floor = max(self._optout_floor, max(row[0] for row in rows) - OPTOUT_ID_SLACK)
                self._optouts_seen = {row[0] for row in rows if row[0] > self._optout_floor}
            if not fresh:
                return 0
            opted = {phone: (pk, reason, source) for pk, phone, reason, source in fresh}
            with self.lock:
                hit: dict[int, Job] = {}
                for job, _index in self.ready:
                    message = job.message
                    if (
                        not job.done
                        and not job.written
                        and message.purpose in WITHDRAWN_AFTER_CLAIM
                        and message.destination in opted
                    ):
                        job.done = True
                        hit[id(job)] = job
                if hit:
                    self.ready = deque(item for item in self.ready if not item[0].done)
            if not hit:
                return 0
            jobs = list(hit.values())
            withdrawn = messages_suppress_claimed(
                actor=self.actor,
                suppressions=[(job.message.pk, *opted[job.message.destination]) for job in jobs],
            )
        except DatabaseError:
            logger.exception("looking for new opt-outs failed; trying again")
            if connection.in_atomic_block:
                raise
            connection.close()
            return 0
        with self.lock:
            self.open_jobs -= len(jobs)
        self._settled(jobs)
        self.stats.suppressed_messages += withdrawn
        return withdrawn

    def _settled(self, jobs: list[Job]) -> None:
        if self.journal is not None and jobs:
            self.journal.settled((job.message.pk, job.segment) for job in jobs)

    def _fail_over(self, reason: str) -> int:
        """The bind is down: hand what this worker holds, and due messages, to the fallback.
        Which messages may go is gateways.failover's rule (outcomes_record applies it too)."""
        try:
            _refresh_db_connection()
            gateway = Gateway.objects.select_related("fallback").get(pk=self.gateway.pk)
            fallback = fallback_usable(gateway)
            if fallback is None:
                return 0
            with self.lock:  # the link thread is gone
                held = list({id(job): job for job, _index in self.ready if not job.done}.values())
            # A part taken here (accepted before the link went) is recorded only when the whole
            # message is: the database cannot tell, so such messages are not offered. They can
            # only be finished here: their other parts wait for the bind, never another gateway.
            offered = {job.message.pk: job for job in held if not job.written}
            fail_over = functools.partial(
                messages_fail_over, actor=self.actor, gateway=gateway, fallback=fallback, reason=reason
            )
            moved_ids = fail_over(message_ids=list(offered)) if offered else []
            movable = [offered[pk] for pk in moved_ids]
            if movable:
                moving = {id(job) for job in movable}
                with self.lock:
                    self.ready = deque(item for item in self.ready if id(item[0]) not in moving)
            else:
                segment: list[int] = []
                # A lane hands over only its own messages: the other lane's bind may well be up.
                claimed = self._claim_rows(
                    limit=self.batch_size,
                    countries=sorted(fallback.countries or []),
                    priority_only=self.lane == "priority",
                    segment=segment,
                )
                self.stats.suppressed_messages += claimed.suppressed
                jobs = {
                    message.pk: Job(message, [], segment[-1] if segment else self._claim_segment)
                    for message in claimed.messages
                }
                with self.lock:
                    self.open_jobs += len(jobs)
                moved_ids = fail_over(message_ids=list(jobs)) if jobs else []
                movable = [jobs.pop(pk) for pk in moved_ids]
                if jobs:  # claimed for the fallback, which may not take them: back to the queue
                    messages_requeue(actor=self.actor, message_ids=sorted(jobs))
                    with self.lock:
                        self.open_jobs -= len(jobs)
                    self._settled(list(jobs.values()))
            if not movable:
                return 0
        except DatabaseError:
            logger.exception("fail-over from %s failed; trying again", self.gateway.code)
            if connection.in_atomic_block:
                raise
            connection.close()
            return 0
        for job in movable:
            job.done = True
        with self.lock:
            self.open_jobs -= len(movable)
        self._settled(movable)
        self.stats.failed_over_messages += len(moved_ids)
        self._report(failing_over_to=fallback.code)
        logger.warning(
            "%d messages failed over from %s to %s (%s)", len(moved_ids), gateway.code, fallback.code, reason
        )
        return len(movable)

    # --- database -------------------------------------------------------------------------

    def flush(self, *, yielding: bool = False) -> None:
        """Write the answers, receipts and MOs read so far, in pieces of at most statement_rows
        answers (each piece with the receipts of its own parts, so they are folded into the parts'
        writes), then the other receipts and the MOs; each piece is a transaction of its own.
        ``yielding`` (the flush thread): between two pieces, wait out a yield that has begun. The
        deliver_sm of these receipts are acknowledged once the last piece is committed."""
        with self.lock:
            completed, self.completed = self.completed, []
            receipts, self.receipts = self.receipts, []
            inbound, self.inbound = self.inbound, []
            acks, self.acks_held = self.acks_held, []
        if not (completed or receipts or inbound):
            return
        pieces = self._pieces(completed, receipts, inbound)
        last = len(pieces) - 1
        written = 0
        try:
            for number, (piece_completed, piece_receipts, piece_inbound) in enumerate(pieces):
                if number and yielding:
                    self._wait_out_yield()
                self._flush_piece(piece_completed, piece_receipts, piece_inbound, acks if number == last else [])
                written += 1
        except BaseException:
            # The failed piece kept itself for the next flush; so do the pieces after it (and
            # the acknowledgements, which go with the last piece).
            later = pieces[written + 1 :]
            if later:
                self._keep_for_next_flush(
                    [job for piece in later for job in piece[0]],
                    [event for piece in later for event in piece[1]],
                    [event for piece in later for event in piece[2]],
                    acks,
                )
            raise

    def _pieces(
        self, completed: list[Job], receipts: list[ReceiptEvent], inbound: list[InboundEvent]
    ) -> list[tuple[list[Job], list[ReceiptEvent], list[InboundEvent]]]:
        """The flush in pieces: at most statement_rows answers with the receipts of their own parts,
        then the receipts of parts answered before and the MOs, statement_rows at a time."""
        size = self._piece_rows()
        if len(completed) + len(receipts) + len(inbound) <= size:
            return [(completed, receipts, inbound)]
        by_part: dict[str, list[ReceiptEvent]] = {}
        for event in receipts:
            by_part.setdefault(event.provider_message_id, []).append(event)
        pieces: list[tuple[list[Job], list[ReceiptEvent], list[InboundEvent]]] = []
        for start in range(0, len(completed), size):
            jobs = completed[start : start + size]
            own = [event for job in jobs for pid in job.provider_ids if pid for event in by_part.pop(pid, ())]
            pieces.append((jobs, own, []))
        rest = [event for events in by_part.values() for event in events]
        pieces += [([], rest[start : start + size], []) for start in range(0, len(rest), size)]
        pieces += [([], [], inbound[start : start + size]) for start in range(0, len(inbound), size)]
        return pieces

    def _piece_rows(self) -> int:
        """Rows a claim or flush statement takes now: statement_rows while codes are being sent (a
        yield asked for in the last PIECES_AFTER_YIELD seconds), else no limit (whole batches)."""
        if time.monotonic() - self._yield_asked < PIECES_AFTER_YIELD:
            return self.statement_rows
        return 1 << 62

    def _wait_out_yield(self) -> None:
        """The flush thread: hold back while a yield lasts (it ends early once the codes are out)."""
        held_back = self._yield_until - time.monotonic()
        if held_back > 0 and not self._flusher_stop:
            self._yield_over.wait(min(held_back, self.bulk_yield))

    def _flush_piece(
        self,
        completed: list[Job],
        receipts: list[ReceiptEvent],
        inbound: list[InboundEvent],
        acks: list[tuple[int, int]],
    ) -> None:
        for attempt in range(3):
            try:
                self._write(completed, receipts, inbound)
                break
            except DB_ERRORS as exc:
                with contextlib.suppress(Exception):
                    if not connection.in_atomic_block:
                        connection.close()
                if not _connection_trouble(exc):
                    # The data, not the link to the database: write what can be written and
                    # quarantine the rest, so one bad row never loses its neighbours' results.
                    self._write_salvaging(completed, receipts, inbound, acks, exc)
                    break
                # Connection lost, ...: nothing of this flush was committed; try again on a fresh
                # connection. Messages whose answer is never recorded stay 'submitting' and are
                # reconciled to 'unknown' -- never resent.
                logger.exception("flush of %d answers, %d receipts failed", len(completed), len(receipts))
                if attempt == 2:
                    self._keep_for_next_flush(completed, receipts, inbound, acks)
                    raise
                time.sleep(0.2 * (attempt + 1))
        with self.lock:
            self.open_jobs -= len(completed)
            self.acks_ready.extend(acks)  # committed (or quarantined): now the SMSC may forget them
        self._settled(completed)
        self.stats.flushes += 1

    def _keep_for_next_flush(
        self,
        completed: list[Job],
        receipts: list[ReceiptEvent],
        inbound: list[InboundEvent],
        acks: list[tuple[int, int]],
    ) -> None:
        # Kept for the next flush rather than dropped: these answers say what was accepted, and
        # the SMSC waits for the deliver_sm_resp of these receipts.
        with self.lock:
            self.completed[:0] = completed
            self.receipts[:0] = receipts
            self.inbound[:0] = inbound
            self.acks_held[:0] = acks

    def _write_salvaging(
        self,
        completed: list[Job],
        receipts: list[ReceiptEvent],
        inbound: list[InboundEvent],
        acks: list[tuple[int, int]],
        error: Exception,
    ) -> None:
        """The flush's write was refused for its data: write it again in halves (and halves of
        those) until each row that can be written is, and each that cannot is quarantined alone
        with the database's reason (gateways.delivery.quarantine). Answers go first, so a bad
        receipt never leaves its message 'submitting'."""
        logger.warning(
            "flush of %d answers, %d receipts, %d MOs refused (%s): writing what can be written",
            len(completed),
            len(receipts),
            len(inbound),
            error,
        )
        groups: list[tuple[QuarantineKind, list[Any], Any]] = [
            (QuarantineKind.ANSWER, list(completed), lambda chunk: self._write(chunk, [], [])),
            (QuarantineKind.RECEIPT, list(receipts), lambda chunk: self._write([], chunk, [])),
            (QuarantineKind.INBOUND, list(inbound), lambda chunk: self._write([], [], chunk)),
        ]
        for number, (kind, items, write) in enumerate(groups):
            stack = [items]
            while stack:
                chunk = stack.pop()
                if not chunk:
                    continue
                try:
                    with transaction.atomic():  # a savepoint inside a caller's transaction (tests)
                        write(chunk)
                except DB_ERRORS as exc:
                    if _connection_trouble(exc):
                        # The connection went mid-way: what is committed stays (writing it again
                        # would record it twice); what is not waits for the next flush.
                        left = [chunk, *stack]
                        rest: list[list[Any]] = [[], [], []]
                        rest[number] = [item for part in left for item in part]
                        for later in range(number + 1, 3):
                            rest[later] = list(groups[later][1])
                        self._keep_for_next_flush(rest[0], rest[1], rest[2], acks)
                        raise
                    if len(chunk) > 1:
                        middle = len(chunk) // 2
                        stack += [chunk[middle:], chunk[:middle]]
                        continue
                    self._quarantine(kind, chunk[0], exc)

    def _quarantine(self, kind: QuarantineKind, item: Any, error: Exception) -> None:
        if isinstance(item, Job):
            entry = QuarantineItem(
                kind,
                {
                    "provider_ids": list(item.provider_ids),
                    "failed": None if item.failed is None else [item.failed.kind, item.failed.code],
                },
                message_id=item.message.pk,
                provider_message_id=item.provider_ids[0] or "" if item.provider_ids else "",
            )
        elif isinstance(item, ReceiptEvent):
            entry = QuarantineItem(
                kind,
                {
                    "status": str(item.status),
                    "provider_status": item.provider_status,
                    "error_code": item.error_code,
                    "raw": item.raw,
                },
                provider_message_id=item.provider_message_id,
            )
        else:
            entry = QuarantineItem(kind, {"source": item.source, "destination": item.destination, "body": item.body})
        logger.error("%s quarantined: %s", kind, error)
        self.stats.quarantined += 1
        try:
            delivery_quarantine(actor=self.actor, gateway=self.gateway, items=[entry], reason=str(error))
        except DB_ERRORS:
            logger.exception("could not quarantine a %s either; it is only in this log: %r", kind, entry)

    def _flush_loop(self) -> None:
        try:
            while True:
                self.flush_due.wait(self.flush_interval)
                self.flush_due.clear()
                self._wait_out_yield()  # a priority message is being made
                stopping = self._flusher_stop  # read before the flush: the last one takes everything
                try:
                    self.flush(yielding=not stopping)
                except Exception:
                    logger.exception("flush failed; those messages stay 'submitting' for the reconciler")
                self.wake.set()  # open_jobs went down: the main thread may claim again
                if stopping:
                    return
        finally:
            connection.close()

    def _stop_flusher(self) -> None:
        flusher, self.flusher = self.flusher, None
        if flusher is not None:
            self._flusher_stop = True
            self.flush_due.set()
            flusher.join()
        else:
            self.flush()

    def _write(self, completed: list[Job], receipts: list[ReceiptEvent], inbound: list[InboundEvent]) -> None:
        _refresh_db_connection()
        if completed or receipts:
            messages: list[ClaimedMessage] = []
            outcomes: list[SendOutcome] = []
            for job in completed:
                messages.append(job.message)
                if job.failed is not None:
                    outcomes.append(job.failed)
                    self.stats.failed_messages += 1
                else:
                    outcomes.append(SendOutcome.accepted([p or "" for p in job.provider_ids]))
                    self.stats.accepted_messages += 1
            outcomes_record(
                actor=self.actor, gateway=self.gateway, messages=messages, outcomes=outcomes, receipts=receipts
            )
        if inbound:
            inbound_receive(gateway=self.gateway, events=inbound)

    def _link_unsent(self) -> None:
        """The link thread has ended: parts whose bytes never left this process go back to the
        ready queue as not written (nothing of them can have reached the SMSC). A message stays
        'maybe sent' only for parts that did leave (or were accepted)."""
        unsent, self.unsent = self.unsent, set()
        back: list[tuple[Job, int]] = []
        for seq in sorted(unsent):
            item = self.inflight.pop(seq, None)
            if item is not None and not item[0].done:
                item[0].written.discard(item[1])
                back.append(item)
        if not back:
            return
        with self.lock:
            self.ready.extendleft(reversed(back))
        if self.journal is not None:
            self.journal.unwritten(sorted({job.message.pk for job, _index in back if not job.written}))

    def _handle_link_down(self, reason: str) -> None:
        logger.warning("link to %s dropped: %s", self.gateway.code, reason)
        self.stats.reconnects += 1
        self.close()  # the link thread has ended: its state is ours now
        self.link_error = None
        self._link_unsent()
        # A part written and never answered may have reached the SMSC: its message is never
        # written again. Messages with nothing in flight go out on the next bind.
        ambiguous = {id(job): job for job, _index in self.inflight.values() if not job.done}
        self.inflight = {}
        for job in ambiguous.values():
            job.done = True
        with self.lock:
            self.ready = deque(item for item in self.ready if not item[0].done)
        if self.flusher is None:
            self.flush()
        if ambiguous:
            ids = [job.message.pk for job in ambiguous.values()]
            self.stats.unknown_messages += messages_mark_unknown(
                actor=self.actor, message_ids=ids, reason=f"link dropped: {reason}"[:300]
            )
            with self.lock:
                self.open_jobs -= len(ids)
            self._settled(list(ambiguous.values()))

    def _shutdown(self) -> None:
        """Stop taking new messages, finish those already started, record everything, unbind."""
        self._stop_prioritizer()  # no claim lands after this
        with self.lock:
            unstarted = [item for item in self.ready if not item[0].written and not item[0].done]
            self.ready = deque(item for item in self.ready if item[0].written and not item[0].done)
        deadline = time.monotonic() + self.drain_timeout
        while self.link is not None and self.link_error is None and time.monotonic() < deadline:
            if not self.inflight and not self.ready:
                break
            self.wake.wait(0.02)
            self.wake.clear()
        self._sending = False
        self.close()  # unbind: nothing more comes in
        self._link_unsent()  # parts whose bytes never left: not written after all
        with self.lock:
            unstarted += [item for item in self.ready if not item[0].written and not item[0].done]
            self.ready = deque(item for item in self.ready if item[0].written and not item[0].done)
        self._stop_flusher()  # the last flush takes every answer and receipt read
        never_written = sorted({job.message.pk for job, _index in unstarted})
        partly = {id(job): job for job, _index in self.inflight.values() if not job.done}
        partly.update({id(job): job for job, _index in self.ready if not job.done})
        self.inflight = {}
        with self.lock:
            self.ready = deque()
        journal, self.journal = self.journal, None
        clean = False
        try:
            if never_written:
                messages_requeue(actor=self.actor, message_ids=never_written)
                self.stats.requeued_messages += len(never_written)
            if partly:
                ids = [job.message.pk for job in partly.values()]
                self.stats.unknown_messages += messages_mark_unknown(
                    actor=self.actor, message_ids=ids, reason="worker stopped mid-message"
                )
            clean = True
        finally:
            # Everything claimed is settled: the journal goes. Otherwise it stays for recovery.
            if journal is not None:
                journal.close(clean=clean)
        self.open_jobs = 0


def _connection_trouble(exc: BaseException) -> bool:
    """The database connection failed (retry on a fresh one), as opposed to the data written."""
    return isinstance(exc, OperationalError | InterfaceError | psycopg.OperationalError | psycopg.InterfaceError)


def _refresh_db_connection() -> None:
    # A long-running process must drop connections the server closed or that outlived
    # CONN_MAX_AGE; never inside an open transaction (as in tests).
    if not connection.in_atomic_block:
        close_old_connections()


def _describe(status: int) -> str:
    return str(smpplib.consts.DESCRIPTIONS.get(status, f"SMPP status {status:#04x}"))


def receipt_from(pdu: wire.Deliver) -> ReceiptEvent | None:
    """A deliver_sm receipt: the TLVs (receipted_message_id, message_state) or the text form."""
    # Receipt text (SMPP 3.4 Appendix B) is ASCII whatever the data_coding says -- except its
    # 'text:' field, which real SMSCs fill with the message's first octets in its own coding
    # (NUL bytes included): parsed as latin-1, stored with everything unprintable escaped.
    text = pdu.short_message.decode("latin-1")
    provider_id = pdu.receipted_message_id
    stat = TLV_STATES.get(pdu.message_state)
    err = ""
    if not provider_id or stat is None or pdu.message_state != TLV_DELIVERED:
        # Not a plain 'delivered' by TLV: the text form carries the id, the state or the error.
        match = RECEIPT_TEXT.search(text)
        if match:
            provider_id = provider_id or match.group("id")
            stat = stat or match.group("stat")
            err = match.group("err") or ""
    if not provider_id or not stat:
        logger.warning("unparseable receipt: %r", text[:200])
        return None
    return ReceiptEvent(
        provider_message_id=receipt_text_safe(provider_id.strip("\x00")),
        status=RECEIPT_STATES.get(stat, MessageState.SUBMITTED),
        provider_status=stat,
        error_code="" if err in ("", "000") else err,
        raw={"text": receipt_bytes_text(pdu.short_message[:300])},
    )


__all__ = ["BindWorker", "WorkerStats", "receipt_from"]
