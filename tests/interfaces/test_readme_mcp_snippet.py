"""The README's Python MCP snippet, run as written against a live server with the installed client.

The snippet is read from README.md, so the README cannot drift from what works. It runs in a
subprocess of this interpreter (the installed ``mcp``, 1.x: the server pins it), and also under each
interpreter listed in ``SMS_MCP_CLIENT_PYTHONS`` (space-separated; e.g. a venv with ``mcp`` 2.x, whose
``streamable_http_client`` yields two streams and which speaks through ``httpx2``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)

RUNNER = """
import asyncio, json, sys
namespace = {"__name__": "readme_snippet"}
exec(open(sys.argv[1], encoding="utf-8").read(), namespace)
answer = asyncio.run(namespace["call_tool"](sys.argv[2], sys.argv[3], "sms_marketing.config.get", {}))
print(json.dumps(answer))
"""


def readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "streamable_http_client" in b]
    assert len(blocks) == 1, "the README has one Python MCP snippet"
    return blocks[0]


def interpreters() -> list[str]:
    return [sys.executable, *os.environ.get("SMS_MCP_CLIENT_PYTHONS", "").split()]


@pytest.mark.parametrize("python", interpreters())
def test_readme_snippet_calls_a_tool(
    live_server: Any, technical: Any, token_for: Any, tmp_path: Path, python: str
) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(readme_snippet(), encoding="utf-8")
    key = token_for(technical, "readme")
    done = subprocess.run(
        [python, "-c", RUNNER, str(snippet), f"{live_server.url}/mcp", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["version"] >= 1 and "base_version_token" in answer and "config" in answer
