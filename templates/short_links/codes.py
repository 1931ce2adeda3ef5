"""Short codes and recipient tokens: their length, alphabet and shape, and a new unused code."""

from __future__ import annotations

import re
import secrets

from smsplatform.kernel.errors import ApplicationError, ErrorCode
from templates.models import ShortLink

CODE_LENGTH = 8  # 56**8 (~10**14) codes: collisions are retried, and the unique index has the last word
RECIPIENT_TOKEN_LENGTH = 8

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # no 0/O, 1/l/I look-alikes
CODE_RE = re.compile(r"^[A-Za-z0-9]{7,16}$")
RECIPIENT_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{4,32}$")


def new_short_code() -> str:
    for _ in range(10):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if not ShortLink.objects.filter(code=code).exists():
            return code
    raise ApplicationError(ErrorCode.INTERNAL_ERROR, "Could not allocate a short code.")  # pragma: no cover
