"""Names refuse invisible and direction-changing characters (issue 14, item 7): the rule itself."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.text import REFUSED_CATEGORIES, name_check

# Bidi embeddings/overrides, isolates, zero-width characters, BOM, soft hyphen, a bell, a line separator.
HIDDEN = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
HIDDEN += ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff", "\u00ad", "\u2060", "\x07", "\x1b", "\u2028"]


@pytest.mark.parametrize("char", HIDDEN)
def test_each_hidden_character_is_refused_naming_the_field(char: str) -> None:
    with pytest.raises(ApplicationError) as err:
        name_check(f"Spring{char}sale", field="name")
    assert err.value.code == "control_character" and err.value.field == "name"
    assert f"U+{ord(char):04X}" in err.value.message and err.value.details == {"position": 6}


@pytest.mark.parametrize("name", ["Spring sale", "春季大減價 2026", "Café ☕", "שלום", "مرحبا", "👍🏽 VIP", "A\u0301"])
def test_ordinary_names_in_any_script_pass(name: str) -> None:
    assert name_check(name, field="name") == name


@given(st.text(max_size=40))
def test_property_refused_exactly_when_a_refused_category_is_present(text: str) -> None:
    hidden = any(unicodedata.category(c) in REFUSED_CATEGORIES for c in text)
    try:
        name_check(text, field="name")
    except ApplicationError:
        assert hidden
    else:
        assert not hidden
