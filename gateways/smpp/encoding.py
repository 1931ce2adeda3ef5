"""SMS parts for SMPP: GSM 03.38 septets (unpacked) or UCS-2, split by our segment engine.

smpplib's own splitter cuts encoded bytes blindly (it can split an escape pair or a
surrogate pair), so the parts come from smsplatform.kernel.segments, which never does, and the
UDH is ours.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from gateways.smpp.constants import DATA_CODING_DEFAULT, DATA_CODING_UCS2, ESM_CLASS_UDHI
from smsplatform.kernel.segments import analyse

# GSM 03.38 basic table in code order (0x1B is the escape to the extension table).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {
    "\x0c": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_ENCODE = {ch: bytes([i]) for i, ch in enumerate(GSM_BASIC) if ch != "\x1b"}
_ENCODE.update({ch: bytes([0x1B, code]) for ch, code in GSM_EXTENSION.items()})
_DECODE_BASIC = dict(enumerate(GSM_BASIC))
_DECODE_EXT = {code: ch for ch, code in GSM_EXTENSION.items()}

_references = itertools.cycle(range(1, 256))


def gsm_encode(text: str) -> bytes:
    return b"".join(_ENCODE[ch] for ch in text)


_DECODE_TABLE = dict(enumerate(GSM_BASIC))
_DECODE_TABLE.update(dict.fromkeys(range(0x80, 0x100), "?"))


def gsm_decode(data: bytes) -> str:
    if b"\x1b" not in data:  # the common case: one table lookup per octet, in C
        return data.decode("latin-1").translate(_DECODE_TABLE)
    out, escape = [], False
    for byte in data:
        if escape:
            out.append(_DECODE_EXT.get(byte, " "))
            escape = False
        elif byte == 0x1B:
            escape = True
        else:
            out.append(_DECODE_BASIC.get(byte & 0x7F, "?"))
    return "".join(out)


def decode_short_message(data: bytes, data_coding: int, esm_class: int = 0) -> str:
    if esm_class & ESM_CLASS_UDHI and data:
        data = data[1 + data[0] :]  # skip the user data header
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding in (0x03, 0x01):
        return data.decode("latin-1")
    return gsm_decode(data)


@dataclass(frozen=True)
class EncodedParts:
    data_coding: int
    esm_class: int
    bodies: tuple[bytes, ...]  # without UDH


@lru_cache(maxsize=4096)
def encode_body(text: str) -> EncodedParts:
    """Encode once per distinct body (campaigns send one body to many numbers)."""
    result = analyse(text)
    if result.encoding == "GSM-7":
        bodies = tuple(gsm_encode(part.text) for part in result.parts)
        coding = DATA_CODING_DEFAULT
    else:
        bodies = tuple(part.text.encode("utf-16-be") for part in result.parts)
        coding = DATA_CODING_UCS2
    return EncodedParts(coding, ESM_CLASS_UDHI if len(bodies) > 1 else 0, bodies)


def with_udh(parts: EncodedParts) -> list[bytes]:
    """The short_message of each part: concatenation header (8-bit reference) + body."""
    if len(parts.bodies) == 1:
        return [parts.bodies[0]]
    reference, total = next(_references), len(parts.bodies)
    return [bytes([5, 0, 3, reference, total, i]) + body for i, body in enumerate(parts.bodies, start=1)]
