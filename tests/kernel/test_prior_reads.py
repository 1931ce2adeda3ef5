"""Tool descriptions and the reference say each tool's prior reads once ("X", not "X (X)")."""

from __future__ import annotations

import re

from smsplatform.management.commands.mcp_tool_reference import render
from smsplatform.mcp.catalogue import catalogue
from smsplatform.mcp.registry import load_tools, prior_reads_text


def test_prior_reads_are_not_repeated() -> None:
    for spec in load_tools().values():
        line = next(x for x in spec.description().splitlines() if "Recommended prior reads" in x)
        for name in spec.entry["prior_reads"]:
            assert line.count(name) == 1, line
    for line in render().splitlines():
        if "Recommended prior reads" in line:
            assert not re.search(r"(\S+) / \1$", line), line


def test_a_tool_the_sentence_leaves_out_is_still_named() -> None:
    entry = {"prior_reads": ["sms_marketing.a", "sms_marketing.b"], "prior_reads_text": {"en": "sms_marketing.a."}}
    assert prior_reads_text(entry, "en") == "sms_marketing.b (sms_marketing.a.)"
    assert all(prior_reads_text(e, "en") for e in catalogue().values())
