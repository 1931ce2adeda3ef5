"""Parts as a provider that splits by itself (Twilio) counts them: grapheme clusters stay whole.

Twilio's published calculator (npm sms-segments-calculator) never ends a part inside a grapheme
cluster, so a ZWJ sequence, a skin tone, a variation selector or a combining mark that straddles
our SMPP-style part boundary moves whole to the next part, and the body can need one part more.
The expected counts of the boundary cases below were checked against sms-segments-calculator 1.3.0.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsplatform.kernel.segments import (
    UCS2_PART_LIMIT,
    SegmentInputError,
    analyse,
    count_segments,
    count_segments_clusters,
)

FILL = "親"  # one UTF-16 unit, UCS-2, never joins a cluster

# (name, cluster, units before it): the cluster starts so that our boundary at 67 units falls inside it.
STRADDLING = [
    ("family ZWJ sequence", "👨\u200d👩\u200d👧", 65),
    ("couple with heart", "👩\u200d❤\ufe0f\u200d👨", 65),
    ("skin-tone modifier", "👍🏽", 65),
    ("variation selector", "❤\ufe0f", 66),
    ("astral emoji with variation selector", "🛍\ufe0f", 65),
    ("keycap", "1\ufe0f\u20e3", 66),
    ("combining acute", "e\u0301", 66),
    ("two combining marks", "a\u0308\u0301", 65),
    ("flag (regional-indicator pair)", "🇹🇼", 65),
    ("subdivision flag (tag sequence)", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", 65),
    ("Hangul jamo syllable", "\u1112\u1161\u11ab", 65),
]


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def at_boundary(cluster: str, before: int, total: int = 2 * UCS2_PART_LIMIT) -> str:
    """``before`` units, the cluster, then filler up to ``total`` units: exactly two SMPP parts."""
    return FILL * before + cluster + FILL * (total - before - units(cluster))


@pytest.mark.parametrize(("name", "cluster", "before"), STRADDLING, ids=[c[0] for c in STRADDLING])
def test_cluster_across_the_first_boundary_needs_one_more_part(name: str, cluster: str, before: int) -> None:
    text = at_boundary(cluster, before)
    assert count_segments(text) == ("UCS-2", 134, 2)  # the SMPP count is unchanged
    assert count_segments_clusters(text) == ("UCS-2", 134, 3)
    result = analyse(text, keep_clusters=True)
    assert result.segments == 3 and result.units == 134
    assert [p.units for p in result.parts] == [before, 67, 67 - before]
    assert result.parts[1].text.startswith(cluster)  # moved whole to the second part
    assert "".join(p.text for p in result.parts) == text
    assert [(p.start, p.end) for p in result.parts] == [
        (0, before),
        (before, len(text) - (67 - before)),
        (len(text) - (67 - before), len(text)),
    ]
    assert analyse(text).segments == 2


@pytest.mark.parametrize(("name", "cluster", "before"), STRADDLING, ids=[c[0] for c in STRADDLING])
def test_cluster_across_a_later_boundary(name: str, cluster: str, before: int) -> None:
    text = FILL * 67 + at_boundary(cluster, before)
    assert count_segments(text)[2] == 3
    assert count_segments_clusters(text)[2] == 4
    assert analyse(text, keep_clusters=True).segments == 4


@pytest.mark.parametrize(("name", "cluster", "before"), STRADDLING, ids=[c[0] for c in STRADDLING])
def test_cluster_away_from_a_boundary_changes_nothing(name: str, cluster: str, before: int) -> None:
    text = at_boundary(cluster, 10)
    assert count_segments_clusters(text) == count_segments(text) == ("UCS-2", 134, 2)
    # A single part never splits, whatever it holds.
    single = FILL * (70 - units(cluster)) + cluster
    assert count_segments_clusters(single) == count_segments(single) == ("UCS-2", 70, 1)


def test_the_engine_split_already_keeps_surrogate_pairs_and_escapes_whole() -> None:
    # One astral emoji at the boundary: both counts move it (it is one cluster and one pair).
    text = FILL * 66 + "😀" + FILL * 66
    assert count_segments(text) == count_segments_clusters(text) == ("UCS-2", 134, 3)
    # GSM-7 has no multi-character clusters: the count is the SMPP one.
    gsm = "]" * 153
    assert count_segments_clusters(gsm) == count_segments(gsm) == ("GSM-7", 306, 3)


def test_cr_lf_may_be_split_like_the_calculator_does() -> None:
    text = FILL * 66 + "\r\n" + FILL * 66  # \X would hold CR LF together; Twilio's calculator does not
    assert count_segments_clusters(text) == count_segments(text) == ("UCS-2", 134, 2)


def test_a_cluster_longer_than_a_part_is_cut_like_smpp() -> None:
    text = "a" + "\u0301" * 150  # one cluster of 151 units: nobody can keep it whole
    assert count_segments_clusters(text) == count_segments(text) == ("UCS-2", 151, 3)
    result = analyse(text, keep_clusters=True)
    assert [p.units for p in result.parts] == [67, 67, 17]
    # ... and still never inside a surrogate pair.
    text = "a" + "\u0301" * 65 + "🏽" + "\u0301" * 10  # the modifier (an astral extender) at units 66-67
    result = analyse(text, keep_clusters=True)
    assert [p.units for p in result.parts] == [66, 12]
    assert count_segments_clusters(text)[2] == result.segments
    assert "".join(p.text for p in result.parts) == text


def test_smart_encoding_to_gsm_makes_clusters_irrelevant() -> None:
    text = "“Sale”" + "a" * 160
    result = analyse(text, smart_encoding=True, keep_clusters=True)
    assert result.encoding == "GSM-7" and result.segments == analyse(text, smart_encoding=True).segments


def test_invalid_input_is_refused_the_same_way() -> None:
    with pytest.raises(SegmentInputError) as err:
        count_segments_clusters("a\x00", field="body")
    assert err.value.code == "control_character" and err.value.field == "body"
    with pytest.raises(TypeError):
        count_segments_clusters(b"bytes")  # type: ignore[arg-type]


ALPHABET = st.sampled_from(
    [
        "a",
        "€",
        FILL,
        "😀",
        "\u200d",
        "\ufe0f",
        "\u0301",
        "🏽",
        "👍",
        "👨",
        "👩",
        "🇹",
        "🇼",
        "\n",
        "\r",
        "\u1100",
        "\u1161",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ALPHABET, max_size=260).map("".join))
def test_cluster_count_is_consistent_and_never_less(text: str) -> None:
    encoding, total, parts = count_segments_clusters(text)
    result = analyse(text, keep_clusters=True)
    assert (result.encoding, result.units, result.segments) == (encoding, total, parts)
    assert (encoding, total) == count_segments(text)[:2]
    assert parts >= count_segments(text)[2]
    assert "".join(p.text for p in result.parts) == text
    assert all(p.units <= (result.single_limit if parts == 1 else result.part_limit) for p in result.parts)
    if parts > 1:
        assert all(p.units > 0 for p in result.parts)
