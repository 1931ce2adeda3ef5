"""Our own wording for what a schema validator found (jsonschema for MCP tool arguments,
pydantic for configuration and applications): the field and what it must be, never the
library's text, which quotes the input back and changes between library versions."""

from __future__ import annotations

import json
from typing import Any

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def _types(value: Any) -> str:
    names = value if isinstance(value, list) else [value]
    return " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)


def _choices(values: Any) -> str:
    shown = [json.dumps(v, ensure_ascii=False) for v in list(values)[:12]]
    return ", ".join(shown) + (", ..." if len(values) > 12 else "")


def schema_error_text(error: Any) -> tuple[str, str]:
    """(field path, our message) for one jsonschema ValidationError."""
    path = ".".join(str(p) for p in error.absolute_path)
    kind, value = error.validator, error.validator_value

    def at(name: str) -> str:
        return f"{path}.{name}".strip(".")

    if kind == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = next((name for name in value if name not in instance), "")
        return at(missing), "is required."
    if kind == "additionalProperties":
        known = set((error.schema or {}).get("properties", {}))
        extras = sorted(str(k) for k in (error.instance or {}) if k not in known)
        return at(extras[0] if extras else ""), "is not an argument this tool takes."
    words = {
        "type": lambda: f"must be {_types(value)}.",
        "enum": lambda: f"must be one of: {_choices(value)}.",
        "const": lambda: f"must be {json.dumps(value, ensure_ascii=False)}.",
        "minLength": lambda: f"must be at least {value} characters.",
        "maxLength": lambda: f"must be at most {value} characters.",
        "minimum": lambda: f"must be at least {value}.",
        "maximum": lambda: f"must be at most {value}.",
        "exclusiveMinimum": lambda: f"must be greater than {value}.",
        "exclusiveMaximum": lambda: f"must be less than {value}.",
        "minItems": lambda: f"must have at least {value} item{'s' if value != 1 else ''}.",
        "maxItems": lambda: f"must have at most {value} items.",
        "uniqueItems": lambda: "must not repeat an item.",
        "pattern": lambda: "has the wrong format.",
        "format": lambda: f"must be a valid {value}.",
        "minProperties": lambda: f"must name at least {value} field{'s' if value != 1 else ''}.",
        "maxProperties": lambda: f"must name at most {value} fields.",
        "oneOf": lambda: "matches none (or more than one) of the allowed forms.",
        "anyOf": lambda: "matches none of the allowed forms.",
        "not": lambda: "is not allowed here.",
    }
    text = words.get(kind)
    return path, text() if text else "is not valid."


_PYDANTIC_TYPES = {
    "string": "text",
    "int": "a whole number",
    "float": "a number",
    "decimal": "a number",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
    "model": "an object",
    "datetime": "an ISO 8601 date-time",
    "date": "an ISO 8601 date",
    "time": "a time (HH:MM)",
}


def pydantic_error_text(error: dict[str, Any]) -> str:
    """Our message for one pydantic error (``exc.errors()`` item)."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required."
    if kind == "extra_forbidden":
        return "is not a known field."
    if kind == "value_error" and "error" in ctx:
        return f"{ctx['error']}."  # our own validators' ValueError text
    if kind in ("literal_error", "enum"):
        return f"must be one of: {ctx.get('expected', 'the allowed values')}."
    if kind == "string_pattern_mismatch":
        return "has the wrong format."
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters."
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters."
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"must have {'at least' if kind == 'too_short' else 'at most'} {bound} items."
    bounds = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than"}
    bounds["less_than_equal"] = "at most"
    if kind in bounds:
        limit = next((ctx[k] for k in ("gt", "ge", "lt", "le") if k in ctx), "")
        return f"must be {bounds[kind]} {limit}."
    for prefix, word in _PYDANTIC_TYPES.items():
        if kind.startswith(f"{prefix}_") or kind == prefix:
            return f"must be {word}."
    return "is not valid."
