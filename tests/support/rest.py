"""Reading REST answers."""

from __future__ import annotations

from typing import Any


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field", "hint"} <= set(body["error"])
    return dict(body["error"])
