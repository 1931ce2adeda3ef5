"""Tests of the SMS segment engine (smsplatform.kernel.segments): published vectors, edge cases and properties.

Published vectors are copied (inputs and expected counts only) from the test suites of independent open-source
calculators, each cited where used:

* Twilio, TwilioDevEd/message-segment-calculator: tests/index.test.js, tests/segments.test.js,
  tests/methods.test.js, tests/charDetails.test.js.
* phlib/sms-length (PHP): tests/SmsLengthTest.php.
* instasent/sms-counter-php: Tests/SMSCounterTest.php.

None of these tests needs the database.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsplatform.kernel.segments import (
    GSM_BASIC_CHARS,
    GSM_EXTENSION_CHARS,
    SMART_ENCODING_MAP,
    NonGsmChar,
    Replacement,
    SegmentInputError,
    SegmentResult,
    analyse,
    count_segments,
)

# The GSM 03.38 basic table as laid out (column by column of the 16x8 code table) in phlib/sms-length,
# tests/SmsLengthTest.php (GSM0338_BASIC), kept independent of the engine's own constant.
PHLIB_GSM0338_BASIC = (
    "@Δ 0¡P¿p"
    "£_!1AQaq"
    '$Φ"2BRbr'
    "¥Γ#3CScs"
    "èΛ¤4DTdt"
    "éΩ%5EUeu"
    "ùΠ&6FVfv"
    "ìΨ'7GWgw"
    "òΣ(8HXhx"
    "ÇΘ)9IYiy"
    "\nΞ*:JZjz"
    "Ø+;KÄkä"
    "øÆ,<LÖlö"
    "\ræ-=MÑmñ"
    "Åß.>NÜnü"
    "åÉ/?O§oà"
)
PHLIB_GSM0338_EXTENDED = "|^€{}[~]\\"
REFERENCE_EXTENSION = PHLIB_GSM0338_EXTENDED + "\x0c"
REFERENCE_GSM = frozenset(PHLIB_GSM0338_BASIC + REFERENCE_EXTENSION)


def reference_split(text: str) -> tuple[str, int, list[str]]:
    """A deliberately naive, character-by-character greedy splitter used as the oracle for property tests."""
    gsm = all(char in REFERENCE_GSM for char in text)
    if gsm:
        costs = [2 if char in REFERENCE_EXTENSION else 1 for char in text]
        single, per_part = 160, 153
    else:
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
        single, per_part = 70, 67
    total = sum(costs)
    if total <= single:
        return ("GSM-7" if gsm else "UCS-2"), total, [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char, cost in zip(text, costs, strict=True):
        if used + cost > per_part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    parts.append("".join(current))
    return ("GSM-7" if gsm else "UCS-2"), total, parts


def units_of(text: str, encoding: str) -> int:
    if encoding == "GSM-7":
        return sum(2 if char in REFERENCE_EXTENSION else 1 for char in text)
    return len(text.encode("utf-16-le")) // 2


def assert_consistent(result: SegmentResult, original: str) -> None:
    """Invariants every result must satisfy, whatever the input."""
    assert count_segments(result.text) == (result.encoding, result.units, result.segments)
    assert result.segments == len(result.parts)
    assert "".join(part.text for part in result.parts) == result.text
    assert sum(part.units for part in result.parts) == result.units
    limit = result.single_limit if result.segments == 1 else result.part_limit
    assert result.remaining == limit - result.parts[-1].units
    for i, part in enumerate(result.parts):
        assert part.index == i
        assert part.units <= limit
        assert part.units == units_of(part.text, result.encoding)
        part.text.encode("utf-16-le")  # a part holding half a surrogate pair would not encode
        if i + 1 < len(result.parts):
            next_char = result.parts[i + 1].text[0]
            assert part.units + units_of(next_char, result.encoding) > result.part_limit, "part not filled greedily"
    assert result.parts[0].start == 0
    assert result.parts[-1].end == len(original)
    for previous, part in zip(result.parts, result.parts[1:], strict=False):
        assert previous.end == part.start
        assert part.start <= part.end
    if not result.smart_encoding_applied:
        assert result.text == original
        assert result.replacements == ()
        for part in result.parts:
            assert original[part.start : part.end] == part.text
    else:
        assert result.encoding == "GSM-7"
        rebuilt = list(original)
        for replacement in result.replacements:
            assert original[replacement.position] == replacement.original
            rebuilt[replacement.position] = replacement.replacement
        assert "".join(rebuilt) == result.text
        out_len = [0]
        for char in original:
            out_len.append(out_len[-1] + len(SMART_ENCODING_MAP.get(char, char)))
        sent_edge = 0
        for part in result.parts[:-1]:
            sent_edge += len(part.text)
            assert out_len[part.end] >= sent_edge
            assert part.end == 0 or out_len[part.end - 1] < sent_edge
    if result.encoding == "GSM-7":
        assert result.non_gsm_chars == ()
    else:
        assert result.non_gsm_chars
        for item in result.non_gsm_chars:
            assert item.code_point == f"U+{ord(item.char):04X}"
            assert all(result.text[position] == item.char for position in item.positions)


def check(text: str, *, smart_encoding: bool = False) -> SegmentResult:
    result = analyse(text, smart_encoding=smart_encoding)
    assert_consistent(result, text)
    return result


# --- Published vectors ------------------------------------------------------------------------------------------


# TwilioDevEd/message-segment-calculator, tests/index.test.js ("Basic tests"). messageSize is in bits:
# septets x 7 for GSM-7, code units x 16 for UCS-2.
TWILIO_BASIC = [
    (
        "{23456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "GSM-7",
        1,
        1120,
    ),
    (
        "{234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890",
        "GSM-7",
        2,
        1127,
    ),
    ("😜23456789012345678901234567890123456789012345678901234567890123456789", "UCS-2", 1, 1120),
    ("😜234567890123456789012345678901234567890123456789012345678901234567890", "UCS-2", 2, 1136),
]


@pytest.mark.parametrize(("body", "encoding", "segments", "message_bits"), TWILIO_BASIC)
def test_twilio_basic_vectors(body: str, encoding: str, segments: int, message_bits: int) -> None:
    result = check(body)
    assert result.encoding == encoding
    assert result.segments == segments
    assert result.units * (7 if encoding == "GSM-7" else 16) == message_bits


def test_twilio_segments_analysis_gsm() -> None:
    """TwilioDevEd/message-segment-calculator, tests/segments.test.js: 307 digits, the third part holds '7'."""
    body = "1234567890" * 30 + "1234567"
    result = check(body)
    assert [part.units for part in result.parts] == [153, 153, 1]
    assert result.parts[2].text == "7"


def test_twilio_segments_analysis_ucs2() -> None:
    """TwilioDevEd/message-segment-calculator, tests/segments.test.js: the third UCS-2 part holds only '4'."""
    body = "😜2345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234"
    result = check(body)
    assert result.encoding == "UCS-2"
    assert [part.units for part in result.parts] == [67, 67, 1]
    assert result.parts[2].text == "4"


def test_twilio_non_gsm_characters() -> None:
    """TwilioDevEd/message-segment-calculator, tests/methods.test.js: getNonGsmCharacters('más') == ['á']."""
    result = check("más")
    assert [item.char for item in result.non_gsm_chars] == ["á"]
    assert result.non_gsm_chars[0] == NonGsmChar(char="á", code_point="U+00E1", positions=(1,), replacement=None)


def test_twilio_char_details_segment_indices() -> None:
    """TwilioDevEd/message-segment-calculator, tests/charDetails.test.js: 'A' x 161 splits after index 152."""
    result = check("A" * 161)
    assert [(part.start, part.end) for part in result.parts] == [(0, 153), (153, 161)]
    assert check("@😀").encoding == "UCS-2"


def test_twilio_issue_57_extension_chars_count_one_unit_in_ucs2() -> None:
    """TwilioDevEd/message-segment-calculator, tests/charDetails.test.js (issue #57).

    Twilio's calculator once counted ``| ^ {`` as 2 units even after a non-GSM character had switched the message
    to UCS-2, overstating the length; in UCS-2 they are ordinary 1-unit characters.
    """
    body = "||||||||||||||||||||||||{||||||||||||||||||||||||||||∞||||||||||^|||||"
    assert count_segments(body) == ("UCS-2", 70, 1)
    assert check(body).parts[0].units == 70


# phlib/sms-length, tests/SmsLengthTest.php, providerSize(): (content, encoding, characters, messageCount,
# upperBreakpoint); phlib names the encodings '7-bit' and 'ucs-2'.
PHLIB_SIZE = [
    ("gsm-basic", PHLIB_GSM0338_BASIC, "GSM-7", 127, 1, 160),
    ("gsm-extended", PHLIB_GSM0338_EXTENDED, "GSM-7", 18, 1, 160),
    ("simple-basic", "simple msg", "GSM-7", 10, 1, 160),
    ("simple-extended", "simple msg plus € extended char", "GSM-7", 32, 1, 160),
    ("utf16-1", "simple msg plus • 1 UTF-16 code unit char", "UCS-2", 41, 1, 70),
    ("utf16-2", "simple msg plus \U0001f4f1 2 UTF-16 code unit char", "UCS-2", 42, 1, 70),
    ("long-gsm-simple", "simple msg" * 50, "GSM-7", 500, 4, 612),
    ("long-gsm-exact", "exact max" * 153, "GSM-7", 1377, 9, 1377),
    ("long-gsm-ex-1", PHLIB_GSM0338_EXTENDED * 40, "GSM-7", 720, 5, 765),
    ("long-gsm-ex-2", PHLIB_GSM0338_EXTENDED * 76, "GSM-7", 1368, 9, 1377),
    ("long-ucs-1", "simple msg plus •" * 20, "UCS-2", 340, 6, 402),
    ("long-ucs-2", "simple msg plus \U0001f4f1" * 20, "UCS-2", 360, 6, 402),
    ("long-ucs-exact", "exact•max" * 67, "UCS-2", 603, 9, 603),
    ("empty", "", "GSM-7", 0, 1, 160),
    (
        "escape-at-boundary",
        "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown f[x jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the.",
        "GSM-7",
        306,
        3,
        459,
    ),
    ("surrogate-at-boundary", "🌐" * 67, "UCS-2", 134, 3, 201),
]


@pytest.mark.parametrize(
    ("content", "encoding", "units", "segments", "upper_breakpoint"),
    [case[1:] for case in PHLIB_SIZE],
    ids=[case[0] for case in PHLIB_SIZE],
)
def test_phlib_size_vectors(content: str, encoding: str, units: int, segments: int, upper_breakpoint: int) -> None:
    assert count_segments(content) == (encoding, units, segments)
    result = check(content)
    assert segments * (result.single_limit if segments == 1 else result.part_limit) == upper_breakpoint


def test_phlib_escape_at_boundary_moves_to_next_part() -> None:
    """The '[' of phlib's 306-septet vector would occupy septets 153-154: it opens the second part."""
    result = check(PHLIB_SIZE[14][1])
    assert result.parts[0].text.endswith("quick brown f")
    assert result.parts[0].units == 152
    assert result.parts[1].text.startswith("[x jumps")


# instasent/sms-counter-php, Tests/SMSCounterTest.php: (text, encoding, length, remaining, messages).
INSTASENT = [
    ("testGSM", "a GSM Text", "GSM-7", 10, 150, 1),
    ("testGSMSymbols", "a GSM +Text", "GSM-7", 11, 149, 1),
    ("testGSMMultiPage", "1234567890" * 17, "GSM-7", 170, 153 * 2 - 170, 2),
    ("testUnicodeMultiPage", "`" + "1234567890" * 7, "UCS-2", 71, 67 * 2 - 71, 2),
    ("testCarriageReturn", "\n\r", "GSM-7", 2, 158, 1),
    ("testUnicode", "`", "UCS-2", 1, 69, 1),
]


@pytest.mark.parametrize(
    ("text", "encoding", "units", "remaining", "segments"),
    [case[1:] for case in INSTASENT],
    ids=[case[0] for case in INSTASENT],
)
def test_instasent_vectors(text: str, encoding: str, units: int, remaining: int, segments: int) -> None:
    result = check(text)
    assert (result.encoding, result.units, result.remaining, result.segments) == (encoding, units, remaining, segments)


def test_instasent_gsm_alphabet_and_non_gsm_chars() -> None:
    """instasent/sms-counter-php, Tests/SMSCounterTest.php: testSanitizeToGSM and testRemoveNonGSMChars.

    Their first two sanitize vectors come back unchanged (all GSM, extension characters included); in
    'áno-unicode-remaining` ñ' only 'á' and '`' are removed, and 'dadáó' loses its accents.
    """
    assert (
        count_segments(
            "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞ^{}\\[~]|€ÆæßÉ!\\\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
        )[0]
        == "GSM-7"
    )
    assert (
        count_segments(
            "Lhg jjjo fx 382 64237 12299 qmecb. Ç éæ+! -[Å*_ (¡)| ?Λ^ ~£;ΩΠ¿ ÑΔ #ΓüΘ¥ñ,É øΨì] ò= Ü. @å<: ö%'Æ¤\"Ö> Ø§Φ{ }/&Ä ùß\\€ èà Ξ$äΣ."
        )[0]
        == "GSM-7"
    )
    result = check("áno-unicode-remaining` ñ")
    assert [(item.char, item.positions) for item in result.non_gsm_chars] == [("á", (0,)), ("`", (21,))]
    assert [item.char for item in check("dadáó").non_gsm_chars] == ["á", "ó"]


def test_naive_calculators_undercount_escape_at_boundary() -> None:
    """153 x ']' is 306 septets but needs 3 parts, not 2.

    instasent/sms-counter-php (SMSCounter.php, count()) computes ceil(length / 153) and so reports 2 messages
    here; it cannot see that every part can hold at most 76 escaped characters (152 septets).  The same
    ceil-based arithmetic undercounts emoji bodies whose surrogate pairs straddle a 67-unit boundary.
    """
    assert count_segments("]" * 153) == ("GSM-7", 306, 3)
    result = check("]" * 153)
    assert [part.units for part in result.parts] == [152, 152, 2]
    assert count_segments("😀" * 67) == ("UCS-2", 134, 3)


def test_grapheme_clusters_are_split_on_code_points() -> None:
    """A ZWJ emoji sequence can straddle parts: handsets reassemble the text before display.

    Twilio's calculator (src/libs/SegmentedMessage.ts) keeps a whole grapheme cluster in one segment; we follow
    the encoding rule and only keep each surrogate pair together, which is what the units on the wire allow.
    """
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    result = check("a" * 64 + family + "b" * 10)
    assert result.parts[0].text == "a" * 64 + "\U0001f468\u200d"
    assert result.parts[0].units == 67
    assert result.parts[1].text.startswith("\U0001f469\u200d\U0001f467")


# --- Alphabet ---------------------------------------------------------------------------------------------------


def test_basic_table_is_exactly_gsm_03_38() -> None:
    assert len(GSM_BASIC_CHARS) == 127
    assert set(GSM_BASIC_CHARS) == set(PHLIB_GSM0338_BASIC)
    assert set(GSM_EXTENSION_CHARS) == set(REFERENCE_EXTENSION)
    assert count_segments(GSM_BASIC_CHARS) == ("GSM-7", 127, 1)
    for char in GSM_BASIC_CHARS:
        assert count_segments(char) == ("GSM-7", 1, 1), repr(char)
    for char in GSM_EXTENSION_CHARS:
        assert count_segments(char) == ("GSM-7", 2, 1), repr(char)


@pytest.mark.parametrize(
    "char",
    [
        "ç",
        "`",
        "°",
        "\u2018",
        "\u2019",
        "\u201c",
        "\u201d",
        "，",
        "。",
        "「",
        "」",
        "、",
        "\u00a0",
        "á",
        "\t",
        "Ω\u0301"[-1],
    ],
)
def test_non_gsm_characters_force_ucs2(char: str) -> None:
    result = check(f"Hello {char} world")
    assert result.encoding == "UCS-2"
    assert result.units == 13
    assert [item.char for item in result.non_gsm_chars] == [char]
    assert result.non_gsm_chars[0].positions == (6,)


def test_upper_case_c_cedilla_is_gsm_but_lower_case_is_not() -> None:
    assert count_segments("Ç") == ("GSM-7", 1, 1)
    assert count_segments("ç") == ("UCS-2", 1, 1)


def test_euro_counts_two_septets() -> None:
    assert count_segments("€") == ("GSM-7", 2, 1)
    assert count_segments("Price: 5€") == ("GSM-7", 10, 1)
    assert count_segments("€" * 80) == ("GSM-7", 160, 1)
    assert count_segments("€" * 80 + "a") == ("GSM-7", 161, 2)


def test_form_feed_is_an_extension_character() -> None:
    assert count_segments("a\x0cb") == ("GSM-7", 4, 1)
    assert count_segments("親\x0c") == ("UCS-2", 2, 1)


def test_astral_characters_count_two_units() -> None:
    assert count_segments("𨋢") == ("UCS-2", 2, 1)
    assert count_segments("升降機𨋢") == ("UCS-2", 5, 1)
    assert count_segments("😀" * 35) == ("UCS-2", 70, 1)
    assert count_segments("😀" * 35 + "a") == ("UCS-2", 71, 2)
    result = check("𨋢")
    assert result.non_gsm_chars[0].code_point == "U+282E2"


# --- Limits and boundaries --------------------------------------------------------------------------------------


def test_gsm_single_part_limit() -> None:
    assert count_segments("a" * 160) == ("GSM-7", 160, 1)
    result = check("a" * 161)
    assert result.segments == 2
    assert [part.units for part in result.parts] == [153, 8]
    assert result.remaining == 145
    assert (result.single_limit, result.part_limit) == (160, 153)


def test_ucs2_single_part_limit() -> None:
    assert count_segments("親" * 70) == ("UCS-2", 70, 1)
    result = check("親" * 71)
    assert result.segments == 2
    assert [part.units for part in result.parts] == [67, 4]
    assert (result.single_limit, result.part_limit) == (70, 67)


def test_single_part_may_end_with_extension_character() -> None:
    """Within one 160-septet message there is no boundary to protect: 80 escaped characters fit exactly."""
    assert count_segments("]" * 80) == ("GSM-7", 160, 1)


def test_traditional_chinese_200_characters() -> None:
    body = ("親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。" * 6)[:200]
    result = check(body)
    assert (result.encoding, result.units, result.segments) == ("UCS-2", 200, 3)
    assert [part.units for part in result.parts] == [67, 67, 66]
    assert [(part.start, part.end) for part in result.parts] == [(0, 67), (67, 134), (134, 200)]
    assert result.remaining == 1


def test_emoji_at_part_boundary_moves_to_next_part() -> None:
    body = "a" * 66 + "😀" + "b" * 10
    result = check(body)
    assert [part.text for part in result.parts] == ["a" * 66, "😀" + "b" * 10]
    assert [part.units for part in result.parts] == [66, 12]
    assert [(part.start, part.end) for part in result.parts] == [(0, 66), (66, 77)]


def test_emoji_just_before_boundary_stays() -> None:
    body = "a" * 65 + "😀" + "b" * 10
    result = check(body)
    assert [part.units for part in result.parts] == [67, 10]


def test_empty_text_is_one_segment_of_zero_units() -> None:
    assert count_segments("") == ("GSM-7", 0, 1)
    result = check("")
    assert result.parts[0].text == ""
    assert (result.units, result.segments, result.remaining) == (0, 1, 160)


def test_long_text_is_fast() -> None:
    body = ("親愛的會員您好😀，本週末全館商品八折優惠。" * 500)[:10_000]
    gsm_body = ("Hello [world] {x} ~ €5 " * 500)[:10_000]
    started = time.perf_counter()
    for text in (body, gsm_body):
        result = analyse(text, smart_encoding=True)
        assert count_segments(text) == (result.encoding, result.units, result.segments)
    assert time.perf_counter() - started < 1.0
    assert_consistent(analyse(body), body)
    assert_consistent(analyse(gsm_body), gsm_body)


def test_result_is_frozen() -> None:
    result = analyse("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.units = 3  # type: ignore[misc]


# --- Smart encoding ---------------------------------------------------------------------------------------------


def test_smart_encoding_replaces_curly_quotes() -> None:
    body = "\u201cHello\u201d, it\u2019s here \u2014 don\u2019t miss it\u2026"
    result = check(body, smart_encoding=True)
    assert result.smart_encoding_applied
    assert result.encoding == "GSM-7"
    assert result.text == "\"Hello\", it's here - don't miss it..."
    assert result.replacements[:3] == (
        Replacement(position=0, original="\u201c", replacement='"'),
        Replacement(position=6, original="\u201d", replacement='"'),
        Replacement(position=11, original="\u2019", replacement="'"),
    )
    assert [r.original for r in result.replacements] == ["\u201c", "\u201d", "\u2019", "\u2014", "\u2019", "\u2026"]
    assert result.non_gsm_chars == ()


def test_smart_encoding_is_all_or_nothing() -> None:
    body = "\u201cHello\u201d 你好"
    result = check(body, smart_encoding=True)
    assert not result.smart_encoding_applied
    assert result.replacements == ()
    assert result.text == body
    assert result.encoding == "UCS-2"
    by_char = {item.char: item for item in result.non_gsm_chars}
    assert by_char["\u201c"].replacement == '"'
    assert by_char["你"].replacement is None


def test_smart_encoding_off_by_default() -> None:
    result = check("it\u2019s")
    assert result.encoding == "UCS-2"
    assert not result.smart_encoding_applied


def test_smart_encoding_of_gsm_text_is_a_no_op() -> None:
    result = check("plain text", smart_encoding=True)
    assert not result.smart_encoding_applied
    assert result.replacements == ()


def test_smart_encoding_full_width_and_spaces() -> None:
    result = check("\uff21\uff22\uff23\u00a0\uff11\uff12\uff13\uff01\u3000\uff5b\uff40\uff5d", smart_encoding=True)
    assert result.text == "ABC 123! {'}"
    assert result.units == 14


def test_smart_encoding_can_reduce_segments() -> None:
    body = "We\u2019re open \u2013 come by! " * 6
    assert count_segments(body) == ("UCS-2", 132, 2)
    result = check(body, smart_encoding=True)
    assert (result.encoding, result.segments) == ("GSM-7", 1)


def test_smart_encoding_ranges_map_back_to_original() -> None:
    """An ellipsis becomes three characters; part ranges still tile the original input."""
    body = "a" * 152 + "\u2026" + "b" * 10
    result = check(body, smart_encoding=True)
    assert result.text == "a" * 152 + "..." + "b" * 10
    assert [part.text for part in result.parts] == ["a" * 152 + ".", ".." + "b" * 10]
    assert [(part.start, part.end) for part in result.parts] == [(0, 153), (153, 163)]


def test_smart_encoding_removed_character_at_boundary() -> None:
    body = "a" * 153 + "\u200b" + "b" * 10
    result = check(body, smart_encoding=True)
    assert result.text == "a" * 153 + "b" * 10
    assert [(part.start, part.end) for part in result.parts] == [(0, 153), (153, 164)]


def test_smart_encoding_map_targets_are_gsm() -> None:
    for source, target in SMART_ENCODING_MAP.items():
        assert count_segments(source)[0] == "UCS-2", repr(source)
        assert count_segments(target)[0] == "GSM-7", repr(source)
    for code in range(0xFF01, 0xFF5F):
        assert chr(code) in SMART_ENCODING_MAP


# --- Input validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\ud83d", "abc\udc00", "親\ud800", "😀\udfff x"])
def test_lone_surrogate_is_rejected(text: str) -> None:
    for call in (count_segments, analyse, lambda t: analyse(t, smart_encoding=True)):
        with pytest.raises(SegmentInputError) as caught:
            call(text)
        assert caught.value.code == "lone_surrogate"
        assert caught.value.field == "text"
        assert caught.value.position == len(text.rstrip(" x")) - 1
        assert "surrogate" in caught.value.message
    assert issubclass(SegmentInputError, ValueError)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x0b", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
@pytest.mark.parametrize("prefix", ["hello ", "héllo ", "你好 ", "😀 "])
def test_control_characters_are_rejected(char: str, prefix: str) -> None:
    text = prefix + char + " end"
    for call in (count_segments, analyse, lambda t: analyse(t, smart_encoding=True)):
        with pytest.raises(SegmentInputError) as caught:
            call(text)
        assert caught.value.code == "control_character"
        assert caught.value.position == len(prefix)
        assert f"U+{ord(char):04X}" in caught.value.message


def test_allowed_controls() -> None:
    assert count_segments("a\nb\rc") == ("GSM-7", 5, 1)
    assert count_segments("a\tb") == ("UCS-2", 3, 1)
    assert check("a\tb", smart_encoding=True).text == "a b"


def test_error_field_can_be_named_and_type_is_checked() -> None:
    with pytest.raises(SegmentInputError) as caught:
        count_segments("\x00", field="body")
    assert caught.value.field == "body"
    with pytest.raises(TypeError):
        count_segments(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        analyse(None)  # type: ignore[arg-type]


# --- Properties -------------------------------------------------------------------------------------------------

_INTERESTING = (
    "aZ09 .,!?\n\r@£$¥èéÇÅΔΩÆßÉÄÖÑÜ§¿äöñüà"
    + GSM_EXTENSION_CHARS
    + "\t`çá°你好親愛，。「」𨋢😀🎉\u200d\U0001f469"
    + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u200b\uff21\uff5b\u2022"
)
valid_chars = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\r\t\x0c")
bodies = st.one_of(
    st.text(alphabet=st.sampled_from(_INTERESTING), max_size=700),
    st.text(alphabet=st.sampled_from("a]€😀親\u2019\u2026"), min_size=60, max_size=400),
    st.text(alphabet=st.sampled_from("ab]€ \u2019\u2026\u200b\u00bd\u203c\uff5b\u2014"), min_size=100, max_size=400),
    st.text(alphabet=valid_chars, max_size=400),
    st.builds(
        lambda n, tail: "a" * n + tail, st.integers(140, 320), st.text(st.sampled_from("]€😀a\u2026"), max_size=8)
    ),
)


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.booleans())
def test_property_invariants(text: str, smart: bool) -> None:
    result = analyse(text, smart_encoding=smart)
    assert_consistent(result, text)
    if not result.smart_encoding_applied:
        assert count_segments(text) == (result.encoding, result.units, result.segments)


@settings(max_examples=600, deadline=None, database=None)
@given(bodies)
def test_property_matches_reference_splitter(text: str) -> None:
    encoding, units, parts = reference_split(text)
    assert count_segments(text) == (encoding, units, len(parts))
    assert [part.text for part in analyse(text).parts] == parts


@settings(max_examples=300, deadline=None, database=None)
@given(bodies)
def test_property_smart_encoding_all_or_nothing(text: str) -> None:
    result = analyse(text, smart_encoding=True)
    translated = "".join(SMART_ENCODING_MAP.get(char, char) for char in text)
    original_encoding = count_segments(text)[0]
    if original_encoding == "UCS-2" and reference_split(translated)[0] == "GSM-7":
        assert result.smart_encoding_applied
        assert result.text == translated
        assert len(result.replacements) == sum(char in SMART_ENCODING_MAP for char in text)
    else:
        assert not result.smart_encoding_applied
        assert result.text == text


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=valid_chars, max_size=50), st.sampled_from(["\ud800", "\udbff", "\udc00", "\x01", "\x7f"]))
def test_property_invalid_characters_always_raise(prefix: str, bad: str) -> None:
    text = prefix + bad
    with pytest.raises(SegmentInputError) as caught:
        count_segments(text)
    assert caught.value.position == len(prefix)
    with pytest.raises(SegmentInputError):
        analyse(text, smart_encoding=True)
