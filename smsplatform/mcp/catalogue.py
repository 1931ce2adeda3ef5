"""The tool catalogue (shared/seed, Chinese, with our English), loaded once."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")
KINDS = {"read", "preview", "write", "status"}


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    entries = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in entries}
