"""SMPP 3.4 PDUs for the SMSC simulator: the few we read and write, encoded and decoded by hand.

Only the standard library: this runs in a plain asyncio process (no Django, no smpplib), and it
sits on the hot path of a benchmark, so parsing walks the body once with ``bytes.index`` and
encoders build bytes directly.

Wire format (SMPP 3.4 §3.2): a 16-byte header ``command_length, command_id, command_status,
sequence_number`` (big-endian uint32), then the mandatory fields (C-octet strings are
NUL-terminated, integers are 1 byte), then optional TLVs ``tag:uint16 length:uint16 value``.
The PDUs written here are checked against smpplib's parser (tests/smsc).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from gateways.smpp.constants import (
    DATA_CODING_DEFAULT,
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    ESME_ROK,
    GENERIC_NACK,
    HEADER,
    HEADER_SIZE,
    MESSAGE_STATES,
    RESP_BIT,
    SMPP_VERSION_34,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_NETWORK_ERROR_CODE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    TAG_SC_INTERFACE_VERSION,
)


class Header(NamedTuple):
    length: int
    command_id: int
    status: int
    sequence: int


class PduError(ValueError):
    """A PDU whose body does not parse."""


# --- encoding -----------------------------------------------------------------------------------------

_pack_header = HEADER.pack
_pack_tlv_header = struct.Struct(">HH").pack


def encode(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return _pack_header(HEADER_SIZE + len(body), command_id, status, sequence) + body


def cstr(value: str | bytes) -> bytes:
    """A C-octet string: the value then NUL."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return raw + b"\x00"


def tlv(tag: int, value: bytes) -> bytes:
    return _pack_tlv_header(tag, len(value)) + value


def bind_resp(command_id: int, status: int, sequence: int, system_id: str) -> bytes:
    """bind_*_resp: system_id plus sc_interface_version; no body when the bind failed (§4.1.2)."""
    if status != ESME_ROK:
        return encode(command_id | RESP_BIT, status, sequence)
    body = cstr(system_id) + tlv(TAG_SC_INTERFACE_VERSION, bytes([SMPP_VERSION_34]))
    return encode(command_id | RESP_BIT, status, sequence, body)


def submit_sm_resp(status: int, sequence: int, message_id: str) -> bytes:
    """submit_sm_resp; when refused, the body is an empty message_id (accepted by every client we know)."""
    return encode(SUBMIT_SM_RESP, status, sequence, cstr(message_id if status == ESME_ROK else ""))


def generic_nack(status: int, sequence: int) -> bytes:
    return encode(GENERIC_NACK, status, sequence)


def deliver_sm_body(
    *,
    source: str,
    destination: str,
    short_message: bytes,
    esm_class: int = 0,
    data_coding: int = DATA_CODING_DEFAULT,
    source_ton: int = 1,
    source_npi: int = 1,
    dest_ton: int = 1,
    dest_npi: int = 1,
    tlvs: bytes = b"",
) -> bytes:
    """The body of a deliver_sm (header added per send: the sequence number changes on redelivery)."""
    if len(short_message) > 254:
        raise PduError("short_message longer than 254 octets")
    return b"".join(
        (
            b"\x00",  # service_type
            bytes((source_ton, source_npi)),
            cstr(source),
            bytes((dest_ton, dest_npi)),
            cstr(destination),
            # esm_class, protocol_id, priority_flag, schedule_delivery_time "", validity_period ""
            bytes((esm_class, 0, 0, 0, 0)),
            # registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_length
            bytes((0, 0, data_coding, 0, len(short_message))),
            short_message,
            tlvs,
        )
    )


def receipt_tlvs(message_id: str, stat: str, err: int) -> bytes:
    """receipted_message_id (C-string, §5.3.2.12), message_state (1 octet) and, on failure,
    network_error_code (3 octets: network type 3 = GSM, then the error code)."""
    out = tlv(TAG_RECEIPTED_MESSAGE_ID, cstr(message_id)) + tlv(TAG_MESSAGE_STATE, bytes([MESSAGE_STATES[stat]]))
    if err:
        out += tlv(TAG_NETWORK_ERROR_CODE, bytes([3]) + err.to_bytes(2, "big"))
    return out


def receipt_text(
    message_id: str, stat: str, err: int, submit_date: str, done_date: str, text: str, delivered: bool
) -> str:
    """The SMPP 3.4 Appendix B receipt text."""
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if delivered else '000'} submit date:{submit_date} "
        f"done date:{done_date} stat:{stat} err:{err:03d} text:{text}"
    )


# --- decoding -----------------------------------------------------------------------------------------


def parse_header(data: bytes | bytearray, offset: int = 0) -> Header:
    return Header(*HEADER.unpack_from(data, offset))


@dataclass(slots=True)
class Bind:
    system_id: str
    password: str
    system_type: str
    interface_version: int
    addr_ton: int
    addr_npi: int
    address_range: str


def parse_bind(body: bytes) -> Bind:
    try:
        find = body.index
        end = find(0, 0)
        system_id = body[:end]
        pos = end + 1
        end = find(0, pos)
        password = body[pos:end]
        pos = end + 1
        end = find(0, pos)
        system_type = body[pos:end]
        pos = end + 1
        interface_version, addr_ton, addr_npi = body[pos], body[pos + 1], body[pos + 2]
        pos += 3
        end = body.find(b"\x00", pos)
        address_range = body[pos : end if end >= 0 else len(body)]
    except (ValueError, IndexError) as exc:
        raise PduError(f"malformed bind: {exc}") from exc
    return Bind(
        system_id.decode("latin-1"),
        password.decode("latin-1"),
        system_type.decode("latin-1"),
        interface_version,
        addr_ton,
        addr_npi,
        address_range.decode("latin-1"),
    )


@dataclass(slots=True)
class SubmitSm:
    service_type: str
    source_ton: int
    source_npi: int
    source: str
    dest_ton: int
    dest_npi: int
    destination: str
    esm_class: int
    protocol_id: int
    priority_flag: int
    registered_delivery: int
    data_coding: int
    short_message: bytes  # the user data: short_message, or message_payload when sm_length is 0
    tlvs: dict[int, bytes]


def parse_tlvs(body: bytes, pos: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    end = len(body)
    while pos + 4 <= end:
        tag = (body[pos] << 8) | body[pos + 1]
        length = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        if pos + length > end:
            raise PduError(f"TLV 0x{tag:04X} runs past the PDU")
        tlvs[tag] = body[pos : pos + length]
        pos += length
    if pos != end:
        raise PduError("trailing bytes after the TLVs")
    return tlvs


def parse_submit_sm(body: bytes) -> SubmitSm:
    """submit_sm (and deliver_sm: same layout) in one pass."""
    try:
        find = body.index
        end = find(0, 0)
        service_type = body[:end]
        pos = end + 1
        source_ton, source_npi = body[pos], body[pos + 1]
        pos += 2
        end = find(0, pos)
        source = body[pos:end]
        pos = end + 1
        dest_ton, dest_npi = body[pos], body[pos + 1]
        pos += 2
        end = find(0, pos)
        destination = body[pos:end]
        pos = end + 1
        esm_class, protocol_id, priority_flag = body[pos], body[pos + 1], body[pos + 2]
        pos = find(0, pos + 3) + 1  # schedule_delivery_time
        pos = find(0, pos) + 1  # validity_period
        registered_delivery, data_coding, sm_length = body[pos], body[pos + 2], body[pos + 4]
        pos += 5
        short_message = body[pos : pos + sm_length]
        if len(short_message) != sm_length:
            raise PduError("short_message shorter than sm_length")
        pos += sm_length
    except IndexError as exc:
        raise PduError("submit_sm body too short") from exc
    except ValueError as exc:  # a C-string without its NUL
        raise PduError(f"malformed submit_sm: {exc}") from exc
    tlvs = parse_tlvs(body, pos) if pos < len(body) else {}
    if not sm_length and TAG_MESSAGE_PAYLOAD in tlvs:
        short_message = tlvs[TAG_MESSAGE_PAYLOAD]
    return SubmitSm(
        service_type.decode("latin-1"),
        source_ton,
        source_npi,
        source.decode("latin-1"),
        dest_ton,
        dest_npi,
        destination.decode("latin-1"),
        esm_class,
        protocol_id,
        priority_flag,
        registered_delivery,
        data_coding,
        short_message,
        tlvs,
    )


class Concat(NamedTuple):
    reference: int
    total: int
    part: int
    via: str  # "udh8" (IEI 0x00, 6-byte UDH), "udh16" (IEI 0x08, 7-byte UDH) or "sar" (TLVs)


def split_udh(short_message: bytes) -> tuple[Concat | None, bytes]:
    """(concatenation info or None, user data without the UDH) for a message with UDHI set."""
    if not short_message:
        return None, short_message
    udhl = short_message[0]
    header, payload = short_message[1 : 1 + udhl], short_message[1 + udhl :]
    concat = None
    pos = 0
    while pos + 2 <= len(header):
        iei, iedl = header[pos], header[pos + 1]
        data = header[pos + 2 : pos + 2 + iedl]
        if iei == 0x00 and iedl == 3 and len(data) == 3:
            concat = Concat(data[0], data[1], data[2], "udh8")
        elif iei == 0x08 and iedl == 4 and len(data) == 4:
            concat = Concat((data[0] << 8) | data[1], data[2], data[3], "udh16")
        pos += 2 + iedl
    return concat, payload


def sar_concat(tlvs: dict[int, bytes]) -> Concat | None:
    ref, total, part = tlvs.get(TAG_SAR_MSG_REF_NUM), tlvs.get(TAG_SAR_TOTAL_SEGMENTS), tlvs.get(TAG_SAR_SEGMENT_SEQNUM)
    if ref is None or total is None or part is None or not total or not part:
        return None
    return Concat(int.from_bytes(ref, "big"), total[0], part[0], "sar")


# --- text ---------------------------------------------------------------------------------------------

# GSM 03.38 default alphabet, one septet per octet as SMPP carries it (unpacked); 0x1B escapes
# to the extension table.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {
    0x0A: "\x0c",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
_GSM_DECODE_TABLE: dict[int, str] = dict(enumerate(GSM_BASIC))
_GSM_DECODE_TABLE.update(dict.fromkeys(range(0x80, 0x100), "?"))
_GSM_ENCODE = {ch: bytes([i]) for i, ch in enumerate(GSM_BASIC) if ch != "\x1b"}
_GSM_ENCODE.update({ch: bytes([0x1B, code]) for code, ch in GSM_EXTENSION.items()})


def gsm_decode(data: bytes) -> str:
    if b"\x1b" not in data:
        return data.decode("latin-1").translate(_GSM_DECODE_TABLE)
    out: list[str] = []
    escape = False
    for byte in data:
        if escape:
            out.append(GSM_EXTENSION.get(byte, " "))
            escape = False
        elif byte == 0x1B:
            escape = True
        else:
            out.append(GSM_BASIC[byte] if byte < 0x80 else "?")
    return "".join(out)


def gsm_encodable(text: str) -> bool:
    return all(ch in _GSM_ENCODE for ch in text)


def gsm_encode(text: str) -> bytes:
    try:
        return b"".join(_GSM_ENCODE[ch] for ch in text)
    except KeyError as exc:
        raise UnicodeEncodeError("gsm0338", text, 0, len(text), f"not in GSM 03.38: {exc}") from exc


def decode_text(data: bytes, data_coding: int) -> str:
    """The text of user data (without UDH) as the data_coding says; best effort, never raises."""
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", "replace")
    if data_coding in (0x01, 0x03):  # IA5/ASCII, Latin-1
        return data.decode("latin-1")
    if data_coding in (0x02, 0x04):  # 8-bit binary
        return ""
    return gsm_decode(data)


def encode_mo_parts(text: str, data_coding: int | None, reference: int) -> tuple[int, int, list[bytes]]:
    """(data_coding, esm_class, short_messages) for an MO text: GSM when it fits the alphabet (or
    data_coding 0 is forced), else UCS-2; longer than one SMS -> parts with an 8-bit concat UDH,
    never splitting an escape pair or a surrogate pair."""
    if data_coding is None:
        data_coding = DATA_CODING_DEFAULT if gsm_encodable(text) else DATA_CODING_UCS2
    if data_coding == DATA_CODING_UCS2:
        units = [ch.encode("utf-16-be") for ch in text]
        single, per_part = 140, 134
    elif data_coding == DATA_CODING_DEFAULT:
        units = [_GSM_ENCODE.get(ch, b"?") for ch in text]
        single, per_part = 160, 153
    else:
        units = [ch.encode("latin-1", "replace") for ch in text]
        single, per_part = 140, 134
    whole = b"".join(units)
    if len(whole) <= single:
        return data_coding, 0, [whole]
    chunks: list[bytes] = []
    current = b""
    for unit in units:
        if len(current) + len(unit) > per_part:
            chunks.append(current)
            current = b""
        current += unit
    if current:
        chunks.append(current)
    total = len(chunks)
    if total > 255:
        raise ValueError("MO text too long")
    ref = reference & 0xFF
    return (
        data_coding,
        ESM_CLASS_UDHI,
        [bytes((5, 0, 3, ref, total, i)) + chunk for i, chunk in enumerate(chunks, start=1)],
    )


_RECEIPT_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,!?:;'\"()/+=*%&#<>-")


def receipt_safe(text: str, limit: int = 20) -> str:
    """The receipt's ``text:`` field: the first characters of the message, limited to characters
    that are the same octet in ASCII and GSM 03.38 (anything else becomes '?')."""
    return "".join(ch if ch in _RECEIPT_SAFE else "?" for ch in text[:limit])
