"""The tool catalogue and registry: 43 tools, exact names, one source for docs and MCP."""

from __future__ import annotations

import json
import re
from pathlib import Path

from smsplatform.management.commands.mcp_tool_reference import render
from smsplatform.mcp.catalogue import KINDS, catalogue
from smsplatform.mcp.registry import registered_tools

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "sms_marketing_mcp_tools.txt"


def test_catalogue_has_the_43_tools_with_both_languages() -> None:
    entries = catalogue()
    assert len(entries) == 43
    for name, entry in entries.items():
        assert re.fullmatch(r"sms_marketing\.[a-z_]+(\.[a-z_]+)?", name)
        assert entry["kind"] in KINDS
        for section in ("description", "prior_reads_text", "governance", "safety"):
            assert entry[section]["zh"].strip() and entry[section]["en"].strip(), (name, section)
        assert set(entry["prior_reads"]) <= set(entries)


def test_catalogue_matches_the_seed_text_when_available() -> None:
    if not SEED.exists():  # the seed lives beside the repository on our machines
        return
    text = SEED.read_text(encoding="utf-8")
    names = re.findall(r"^(sms_marketing\.[\w.]+)\n+(?:read|preview|write|status)$", text, flags=re.M)
    assert names == list(catalogue())
    for entry in catalogue().values():
        assert entry["safety"]["zh"] in text and entry["description"]["zh"] in text


def test_registered_tools_are_catalogue_tools_with_matching_hints() -> None:
    for spec in registered_tools():
        assert spec.name in catalogue()
        annotations = spec.annotations()
        assert annotations.readOnlyHint == (spec.kind in {"read", "preview", "status"})
        if spec.kind == "write":
            assert "idempotency_key" in spec.input_schema["properties"], spec.name
            assert "idempotency_key" in spec.input_schema["required"], spec.name


def test_tool_reference_doc_is_current() -> None:
    committed = (ROOT / "docs" / "MCP_TOOLS.md").read_text(encoding="utf-8")
    assert committed == render(), "run `make docs` and commit docs/MCP_TOOLS.md"


def test_catalogue_json_is_valid_utf8_json() -> None:
    raw = (ROOT / "smsplatform" / "mcp" / "catalogue.json").read_text(encoding="utf-8")
    assert len(json.loads(raw)) == 43
