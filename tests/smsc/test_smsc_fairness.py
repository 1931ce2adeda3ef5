"""The simulator serves its binds as a real SMSC does, concurrently: one bind's full window, or a
large write of the submit log, never holds up another bind's submit_sm for long."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gateways.smpp import constants as C
from tests.support.smsc import SmscConfig, pdu
from tests.support.smsc.server import Session, SmscServer


class FakeTransport(asyncio.Transport):
    """Records what the session asks of its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.written = bytearray()
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.calls.append("close")


def submit(sequence: int, destination: str) -> bytes:
    body = (
        b"\x00"  # service_type
        + b"\x05\x00MyBrand\x00"
        + b"\x01\x01"
        + destination.encode()
        + b"\x00"
        + b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + b"\x01\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        + b"\x02hi"
    )
    return pdu.encode(C.SUBMIT_SM, C.ESME_ROK, sequence, body)


def bound_session(server: SmscServer) -> tuple[Session, FakeTransport]:
    session = Session(server)
    transport = FakeTransport()
    session.connection_made(transport)
    session.bound, session.system_id = "trx", "bench"
    return session, transport


def test_a_full_window_on_one_bind_is_read_a_turn_at_a_time() -> None:
    loop = asyncio.new_event_loop()
    try:
        server = SmscServer(SmscConfig(pdus_per_turn=64, receipt_delay=(5.0, 5.0)))
        server._loop = loop
        bulk, bulk_transport = bound_session(server)
        urgent, _ = bound_session(server)

        # 500 submit_sm arrive at once on the bulk bind: one turn handles 64 and stops reading it.
        bulk.data_received(b"".join(submit(n, f"8526{n:07d}") for n in range(1, 501)))
        assert len(server.records) == 64
        assert bulk_transport.calls == ["pause"]
        # The loop reads the other bind before the bulk bind's next turn.
        urgent.data_received(submit(1, "85291234567"))
        destinations = [record["destination"] for record in server.records]
        assert destinations[-1] == "85291234567" and len(destinations) == 65

        loop.run_until_complete(asyncio.sleep(0.05))
        destinations = [record["destination"] for record in server.records]
        assert len(destinations) == 501
        bulk_order = [d for d in destinations if d.startswith("8526")]
        assert bulk_order == [f"8526{n:07d}" for n in range(1, 501)]  # in order, each once
        assert bulk_transport.calls[-1] == "resume" and bulk_transport.reading
        assert not bulk.buffer
        # Every submit_sm was answered, in order.
        sequences, pos = [], 0
        while pos < len(bulk_transport.written):
            header = pdu.parse_header(bulk_transport.written, pos)
            assert header.command_id == C.SUBMIT_SM_RESP and header.status == C.ESME_ROK
            sequences.append(header.sequence)
            pos += header.length
        assert sequences == list(range(1, 501))
    finally:
        loop.close()


def test_a_bind_whose_client_stops_reading_is_not_resumed_by_its_next_turn() -> None:
    loop = asyncio.new_event_loop()
    try:
        server = SmscServer(SmscConfig(pdus_per_turn=10, receipt_delay=(5.0, 5.0)))
        server._loop = loop
        session, transport = bound_session(server)
        session.data_received(b"".join(submit(n, f"8526{n:07d}") for n in range(1, 31)))
        session.pause_writing()  # the client stopped reading what we write
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(server.records) == 30
        assert not transport.reading  # stays paused until the client reads again
        session.resume_writing()
        assert transport.reading
    finally:
        loop.close()


def test_the_periodic_log_flush_writes_a_slice_per_turn(tmp_path: Path) -> None:
    log = tmp_path / "smsc.jsonl"
    loop = asyncio.new_event_loop()
    try:
        server = SmscServer(
            SmscConfig(pdus_per_turn=1000, log_flush_chunk=100, log_path=str(log), receipt_delay=(5.0, 5.0))
        )
        server._loop = loop
        server._log_file = log.open("a", encoding="utf-8")
        session, _ = bound_session(server)
        session.data_received(b"".join(submit(n, f"8526{n:07d}") for n in range(1, 351)))
        server._flush_tick()
        assert len(log.read_text(encoding="utf-8").splitlines()) == 100  # one slice, the rest later
        urgent, _ = bound_session(server)
        urgent.data_received(submit(1, "85291234567"))  # read between two slices
        loop.run_until_complete(asyncio.sleep(0.05))
        lines = [json.loads(line)["destination"] for line in log.read_text(encoding="utf-8").splitlines()]
        assert lines == [f"8526{n:07d}" for n in range(1, 351)] + ["85291234567"]
        assert isinstance(server._flush_handle, asyncio.TimerHandle)  # back to the interval
        server._flush_handle.cancel()
        server._log_file.close()
    finally:
        loop.close()
