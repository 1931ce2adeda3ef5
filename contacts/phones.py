"""Phone normalisation for bulk imports: phonenumbers' answer, faster for the common shapes.

``phonenumbers.parse`` + ``is_valid_number`` costs ~100 µs a number, which caps a CSV import
near 8k rows/s. Nearly every row of a Hong Kong file has one of a few shapes: ``+852XXXXXXXX``,
``XXXXXXXX`` or ``XXXX XXXX``. For those, :class:`PhoneNormaliser` decides validity from the
region's own phonenumbers metadata (the same general and per-type national-number patterns and
possible lengths ``is_valid_number`` tests, compiled once per length) and formats E.164 itself.

The fast path only ever *accepts*; anything it is not certain about (another country code, an
IDD prefix such as 00852, a leading 0, punctuation other than spaces and hyphens, letters, an
invalid number) goes to the full ``phonenumbers.parse``, which stays the authority and writes
every error message. ``tests/contacts/test_phones.py`` checks the two agree on many generated
numbers of every shape.
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

from smsplatform.kernel.phones import DEFAULT_REGION

# The order is irrelevant for validity: a number is valid when it fits the general description
# and any one type (phonenumbers' _number_type_helper returns the first that fits).
_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
# Digits with single spaces or hyphens between groups, optionally after '+'. ASCII digits only:
# phonenumbers also reads other scripts' digits, which the full path handles.
_SHAPE = re.compile(r"(\+?)([0-9]+(?:[ -][0-9]+)*)")


class _RegionRules:
    """Validity of a national significant number of one region, per length: two regexes."""

    def __init__(self, metadata: Any) -> None:
        general = metadata.general_desc
        self.by_length: dict[int, re.Pattern[str]] = {}
        for length in sorted(set(general.possible_length or ())):
            patterns = []
            for name in _TYPE_DESCS:
                desc = getattr(metadata, name)
                if desc is None or not desc.national_number_pattern:
                    continue
                if desc.possible_length and length not in desc.possible_length:
                    continue
                patterns.append(f"(?:{desc.national_number_pattern})")
            if patterns:
                # One fullmatch: the general pattern as a lookahead over the whole number, then
                # any type that admits this length.
                combined = f"(?=(?:{general.national_number_pattern})\\Z)(?:{'|'.join(patterns)})"
                self.by_length[length] = re.compile(combined)

    def valid(self, national: str) -> bool:
        rule = self.by_length.get(len(national))
        return rule is not None and rule.fullmatch(national) is not None


class PhoneNormaliser:
    """``(e164, country)`` or an error message for one raw phone, as phonenumbers decides it.

    Build one per import (compiling the patterns takes about a millisecond) and call it per row.
    """

    def __init__(self, region: str = DEFAULT_REGION) -> None:
        self._region = region
        self._fast = False
        metadata = PhoneMetadata.metadata_for_region(region)
        code = metadata.country_code if metadata is not None else None
        if metadata is None or code is None:
            return
        # The shortcut below re-implements parse() only where parse() is simple: the country code
        # belongs to this region alone (so region_code_for_number is this region) and no national
        # prefix is stripped while parsing. Elsewhere every number takes the full path.
        if phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code) != (region,) or metadata.national_prefix_for_parsing:
            return
        self._code = str(code)
        self._plus_prefix = f"+{code}"
        self._idd = re.compile(metadata.international_prefix) if metadata.international_prefix else None
        self._rules = _RegionRules(metadata)
        self._fast = True

    def __call__(self, raw: str) -> tuple[str, str] | str:
        if self._fast:
            national = self._fast_national(raw)
            if national is not None and self._rules.valid(national):
                return self._plus_prefix + national, self._region
        return self.full(raw)

    def _fast_national(self, raw: str) -> str | None:
        """The national significant number when ``raw`` is a simple number of this region
        that parse() would read the same way; None to leave it to parse()."""
        # The commonest shapes without a regex (isdigit alone would accept other scripts' digits).
        if raw.isascii() and raw.isdigit():
            plus, digits = False, raw
        elif raw.isascii() and raw[1:].isdigit() and raw[0] == "+":
            plus, digits = True, raw[1:]
        else:
            shape = _SHAPE.fullmatch(raw)
            if shape is None:
                return None
            plus, digits = bool(shape.group(1)), shape.group(2).replace(" ", "").replace("-", "")
        if plus:
            # +<our code><national>: country codes are prefix-free, so parse() reads ours.
            if not digits.startswith(self._code):
                return None
            national = digits[len(self._code) :]
        else:
            national = digits
            # parse() would read an IDD prefix (00...) as dialling abroad, and may strip our own
            # country code from a national number that starts with it: both left to parse().
            if national.startswith(self._code) or (self._idd is not None and self._idd.match(national)):
                return None
        # A leading zero is kept as italian_leading_zero by parse(): left to it.
        if not national or national[0] == "0":
            return None
        return national

    def full(self, raw: str) -> tuple[str, str] | str:
        """The reference path: phonenumbers.parse + is_valid_number + E.164."""
        try:
            number = phonenumbers.parse(raw, self._region)
        except phonenumbers.NumberParseException as exc:
            return f"not a phone number ({exc})"
        if not phonenumbers.is_valid_number(number):
            return "not a valid number for its country"
        return (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
            phonenumbers.region_code_for_number(number) or "",
        )
