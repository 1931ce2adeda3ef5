"""The bind worker's hot path on the wire: submit_sm built with struct, responses and deliver_sm
parsed by hand.

smpplib still connects and binds (gateways/smpp/worker.py), but its per-PDU objects cost
hundreds of microseconds each, far more than the SMSC takes to answer; here a submit_sm is a
header packed in front of a body built once per part when the message is claimed, and the
reader walks each incoming PDU once. The bytes are checked against smpplib's own in the tests.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from gateways.smpp.constants import (
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESME_ROK,
    GENERIC_NACK,
    HEADER,
    HEADER_SIZE,
    NPI_E164,
    NPI_UNKNOWN,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_NETWORK_ERROR_CODE,
    TAG_RECEIPTED_MESSAGE_ID,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    UNBIND,
    UNBIND_RESP,
)

pack_header = HEADER.pack
unpack_header = HEADER.unpack_from


def pdu(command_id: int, sequence: int, body: bytes = b"", status: int = ESME_ROK) -> bytes:
    return pack_header(HEADER_SIZE + len(body), command_id, status, sequence) + body


def deliver_sm_resp(sequence: int, status: int = ESME_ROK) -> bytes:
    # message_id is unused in deliver_sm_resp: one NUL (SMPP 3.4 §4.6.2).
    return pack_header(HEADER_SIZE + 1, DELIVER_SM_RESP, status, sequence) + b"\x00"


def enquire_link(sequence: int) -> bytes:
    return pack_header(HEADER_SIZE, ENQUIRE_LINK, ESME_ROK, sequence)


def enquire_link_resp(sequence: int) -> bytes:
    return pack_header(HEADER_SIZE, ENQUIRE_LINK_RESP, ESME_ROK, sequence)


def unbind(sequence: int) -> bytes:
    return pack_header(HEADER_SIZE, UNBIND, ESME_ROK, sequence)


def unbind_resp(sequence: int) -> bytes:
    return pack_header(HEADER_SIZE, UNBIND_RESP, ESME_ROK, sequence)


def generic_nack(sequence: int, status: int) -> bytes:
    return pack_header(HEADER_SIZE, GENERIC_NACK, status, sequence)


@lru_cache(maxsize=1024)
def source_fields(sender_id: str) -> bytes:
    """service_type (default) and the source address: a phone number is international/E.164,
    anything else (brand names, '#'-prefixed SSRS names) alphanumeric."""
    value = sender_id.lstrip("+")
    ton, npi = (TON_INTERNATIONAL, NPI_E164) if sender_id.lstrip("+").isdigit() else (TON_ALPHANUMERIC, NPI_UNKNOWN)
    return b"\x00" + bytes((ton, npi)) + value.encode("latin-1", "replace") + b"\x00"


def submit_sm_body(
    source: bytes, destination: str, short_message: bytes, *, esm_class: int, data_coding: int, receipt: bool
) -> bytes:
    """The body of one submit_sm; ``source`` comes from ``source_fields``. A header with the
    sequence number goes in front of it when it is written."""
    if len(short_message) > 254:
        raise ValueError("short_message longer than 254 octets")
    return b"".join(
        (
            source,
            bytes((TON_INTERNATIONAL, NPI_E164)),
            destination.lstrip("+").encode("ascii"),
            # NUL, esm_class, protocol_id, priority_flag, schedule_delivery_time "", validity_period "",
            # registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length
            bytes((0, esm_class, 0, 0, 0, 0, 1 if receipt else 0, 0, data_coding, 0, len(short_message))),
            short_message,
        )
    )


class Deliver(NamedTuple):
    """What the worker needs of a deliver_sm: receipts by TLV (or their text), MOs by text."""

    source: str
    destination: str
    esm_class: int
    data_coding: int
    short_message: bytes
    receipted_message_id: str
    message_state: int  # 0 when the TLV is absent
    network_error: int  # -1 when the TLV is absent


def parse_deliver_sm(body: bytes) -> Deliver:
    """deliver_sm in one pass; raises ValueError/IndexError on a malformed body."""
    find = body.index
    pos = find(0, 0) + 1  # service_type
    end = find(0, pos + 2)
    source = body[pos + 2 : end].decode("latin-1")
    pos = end + 1
    end = find(0, pos + 2)
    destination = body[pos + 2 : end].decode("latin-1")
    pos = end + 1
    esm_class = body[pos]
    pos = find(0, pos + 3) + 1  # schedule_delivery_time
    pos = find(0, pos) + 1  # validity_period
    data_coding, sm_length = body[pos + 2], body[pos + 4]
    pos += 5
    short_message = body[pos : pos + sm_length]
    if len(short_message) != sm_length:
        raise ValueError("short_message shorter than sm_length")
    pos += sm_length
    receipted, state, network_error = "", 0, -1
    size = len(body)
    while pos + 4 <= size:
        tag = (body[pos] << 8) | body[pos + 1]
        length = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        value = body[pos : pos + length]
        pos += length
        if tag == TAG_RECEIPTED_MESSAGE_ID:
            receipted = value.rstrip(b"\x00").decode("latin-1")
        elif tag == TAG_MESSAGE_STATE and value:
            state = value[0]
        elif tag == TAG_NETWORK_ERROR_CODE and len(value) == 3:
            network_error = (value[1] << 8) | value[2]
        elif tag == TAG_MESSAGE_PAYLOAD and not sm_length:
            short_message = value
    return Deliver(source, destination, esm_class, data_coding, short_message, receipted, state, network_error)


def cstring(body: bytes, start: int = 0) -> str:
    """The C-octet string at ``start`` (to the NUL or the end)."""
    end = body.find(b"\x00", start)
    return body[start : end if end >= 0 else len(body)].decode("latin-1")
