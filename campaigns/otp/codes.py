"""One-time codes: drawn with ``secrets``, stored only as a keyed hash, masked out of message bodies.

The hash is HMAC-SHA256 keyed with ``settings.SMS_OTP_HASH_KEY`` (its own secret, by default
derived from SECRET_KEY under a label of its own, see smsplatform/settings.py) over the
verification's public id and the code: a stolen table reveals no code without the key, and a hash
from one verification matches no other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings

from campaigns.otp.models import Alphabet

ALPHABETS: dict[str, str] = {
    Alphabet.DIGITS: "0123456789",
    # No 0/O, 1/I/L look-alikes and no vowels: a random code never spells a word.
    Alphabet.ALNUM_UPPER: "23456789BCDFGHJKMNPQRSTVWXYZ",
}
CODE_PLACEHOLDER = "{code}"
MINUTES_PLACEHOLDER = "{minutes}"
MASK_CHAR = "*"


def code_generate(*, length: int, alphabet: str) -> str:
    chars = ALPHABETS[alphabet]
    return "".join(secrets.choice(chars) for _ in range(length))


def code_hash(*, verification_id: str, code: str) -> str:
    key = settings.SMS_OTP_HASH_KEY.encode()
    return hmac.new(key, f"{verification_id}:{code.upper()}".encode(), hashlib.sha256).hexdigest()


def code_matches(*, verification_id: str, code: str, stored_hash: str) -> bool:
    return hmac.compare_digest(code_hash(verification_id=verification_id, code=code), stored_hash)


def body_render(body: str, *, code: str, minutes: int) -> str:
    return body.replace(CODE_PLACEHOLDER, code).replace(MINUTES_PLACEHOLDER, str(minutes))


def body_masked(body: str, *, code_length: int, minutes: int) -> str:
    """The message as stored once scrubbed: the code replaced by as many asterisks."""
    return body_render(body, code=MASK_CHAR * code_length, minutes=minutes)


def verification_public_id() -> str:
    return "VE" + secrets.token_hex(16)
