"""The SMPP bind worker: one long-running process per gateway (manage.py smpp_worker).

Work arrives through the database: messages queued for an SMPP gateway are claimed here
(queued -> submitting, SKIP LOCKED) and submitted over one transceiver bind with a window of
outstanding submit_sm. Celery never blocks on a socket: it only queues rows.

Threads: the reader thread owns the socket's input (submit_sm_resp, deliver_sm receipts
and MO messages) and hands everything to the main thread through a queue; the main thread
owns the database and the socket's output. Outcomes and receipts are written in batches.

At most once: a part whose submit_sm was written but never answered (link drop, crash) is
ambiguous, so its message becomes 'unknown' and is never resent; a message none of whose
parts were written goes back to 'queued'.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.smpp
from django.db import close_old_connections, connection

from gateways.adapters.base import InboundEvent, ReceiptEvent, SendOutcome
from gateways.delivery import inbound_receive, messages_claim, outcomes_record, receipts_ingest
from gateways.models import Gateway, MessageState, OutboundMessage
from gateways.smpp.encoding import decode_short_message, encode_body, with_udh
from smsplatform.kernel.actor import Actor

logger = logging.getLogger(__name__)

ESME_ROK = 0x00
ESME_RTHROTTLED = 0x58
ESME_RMSGQFUL = 0x14
RETRYABLE = {ESME_RTHROTTLED, ESME_RMSGQFUL}
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
TLV_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
RECEIPT_TEXT = re.compile(r"id:(?P<id>\S+).*?stat:(?P<stat>[A-Z]+)(?:.*?err:(?P<err>\w+))?", re.S)


class LockedClient(smpplib.client.Client):
    """smpplib's client with writes serialised: the reader thread answers deliver_sm
    while the main thread submits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.Lock()

    def send_pdu(self, p: Any) -> bool:
        with self._write_lock:
            return bool(super().send_pdu(p))


@dataclass
class PartWork:
    message_id: int
    index: int  # 0-based part index
    short_message: bytes
    attempts: int = 0
    sequence: int = 0


@dataclass
class MessageProgress:
    message: OutboundMessage
    provider_ids: list[str | None]
    data_coding: int
    esm_class: int
    written: set[int] = field(default_factory=set)
    failed: SendOutcome | None = None

    @property
    def done(self) -> bool:
        return self.failed is not None or all(pid is not None for pid in self.provider_ids)


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


class LinkDown(Exception):
    pass


class BindWorker:
    def __init__(
        self,
        gateway: Gateway,
        *,
        password: str,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        poll_interval: float = 0.2,
    ) -> None:
        self.gateway = gateway
        cfg = gateway.settings or {}
        self.host, self.port = cfg.get("host", "127.0.0.1"), int(cfg.get("port", 2775))
        self.system_id, self.password = cfg.get("system_id", ""), password
        self.system_type = cfg.get("system_type", "")
        self.window = max(1, gateway.window_size)
        self.rate = float(gateway.max_rate_per_second or 100)
        self.batch_size, self.flush_interval, self.poll_interval = batch_size, flush_interval, poll_interval
        self.actor = Actor.system(f"smpp_worker:{gateway.code}")
        self.stats = WorkerStats()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client: LockedClient | None = None
        self.reader: threading.Thread | None = None
        self.progress: dict[int, MessageProgress] = {}
        self.to_send: deque[PartWork] = deque()
        self.inflight: dict[int, PartWork] = {}
        self.outcomes: list[tuple[OutboundMessage, SendOutcome]] = []
        self.receipts: list[ReceiptEvent] = []
        self.inbound: list[InboundEvent] = []
        self.pause_until = 0.0
        self.backoff = 0.05
        self._tokens, self._token_time = float(self.window), time.monotonic()

    # --- connection -------------------------------------------------------------------

    def connect(self) -> None:
        client = LockedClient(self.host, self.port, timeout=5, allow_unknown_opt_params=True)
        client.set_message_sent_handler(lambda pdu, **kw: self.events.put(("resp", pdu)))
        client.set_message_received_handler(self._on_deliver)
        client.set_error_pdu_handler(lambda pdu: None)  # statuses are handled with the response
        client.connect()
        client.bind_transceiver(system_id=self.system_id, password=self.password, system_type=self.system_type)
        self.client = client
        self.reader = threading.Thread(target=self._read_loop, args=(client,), name="smpp-reader", daemon=True)
        self.reader.start()
        logger.info("bound to %s:%s as %s", self.host, self.port, self.system_id)

    def _read_loop(self, client: LockedClient) -> None:
        try:
            while True:
                client.read_once(auto_send_enquire_link=True)
        except Exception as exc:  # the link is gone: tell the main thread
            self.events.put(("link_down", repr(exc)))

    def _on_deliver(self, pdu: Any, **kwargs: Any) -> int:
        self.events.put(("deliver", pdu))
        return ESME_ROK

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        # Closing anyway: a dead link cannot unbind cleanly.
        with contextlib.suppress(Exception):
            client.unbind()
        with contextlib.suppress(Exception):
            client.disconnect()

    # --- main loop --------------------------------------------------------------------

    def run(self, *, stop: threading.Event, idle_exit_after: float | None = None) -> WorkerStats:
        """Run until ``stop`` is set (or, for benchmarks/tests, after ``idle_exit_after`` idle seconds)."""
        last_flush = time.monotonic()
        idle_since: float | None = None
        delay = 0.5
        while not stop.is_set():
            if self.client is None:
                try:
                    self.connect()
                    delay = 0.5
                except (OSError, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError) as exc:
                    logger.warning("bind to %s failed (%s); retrying in %.1fs", self.gateway.code, exc, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, 30)
                    continue
            try:
                self._drain_events(timeout=0)
                # Claim the next batch before this one runs dry, so the window never idles.
                if len(self.to_send) < self.window and len(self.progress) < 2 * self.batch_size:
                    self._claim()
                self._send_what_we_can()
                now = time.monotonic()
                if now - last_flush >= self.flush_interval or len(self.outcomes) >= self.batch_size:
                    self.flush()
                    last_flush = now
                busy = bool(self.to_send or self.inflight or self.outcomes or self.receipts)
                if not busy:
                    idle_since = idle_since or now
                    if idle_exit_after is not None and now - idle_since >= idle_exit_after:
                        break
                    self._drain_events(timeout=self.poll_interval)
                else:
                    idle_since = None
                    if not self._can_send():
                        self._drain_events(timeout=0.002)
            except LinkDown as exc:
                self._handle_link_down(str(exc))
        self.flush()
        self._release_unsent()
        self.close()
        return self.stats

    def _claim(self) -> None:
        _refresh_db_connection()
        claimed = messages_claim(gateway_id=self.gateway.pk, limit=self.batch_size)
        for message in claimed:
            parts = encode_body(message.body)
            shorts = with_udh(parts)
            self.progress[message.pk] = MessageProgress(
                message, [None] * len(shorts), parts.data_coding, parts.esm_class
            )
            for index, short in enumerate(shorts):
                self.to_send.append(PartWork(message.pk, index, short))

    def _can_send(self) -> bool:
        if not self.to_send or len(self.inflight) >= self.window:
            return False
        return time.monotonic() >= self.pause_until

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.window), self._tokens + (now - self._token_time) * self.rate)
        self._token_time = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _send_what_we_can(self) -> None:
        client = self.client
        assert client is not None
        while self._can_send() and self._take_token():
            work = self.to_send.popleft()
            progress = self.progress[work.message_id]
            if progress.failed is not None:
                continue
            message = progress.message
            pdu = smpplib.smpp.make_pdu(
                "submit_sm",
                client=client,
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM if not message.sender_id.lstrip("+").isdigit() else 1,
                source_addr_npi=0 if not message.sender_id.lstrip("+").isdigit() else 1,
                source_addr=message.sender_id.lstrip("+"),
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=message.destination.lstrip("+"),
                short_message=work.short_message,
                data_coding=progress.data_coding,
                esm_class=progress.esm_class,
                registered_delivery=1 if message.request_receipt else 0,
            )
            work.sequence, work.attempts = pdu.sequence, work.attempts + 1
            self.inflight[pdu.sequence] = work
            try:
                client.send_pdu(pdu)
            except (smpplib.exceptions.ConnectionError, OSError) as exc:
                raise LinkDown(repr(exc)) from exc
            progress.written.add(work.index)
            self.stats.submitted_parts += 1

    def _drain_events(self, timeout: float) -> None:
        try:
            kind, payload = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            if kind == "resp":
                self._on_resp(payload)
            elif kind == "deliver":
                self._on_deliver_event(payload)
            elif kind == "link_down":
                raise LinkDown(payload)
            try:
                kind, payload = self.events.get_nowait()
            except queue.Empty:
                return

    def _on_resp(self, pdu: Any) -> None:
        work = self.inflight.pop(pdu.sequence, None)
        if work is None:
            return
        progress = self.progress.get(work.message_id)
        if progress is None:
            return
        status = int(pdu.status)
        if status == ESME_ROK:
            raw_id = pdu.message_id
            progress.provider_ids[work.index] = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            self.backoff = 0.05
        elif status in RETRYABLE:
            # Refused, so not submitted: send the same part again after backing off.
            self.stats.throttled += 1
            progress.written.discard(work.index)
            self.pause_until = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 5.0)
            self.to_send.appendleft(work)
            return
        else:
            progress.failed = SendOutcome.permanent(f"smpp_{status:#04x}", _describe(status))
        if progress.done:
            self._complete(work.message_id)

    def _complete(self, message_id: int) -> None:
        progress = self.progress.pop(message_id)
        if progress.failed is not None:
            self.stats.failed_messages += 1
            self.outcomes.append((progress.message, progress.failed))
        else:
            self.stats.accepted_messages += 1
            self.outcomes.append((progress.message, SendOutcome.accepted([p or "" for p in progress.provider_ids])))

    def _on_deliver_event(self, pdu: Any) -> None:
        esm_class = int(getattr(pdu, "esm_class", 0) or 0)
        if esm_class & 0x04:
            receipt = parse_receipt(pdu)
            if receipt is not None:
                self.receipts.append(receipt)
                self.stats.receipts += 1
            return
        text = decode_short_message(bytes(pdu.short_message or b""), int(pdu.data_coding or 0), esm_class)
        source = _text(pdu.source_addr)
        self.inbound.append(
            InboundEvent(
                source=f"+{source}" if source.isdigit() else source,
                destination=_text(pdu.destination_addr),
                body=text,
                raw={"data_coding": int(pdu.data_coding or 0)},
            )
        )
        self.stats.inbound += 1

    # --- database -------------------------------------------------------------------------

    def flush(self) -> None:
        if not (self.outcomes or self.receipts or self.inbound):
            return
        _refresh_db_connection()
        if self.outcomes:
            outcomes, self.outcomes = self.outcomes, []
            outcomes_record(
                actor=self.actor,
                gateway=self.gateway,
                messages=[m for m, _ in outcomes],
                outcomes=[o for _, o in outcomes],
            )
        if self.receipts:
            receipts, self.receipts = self.receipts, []
            receipts_ingest(gateway=self.gateway, events=receipts)
        if self.inbound:
            inbound, self.inbound = self.inbound, []
            inbound_receive(gateway=self.gateway, events=inbound)

    def _handle_link_down(self, reason: str) -> None:
        logger.warning("link to %s dropped: %s", self.gateway.code, reason)
        self.stats.reconnects += 1
        self.close()
        # Apply what the reader delivered before the drop: those responses and receipts count.
        while True:
            try:
                kind, payload = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "resp":
                self._on_resp(payload)
            elif kind == "deliver":
                self._on_deliver_event(payload)
        ambiguous = {work.message_id for work in self.inflight.values()}
        self.inflight.clear()
        unknown_ids = []
        for message_id in ambiguous:
            progress = self.progress.pop(message_id, None)
            if progress is not None:
                unknown_ids.append(message_id)
        self.to_send = deque(w for w in self.to_send if w.message_id in self.progress)
        self.flush()
        if unknown_ids:
            from gateways.delivery import messages_mark_unknown

            messages_mark_unknown(actor=self.actor, message_ids=unknown_ids, reason=f"link dropped: {reason}"[:300])
            self.stats.unknown_messages += len(unknown_ids)

    def _release_unsent(self) -> None:
        """On stop: messages none of whose parts were written go back to the queue."""
        from gateways.delivery import messages_requeue

        never_written = [mid for mid, p in self.progress.items() if not p.written]
        partly = [mid for mid, p in self.progress.items() if p.written]
        if never_written:
            messages_requeue(actor=self.actor, message_ids=never_written)
            self.stats.requeued_messages += len(never_written)
        if partly:
            from gateways.delivery import messages_mark_unknown

            messages_mark_unknown(actor=self.actor, message_ids=partly, reason="worker stopped mid-message")
            self.stats.unknown_messages += len(partly)
        self.progress.clear()
        self.to_send.clear()


def _refresh_db_connection() -> None:
    # A long-running process must drop connections the server closed or that outlived
    # CONN_MAX_AGE; never inside an open transaction (as in tests).
    if not connection.in_atomic_block:
        close_old_connections()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value or "")


def _describe(status: int) -> str:
    return str(smpplib.consts.DESCRIPTIONS.get(status, f"SMPP status {status:#04x}"))


def parse_receipt(pdu: Any) -> ReceiptEvent | None:
    """A deliver_sm receipt: TLVs (receipted_message_id, message_state) or the text form."""
    text = decode_short_message(bytes(pdu.short_message or b""), 0)
    match = RECEIPT_TEXT.search(text)
    provider_id = _text(getattr(pdu, "receipted_message_id", None)) or (match.group("id") if match else "")
    state_value = getattr(pdu, "message_state", None)
    stat = TLV_STATES.get(int(state_value)) if state_value else None
    if stat is None and match:
        stat = match.group("stat")
    if not provider_id or not stat:
        logger.warning("unparseable receipt: %r", text[:200])
        return None
    err = match.group("err") if match and match.group("err") else ""
    return ReceiptEvent(
        provider_message_id=provider_id.strip("\x00"),
        status=RECEIPT_STATES.get(stat, MessageState.SUBMITTED),
        provider_status=stat,
        error_code="" if err in ("", "000") else err,
        raw={"text": text[:300]},
    )


__all__ = ["BindWorker", "LockedClient", "parse_receipt"]
