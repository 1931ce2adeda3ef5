"""The SMSC simulator: an SMPP 3.4 server on asyncio, one process, for our tests and benchmarks.

What it does (see ``SmscConfig`` for every knob):

* binds (transmitter / receiver / transceiver) checked against ``credentials``
  (wrong -> ESME_RBINDFAIL), enquire_link, unbind, generic_nack for unknown commands;
* submit_sm with a window: each is answered at once with a unique ``message_id``; the receipt
  (deliver_sm, esm_class 0x04, Appendix B text plus the ``receipted_message_id`` and
  ``message_state`` TLVs) follows after ``receipt_delay`` (or, for a share of them, *before* the
  submit_sm_resp: ``receipt_before_resp_ratio``); concatenation from the UDH (IEI 0x00 / 0x08) or
  the SAR TLVs is recorded;
* deterministic faults by destination prefix (``faults``, defaults in ``DEFAULT_FAULTS``) and a
  global ``max_rate_per_second``;
* mobile-originated messages with ``SmscServer.inject_mo`` (GSM or UCS-2, split with a UDH when
  long), each waiting for its deliver_sm_resp;
* receipts and MOs go to a receiver bind (RX/TRX) of the submitting system_id -- the same
  connection when it can take them; they are held until one binds, and a deliver_sm not
  acknowledged when its connection ends is delivered again (at least once, like real SMSCs);
* every submit_sm (accepted, refused or dropped) is a record: in memory, and in a JSON-lines log
  written in batches (``log_flush_interval``) and on stop.

Runners: ``SmscThread`` (its own event loop in a thread: the test fixture) and ``SmscProcess``
(``python -m tests.support.smsc`` in a subprocess, driven over stdin: benchmarks). No Django here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import heapq
import itertools
import json
import logging
import os
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from gateways.smpp import constants as C
from tests.support.smsc import pdu as P

logger = logging.getLogger("tests.support.smsc")

T = TypeVar("T")

# Fault kinds, chosen by destination prefix (E.164 without '+').
FAULT_INVALID_DESTINATION = "invalid_destination"  # submit_sm_resp ESME_RINVDSTADR
FAULT_THROTTLE = "throttle"  # ESME_RTHROTTLED for the first `throttle_first_n` submits per destination
FAULT_UNDELIVERABLE = "undeliverable"  # accepted; receipt stat:UNDELIV err:001
FAULT_NO_RECEIPT = "no_receipt"  # accepted; no receipt ever
FAULT_DROP = "drop"  # the connection is closed right after reading the submit_sm, unanswered
FAULT_SYSTEM_ERROR = "system_error"  # ESME_RSYSERR (temporary) for the first `throttle_first_n` submits
FAULT_THROTTLE_FOREVER = "throttle_forever"  # ESME_RTHROTTLED on every submit, however often it comes
FAULT_KINDS = (
    FAULT_INVALID_DESTINATION,
    FAULT_THROTTLE,
    FAULT_UNDELIVERABLE,
    FAULT_NO_RECEIPT,
    FAULT_DROP,
    FAULT_SYSTEM_ERROR,
    FAULT_THROTTLE_FOREVER,
)

DEFAULT_FAULTS: dict[str, str] = {
    "85290000": FAULT_INVALID_DESTINATION,
    "85290001": FAULT_THROTTLE,
    "85290002": FAULT_UNDELIVERABLE,
    "85290003": FAULT_NO_RECEIPT,
    "85290004": FAULT_DROP,
    "85290005": FAULT_SYSTEM_ERROR,
    "85290006": FAULT_THROTTLE_FOREVER,
    # The same faults on valid Hong Kong mobile numbers (+852 5900 xxxx), which pass the
    # platform's phone validation; the simulator gateway uses the same prefixes.
    "85259000": FAULT_INVALID_DESTINATION,
    "85259001": FAULT_THROTTLE,
    "85259002": FAULT_UNDELIVERABLE,
    "85259003": FAULT_NO_RECEIPT,
    "85259004": FAULT_DROP,
    "85259005": FAULT_SYSTEM_ERROR,
    "85259006": FAULT_THROTTLE_FOREVER,
}

OUTCOME_ACCEPTED = "accepted"
OUTCOME_REFUSED = "refused"
OUTCOME_DROPPED = "dropped"


@dataclass
class SmscConfig:
    host: str = "127.0.0.1"
    port: int = 2775  # 0: any free port (read it back from SmscServer.port)
    # system_id -> password; empty: any system_id/password binds.
    credentials: dict[str, str] = field(default_factory=lambda: {"smppclient1": "password"})
    smsc_system_id: str = "SMSCSIM"  # the system_id in bind responses
    # Seconds between submit_sm_resp and the receipt: uniform in [min, max].
    receipt_delay: tuple[float, float] = (0.0, 0.05)
    # Share (0..1) of receipts written just before their submit_sm_resp (transceiver binds only).
    receipt_before_resp_ratio: float = 0.0
    faults: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FAULTS))
    throttle_first_n: int = 2
    max_rate_per_second: float | None = None  # global submit_sm rate; above it: ESME_RTHROTTLED
    message_id_format: str = "hex"  # "hex" or "decimal"
    log_path: str | None = None  # JSON lines, appended
    log_flush_interval: float = 0.2
    # Records written per turn of the event loop by the periodic log flush: a large batch is
    # written a slice at a time, so the binds are read between slices (as a real SMSC's logging
    # never holds up its binds).
    log_flush_chunk: int = 256
    # PDUs one bind's read handles per turn of the event loop before the other binds are read:
    # a real SMSC serves its binds concurrently, so one bind's full window never holds up another's
    # submit_sm behind it.
    pdus_per_turn: int = 64
    keep_records: int = 50_000  # records kept in memory, oldest dropped first (the log file has them all)
    redeliver_unacked: bool = True  # deliver_sm unacknowledged when its connection ends go out again
    seed: int | None = None  # receipt delays and receipt-before-resp picks
    write_buffer_high: int = 4 * 1024 * 1024  # stop reading a client that does not read its receipts
    # The receipt text's ``text:`` field. "raw", as real SMSCs do: the first 20 octets of the
    # short_message as submitted, in its own data coding and UDH included (so UCS-2 Latin text,
    # every multi-part message and a GSM '@' put NUL bytes in it). "safe": printable ASCII only.
    receipt_text: str = "raw"
    # Receipts of a concatenated message's parts in reverse order (the last part's first), each
    # part this many seconds after the next one: real SMSCs deliver parts' receipts in any order.
    receipt_parts_reversed: float = 0.0

    def __post_init__(self) -> None:
        low, high = (float(x) for x in self.receipt_delay)
        if low < 0 or high < low:
            raise ValueError(f"receipt_delay must be 0 <= min <= max, got {self.receipt_delay!r}")
        self.receipt_delay = (low, high)
        for prefix, kind in self.faults.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r} for prefix {prefix!r}; known: {', '.join(FAULT_KINDS)}")
        if self.message_id_format not in ("hex", "decimal"):
            raise ValueError("message_id_format is 'hex' or 'decimal'")
        if not 0.0 <= self.receipt_before_resp_ratio <= 1.0:
            raise ValueError("receipt_before_resp_ratio is between 0 and 1")
        if self.receipt_text not in ("raw", "safe"):
            raise ValueError("receipt_text is 'raw' or 'safe'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmscConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SmscConfig fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "receipt_delay" in values:
            values["receipt_delay"] = tuple(values["receipt_delay"])
        return cls(**values)


# --- deliveries (server -> client deliver_sm) --------------------------------------------------------


class MoWaiter:
    """The deliver_sm_resp statuses of an injected MO's parts; ``future`` resolves when all are in."""

    def __init__(self, parts: int, future: asyncio.Future[list[int]]) -> None:
        self.statuses: list[int | None] = [None] * parts
        self.pending = parts
        self.future = future

    def done_part(self, index: int, status: int) -> None:
        if self.statuses[index] is None:
            self.pending -= 1
        self.statuses[index] = status
        if not self.pending and not self.future.done():
            self.future.set_result([int(s or 0) for s in self.statuses])


@dataclass(slots=True)
class Delivery:
    kind: str  # "receipt" or "mo"
    system_id: str  # the receiver's system_id; "" = any receiver bind
    body: bytes
    message_id: str = ""
    waiter: MoWaiter | None = None
    part: int = 0
    attempts: int = 0


@dataclass(slots=True)
class ReceiptJob:
    system_id: str
    session: Session | None
    message_id: str
    source: str
    source_ton: int
    source_npi: int
    destination: str
    dest_ton: int
    dest_npi: int
    stat: str
    err: int
    submit_time: float
    text: str
    raw: bytes = b""  # the short_message as submitted (UDH included)


_date_cache: dict[int, str] = {}


def smpp_date(epoch: float) -> str:
    """YYMMDDhhmm in UTC (cached per minute: one strftime a minute on the hot path)."""
    minute = int(epoch // 60)
    value = _date_cache.get(minute)
    if value is None:
        if len(_date_cache) > 1024:
            _date_cache.clear()
        value = _date_cache[minute] = time.strftime("%y%m%d%H%M", time.gmtime(minute * 60))
    return value


# --- one client connection ----------------------------------------------------------------------------

BIND_KINDS = {C.BIND_TRANSMITTER: "tx", C.BIND_RECEIVER: "rx", C.BIND_TRANSCEIVER: "trx"}
UNSUPPORTED_REQUESTS = {C.QUERY_SM, C.REPLACE_SM, C.CANCEL_SM, C.SUBMIT_MULTI, C.DATA_SM}


class Session(asyncio.Protocol):
    _ids = itertools.count(1)

    def __init__(self, server: SmscServer) -> None:
        self.server = server
        self.id = next(self._ids)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.bound: str | None = None  # "tx" | "rx" | "trx"
        self.system_id = ""
        self.closed = False
        self.outstanding: dict[int, Delivery] = {}
        self._sequence = 0
        self._write_paused = False  # the client does not read what we write (receipts pile up)
        self._turn_paused = False  # this bind had its turn; the rest of its buffer waits for the next
        self.handlers: dict[int, Callable[[int, int, bytes], bool]] = {
            C.SUBMIT_SM: self.on_submit_sm,
            C.DELIVER_SM_RESP: self.on_deliver_sm_resp,
            C.ENQUIRE_LINK: self.on_enquire_link,
            C.ENQUIRE_LINK_RESP: self.on_ignore,
            C.BIND_TRANSMITTER: functools.partial(self.on_bind, C.BIND_TRANSMITTER),
            C.BIND_RECEIVER: functools.partial(self.on_bind, C.BIND_RECEIVER),
            C.BIND_TRANSCEIVER: functools.partial(self.on_bind, C.BIND_TRANSCEIVER),
            C.UNBIND: self.on_unbind,
            C.UNBIND_RESP: self.on_unbind_resp,
            C.GENERIC_NACK: self.on_generic_nack,
        }

    # -- state

    @property
    def can_transmit(self) -> bool:
        return self.bound in ("tx", "trx")

    @property
    def can_receive(self) -> bool:
        return self.bound in ("rx", "trx") and not self.closed

    def next_sequence(self) -> int:
        self._sequence = self._sequence + 1 if self._sequence < 0x7FFFFFFF else 1
        return self._sequence

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        transport.set_write_buffer_limits(high=self.server.config.write_buffer_high)
        self.server.session_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.session_closed(self)

    def pause_writing(self) -> None:
        # The client is not reading (receipts pile up): stop reading its submits until it does.
        self._write_paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self.closed and not self._turn_paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        if not self._turn_paused:
            self._take_turn()

    def _next_turn(self) -> None:
        self._turn_paused = False
        if self.closed:
            return
        self._take_turn()
        if not self._turn_paused and not self._write_paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _take_turn(self) -> None:
        """Handle at most ``pdus_per_turn`` complete PDUs from the buffer; with more waiting, stop
        reading this bind and come back after the loop has read the others."""
        buffer = self.buffer
        size = len(buffer)
        pos = 0
        unpack = C.HEADER.unpack_from
        handlers = self.handlers
        budget = self.server.config.pdus_per_turn
        try:
            while size - pos >= C.HEADER_SIZE:
                if budget <= 0:
                    length = unpack(buffer, pos)[0]
                    if size - pos >= length:  # another complete PDU: it waits for this bind's next turn
                        self._turn_paused = True
                        if self.transport is not None:
                            self.transport.pause_reading()
                        self.server.loop.call_soon(self._next_turn)
                    break
                budget -= 1
                length, command_id, status, sequence = unpack(buffer, pos)
                if length < C.HEADER_SIZE or length > C.MAX_PDU_LENGTH:
                    self.server.count("framing_errors")
                    self.out.append(P.generic_nack(C.ESME_RINVCMDLEN, sequence))
                    self.close()
                    return
                if size - pos < length:
                    break
                body = bytes(buffer[pos + C.HEADER_SIZE : pos + length])
                pos += length
                handler = handlers.get(command_id)
                if handler is None:
                    self.on_other(command_id, sequence)
                elif not handler(sequence, status, body):
                    return  # the connection was dropped: what follows was never read
            del buffer[:pos]
        finally:
            self.flush()

    # -- output

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        """Flush what was answered, then close (FIN); later input is never read."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def queue_delivery(self, delivery: Delivery) -> None:
        sequence = self.next_sequence()
        delivery.attempts += 1
        self.outstanding[sequence] = delivery
        self.out.append(P.encode(C.DELIVER_SM, C.ESME_ROK, sequence, delivery.body))
        self.server.count("receipts_sent" if delivery.kind == "receipt" else "mo_sent")

    # -- handlers: each returns False when the connection is gone

    def on_ignore(self, sequence: int, status: int, body: bytes) -> bool:
        return True

    def on_enquire_link(self, sequence: int, status: int, body: bytes) -> bool:
        self.server.count("enquire_links")
        self.out.append(P.encode(C.ENQUIRE_LINK_RESP, C.ESME_ROK, sequence))
        return True

    def on_generic_nack(self, sequence: int, status: int, body: bytes) -> bool:
        self.server.count("generic_nacks_received")
        delivery = self.outstanding.pop(sequence, None)
        if delivery is not None:
            self.server.delivery_answered(delivery, status or C.ESME_RSYSERR)
        return True

    def on_other(self, command_id: int, sequence: int) -> None:
        if command_id & C.RESP_BIT:
            self.server.count("unexpected_responses")
            return
        if command_id in UNSUPPORTED_REQUESTS:
            self.server.count("unsupported_requests")
            self.out.append(P.encode(command_id | C.RESP_BIT, C.ESME_RINVCMDID, sequence))
            return
        self.server.count("generic_nacks_sent")
        self.out.append(P.generic_nack(C.ESME_RINVCMDID, sequence))

    def on_bind(self, command_id: int, sequence: int, status: int, body: bytes) -> bool:
        server = self.server
        if self.bound is not None:
            self.out.append(P.bind_resp(command_id, C.ESME_RALYBND, sequence, server.config.smsc_system_id))
            return True
        try:
            bind = P.parse_bind(body)
        except P.PduError:
            server.count("bind_failures")
            self.out.append(P.bind_resp(command_id, C.ESME_RINVCMDLEN, sequence, server.config.smsc_system_id))
            return True
        if not server.credentials_ok(bind.system_id, bind.password):
            server.count("bind_failures")
            logger.info("bind refused for system_id %r from %s", bind.system_id, self.peer)
            self.out.append(P.bind_resp(command_id, C.ESME_RBINDFAIL, sequence, server.config.smsc_system_id))
            return True
        self.bound, self.system_id = BIND_KINDS[command_id], bind.system_id
        server.count("binds")
        self.out.append(P.bind_resp(command_id, C.ESME_ROK, sequence, server.config.smsc_system_id))
        server.session_bound(self)
        return True

    def on_unbind(self, sequence: int, status: int, body: bytes) -> bool:
        self.server.count("unbinds")
        self.out.append(P.encode(C.UNBIND_RESP, C.ESME_ROK, sequence))
        self.server.session_unbound(self)
        self.bound = None
        self.close()
        return False

    def on_unbind_resp(self, sequence: int, status: int, body: bytes) -> bool:
        self.close()
        return False

    def on_deliver_sm_resp(self, sequence: int, status: int, body: bytes) -> bool:
        delivery = self.outstanding.pop(sequence, None)
        if delivery is None:
            self.server.count("unexpected_responses")
        else:
            self.server.delivery_answered(delivery, status)
        return True

    def on_submit_sm(self, sequence: int, status: int, body: bytes) -> bool:
        return self.server.handle_submit(self, sequence, body)


# --- the server -------------------------------------------------------------------------------------


class SmscServer:
    def __init__(self, config: SmscConfig | None = None) -> None:
        self.config = config or SmscConfig()
        self.run_id = uuid.uuid4().hex[:12]
        self.host = self.config.host
        self.port = self.config.port
        self.counters: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.records: deque[dict[str, Any]] = deque(maxlen=max(1, self.config.keep_records))
        self.sessions: set[Session] = set()
        self.receivers: dict[str, list[Session]] = {}
        self.held: dict[str, deque[Delivery]] = {}
        self.throttle_counts: Counter[str] = Counter()
        self.rng = random.Random(self.config.seed)
        self._faults = sorted(self.config.faults.items(), key=lambda item: -len(item[0]))
        self._fault_first = frozenset(prefix[:1] for prefix, _ in self._faults)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log_file: IO[str] | None = None
        self._log_pending: list[dict[str, Any]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._receipts: list[tuple[float, int, ReceiptJob]] = []
        self._receipt_seq = itertools.count()
        self._receipt_handle: asyncio.TimerHandle | None = None
        self._receipt_due = 0.0
        self._next_message_id = (int(time.time() * 1000) << 12) | self.rng.randrange(1 << 12)
        self._mo_reference = itertools.count(self.rng.randrange(256))
        rate = self.config.max_rate_per_second
        self._tokens = float(rate) if rate else 0.0
        self._token_time = 0.0
        self._receiver_turn = itertools.count()
        self._stopped = False

    # -- lifecycle

    async def start(self) -> SmscServer:
        self._loop = asyncio.get_running_loop()
        self._token_time = self._loop.time()
        if self.config.log_path:
            path = Path(self.config.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = path.open("a", encoding="utf-8")
        self._server = await self._loop.create_server(self._new_session, self.config.host, self.config.port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], int(sockname[1])
        self._flush_handle = self._loop.call_later(self.config.log_flush_interval, self._flush_tick)
        logger.info("SMSC simulator listening on %s:%s (run %s)", self.host, self.port, self.run_id)
        return self

    def _new_session(self) -> Session:
        return Session(self)

    async def stop(self) -> None:
        """Close the listener and every connection (an unbind is sent to bound ones), flush the log."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            if session.bound is not None and not session.closed:
                session.out.append(P.encode(C.UNBIND, C.ESME_ROK, session.next_sequence()))
            session.close()
        for handle in (self._flush_handle, self._receipt_handle):
            if handle is not None:
                handle.cancel()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        await asyncio.sleep(0)  # let the transports run their close callbacks
        self.flush_log()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        logger.info("SMSC simulator stopped: %s", dict(self.counters))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the server is not started"
        return self._loop

    # -- sessions

    def session_opened(self, session: Session) -> None:
        self.sessions.add(session)
        self.count("connections")

    def session_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self.session_unbound(session)
        # Receipts and MOs it never acknowledged: deliver them again (at least once).
        outstanding, session.outstanding = session.outstanding, {}
        if outstanding and self.config.redeliver_unacked and not self._stopped:
            touched: set[Session] = set()
            for delivery in outstanding.values():
                self.count("redelivered")
                self._dispatch(delivery, None, touched)
            for other in touched:
                other.flush()

    def session_bound(self, session: Session) -> None:
        if not session.can_receive:
            return
        self.receivers.setdefault(session.system_id, []).append(session)
        for key in (session.system_id, ""):
            held = self.held.pop(key, None)
            while held:
                session.queue_delivery(held.popleft())

    def session_unbound(self, session: Session) -> None:
        group = self.receivers.get(session.system_id)
        if group and session in group:
            group.remove(session)
            if not group:
                del self.receivers[session.system_id]

    def credentials_ok(self, system_id: str, password: str) -> bool:
        credentials = self.config.credentials
        if not credentials:
            return True
        expected = credentials.get(system_id)
        return expected is not None and expected == password

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    # -- submit_sm

    def fault_for(self, destination: str) -> str | None:
        if destination[:1] not in self._fault_first:
            return None
        for prefix, kind in self._faults:
            if destination.startswith(prefix):
                return kind
        return None

    def _rate_ok(self) -> bool:
        rate = self.config.max_rate_per_second
        if not rate:
            return True
        now = self.loop.time()
        self._tokens = min(float(rate), self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def next_message_id(self) -> str:
        self._next_message_id += 1
        if self.config.message_id_format == "hex":
            return f"{self._next_message_id:x}"
        return str(self._next_message_id)

    def handle_submit(self, session: Session, sequence: int, body: bytes) -> bool:
        counters = self.counters
        counters["submits"] += 1
        if not session.can_transmit:
            counters["refused"] += 1
            self.by_status["ESME_RINVBNDSTS"] += 1
            session.out.append(P.submit_sm_resp(C.ESME_RINVBNDSTS, sequence, ""))
            return True
        try:
            sm = P.parse_submit_sm(body)
        except P.PduError as exc:
            logger.warning("malformed submit_sm from %s: %s", session.peer, exc)
            counters["refused"] += 1
            counters["malformed"] += 1
            self.by_status["ESME_RINVCMDLEN"] += 1
            session.out.append(P.submit_sm_resp(C.ESME_RINVCMDLEN, sequence, ""))
            return True
        now = time.time()
        destination = sm.destination[1:] if sm.destination.startswith("+") else sm.destination
        fault = self.fault_for(destination)

        concat = None
        user_data = sm.short_message
        if sm.esm_class & C.ESM_CLASS_UDHI:
            concat, user_data = P.split_udh(user_data)
        elif sm.tlvs:
            concat = P.sar_concat(sm.tlvs)
        text = P.decode_text(user_data, sm.data_coding)

        stat: str | None = None
        err = 0
        message_id: str | None = None
        if fault == FAULT_DROP:
            status: int | None = None
            outcome = OUTCOME_DROPPED
        else:
            status = C.ESME_ROK
            if not self._rate_ok():
                status = C.ESME_RTHROTTLED
            elif fault == FAULT_INVALID_DESTINATION:
                status = C.ESME_RINVDSTADR
            elif fault == FAULT_THROTTLE_FOREVER or (
                fault == FAULT_THROTTLE and self.throttle_counts[destination] < self.config.throttle_first_n
            ):
                self.throttle_counts[destination] += 1
                status = C.ESME_RTHROTTLED
            elif fault == FAULT_SYSTEM_ERROR and self.throttle_counts[destination] < self.config.throttle_first_n:
                self.throttle_counts[destination] += 1
                status = C.ESME_RSYSERR
            if status == C.ESME_ROK:
                outcome = OUTCOME_ACCEPTED
                message_id = self.next_message_id()
                if fault == FAULT_UNDELIVERABLE:
                    stat, err = "UNDELIV", 1
                elif fault != FAULT_NO_RECEIPT:
                    stat = "DELIVRD"
            else:
                outcome = OUTCOME_REFUSED

        wants = sm.registered_delivery & 0x03
        receipt = stat if stat is not None and (wants == 1 or (wants == 2 and stat != "DELIVRD")) else None
        status_label = C.status_name(status) if status is not None else None
        record = {
            "kind": "submit_sm",
            "time": round(now, 3),
            "run": self.run_id,
            "session": session.id,
            "system_id": session.system_id,
            "sequence": sequence,
            "message_id": message_id,
            "source": sm.source,
            "source_ton": sm.source_ton,
            "destination": destination,
            "data_coding": sm.data_coding,
            "esm_class": sm.esm_class,
            "registered_delivery": sm.registered_delivery,
            "concat_ref": concat.reference if concat else None,
            "concat_part": concat.part if concat else None,
            "concat_total": concat.total if concat else None,
            "concat_via": concat.via if concat else None,
            "short_message_hex": sm.short_message.hex(),
            "text": text,
            "status": status,
            "status_name": status_label,
            "outcome": outcome,
            "fault": fault,
            "receipt": receipt,
        }
        self.records.append(record)
        self._log_pending.append(record)
        counters[outcome] += 1
        if status_label is not None:
            self.by_status[status_label] += 1

        if status is None:  # link drop: answered nothing, read nothing more
            logger.info("dropping %s after submit_sm to %s", session.peer, destination)
            session.close()
            return False

        assert message_id is not None or status != C.ESME_ROK
        if receipt is not None and message_id is not None:
            counters["receipts_scheduled"] += 1
            job = ReceiptJob(
                session.system_id,
                session,
                message_id,
                sm.source,
                sm.source_ton,
                sm.source_npi,
                sm.destination,
                sm.dest_ton,
                sm.dest_npi,
                receipt,
                err,
                now,
                text,
                sm.short_message,
            )
            ratio = self.config.receipt_before_resp_ratio
            if ratio and session.can_receive and (ratio >= 1.0 or self.rng.random() < ratio):
                counters["receipts_before_resp"] += 1
                session.queue_delivery(self._receipt_delivery(job))
                session.out.append(P.submit_sm_resp(status, sequence, message_id))
                return True
            session.out.append(P.submit_sm_resp(status, sequence, message_id))
            low, high = self.config.receipt_delay
            delay = low if high <= low else self.rng.uniform(low, high)
            if concat is not None and self.config.receipt_parts_reversed:
                delay += (concat.total - concat.part) * self.config.receipt_parts_reversed
            if delay <= 0:
                self._dispatch(self._receipt_delivery(job), session, None)
            else:
                self._schedule_receipt(job, delay)
            return True
        session.out.append(P.submit_sm_resp(status, sequence, message_id or ""))
        return True

    # -- receipts

    def _receipt_delivery(self, job: ReceiptJob) -> Delivery:
        now = time.time()
        delivered = job.stat == "DELIVRD"
        raw = self.config.receipt_text == "raw"
        text = P.receipt_text(
            job.message_id,
            job.stat,
            job.err,
            smpp_date(job.submit_time),
            smpp_date(now),
            "" if raw else P.receipt_safe(job.text),
            delivered,
        )
        short_message = text.encode("ascii", "replace")
        if raw:  # the message's own first octets, whatever they are (NUL included)
            short_message += job.raw[:20]
        body = P.deliver_sm_body(
            source=job.destination,
            destination=job.source,
            short_message=short_message,
            esm_class=C.ESM_CLASS_RECEIPT,
            data_coding=C.DATA_CODING_DEFAULT,
            source_ton=job.dest_ton,
            source_npi=job.dest_npi,
            dest_ton=job.source_ton,
            dest_npi=job.source_npi,
            tlvs=P.receipt_tlvs(job.message_id, job.stat, job.err),
        )
        return Delivery("receipt", job.system_id, body, message_id=job.message_id)

    def _schedule_receipt(self, job: ReceiptJob, delay: float) -> None:
        due = self.loop.time() + delay
        heapq.heappush(self._receipts, (due, next(self._receipt_seq), job))
        if self._receipt_handle is None or due < self._receipt_due:
            self._arm_receipts(due)

    def _arm_receipts(self, due: float) -> None:
        if self._receipt_handle is not None:
            self._receipt_handle.cancel()
        self._receipt_due = due
        self._receipt_handle = self.loop.call_at(due, self._receipt_tick)

    def _receipt_tick(self) -> None:
        self._receipt_handle = None
        if self._stopped:
            return
        horizon = self.loop.time() + 0.001  # one write for everything due within a millisecond
        heap = self._receipts
        touched: set[Session] = set()
        while heap and heap[0][0] <= horizon:
            _, _, job = heapq.heappop(heap)
            self._dispatch(self._receipt_delivery(job), job.session, touched)
        for session in touched:
            session.flush()
        if heap:
            self._arm_receipts(heap[0][0])

    def _pick_receiver(self, system_id: str, preferred: Session | None) -> Session | None:
        if preferred is not None and preferred.can_receive:
            return preferred
        if system_id:
            group = self.receivers.get(system_id)
        else:
            group = [s for sessions in self.receivers.values() for s in sessions]
        if not group:
            return None
        live = [s for s in group if s.can_receive]
        if not live:
            return None
        return live[next(self._receiver_turn) % len(live)]

    def _dispatch(self, delivery: Delivery, preferred: Session | None, touched: set[Session] | None) -> None:
        """Queue a deliver_sm on a receiver bind, or hold it until one binds. With ``touched`` None
        the session is flushed by its caller (the submit path) -- or here, for a held-then-found one."""
        session = self._pick_receiver(delivery.system_id, preferred)
        if session is None:
            self.count("held")
            self.held.setdefault(delivery.system_id, deque()).append(delivery)
            return
        session.queue_delivery(delivery)
        if touched is not None:
            touched.add(session)
        elif session is not preferred:
            session.flush()

    def delivery_answered(self, delivery: Delivery, status: int) -> None:
        ok = status == C.ESME_ROK
        if delivery.kind == "receipt":
            self.count("receipts_acked" if ok else "receipts_refused")
        else:
            self.count("mo_acked" if ok else "mo_refused")
        if delivery.waiter is not None:
            delivery.waiter.done_part(delivery.part, status)

    # -- mobile-originated

    def inject_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        data_coding: int | None = None,
        system_id: str = "",
    ) -> asyncio.Future[list[int]]:
        """Send an MO (e.g. a "STOP" reply from ``source``, a handset, to ``destination``, our number or
        short code) as deliver_sm, esm_class 0: GSM (data_coding 0) when the text fits, else UCS-2 (8);
        a long text goes in parts with a concatenation UDH. To a receiver bind of ``system_id`` (any
        when empty); held until one binds. Call in the server's loop. The future resolves to the
        deliver_sm_resp status of each part."""
        source = source.lstrip("+")
        coding, esm_class, parts = P.encode_mo_parts(text, data_coding, next(self._mo_reference))
        future: asyncio.Future[list[int]] = self.loop.create_future()
        waiter = MoWaiter(len(parts), future)
        source_ton, source_npi = (1, 1) if source.isdigit() else (5, 0)
        dest_ton, dest_npi = (1, 1) if destination.isdigit() and len(destination) > 6 else (0, 1)
        if not destination.isdigit():
            dest_ton, dest_npi = 5, 0
        touched: set[Session] = set()
        for index, short_message in enumerate(parts):
            body = P.deliver_sm_body(
                source=source,
                destination=destination,
                short_message=short_message,
                esm_class=esm_class,
                data_coding=coding,
                source_ton=source_ton,
                source_npi=source_npi,
                dest_ton=dest_ton,
                dest_npi=dest_npi,
            )
            self.count("mo_injected")
            self._dispatch(Delivery("mo", system_id, body, waiter=waiter, part=index), None, touched)
        for session in touched:
            session.flush()
        return future

    # -- log

    def _flush_tick(self) -> None:
        """The periodic flush: a slice of ``log_flush_chunk`` records per turn of the loop, the
        next slice after the binds have been read, until what was pending is written."""
        chunk = self.config.log_flush_chunk
        pending = self._log_pending
        if len(pending) > chunk:
            self._write_log(pending[:chunk])
            del pending[:chunk]
            if not self._stopped:
                self._flush_handle = self.loop.call_soon(self._flush_tick)
            return
        self.flush_log()
        if not self._stopped:
            self._flush_handle = self.loop.call_later(self.config.log_flush_interval, self._flush_tick)

    def flush_log(self) -> int:
        """Write the records not yet in the log file; returns how many."""
        pending, self._log_pending = self._log_pending, []
        self._write_log(pending)
        return len(pending)

    def _write_log(self, pending: list[dict[str, Any]]) -> None:
        if self._log_file is not None and pending:
            dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
            self._log_file.write("".join(dumps(record) + "\n" for record in pending))
            self._log_file.flush()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.counters)
        data["by_status"] = dict(self.by_status)
        data["sessions"] = len(self.sessions)
        data["bound_receivers"] = sum(len(group) for group in self.receivers.values())
        data["held_now"] = sum(len(q) for q in self.held.values())
        data["receipts_pending"] = len(self._receipts)
        data["outstanding_deliver_sm"] = sum(len(s.outstanding) for s in self.sessions)
        data["run"] = self.run_id
        return data


# --- helpers for tests ----------------------------------------------------------------------------


def read_log(path: str | os.PathLike[str], run_id: str | None = None) -> list[dict[str, Any]]:
    """The submit_sm records of a JSON-lines log (of one run when ``run_id`` is given)."""
    records = []
    file = Path(path)
    if not file.exists():
        return []
    with file.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("kind") == "submit_sm" and (run_id is None or record.get("run") == run_id):
                records.append(record)
    return records


def find_duplicates(
    records: Iterable[dict[str, Any]],
    key: Callable[[dict[str, Any]], Any] = lambda r: (r["source"], r["destination"], r["short_message_hex"]),
) -> dict[Any, list[dict[str, Any]]]:
    """Accepted submits sharing ``key`` (same sender, destination and bytes, UDH included): a message
    submitted twice. Returns key -> the records, only for keys seen more than once."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("outcome") == OUTCOME_ACCEPTED:
            groups.setdefault(key(record), []).append(record)
    return {k: v for k, v in groups.items() if len(v) > 1}


# --- runners ------------------------------------------------------------------------------------------


class SmscThread:
    """The simulator on its own event loop in a daemon thread; every method is thread-safe."""

    def __init__(self, config: SmscConfig | None = None, **overrides: Any) -> None:
        base = config or SmscConfig(port=0)
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.server = SmscServer(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def system_id(self) -> str:
        return next(iter(self.config.credentials), "")

    @property
    def password(self) -> str:
        return next(iter(self.config.credentials.values()), "")

    @property
    def log_path(self) -> Path | None:
        return Path(self.config.log_path) if self.config.log_path else None

    def start(self, timeout: float = 10.0) -> SmscThread:
        self._thread = threading.Thread(target=self._run, name="smsc-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the SMSC simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the SMSC simulator failed to start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` in the server's loop and return its result."""
        assert self._loop is not None
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout)

    def flush(self) -> int:
        return self.call(self.server.flush_log)

    def submitted(self) -> list[dict[str, Any]]:
        """Every submit_sm record of this run, oldest first: from the log file (flushed first) when
        there is one, else from memory."""
        if self._stopped:
            return read_log(self.config.log_path, self.server.run_id) if self.config.log_path else []
        self.flush()
        if self.config.log_path:
            return read_log(self.config.log_path, self.server.run_id)
        return self.records()

    def records(self) -> list[dict[str, Any]]:
        return self.call(lambda: list(self.server.records))

    def stats(self) -> dict[str, Any]:
        return self.call(self.server.stats)

    def inject_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        data_coding: int | None = None,
        system_id: str = "",
        wait: bool = True,
        timeout: float = 10.0,
    ) -> list[int]:
        """Send an MO; with ``wait``, block until each part's deliver_sm_resp and return their statuses
        (TimeoutError when no receiver acknowledged in time; the MO stays held/outstanding)."""
        assert self._loop is not None

        async def go() -> list[int]:
            future = self.server.inject_mo(source, destination, text, data_coding=data_coding, system_id=system_id)
            if not wait:
                return []
            return await asyncio.wait_for(asyncio.shield(future), timeout)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout + 5)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def __enter__(self) -> SmscThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SmscProcess:
    """``python -m tests.support.smsc`` in a subprocess (its own core: the benchmark peer), driven over its
    stdin/stdout control channel. Same methods as ``SmscThread`` but ``call``/``server``."""

    def __init__(
        self, config: SmscConfig | None = None, *, cwd: str | os.PathLike[str] | None = None, **overrides: Any
    ):
        base = config or SmscConfig(port=0)
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.cwd = Path(cwd) if cwd else Path(__file__).resolve().parents[3]
        self.process: subprocess.Popen[str] | None = None
        self.host, self.port = self.config.host, self.config.port
        self.run_id = ""
        self._lock = threading.Lock()
        self._lines: queue.Queue[str] = queue.Queue()
        self._final_stats: dict[str, Any] = {}

    @property
    def system_id(self) -> str:
        return next(iter(self.config.credentials), "")

    @property
    def password(self) -> str:
        return next(iter(self.config.credentials.values()), "")

    @property
    def log_path(self) -> Path | None:
        return Path(self.config.log_path) if self.config.log_path else None

    def start(self, timeout: float = 15.0) -> SmscProcess:
        command = [
            sys.executable,
            "-m",
            "tests.support.smsc",
            "--config",
            json.dumps(self.config.to_dict()),
            "--control-stdin",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        stdout = self.process.stdout
        assert stdout is not None

        def pump_stdout() -> None:
            for line in stdout:
                self._lines.put(line)
            self._lines.put("")  # EOF: the process is gone

        threading.Thread(target=pump_stdout, name="smsc-process-stdout", daemon=True).start()
        hello = self._read_line(timeout)
        if hello.get("event") != "listening":
            raise RuntimeError(f"the SMSC simulator did not start: {hello!r}")
        self.host, self.port, self.run_id = hello["host"], int(hello["port"]), hello["run"]
        return self

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("the SMSC simulator did not answer in time") from None
        if not line:
            self._lines.put("")
            raise RuntimeError(f"the SMSC simulator exited (rc={self.process.poll()})")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def command(self, cmd: str, timeout: float = 15.0, **args: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(json.dumps({"cmd": cmd, **args}, ensure_ascii=False) + "\n")
            self.process.stdin.flush()
            reply = self._read_line(timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"SMSC simulator: {cmd} failed: {reply.get('error')}")
        return reply

    def flush(self) -> int:
        return int(self.command("flush")["flushed"])

    def submitted(self) -> list[dict[str, Any]]:
        if self.process is not None and self.process.poll() is None:
            if not self.config.log_path:
                records: list[dict[str, Any]] = self.command("records")["records"]
                return records
            self.flush()
        return read_log(self.config.log_path, self.run_id) if self.config.log_path else []

    def stats(self) -> dict[str, Any]:
        if self.process is None or self.process.poll() is not None:
            return self._final_stats
        stats: dict[str, Any] = self.command("stats")["stats"]
        return stats

    def inject_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        data_coding: int | None = None,
        system_id: str = "",
        wait: bool = True,
        timeout: float = 10.0,
    ) -> list[int]:
        reply = self.command(
            "mo",
            timeout=timeout + 5,
            source=source,
            destination=destination,
            text=text,
            data_coding=data_coding,
            system_id=system_id,
            wait=wait,
            timeout_s=timeout,
        )
        statuses: list[int] = reply["statuses"]
        return statuses

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self.process = process
            with contextlib.suppress(Exception):
                self._final_stats = self.command("stop", timeout=timeout)["stats"]
            self.process = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def __enter__(self) -> SmscProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "SmscConfig",
    "SmscProcess",
    "SmscServer",
    "SmscThread",
    "find_duplicates",
    "read_log",
]
