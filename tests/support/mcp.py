"""Driving the MCP endpoint with the official MCP Python client, and reading its answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


def run(url: str, key: str | None, body: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with anyio.fail_after(30):
            async with (
                httpx.AsyncClient(headers=headers, timeout=20) as http,
                streamable_http_client(url, http_client=http) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await body(session)

    return anyio.run(main)


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structuredContent is not None
    # The text content carries the same JSON for clients that ignore structured output.
    assert json.loads(result.content[0].text) == result.structuredContent  # type: ignore[union-attr]
    return result.structuredContent


def tool_error(result: types.CallToolResult) -> dict[str, Any]:
    # An error is isError with the error as JSON text, and no structuredContent: clients check
    # structuredContent against the outputSchema, which describes the success answer only.
    assert result.isError and result.structuredContent is None
    error = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    assert set(error) >= {"code", "message", "field", "hint"}
    return dict(error)


def tool_answer(result: types.CallToolResult) -> dict[str, Any]:
    """A tool's answer as a dict: its structured result, or ``{"error": {...}}`` read from the text
    of an error result (errors carry no structuredContent: their shape is not the output schema's)."""
    if result.isError:
        return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]
    return dict(result.structuredContent or {})
