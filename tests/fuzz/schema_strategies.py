"""Hypothesis strategies for the JSON Schema subset our tool schemas use (tests only).

Objects with properties, required and additionalProperties; strings with length, pattern and
enum; integers and numbers with bounds; booleans; null; arrays; anyOf/oneOf; $ref to $defs;
an empty schema is any JSON. Root combinations of "required" alone (the input rules) are left
to chance: the fuzzer wants the refused calls too.

``realistic=True`` draws what a careful agent would send (plain text, small ids that exist in
the test world, real phone numbers), so that writes get past the services' own rules and run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON: st.SearchStrategy[Any] = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


PHONES = st.sampled_from(["+85291000001", "+85291000002", "+85291000003", "+85261234567", "+14155550123"])
PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def _realistic_property(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    if name == "phone" and schema.get("type") == "string":
        return PHONES
    if name.endswith("_id") and schema.get("type") == "integer":
        return st.integers(min_value=1, max_value=6)
    return None


def from_schema(schema: Any, root: dict[str, Any] | None = None, realistic: bool = False) -> st.SearchStrategy[Any]:
    root = root if root is not None else schema
    if schema is True or schema == {}:
        return JSON
    if not isinstance(schema, dict):
        return st.nothing()
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(root.get("$defs", {})[name], root, realistic))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for combination in ("anyOf", "oneOf"):
        branches = [b for b in schema.get(combination, []) if "type" in b or "$ref" in b or "enum" in b or "anyOf" in b]
        if branches and "type" not in schema:
            return st.one_of(*(from_schema(b, root, realistic) for b in branches))
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "string":
        if "pattern" in schema:
            anchored = schema["pattern"].startswith("^") and schema["pattern"].endswith("$")
            text = st.from_regex(schema["pattern"], fullmatch=anchored)
            if "maxLength" in schema:
                text = text.filter(lambda s: schema.get("minLength", 0) <= len(s) <= schema["maxLength"])
            return text
        low, high = schema.get("minLength", 0), min(schema.get("maxLength", 60), 60)
        if realistic:
            return st.text(alphabet=PLAIN, min_size=max(low, 1), max_size=max(high, 1)).map(str.strip).filter(bool)
        return st.text(min_size=low, max_size=high)
    if kind == "array":
        items = from_schema(schema.get("items", {}), root, realistic)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", 4), 4)))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in props]

        def prop(name: str) -> st.SearchStrategy[Any]:
            hint = _realistic_property(name, props[name]) if realistic else None
            return hint if hint is not None else from_schema(props[name], root, realistic)

        optional = {k: prop(k) for k in props if k not in required}
        extra = schema.get("additionalProperties", True)
        fixed = st.fixed_dictionaries({k: prop(k) for k in required}, optional=optional)
        if isinstance(extra, dict) and not props:
            return st.dictionaries(st.text(min_size=1, max_size=12), from_schema(extra, root, realistic), max_size=3)
        return fixed
    return JSON
