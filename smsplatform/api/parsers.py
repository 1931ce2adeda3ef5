"""The JSON parser of REST and /mcp, bounded: a body nested deeper than MAX_JSON_DEPTH is a 400
with the error shape, never a RecursionError and a 500 (a too large body is the exception
handler's 413: Django raises it before any parser runs)."""

from __future__ import annotations

from typing import Any

from rest_framework.parsers import JSONParser

from smsplatform.kernel.errors import ApplicationError, ErrorCode

# Far beyond any input we take (criteria trees are the deepest, a few levels), far below
# Python's recursion limit, which json, DRF serializers and pydantic all walk into.
MAX_JSON_DEPTH = 64


def too_deep_error() -> ApplicationError:
    return ApplicationError(
        ErrorCode.MALFORMED_REQUEST,
        f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.",
        hint="Send a flatter JSON document; no input of this API nests that deep.",
    )


def json_depth_check(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``too_deep_error`` when ``value`` nests lists/objects deeper than ``limit``.
    Iterative: the check itself never recurses."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise too_deep_error()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise too_deep_error() from None
        json_depth_check(data)
        return data
