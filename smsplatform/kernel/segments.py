"""Exact SMS segment engine: encoding choice, unit counts and part boundaries of an SMS body.

Pure Python and free of Django so that it can run in bulk jobs, benchmarks and the composer preview alike.

Rules (GSM 03.38 / 3GPP TS 23.038 and TS 23.040):

* A body whose every character is in the GSM 7-bit default alphabet (basic table or extension table) is sent
  as GSM-7. Basic characters cost 1 septet; extension characters (form feed, ``^ { } \\ [ ~ ] |`` and ``€``)
  cost 2 septets, an escape (0x1B) followed by the code.  A single message holds 160 septets; once
  concatenated, the user data header leaves 153 septets per part.
* Any other character switches the whole body to UCS-2, counted in UTF-16 code units: characters outside the
  Basic Multilingual Plane (emoji, HKSCS ideographs such as U+282E2) cost 2 units.  A single message holds 70
  units; concatenated parts hold 67.
* A part never ends between an escape and its code, nor between the two halves of a surrogate pair: such a
  character moves whole to the next part.  Parts are filled greedily, as handsets and SMSCs do, which is also
  the split with the fewest parts.

Decisions:

* The empty body is valid and bills as 1 segment of 0 units (one empty part), because an empty SMS is still
  one message on the operator's invoice.
* Tab (``\\t``) is accepted but is not in the GSM alphabet, so it forces UCS-2 (smart encoding turns it into a
  single space).  Line feed and carriage return are basic GSM characters; form feed is an extension character.
  Every other control character (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) is rejected, as is any
  surrogate code point (a Python ``str`` holds astral characters as single code points, so a surrogate in it
  is always a broken decode).
* Characters are never decomposed or normalised: an ``n`` followed by a combining tilde is two characters, the
  second of which is not GSM.
* Smart encoding is all or nothing: look-alikes are replaced only when that makes the whole body GSM-7,
  otherwise the body is left untouched and stays UCS-2.
* No upper bound on the number of parts is enforced here (the concatenation header allows 255); callers that
  need a cap apply it on ``segments``.

Providers that split a message themselves (Twilio) keep each grapheme cluster whole across parts, as Twilio's
published calculator (npm ``sms-segments-calculator``) does: a ZWJ sequence, an emoji with a skin-tone modifier
or a variation selector, a letter with its combining marks, a flag (regional-indicator pair) or a Hangul jamo
syllable moves whole to the next part, so such a body can need one part more than the SMPP split.
:func:`count_segments_clusters` and ``analyse(..., keep_clusters=True)`` count that way, with the same encoding
and per-part capacities; clusters are the extended grapheme clusters of UAX #29 (the ``regex`` module's ``\\X``),
except that CR LF stays two characters (the calculator splits it too).  A cluster longer than a whole part, which
no provider can keep whole, is cut like the SMPP split (never inside a surrogate pair).  The calculator's own
splitter (grapheme-splitter 1.0.4) follows the Unicode 10 rules, so the two can differ on emoji sequences newer
than that (current rules keep e.g. a ZWJ with a newer emoji whole, which only raises our estimate) and on a few
odd sequences such as a ZWJ after a letter; on the bench corpus they agree on every text.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

import regex

__all__ = [
    "GSM7",
    "GSM_BASIC_CHARS",
    "GSM_EXTENSION_CHARS",
    "GSM_PART_LIMIT",
    "GSM_SINGLE_LIMIT",
    "SMART_ENCODING_MAP",
    "UCS2",
    "UCS2_PART_LIMIT",
    "UCS2_SINGLE_LIMIT",
    "Encoding",
    "NonGsmChar",
    "Replacement",
    "SegmentInputError",
    "SegmentPart",
    "SegmentResult",
    "analyse",
    "count_segments",
    "count_segments_clusters",
]

Encoding = Literal["GSM-7", "UCS-2"]

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"

GSM_SINGLE_LIMIT: Final = 160
GSM_PART_LIMIT: Final = 153
UCS2_SINGLE_LIMIT: Final = 70
UCS2_PART_LIMIT: Final = 67

GSM_BASIC_CHARS: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The 127 printable characters of the GSM 03.38 basic table (0x1B, the escape, is not a character)."""

GSM_EXTENSION_CHARS: Final = "\x0c^{}\\[~]|€"
"""The extension table reached through the escape: each costs 2 septets."""

_GSM_CHARS: Final = frozenset(GSM_BASIC_CHARS + GSM_EXTENSION_CHARS)

_NON_GSM_RE: Final = re.compile("[^" + re.escape(GSM_BASIC_CHARS + GSM_EXTENSION_CHARS) + "]")
_EXTENSION_RE: Final = re.compile("[" + re.escape(GSM_EXTENSION_CHARS) + "]")
_ASTRAL_RE: Final = re.compile(r"[\U00010000-\U0010ffff]")
_INVALID_RE: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# A character that can join its neighbour into one grapheme cluster: every no-break rule of UAX #29 (GB6-GB13)
# has one of these on one side, so a body without any has one cluster per character (CR LF aside, which we keep
# apart anyway).  This quick check keeps the cluster walk off bodies where it cannot change the count.
_CLUSTER_JOINER_RE: Final = regex.compile(
    r"[\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=SpacingMark}"
    r"\p{Grapheme_Cluster_Break=Prepend}\p{Grapheme_Cluster_Break=Regional_Indicator}"
    r"\p{Grapheme_Cluster_Break=L}\p{Grapheme_Cluster_Break=V}\p{Grapheme_Cluster_Break=T}]"
)
# One extended grapheme cluster, but a CR on its own: Twilio's calculator splits CR LF into two characters.
_CLUSTER_RE: Final = regex.compile(r"\r|\X")

_ASCII_BASIC_BYTES: Final = bytes(ord(c) for c in GSM_BASIC_CHARS if c.isascii())
_ASCII_EXTENSION_BYTES: Final = b"\x0c^{}\\[~]|"
_ASCII_ACCEPTED_NON_GSM_BYTES: Final = b"\t`"
_LATIN1_VALID_BYTES: Final = bytes(b for b in range(256) if not _INVALID_RE.match(chr(b)))

_SMART_BASE: Final[dict[str, str]] = {
    # Double quotes.
    "\u00ab": '"',  # « LEFT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u00bb": '"',  # » RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u201c": '"',  # “ LEFT DOUBLE QUOTATION MARK
    "\u201d": '"',  # ” RIGHT DOUBLE QUOTATION MARK
    "\u201e": '"',  # „ DOUBLE LOW-9 QUOTATION MARK
    "\u201f": '"',  # ‟ DOUBLE HIGH-REVERSED-9 QUOTATION MARK
    "\u02ba": '"',  # ʺ MODIFIER LETTER DOUBLE PRIME
    "\u02ee": '"',  # ˮ MODIFIER LETTER DOUBLE APOSTROPHE
    "\u2033": '"',  # ″ DOUBLE PRIME
    "\u275d": '"',  # ❝ HEAVY DOUBLE TURNED COMMA QUOTATION MARK ORNAMENT
    "\u275e": '"',  # ❞ HEAVY DOUBLE COMMA QUOTATION MARK ORNAMENT
    "\u301d": '"',  # 〝 REVERSED DOUBLE PRIME QUOTATION MARK
    "\u301e": '"',  # 〞 DOUBLE PRIME QUOTATION MARK
    # Single quotes, apostrophes, primes and accents used as apostrophes.
    "\u2018": "'",  # ‘ LEFT SINGLE QUOTATION MARK
    "\u2019": "'",  # ’ RIGHT SINGLE QUOTATION MARK
    "\u201b": "'",  # ‛ SINGLE HIGH-REVERSED-9 QUOTATION MARK
    "\u2032": "'",  # ′ PRIME
    "\u2035": "'",  # ‵ REVERSED PRIME
    "\u02b9": "'",  # ʹ MODIFIER LETTER PRIME
    "\u02bb": "'",  # ʻ MODIFIER LETTER TURNED COMMA
    "\u02bc": "'",  # ʼ MODIFIER LETTER APOSTROPHE
    "\u02bd": "'",  # ʽ MODIFIER LETTER REVERSED COMMA
    "\u02c8": "'",  # ˈ MODIFIER LETTER VERTICAL LINE
    "\u02ca": "'",  # ˊ MODIFIER LETTER ACUTE ACCENT
    "\u02cb": "'",  # ˋ MODIFIER LETTER GRAVE ACCENT
    "\u00b4": "'",  # ´ ACUTE ACCENT
    "\u0060": "'",  # ` GRAVE ACCENT
    "\u275b": "'",  # ❛ HEAVY SINGLE TURNED COMMA QUOTATION MARK ORNAMENT
    "\u275c": "'",  # ❜ HEAVY SINGLE COMMA QUOTATION MARK ORNAMENT
    "\u2039": "<",  # ‹ SINGLE LEFT-POINTING ANGLE QUOTATION MARK
    "\u203a": ">",  # › SINGLE RIGHT-POINTING ANGLE QUOTATION MARK
    # Commas and full stops.
    "\u201a": ",",  # ‚ SINGLE LOW-9 QUOTATION MARK
    "\u3001": ",",  # 、 IDEOGRAPHIC COMMA
    "\ufe10": ",",  # ︐ PRESENTATION FORM FOR VERTICAL COMMA
    "\ufe11": ",",  # ︑ PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC COMMA
    "\ufe50": ",",  # ﹐ SMALL COMMA
    "\ufe51": ",",  # ﹑ SMALL IDEOGRAPHIC COMMA
    "\uff64": ",",  # ､ HALFWIDTH IDEOGRAPHIC COMMA
    "\u3002": ".",  # 。 IDEOGRAPHIC FULL STOP
    "\ufe52": ".",  # ﹒ SMALL FULL STOP
    "\uff61": ".",  # ｡ HALFWIDTH IDEOGRAPHIC FULL STOP
    "\u2026": "...",  # … HORIZONTAL ELLIPSIS
    # Dashes, hyphens and bullets.
    "\u2010": "-",  # ‐ HYPHEN
    "\u2011": "-",  # ‑ NON-BREAKING HYPHEN
    "\u2012": "-",  # ‒ FIGURE DASH
    "\u2013": "-",  # – EN DASH
    "\u2014": "-",  # — EM DASH
    "\u2015": "-",  # ― HORIZONTAL BAR
    "\u2043": "-",  # ⁃ HYPHEN BULLET
    "\u2212": "-",  # − MINUS SIGN
    "\u23bc": "-",  # ⎼ HORIZONTAL SCAN LINE-7
    "\u23bd": "-",  # ⎽ HORIZONTAL SCAN LINE-9
    "\ufe63": "-",  # ﹣ SMALL HYPHEN-MINUS
    "\u2022": "-",  # • BULLET
    # Spaces, separators and invisible characters.
    "\t": " ",  # CHARACTER TABULATION
    "\u00a0": " ",  # NO-BREAK SPACE
    "\u2000": " ",  # EN QUAD
    "\u2001": " ",  # EM QUAD
    "\u2002": " ",  # EN SPACE
    "\u2003": " ",  # EM SPACE
    "\u2004": " ",  # THREE-PER-EM SPACE
    "\u2005": " ",  # FOUR-PER-EM SPACE
    "\u2006": " ",  # SIX-PER-EM SPACE
    "\u2007": " ",  # FIGURE SPACE
    "\u2008": " ",  # PUNCTUATION SPACE
    "\u2009": " ",  # THIN SPACE
    "\u200a": " ",  # HAIR SPACE
    "\u202f": " ",  # NARROW NO-BREAK SPACE
    "\u205f": " ",  # MEDIUM MATHEMATICAL SPACE
    "\u3000": " ",  # IDEOGRAPHIC SPACE
    "\u2028": "\n",  # LINE SEPARATOR
    "\u2029": "\n",  # PARAGRAPH SEPARATOR
    "\u200b": "",  # ZERO WIDTH SPACE
    "\u2060": "",  # WORD JOINER
    "\ufeff": "",  # ZERO WIDTH NO-BREAK SPACE
    # Other punctuation and symbols.
    "\u00f7": "/",  # ÷ DIVISION SIGN
    "\u00bc": "1/4",  # ¼ VULGAR FRACTION ONE QUARTER
    "\u00bd": "1/2",  # ½ VULGAR FRACTION ONE HALF
    "\u00be": "3/4",  # ¾ VULGAR FRACTION THREE QUARTERS
    "\u2044": "/",  # ⁄ FRACTION SLASH
    "\u2215": "/",  # ∕ DIVISION SLASH
    "\u29f8": "/",  # ⧸ BIG SOLIDUS
    "\u29f5": "\\",  # ⧵ REVERSE SOLIDUS OPERATOR
    "\u29f9": "\\",  # ⧹ BIG REVERSE SOLIDUS
    "\ufe68": "\\",  # ﹨ SMALL REVERSE SOLIDUS
    "\u2017": "_",  # ‗ DOUBLE LOW LINE
    "\u2223": "|",  # ∣ DIVIDES
    "\u239c": "|",  # ⎜ LEFT PARENTHESIS EXTENSION
    "\u239f": "|",  # ⎟ RIGHT PARENTHESIS EXTENSION
    "\u23b8": "|",  # ⎸ LEFT VERTICAL BOX LINE
    "\u23b9": "|",  # ⎹ RIGHT VERTICAL BOX LINE
    "\u23d0": "|",  # ⏐ VERTICAL LINE EXTENSION
    "\ufe6b": "@",  # ﹫ SMALL COMMERCIAL AT
    "\ufe69": "$",  # ﹩ SMALL DOLLAR SIGN
    "\u01c3": "!",  # ǃ LATIN LETTER RETROFLEX CLICK
    "\u203c": "!!",  # ‼ DOUBLE EXCLAMATION MARK
    "\ufe15": "!",  # ︕ PRESENTATION FORM FOR VERTICAL EXCLAMATION MARK
    "\ufe57": "!",  # ﹗ SMALL EXCLAMATION MARK
    "\ufe5f": "#",  # ﹟ SMALL NUMBER SIGN
    "\ufe6a": "%",  # ﹪ SMALL PERCENT SIGN
    "\ufe60": "&",  # ﹠ SMALL AMPERSAND
    "\u2768": "(",  # ❨ MEDIUM LEFT PARENTHESIS ORNAMENT
    "\u276a": "(",  # ❪ MEDIUM FLATTENED LEFT PARENTHESIS ORNAMENT
    "\u27ee": "(",  # ⟮ MATHEMATICAL LEFT FLATTENED PARENTHESIS
    "\u2985": "(",  # ⦅ LEFT WHITE PARENTHESIS
    "\ufe59": "(",  # ﹙ SMALL LEFT PARENTHESIS
    "\u2769": ")",  # ❩ MEDIUM RIGHT PARENTHESIS ORNAMENT
    "\u276b": ")",  # ❫ MEDIUM FLATTENED RIGHT PARENTHESIS ORNAMENT
    "\u27ef": ")",  # ⟯ MATHEMATICAL RIGHT FLATTENED PARENTHESIS
    "\u2986": ")",  # ⦆ RIGHT WHITE PARENTHESIS
    "\ufe5a": ")",  # ﹚ SMALL RIGHT PARENTHESIS
    "\u2774": "{",  # ❴ MEDIUM LEFT CURLY BRACKET ORNAMENT
    "\ufe5b": "{",  # ﹛ SMALL LEFT CURLY BRACKET
    "\u2775": "}",  # ❵ MEDIUM RIGHT CURLY BRACKET ORNAMENT
    "\ufe5c": "}",  # ﹜ SMALL RIGHT CURLY BRACKET
    "\u204e": "*",  # ⁎ LOW ASTERISK
    "\u2217": "*",  # ∗ ASTERISK OPERATOR
    "\u229b": "*",  # ⊛ CIRCLED ASTERISK OPERATOR
    "\u2722": "*",  # ✢ FOUR TEARDROP-SPOKED ASTERISK
    "\u2723": "*",  # ✣ FOUR BALLOON-SPOKED ASTERISK
    "\u2724": "*",  # ✤ HEAVY FOUR BALLOON-SPOKED ASTERISK
    "\u2725": "*",  # ✥ FOUR CLUB-SPOKED ASTERISK
    "\u2731": "*",  # ✱ HEAVY ASTERISK
    "\u2732": "*",  # ✲ OPEN CENTRE ASTERISK
    "\u2733": "*",  # ✳ EIGHT SPOKED ASTERISK
    "\u273a": "*",  # ✺ SIXTEEN POINTED ASTERISK
    "\u273b": "*",  # ✻ TEARDROP-SPOKED ASTERISK
    "\u273c": "*",  # ✼ OPEN CENTRE TEARDROP-SPOKED ASTERISK
    "\u273d": "*",  # ✽ HEAVY TEARDROP-SPOKED ASTERISK
    "\u2743": "*",  # ❃ HEAVY TEARDROP-SPOKED PINWHEEL ASTERISK
    "\u2749": "*",  # ❉ BALLOON-SPOKED ASTERISK
    "\u274a": "*",  # ❊ EIGHT TEARDROP-SPOKED PROPELLER ASTERISK
    "\u274b": "*",  # ❋ HEAVY EIGHT TEARDROP-SPOKED PROPELLER ASTERISK
    "\u29c6": "*",  # ⧆ SQUARED ASTERISK
    "\ufe61": "*",  # ﹡ SMALL ASTERISK
    "\u02d6": "+",  # ˖ MODIFIER LETTER PLUS SIGN
    "\ufe62": "+",  # ﹢ SMALL PLUS SIGN
    "\u02d0": ":",  # ː MODIFIER LETTER TRIANGULAR COLON
    "\u02f8": ":",  # ˸ MODIFIER LETTER RAISED COLON
    "\u2982": ":",  # ⦂ Z NOTATION TYPE COLON
    "\ua789": ":",  # ꞉ MODIFIER LETTER COLON
    "\ufe13": ":",  # ︓ PRESENTATION FORM FOR VERTICAL COLON
    "\u204f": ";",  # ⁏ REVERSED SEMICOLON
    "\ufe14": ";",  # ︔ PRESENTATION FORM FOR VERTICAL SEMICOLON
    "\ufe54": ";",  # ﹔ SMALL SEMICOLON
    "\ufe64": "<",  # ﹤ SMALL LESS-THAN SIGN
    "\ua78a": "=",  # ꞊ MODIFIER LETTER SHORT EQUALS SIGN
    "\ufe66": "=",  # ﹦ SMALL EQUALS SIGN
    "\ufe65": ">",  # ﹥ SMALL GREATER-THAN SIGN
    "\ufe16": "?",  # ︖ PRESENTATION FORM FOR VERTICAL QUESTION MARK
    "\ufe56": "?",  # ﹖ SMALL QUESTION MARK
    "\u02c6": "^",  # ˆ MODIFIER LETTER CIRCUMFLEX ACCENT
    "\u02dc": "~",  # ˜ SMALL TILDE
    "\u02f7": "~",  # ˷ MODIFIER LETTER LOW TILDE
    "\u223c": "~",  # ∼ TILDE OPERATOR
    # Small capitals that read as capitals.
    "\u1d00": "A",
    "\u0299": "B",
    "\u1d04": "C",
    "\u1d05": "D",
    "\u1d07": "E",
    "\ua730": "F",
    "\u0262": "G",
    "\u029c": "H",
    "\u026a": "I",
    "\u1d0a": "J",
    "\u1d0b": "K",
    "\u029f": "L",
    "\u1d0d": "M",
    "\u0274": "N",
    "\u1d0f": "O",
    "\u1d18": "P",
    "\u0280": "R",
    "\ua731": "S",
    "\u1d1b": "T",
    "\u1d1c": "U",
    "\u1d20": "V",
    "\u1d21": "W",
    "\u028f": "Y",
    "\u1d22": "Z",
}


def _build_smart_map() -> dict[str, str]:
    """Return the look-alike table: the hand-written entries plus every full-width ASCII form.

    The reference is Twilio's smart-encoding list (TwilioDevEd/message-segment-calculator,
    src/libs/SmartEncodingMap.ts), with these differences: no control characters (they are rejected as input),
    no combining marks (replacing a combining tilde by ``~`` would turn a decomposed ``ñ`` into ``n~``), one
    space for a no-break space or a tab where that list has several, ``‹ ›`` to ``< >`` rather than reversed,
    ``‗`` to ``_``, line and paragraph separators to a line feed, and the whole full-width block U+FF01-U+FF5E.
    The full-width grave accent maps to an apostrophe because the backtick itself is not GSM.
    """
    table = dict(_SMART_BASE)
    for code in range(0xFF01, 0xFF5F):
        ascii_char = chr(code - 0xFEE0)
        table[chr(code)] = ascii_char if ascii_char in _GSM_CHARS else "'"
    return table


SMART_ENCODING_MAP: Final[dict[str, str]] = _build_smart_map()
"""Look-alike replacements used by smart encoding: every key is non-GSM and every value is GSM text."""

_SMART_TABLE: Final = str.maketrans(SMART_ENCODING_MAP)


class SegmentInputError(ValueError):
    """A body that cannot be segmented because it is not valid message text.

    ``code`` is stable for API clients, ``message`` is for people, ``field`` names the input that carried the
    body and ``position`` is the index of the first offending character.
    """

    code: str
    message: str
    field: str
    position: int | None

    def __init__(self, code: str, message: str, *, field: str = "text", position: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.position = position


@dataclass(frozen=True, slots=True)
class SegmentPart:
    """One part of the message as it goes on air.

    ``text`` is the part's slice of the sent text (``SegmentResult.text``) and ``units`` its cost in septets or
    UTF-16 code units.  ``start``/``end`` are the half-open character range of the *original* input that this
    part carries, so that an editor can highlight it; they differ from the slice of ``text`` only when smart
    encoding replaced a character by a different number of characters.  The ranges of all parts tile the
    input; a replacement that straddles a part boundary is counted in the earlier part, and a character that
    was removed at a boundary in the later one.
    """

    index: int
    text: str
    units: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class NonGsmChar:
    """A distinct character of the input that is outside the GSM alphabet, with every index where it occurs.

    ``replacement`` is the smart-encoding look-alike when one exists, so a composer can say which characters
    could be fixed automatically and which could not.
    """

    char: str
    code_point: str
    positions: tuple[int, ...]
    replacement: str | None


@dataclass(frozen=True, slots=True)
class Replacement:
    """One smart-encoding substitution: the input character at ``position`` was sent as ``replacement``."""

    position: int
    original: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SegmentResult:
    """Full breakdown of a body.

    ``text`` is what is sent: the input, or its smart-encoded form when ``smart_encoding_applied``.
    ``non_gsm_chars`` lists what forced UCS-2 in the sent text, so it is empty for GSM-7 results.
    ``remaining`` is how many units still fit in the last part (against the single-part limit when there is
    one part, against the per-part limit otherwise).
    """

    text: str
    encoding: Encoding
    units: int
    segments: int
    parts: tuple[SegmentPart, ...]
    remaining: int
    part_limit: int
    single_limit: int
    non_gsm_chars: tuple[NonGsmChar, ...]
    smart_encoding_applied: bool
    replacements: tuple[Replacement, ...]


def _raise_invalid(text: str, field: str) -> NoReturn:
    """Raise for the first invalid character; only called once a fast check has seen that there is one."""
    match = _INVALID_RE.search(text)
    if match is None:
        raise AssertionError("a fast check reported an invalid character that the full scan cannot find")
    char = match.group()
    position = match.start()
    if "\ud800" <= char <= "\udfff":
        raise SegmentInputError(
            "lone_surrogate",
            f"Character {position} is a lone surrogate (U+{ord(char):04X}); the text was not decoded correctly.",
            field=field,
            position=position,
        )
    raise SegmentInputError(
        "control_character",
        f"Character {position} is the control character U+{ord(char):04X}; only line feed, carriage return, "
        "form feed and tab are allowed.",
        field=field,
        position=position,
    )


def _utf16_units(text: str, field: str) -> int:
    """Validate a non-GSM body and return its length in UTF-16 code units.

    All control characters lie below U+00A0, so encoding to Latin-1 (dropping anything above U+00FF) and
    deleting the valid bytes leaves exactly the controls; the strict UTF-16 encoder itself rejects surrogates.
    Both run in C, so there is no per-character Python loop.
    """
    if text.encode("latin-1", "ignore").translate(None, _LATIN1_VALID_BYTES):
        _raise_invalid(text, field)
    try:
        return len(text.encode("utf-16-le")) >> 1
    except UnicodeEncodeError:
        _raise_invalid(text, field)


def _gsm_extension_count(text: str) -> int:
    """Count extension characters of a body already known to be all GSM."""
    latin = text.encode("latin-1", "ignore")
    return len(latin) - len(latin.translate(None, _ASCII_EXTENSION_BYTES)) + text.count("€")


def _classify(text: str, field: str) -> tuple[Encoding, int, int]:
    """Validate ``text`` and return ``(encoding, units, wide)``, ``wide`` being the number of 2-unit characters.

    ASCII bodies (most marketing traffic) never leave C: the basic characters are deleted from the bytes and
    whatever is left is examined.  Other bodies use one precompiled regex to find a non-GSM character, which
    for Chinese or emoji text usually stops within a few characters.
    """
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC_BYTES)
        if not rest:
            return GSM7, len(text), 0
        odd = rest.translate(None, _ASCII_EXTENSION_BYTES)
        if not odd:
            return GSM7, len(text) + len(rest), len(rest)
        if odd.translate(None, _ASCII_ACCEPTED_NON_GSM_BYTES):
            _raise_invalid(text, field)
        return UCS2, len(text), 0
    if _NON_GSM_RE.search(text) is None:
        wide = _gsm_extension_count(text)
        return GSM7, len(text) + wide, wide
    units = _utf16_units(text, field)
    return UCS2, units, units - len(text)


def _limits(encoding: Encoding) -> tuple[int, int]:
    return (GSM_SINGLE_LIMIT, GSM_PART_LIMIT) if encoding == GSM7 else (UCS2_SINGLE_LIMIT, UCS2_PART_LIMIT)


def _wide_unit_offsets(text: str, encoding: Encoding) -> list[int]:
    """Unit offsets at which each 2-unit character (escape + code, or surrogate pair) begins."""
    pattern = _EXTENSION_RE if encoding == GSM7 else _ASTRAL_RE
    return [match.start() + k for k, match in enumerate(pattern.finditer(text))]


def _unit_boundaries(units: int, wide_offsets: list[int], part_limit: int) -> list[int]:
    """Greedy part boundaries, in units, never cutting a 2-unit character.

    A boundary at ``b`` would cut a 2-unit character exactly when one begins at ``b - 1``; the character then
    moves whole to the next part and this part ends one unit short.  Only boundaries are visited, so the cost
    is one step per part, not per character.
    """
    wide = set(wide_offsets)
    boundaries: list[int] = []
    start = 0
    while units - start > part_limit:
        boundary = start + part_limit
        if boundary - 1 in wide:
            boundary -= 1
        boundaries.append(boundary)
        start = boundary
    return boundaries


def _cluster_boundaries(text: str, units: int, part_limit: int) -> list[int]:
    """Greedy part boundaries, in UTF-16 units, that never cut a grapheme cluster (a UCS-2 body).

    Each part ends at the last cluster start that fits.  A cluster longer than a whole part cannot be kept whole
    by anyone, so that part is cut at the SMPP boundary instead, never inside a surrogate pair.
    """
    starts: list[int] = []
    offset = 0
    for cluster in _CLUSTER_RE.findall(text):
        starts.append(offset)
        offset += len(cluster.encode("utf-16-le")) >> 1
    boundaries: list[int] = []
    astral: set[int] | None = None
    start = 0
    while units - start > part_limit:
        boundary = starts[bisect_right(starts, start + part_limit) - 1]
        if boundary <= start:
            if astral is None:
                astral = set(_wide_unit_offsets(text, UCS2))
            boundary = start + part_limit
            if boundary - 1 in astral:
                boundary -= 1
        boundaries.append(boundary)
        start = boundary
    return boundaries


def _segment_count(text: str, encoding: Encoding, units: int, wide: int) -> int:
    """Number of parts, with the boundary walk only where a 2-unit character could change the answer.

    Every part but the last holds at least ``part_limit - 1`` units, so ``n = ceil(units / part_limit)`` parts
    always suffice when ``units <= n * (part_limit - 1) + 1``; above that (and only if the body has 2-unit
    characters) the exact walk decides.
    """
    single_limit, part_limit = _limits(encoding)
    if units <= single_limit:
        return 1
    parts = -(-units // part_limit)
    if wide == 0 or units <= parts * (part_limit - 1) + 1:
        return parts
    return len(_unit_boundaries(units, _wide_unit_offsets(text, encoding), part_limit)) + 1


def count_segments(text: str, *, field: str = "text") -> tuple[Encoding, int, int]:
    """Return ``(encoding, units, segments)`` for bulk use; always equal to what :func:`analyse` reports.

    Raises :class:`SegmentInputError` for control characters and surrogates, ``TypeError`` for non-strings.
    """
    if not isinstance(text, str):
        raise TypeError(f"SMS text must be str, not {type(text).__name__}")
    encoding, units, wide = _classify(text, field)
    return encoding, units, _segment_count(text, encoding, units, wide)


def count_segments_clusters(text: str, *, field: str = "text") -> tuple[Encoding, int, int]:
    """:func:`count_segments` for a provider that splits the message itself keeping grapheme clusters whole
    (Twilio); always equal to what ``analyse(text, keep_clusters=True)`` reports.

    Same encoding and units; the part count differs only for a multi-part UCS-2 body with a character that
    joins a cluster, so every other body costs one quick check more than :func:`count_segments`.
    """
    encoding, units, segments = count_segments(text, field=field)
    if segments == 1 or encoding == GSM7 or _CLUSTER_JOINER_RE.search(text) is None:
        return encoding, units, segments
    return encoding, units, len(_cluster_boundaries(text, units, UCS2_PART_LIMIT)) + 1


def _non_gsm_chars(text: str) -> tuple[NonGsmChar, ...]:
    """Distinct non-GSM characters in order of first appearance, each with all its positions."""
    positions: dict[str, list[int]] = {}
    gsm = _GSM_CHARS
    for index, char in enumerate(text):
        if char not in gsm:
            found = positions.get(char)
            if found is None:
                positions[char] = [index]
            else:
                found.append(index)
    return tuple(
        NonGsmChar(
            char=char,
            code_point=f"U+{ord(char):04X}",
            positions=tuple(indexes),
            replacement=SMART_ENCODING_MAP.get(char),
        )
        for char, indexes in positions.items()
    )


def _source_boundary(boundary: int, replacements: tuple[Replacement, ...], sent_starts: list[int]) -> int:
    """Map a character boundary in the sent text back to the input.

    ``sent_starts[k]`` is where replacement ``k`` begins in the sent text.  A boundary inside a replacement's
    output maps to just after the replaced character; elsewhere the boundary is shifted back by the growth of
    all replacements before it.
    """
    k = bisect_left(sent_starts, boundary) - 1
    if k < 0:
        return boundary
    replacement = replacements[k]
    end = sent_starts[k] + len(replacement.replacement)
    if boundary < end:
        return replacement.position + 1
    return replacement.position + 1 + (boundary - end)


def analyse(
    text: str, *, smart_encoding: bool = False, field: str = "text", keep_clusters: bool = False
) -> SegmentResult:
    """Return the full breakdown of ``text``: encoding, units, parts with their ranges, and what forced UCS-2.

    With ``smart_encoding`` the look-alikes of :data:`SMART_ENCODING_MAP` are substituted only if that makes the
    whole body GSM-7; otherwise the input is analysed unchanged and no replacement is reported.  With
    ``keep_clusters`` the parts never cut a grapheme cluster, as a provider that splits by itself (Twilio) does.
    """
    if not isinstance(text, str):
        raise TypeError(f"SMS text must be str, not {type(text).__name__}")
    encoding, units, _wide = _classify(text, field)
    sent = text
    non_gsm: tuple[NonGsmChar, ...] = ()
    replacements: tuple[Replacement, ...] = ()
    if encoding == UCS2:
        non_gsm = _non_gsm_chars(text)
        if smart_encoding and all(item.replacement is not None for item in non_gsm):
            candidate = text.translate(_SMART_TABLE)
            candidate_encoding, candidate_units, _wide = _classify(candidate, field)
            if candidate_encoding == GSM7:
                sent, encoding, units = candidate, candidate_encoding, candidate_units
                replacements = tuple(
                    sorted(
                        (
                            Replacement(position=position, original=item.char, replacement=item.replacement or "")
                            for item in non_gsm
                            for position in item.positions
                        ),
                        key=lambda replacement: replacement.position,
                    )
                )
                non_gsm = ()

    single_limit, part_limit = _limits(encoding)
    if units <= single_limit:
        unit_bounds: list[int] = []
        char_bounds: list[int] = []
    else:
        wide_offsets = _wide_unit_offsets(sent, encoding)
        if keep_clusters and encoding == UCS2 and _CLUSTER_JOINER_RE.search(sent) is not None:
            unit_bounds = _cluster_boundaries(sent, units, part_limit)
        else:
            unit_bounds = _unit_boundaries(units, wide_offsets, part_limit)
        char_bounds = [bound - bisect_left(wide_offsets, bound) for bound in unit_bounds]

    if any(len(item.replacement) != 1 for item in replacements):
        sent_starts: list[int] = []
        growth = 0
        for item in replacements:
            sent_starts.append(item.position + growth)
            growth += len(item.replacement) - 1
        source_bounds = [_source_boundary(bound, replacements, sent_starts) for bound in char_bounds]
    else:
        source_bounds = char_bounds

    unit_edges = [0, *unit_bounds, units]
    char_edges = [0, *char_bounds, len(sent)]
    source_edges = [0, *source_bounds, len(text)]
    parts = tuple(
        SegmentPart(
            index=i,
            text=sent[char_edges[i] : char_edges[i + 1]],
            units=unit_edges[i + 1] - unit_edges[i],
            start=source_edges[i],
            end=source_edges[i + 1],
        )
        for i in range(len(unit_edges) - 1)
    )
    last_limit = single_limit if len(parts) == 1 else part_limit
    return SegmentResult(
        text=sent,
        encoding=encoding,
        units=units,
        segments=len(parts),
        parts=parts,
        remaining=last_limit - parts[-1].units,
        part_limit=part_limit,
        single_limit=single_limit,
        non_gsm_chars=non_gsm,
        smart_encoding_applied=bool(replacements),
        replacements=replacements,
    )
