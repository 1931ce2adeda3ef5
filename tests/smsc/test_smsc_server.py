"""The SMSC simulator driven by smpplib's client (the library the platform's SMPP worker uses)."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from gateways.smpp import constants as C
from tests.support.smsc import SmscConfig, find_duplicates, pdu
from tests.support.smsc.__main__ import build_config, parse_args
from tests.support.smsc_setup import PASSWORD, SYSTEM_ID, Smsc, wait_for

HANDSET = "85291234567"
SENDER = "MyBrand"
TRADITIONAL_200 = ("親愛的會員您好本店週年慶全場商品八折優惠歡迎蒞臨選購" * 8)[:200]


class Esme:
    """An smpplib client that collects what the SMSC sends: submit_sm_resp and deliver_sm."""

    def __init__(
        self, server: Smsc, *, bind: str = "transceiver", system_id: str = SYSTEM_ID, password: str = PASSWORD
    ):
        self.client = smpplib.client.Client(server.host, server.port, timeout=5, allow_unknown_opt_params=True)
        self.resps: list[Any] = []
        self.delivers: list[Any] = []
        self.deliver_status = smpplib.consts.SMPP_ESME_ROK
        self.client.set_message_sent_handler(lambda pdu, **kw: self.resps.append(pdu))
        self.client.set_message_received_handler(self._received)
        self.client.set_error_pdu_handler(lambda pdu: None)  # refused submits reach the sent handler
        self.client.connect()
        if bind:
            getattr(self.client, f"bind_{bind}")(system_id=system_id, password=password)

    def _received(self, pdu: Any, **kwargs: Any) -> int:
        self.delivers.append(pdu)
        return self.deliver_status

    def submit(self, destination: str, short_message: bytes, **fields: Any) -> int:
        fields.setdefault("registered_delivery", 1)
        fields.setdefault("data_coding", smpplib.consts.SMPP_ENCODING_DEFAULT)
        sent = self.client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
            source_addr=SENDER,
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr=destination,
            short_message=short_message,
            **fields,
        )
        return int(sent.sequence)

    def readable(self, timeout: float) -> bool:
        sock = self.client._socket
        assert sock is not None
        return bool(select.select([sock], [], [], timeout)[0])

    def pump(self, until: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.readable(min(remaining, 0.05)):
                self.client.read_once(auto_send_enquire_link=False)
        return True

    def idle(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``."""
        self.pump(lambda: False, timeout=seconds)

    def receipts(self) -> list[Any]:
        return [d for d in self.delivers if d.esm_class & C.ESM_CLASS_RECEIPT]  # 0x04: SMSC delivery receipt

    def resp_for(self, sequence: int) -> Any:
        return next((r for r in self.resps if r.sequence == sequence), None)

    def answer(self, sequence: int, timeout: float = 5.0) -> Any:
        """The submit_sm_resp of ``sequence``, read until it arrives."""
        assert self.pump(lambda: self.resp_for(sequence) is not None, timeout), f"no resp for {sequence}"
        return self.resp_for(sequence)

    def close(self) -> None:
        sock = self.client._socket
        if sock is not None:
            sock.close()
            self.client._socket = None
        self.client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED


@pytest.fixture
def esme(smsc: Smsc) -> Any:
    client = Esme(smsc)
    yield client
    client.close()


def text_of(receipt: Any) -> str:
    return bytes(receipt.short_message).decode("latin-1")


def msg_id(resp: Any) -> str:
    return bytes(resp.message_id).decode()


# --- binds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["transmitter", "receiver", "transceiver"])
def test_bind_with_good_credentials(smsc: Smsc, kind: str) -> None:
    client = Esme(smsc, bind="")
    try:
        resp = getattr(client.client, f"bind_{kind}")(system_id=SYSTEM_ID, password=PASSWORD)
        assert resp.status == 0
        assert resp.command == f"bind_{kind}_resp"
        assert resp.system_id == b"SMSCSIM"
        assert resp.sc_interface_version == 0x34
    finally:
        client.close()
    assert smsc.stats()["binds"] == 1


@pytest.mark.parametrize(("system_id", "password"), [(SYSTEM_ID, "wrong"), ("nobody", PASSWORD), ("", "")])
def test_bind_with_bad_credentials_fails_with_rbindfail(smsc: Smsc, system_id: str, password: str) -> None:
    client = Esme(smsc, bind="")
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as failure:
            client.client.bind_transceiver(system_id=system_id, password=password)
        assert failure.value.args[1] == C.ESME_RBINDFAIL == 0x0D
        # The connection stays open: a corrected bind goes through.
        assert client.client.bind_transceiver(system_id=SYSTEM_ID, password=PASSWORD).status == 0
    finally:
        client.close()
    stats = smsc.stats()
    assert stats["bind_failures"] == 1 and stats["binds"] == 1


def test_enquire_link_and_unbind(smsc: Smsc, esme: Esme) -> None:
    enquire = smpplib.smpp.make_pdu("enquire_link", client=esme.client)
    esme.client.send_pdu(enquire)
    resp = esme.client.read_pdu()
    assert resp.command == "enquire_link_resp" and resp.sequence == enquire.sequence and resp.status == 0
    unbound = esme.client.unbind()
    assert unbound.command == "unbind_resp" and unbound.status == 0
    # The SMSC closes the connection after unbind_resp.
    with pytest.raises(smpplib.exceptions.ConnectionError):
        esme.client.read_pdu()
    stats = smsc.stats()
    assert stats["enquire_links"] == 1 and stats["unbinds"] == 1


def raw_pdu(command_id: int, sequence: int, body: bytes = b"") -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, 0, sequence) + body


def read_raw(sock: socket.socket) -> tuple[int, int, int, bytes]:
    header = b""
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        assert chunk, "connection closed"
        header += chunk
    length, command_id, status, sequence = struct.unpack(">IIII", header)
    body = b""
    while len(body) < length - 16:
        body += sock.recv(length - 16 - len(body))
    return command_id, status, sequence, body


def test_generic_nack_on_unknown_command_and_submit_before_bind(smsc: Smsc) -> None:
    with socket.create_connection((smsc.host, smsc.port), timeout=5) as sock:
        sock.sendall(raw_pdu(0x00000099, 7))
        command_id, status, sequence, _ = read_raw(sock)
        assert (command_id, status, sequence) == (C.GENERIC_NACK, C.ESME_RINVCMDID, 7)
        # A submit_sm before any bind: refused with ESME_RINVBNDSTS.
        sock.sendall(raw_pdu(C.SUBMIT_SM, 8, b"\x00" * 17))
        command_id, status, sequence, _ = read_raw(sock)
        assert (command_id, status, sequence) == (C.SUBMIT_SM_RESP, C.ESME_RINVBNDSTS, 8)
        # query_sm is known but not offered: its own response with ESME_RINVCMDID.
        sock.sendall(raw_pdu(C.QUERY_SM, 9, b"1\x00\x00\x00\x00"))
        assert read_raw(sock)[:3] == (C.QUERY_SM | C.RESP_BIT, C.ESME_RINVCMDID, 9)


# --- submits and receipts ------------------------------------------------------------------------


def test_gsm_submit_gets_resp_and_delivrd_receipt(smsc: Smsc, esme: Esme) -> None:
    seq = esme.submit(HANDSET, smpplib.gsm.gsm_encode("Hello @ 50% off {today}"))
    assert esme.pump(lambda: bool(esme.resps) and bool(esme.receipts()))
    resp = esme.resp_for(seq)
    assert resp.status == 0 and msg_id(resp)
    (receipt,) = esme.receipts()
    assert receipt.esm_class == 0x04
    assert bytes(receipt.receipted_message_id).decode() == msg_id(resp)
    assert receipt.message_state == 2  # DELIVRD
    assert bytes(receipt.source_addr).decode() == HANDSET and bytes(receipt.destination_addr).decode() == SENDER
    text = text_of(receipt)
    assert text.startswith(f"id:{msg_id(resp)} sub:001 dlvrd:001 submit date:")
    # The text field is the message's first 20 octets as sent: GSM '@' is septet 0x00.
    assert " stat:DELIVRD err:000 text:Hello \x00 50% off \x1b(to" in text
    assert bytes(receipt.short_message).endswith(smpplib.gsm.gsm_encode("Hello @ 50% off {today}")[:20])
    date = text.split("submit date:")[1].split()[0]
    assert len(date) == 10 and date.isdigit()

    (record,) = smsc.submitted()
    assert record["message_id"] == msg_id(resp)
    assert record["system_id"] == SYSTEM_ID
    assert (record["source"], record["destination"]) == (SENDER, HANDSET)
    assert record["data_coding"] == 0 and record["esm_class"] == 0
    assert record["text"] == "Hello @ 50% off {today}"
    assert record["short_message_hex"] == smpplib.gsm.gsm_encode("Hello @ 50% off {today}").hex()
    assert (record["status"], record["status_name"], record["outcome"]) == (0, "ESME_ROK", "accepted")
    assert record["receipt"] == "DELIVRD" and record["concat_ref"] is None
    stats = smsc.stats()
    assert stats["submits"] == 1 and stats["by_status"] == {"ESME_ROK": 1}
    assert wait_for(lambda: smsc.stats().get("receipts_acked") == 1)


def test_no_receipt_unless_registered_delivery(smsc: Smsc, esme: Esme) -> None:
    esme.submit(HANDSET, b"no receipt wanted", registered_delivery=0)
    assert esme.pump(lambda: bool(esme.resps))
    esme.idle(0.2)
    assert esme.resps[0].status == 0 and esme.receipts() == []


def test_ucs2_message_in_three_parts(smsc: Smsc, esme: Esme) -> None:
    parts, coding, esm_class = smpplib.gsm.make_parts(TRADITIONAL_200)
    assert len(parts) == 3 and coding == smpplib.consts.SMPP_ENCODING_ISO10646 and esm_class == 0x40
    sequences = [esme.submit(HANDSET, part, data_coding=coding, esm_class=esm_class) for part in parts]
    assert esme.pump(lambda: len(esme.resps) == 3 and len(esme.receipts()) == 3)
    ids = [msg_id(esme.resp_for(seq)) for seq in sequences]
    assert len(set(ids)) == 3
    assert {bytes(r.receipted_message_id).decode() for r in esme.receipts()} == set(ids)

    records = smsc.submitted()
    assert [r["message_id"] for r in records] == ids
    assert {r["concat_ref"] for r in records} == {parts[0][3]}
    assert [r["concat_part"] for r in records] == [1, 2, 3]
    assert {r["concat_total"] for r in records} == {3} and {r["concat_via"] for r in records} == {"udh8"}
    assert all(r["data_coding"] == 8 and r["esm_class"] == 0x40 for r in records)
    assert "".join(r["text"] for r in records) == TRADITIONAL_200
    assert find_duplicates(records) == {}
    # Each receipt's text field is its part's first 20 octets as sent: the UDH (05 00 03 ...)
    # and UCS-2 code units, NUL bytes and all.
    by_id = {bytes(r.receipted_message_id).decode(): bytes(r.short_message) for r in esme.receipts()}
    for part, message_id in zip(parts, ids, strict=True):
        assert by_id[message_id].endswith(b" text:" + part[:20]) and b"\x00" in by_id[message_id]


def test_safe_receipt_text_on_request(smsc_factory: Callable[..., Smsc]) -> None:
    polite = smsc_factory(receipt_text="safe")
    esme = Esme(polite)
    esme.submit(HANDSET, "Hi @".encode("utf-16-be"), data_coding=8)
    assert esme.pump(lambda: len(esme.receipts()) == 1)
    assert text_of(esme.receipts()[0]).endswith(" text:Hi ?")
    esme.close()


def test_sixteen_bit_udh_and_sar_tlvs_are_recorded(smsc: Smsc, esme: Esme) -> None:
    body = b"part one"
    esme.submit(HANDSET, bytes([6, 8, 4, 0x12, 0x34, 2, 1]) + body, esm_class=0x40)
    esme.submit(
        HANDSET,
        b"sar part",
        sar_msg_ref_num=0x0102,
        sar_total_segments=2,
        sar_segment_seqnum=2,
    )
    assert esme.pump(lambda: len(esme.resps) == 2)
    udh16, sar = smsc.submitted()
    assert (udh16["concat_ref"], udh16["concat_part"], udh16["concat_total"], udh16["concat_via"]) == (
        0x1234,
        1,
        2,
        "udh16",
    )
    assert udh16["text"] == "part one"
    assert (sar["concat_ref"], sar["concat_part"], sar["concat_total"], sar["concat_via"]) == (0x0102, 2, 2, "sar")


# --- faults by destination prefix ----------------------------------------------------------------------


def test_invalid_destination_prefix(smsc: Smsc, esme: Esme) -> None:
    seq = esme.submit("85290000123", b"to nowhere")
    assert esme.pump(lambda: bool(esme.resps))
    resp = esme.resp_for(seq)
    assert resp.status == C.ESME_RINVDSTADR == 0x0B and not resp.message_id
    esme.idle(0.15)
    assert esme.receipts() == []
    (record,) = smsc.submitted()
    assert (record["outcome"], record["status_name"], record["message_id"]) == ("refused", "ESME_RINVDSTADR", None)


def test_throttled_twice_then_accepted_on_retry(smsc: Smsc, esme: Esme) -> None:
    statuses = []
    for attempt in range(4):
        statuses.append(esme.answer(esme.submit("85290001555", b"retry me")).status)
        if statuses[-1] == 0:
            break
        time.sleep(0.01 * 2**attempt)  # back off
    assert statuses == [C.ESME_RTHROTTLED, C.ESME_RTHROTTLED, 0]
    assert esme.pump(lambda: len(esme.receipts()) == 1)
    records = smsc.submitted()
    assert [r["outcome"] for r in records] == ["refused", "refused", "accepted"]
    assert find_duplicates(records) == {}
    # The count is per destination: another number of the prefix starts again.
    seq = esme.submit("85290001666", b"other")
    assert esme.pump(lambda: esme.resp_for(seq) is not None)
    assert esme.resp_for(seq).status == C.ESME_RTHROTTLED


def test_throttled_forever_prefix_is_never_accepted(smsc: Smsc, esme: Esme) -> None:
    statuses = [esme.answer(esme.submit("85259006123", b"never")).status for _ in range(12)]
    assert statuses == [C.ESME_RTHROTTLED] * 12
    assert [r["outcome"] for r in smsc.submitted()] == ["refused"] * 12
    # Other destinations are not affected.
    assert esme.answer(esme.submit(HANDSET, b"fine")).status == 0


def test_undeliverable_prefix_gets_undeliv_receipt(smsc: Smsc, esme: Esme) -> None:
    seq = esme.submit("85290002777", b"lost phone")
    assert esme.pump(lambda: len(esme.receipts()) == 1)
    (receipt,) = esme.receipts()
    assert bytes(receipt.receipted_message_id).decode() == msg_id(esme.resp_for(seq))
    assert receipt.message_state == 5  # UNDELIV
    text = text_of(receipt)
    assert "dlvrd:000" in text and "stat:UNDELIV err:001" in text
    assert bytes(receipt.network_error_code) == b"\x03\x00\x01"


def test_no_receipt_prefix_never_gets_one(smsc: Smsc, esme: Esme) -> None:
    seq = esme.submit("85290003888", b"silence")
    assert esme.pump(lambda: esme.resp_for(seq) is not None)
    assert esme.resp_for(seq).status == 0
    esme.idle(0.3)  # the receipt delay is 0-50 ms
    assert esme.receipts() == []
    (record,) = smsc.submitted()
    assert record["outcome"] == "accepted" and record["receipt"] is None


def test_link_drop_prefix_closes_the_connection_unanswered(smsc: Smsc, esme: Esme) -> None:
    first = esme.submit(HANDSET, b"before the drop")
    dropped = esme.submit("85290004999", b"this one kills the link")
    with pytest.raises(smpplib.exceptions.ConnectionError):
        esme.pump(lambda: False, timeout=3)
    assert esme.resp_for(first) is not None and esme.resp_for(dropped) is None
    records = smsc.submitted()
    assert [r["outcome"] for r in records] == ["accepted", "dropped"]
    assert records[1]["message_id"] is None and records[1]["status"] is None
    assert records[1]["destination"] == "85290004999"
    stats = wait_for(lambda: (s := smsc.stats())["sessions"] == 0 and s)
    assert stats["dropped"] == 1


def test_receipt_for_a_dropped_link_is_delivered_after_rebind(smsc_factory: Callable[..., Smsc]) -> None:
    server = smsc_factory(receipt_delay=(0.3, 0.3))
    first = Esme(server)
    try:
        seq = first.submit(HANDSET, b"receipt comes later")
        assert first.pump(lambda: first.resp_for(seq) is not None)
        message_id = msg_id(first.resp_for(seq))
    finally:
        first.close()
    second = Esme(server)
    try:
        assert second.pump(lambda: len(second.receipts()) == 1, timeout=3)
        assert bytes(second.receipts()[0].receipted_message_id).decode() == message_id
    finally:
        second.close()


def test_receipts_of_a_transmitter_bind_go_to_a_receiver_bind(smsc: Smsc) -> None:
    tx = Esme(smsc, bind="transmitter")
    rx = Esme(smsc, bind="receiver")
    try:
        seq = tx.submit(HANDSET, b"split binds")
        assert tx.pump(lambda: tx.resp_for(seq) is not None)
        assert rx.pump(lambda: len(rx.receipts()) == 1)
        assert bytes(rx.receipts()[0].receipted_message_id).decode() == msg_id(tx.resp_for(seq))
        assert tx.delivers == []
    finally:
        tx.close()
        rx.close()


def test_global_rate_limit_throttles(smsc_factory: Callable[..., Smsc]) -> None:
    server = smsc_factory(max_rate_per_second=5)
    client = Esme(server)
    try:
        for i in range(12):
            client.submit(HANDSET, f"burst {i}".encode(), registered_delivery=0)
        assert client.pump(lambda: len(client.resps) == 12)
        statuses = [r.status for r in sorted(client.resps, key=lambda r: r.sequence)]
        assert statuses[:5] == [0] * 5
        assert statuses.count(C.ESME_RTHROTTLED) >= 6
    finally:
        client.close()
    assert server.stats()["by_status"]["ESME_RTHROTTLED"] >= 6


# --- mobile-originated --------------------------------------------------------------------------------


def test_mo_gsm_and_ucs2(smsc: Smsc, esme: Esme) -> None:
    assert smsc.inject_mo("+85291234567", "85260001234", "STOP", wait=False) == []
    assert esme.pump(lambda: len(esme.delivers) == 1)
    stop = esme.delivers[0]
    assert (stop.esm_class, stop.data_coding) == (0, 0)
    assert bytes(stop.short_message) == b"STOP"
    assert bytes(stop.source_addr).decode() == "85291234567"
    assert bytes(stop.destination_addr).decode() == "85260001234"

    smsc.inject_mo("85291234567", "85260001234", "退訂", wait=False)
    assert esme.pump(lambda: len(esme.delivers) == 2)
    chinese = esme.delivers[1]
    assert (chinese.esm_class, chinese.data_coding) == (0, 8)
    assert bytes(chinese.short_message).decode("utf-16-be") == "退訂"
    assert wait_for(lambda: smsc.stats().get("mo_acked") == 2)


def test_mo_waits_for_deliver_sm_resp(smsc: Smsc) -> None:
    import threading

    client = Esme(smsc)
    client.deliver_status = 0x08
    statuses: list[list[int]] = []
    worker = threading.Thread(target=lambda: statuses.append(smsc.inject_mo(HANDSET, "12345", "stop please")))
    worker.start()
    try:
        assert client.pump(lambda: bool(statuses), timeout=5)
    finally:
        worker.join(5)
        client.close()
    assert statuses == [[0x08]]  # the status our client answered
    assert smsc.stats()["mo_refused"] == 1


def test_long_mo_is_split_with_udh(smsc: Smsc, esme: Esme) -> None:
    text = "取消訂閱" * 20  # 80 UCS-2 characters: two parts
    smsc.inject_mo(HANDSET, "12345", text, wait=False)
    assert esme.pump(lambda: len(esme.delivers) == 2)
    bodies = [bytes(d.short_message) for d in esme.delivers]
    assert all(d.esm_class == 0x40 and d.data_coding == 8 for d in esme.delivers)
    assert [b[5] for b in bodies] == [1, 2] and {b[4] for b in bodies} == {2} and bodies[0][3] == bodies[1][3]
    assert "".join(b[6:].decode("utf-16-be") for b in bodies) == text


def test_mo_is_held_until_a_receiver_binds(smsc: Smsc) -> None:
    smsc.inject_mo(HANDSET, "12345", "STOP", wait=False)
    assert smsc.stats()["held_now"] == 1
    client = Esme(smsc, bind="receiver")
    try:
        assert client.pump(lambda: len(client.delivers) == 1)
        assert bytes(client.delivers[0].short_message) == b"STOP"
    finally:
        client.close()


# --- receipt before resp --------------------------------------------------------------------------------


def test_receipt_before_resp(smsc_factory: Callable[..., Smsc]) -> None:
    server = smsc_factory(receipt_before_resp_ratio=1.0)
    client = Esme(server)
    order: list[str] = []

    def sent(pdu: Any, **kwargs: Any) -> None:
        client.resps.append(pdu)
        order.append("resp")

    def received(pdu: Any, **kwargs: Any) -> None:
        client.delivers.append(pdu)
        order.append("receipt")

    client.client.set_message_sent_handler(sent)
    client.client.set_message_received_handler(received)
    try:
        seqs = [client.submit(HANDSET, f"early {i}".encode()) for i in range(5)]
        assert client.pump(lambda: len(client.resps) == 5 and len(client.receipts()) == 5)
        assert order == ["receipt", "resp"] * 5
        ids = {msg_id(client.resp_for(seq)) for seq in seqs}
        assert {bytes(r.receipted_message_id).decode() for r in client.receipts()} == ids
    finally:
        client.close()
    assert server.stats()["receipts_before_resp"] == 5


# --- window / throughput ---------------------------------------------------------------------------------


def run_window(server: Smsc, total: int, window: int) -> tuple[float, Esme]:
    client = Esme(server)
    body = smpplib.gsm.gsm_encode("Flash sale today only, reply STOP to opt out")
    started = time.perf_counter()
    sent = 0
    try:
        while sent < total or len(client.resps) < total:
            while sent < total and sent - len(client.resps) < window:
                client.submit(f"8526{sent:07d}", body)  # outside the fault prefixes
                sent += 1
            # Read what is there; block briefly only when the window is full or all are sent.
            wait = 0.0 if sent < total and sent - len(client.resps) < window else 0.5
            while client.readable(wait):
                client.client.read_once(auto_send_enquire_link=False)
                wait = 0.0
        assert client.pump(lambda: len(client.receipts()) == total, timeout=10)
    except BaseException:
        client.close()
        raise
    return time.perf_counter() - started, client


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_throughput_smoke(smsc_factory: Callable[..., Smsc], mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    server = smsc_factory(mode=mode, receipt_delay=(0.0, 0.05))
    total, window = 2000, 100
    elapsed, client = run_window(server, total, window)
    try:
        assert all(r.status == 0 for r in client.resps)
        ids = {msg_id(r) for r in client.resps}
        assert len(ids) == total
        assert {bytes(r.receipted_message_id).decode() for r in client.receipts()} == ids
    finally:
        client.close()
    records = server.submitted()
    assert len(records) == total and find_duplicates(records) == {}
    stats = server.stats()
    assert stats["submits"] == total and stats["by_status"] == {"ESME_ROK": total}
    with capsys.disabled():
        print(
            f"\n[smsc {mode}] {total} submit_sm + {total} receipts, window {window}: {total / elapsed:,.0f} submit_sm/s"
        )


def test_process_mode_mo_and_stats(smsc_factory: Callable[..., Smsc]) -> None:
    server = smsc_factory(mode="process")
    client = Esme(server)
    try:
        client.submit(HANDSET, b"hi")
        assert client.pump(lambda: len(client.receipts()) == 1)
        server.inject_mo(HANDSET, "12345", "退訂", wait=False)
        assert client.pump(lambda: len(client.delivers) == 2)
        assert bytes(client.delivers[1].short_message).decode("utf-16-be") == "退訂"
    finally:
        client.close()
    assert [r["text"] for r in server.submitted()] == ["hi"]
    assert server.stats()["mo_sent"] == 1


# --- pieces ----------------------------------------------------------------------------------------------


def test_stop_unbinds_clients_and_flushes_the_log(smsc_factory: Callable[..., Smsc]) -> None:
    server = smsc_factory(log_flush_interval=60)
    client = Esme(server)
    try:
        client.submit(HANDSET, b"flushed on stop")
        assert client.pump(lambda: bool(client.resps))
        server.stop()
        client.pump(lambda: False, timeout=0.0)
        pdu_in = client.client.read_pdu()
        assert pdu_in.command in ("unbind", "deliver_sm")
        with pytest.raises(smpplib.exceptions.ConnectionError):
            for _ in range(5):
                client.client.read_pdu()
    finally:
        client.close()
    assert server.log_path is not None
    assert "flushed on stop" in server.log_path.read_text(encoding="utf-8")
    assert [r["text"] for r in server.submitted()] == ["flushed on stop"]


def test_cli_config() -> None:
    args = parse_args(
        [
            "--port",
            "0",
            "--log",
            "/tmp/x.jsonl",
            "--credential",
            "a:b",
            "--receipt-delay-ms",
            "5,20",
            "--fault",
            "4477=drop",
            "--max-rate",
            "100",
        ]
    )
    config = build_config(args)
    assert config.port == 0 and config.log_path == "/tmp/x.jsonl" and config.credentials == {"a": "b"}
    assert config.receipt_delay == (0.005, 0.02) and config.max_rate_per_second == 100
    assert config.faults["4477"] == "drop" and config.faults["85290004"] == "drop"
    assert SmscConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        SmscConfig(faults={"1": "explode"})


def test_pdu_helpers() -> None:
    assert pdu.gsm_decode(pdu.gsm_encode("a{b}€@")) == "a{b}€@"
    concat, payload = pdu.split_udh(bytes([5, 0, 3, 9, 3, 2]) + b"xy")
    assert concat == pdu.Concat(9, 3, 2, "udh8") and payload == b"xy"
    coding, esm, parts = pdu.encode_mo_parts("x" * 161, None, 7)
    assert (coding, esm, len(parts)) == (0, 0x40, 2)
    assert pdu.receipt_safe("Hi_$@你好 ok") == "Hi????? ok"
    with pytest.raises(pdu.PduError):
        pdu.parse_submit_sm(b"\x00\x01")
