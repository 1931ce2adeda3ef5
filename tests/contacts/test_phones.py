"""The import's phone fast path gives exactly phonenumbers' answer (parse + is_valid_number).

The fast path may only accept, and only what phonenumbers accepts, with the same E.164 and
country; everything else falls through to phonenumbers itself. Checked on generated numbers of
every shape an import sees (local, +852, spaced, hyphenated, IDD, other countries, junk) and on
a sweep over every Hong Kong 8-digit prefix block.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contacts.phones import PhoneNormaliser

NORMALISE = PhoneNormaliser("HK")


def reference(raw: str) -> tuple[str, str] | None:
    """What phonenumbers says, independently of PhoneNormaliser.full."""
    try:
        number = phonenumbers.parse(raw, "HK")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phonenumbers.region_code_for_number(number) or ""


def check(raw: str) -> bool:
    """Assert agreement; return whether the fast path decided it."""
    expected = reference(raw)
    got = NORMALISE(raw)
    assert (got if isinstance(got, tuple) else None) == expected, raw
    national = NORMALISE._fast_national(raw)
    fast = national is not None and NORMALISE._rules.valid(national)
    if fast:
        assert expected == (f"+852{national}", "HK"), raw
    return fast


def shapes(digits: str, rng: random.Random) -> list[str]:
    spaced = f"{digits[:4]} {digits[4:]}" if len(digits) > 4 else digits
    return [
        digits,
        spaced,
        f"{digits[:4]}-{digits[4:]}",
        f"+852{digits}",
        f"+852 {spaced}",
        f"+852-{digits}",
        f"852{digits}",
        f"00852{digits}",
        f"0{digits}",
        f"+{digits}",
        f"+85{digits}",
        f"+8520{digits}",
        f"({digits[:3]}) {digits[3:]}",
        f"{digits} x12",
        f"{digits}#",
        "".join(chr(ord(c) + 0xFEE0) for c in digits),  # full-width digits
        digits[: rng.randrange(len(digits) + 1)],
    ]


COMMON = 6  # the first shapes above: local or +852, plain, spaced or hyphenated


def test_fast_path_agrees_with_phonenumbers_on_generated_numbers() -> None:
    rng = random.Random(20260105)
    accepted = fast = 0
    for _ in range(2000):
        length = rng.choice([8, 8, 8, 8, 5, 6, 7, 9, 10, 11, 12, 3])
        digits = "".join(rng.choice("0123456789") for _ in range(length))
        if length == 8 and rng.random() < 0.5:
            digits = rng.choice("2345679") + digits[1:]  # more numbers that exist
        for i, raw in enumerate(shapes(digits, rng)):
            decided = check(raw)
            if i < COMMON and reference(raw) is not None:
                accepted += 1
                fast += decided
    # The point of the fast path: every valid number in a common shape is decided by it.
    assert accepted > 1000 and fast == accepted


@pytest.mark.parametrize("first", "0123456789")
def test_every_eight_digit_prefix_block(first: str) -> None:
    """Every 4-digit block starting with ``first``, each with a random line number, in the
    three shapes a Hong Kong CSV mostly has."""
    rng = random.Random(first)
    for block in range(1000):
        prefix = f"{first}{block:03d}"
        digits = f"{prefix}{rng.randrange(10_000):04d}"
        for raw in (digits, f"{digits[:4]} {digits[4:]}", f"+852{digits}"):
            check(raw)


def test_common_shapes_take_the_fast_path() -> None:
    for raw in ("61000000", "6100 0000", "+85261000000", "+852 6100 0000", "9123-4567", "21234567"):
        assert check(raw), raw
    # Left to phonenumbers (and still right).
    for raw in ("+6591234567", "0085291234567", "85291234567", "１２３４５６７８", "12345678", "abc"):
        assert not check(raw), raw


def test_the_full_path_writes_the_errors() -> None:
    assert NORMALISE("12345678") == "not a valid number for its country"
    assert str(NORMALISE("hello")).startswith("not a phone number")


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="0123456789 -+()#x", min_size=0, max_size=18))
def test_any_mix_of_digits_and_punctuation(raw: str) -> None:
    check(raw)


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["", "+852", "+852 ", "852", "00852", "+", "+86", "+65", "0"]),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.sampled_from(["", " ", "-"]),
)
def test_prefixed_numbers(prefix: str, digits: str, separator: str) -> None:
    middle = len(digits) // 2
    check(prefix + digits[:middle] + separator + digits[middle:])
