"""Template names (and every one-line label) refuse bidi overrides and zero-width characters."""

from __future__ import annotations

from typing import Any

import pytest

from smsplatform.kernel.errors import ApplicationError
from templates.models import Template
from tests.support.templates import content, save

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\ufeff"])
def test_template_name(marketing: Any, char: str) -> None:
    with pytest.raises(ApplicationError) as err:
        save(marketing, content(name=f"Spring{char}sale"))
    assert (err.value.code, err.value.field) == ("control_character", "name")
    assert not Template.objects.exists()
