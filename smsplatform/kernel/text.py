"""Names people and agents give things (contacts, templates, campaigns, segments, audiences):
no invisible characters that change how the name reads.

Refused: control characters (Cc), format characters (Cf: the bidi embeddings and overrides
U+202A-U+202E and isolates U+2066-U+2069, zero-width space/joiners, the BOM, soft hyphen...),
line and paragraph separators (Zl, Zp), surrogates (Cs) and private-use characters (Co). A
right-to-left override makes "gro.exe" read "exe.org" in a list an approver trusts.
"""

from __future__ import annotations

import unicodedata

from smsplatform.kernel.errors import ApplicationError, ErrorCode

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def invisible_character(value: str) -> tuple[int, str] | None:
    """(position, character) of the first refused character in ``value``, else None."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return position, char
    return None


def name_check(value: str, *, field: str) -> str:
    """``value`` unchanged, or an error naming ``field`` and the character refused."""
    found = invisible_character(value)
    if found is None:
        return value
    position, char = found
    label = unicodedata.name(char, "control character")
    raise ApplicationError(
        ErrorCode.CONTROL_CHARACTER,
        f"{field} contains U+{ord(char):04X} ({label}) at position {position}: invisible and direction-"
        "changing characters are not allowed in names.",
        field=field,
        hint=f"Retype {field} without it (copying from a web page or chat can carry such characters).",
        details={"position": position},
    )
