"""One registry for the MCP tools (ARCHITECTURE, MCP endpoint).

Each tool's catalogue entry (kind, prior reads, governance, safety, zh and en)
is joined here with what makes it run: the permission it needs, its input and
output JSON schemas and the handler that calls a service or selector. The MCP
server's tools/list, its annotations and docs/MCP_TOOLS.md all come from here.
A tool is registered only by the app that implements it, so tools/list shows
exactly the tools that really work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema_rs
from django.apps import apps
from django.conf import settings
from jsonschema import Draft202012Validator
from mcp import types

from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.validation_text import schema_error_text
from smsplatform.mcp.catalogue import catalogue

Handler = Callable[[Actor, dict[str, Any]], dict[str, Any]]


def prior_reads_text(entry: dict[str, Any], language: str) -> str:
    """The catalogue's prior-reads sentence, which already names the tools ("X, or a known id"); the
    tool names are added only when the sentence leaves one out, so nothing is said twice."""
    text = str(entry["prior_reads_text"][language]).strip()
    missing = [name for name in entry["prior_reads"] if name not in text]
    return f"{', '.join(missing)} ({text})" if missing else text


@dataclass(frozen=True)
class ToolSpec:
    name: str
    permission: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    handler: Handler
    destructive: bool = False
    entry: dict[str, Any] = field(default_factory=dict)
    # Rules that depend on the live configuration (short_links.preview: the UTM keys it requires),
    # added to the input schema each time tools/list is answered; the service enforces them.
    refine_input: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def advertised_input_schema(self) -> dict[str, Any]:
        return self.refine_input(self.input_schema) if self.refine_input else self.input_schema

    @property
    def kind(self) -> str:
        return str(self.entry["kind"])

    @property
    def read_only(self) -> bool:
        return self.kind in {"read", "preview", "status"}

    @property
    def idempotent(self) -> bool:
        # Reads are naturally idempotent; every write takes an idempotency_key.
        return True

    def title(self) -> str:
        return self.name.removeprefix("sms_marketing.").replace("_", " ").replace(".", " · ")

    def description(self) -> str:
        e = self.entry
        return "\n".join(
            [
                e["description"]["en"],
                f"Kind: {self.kind}. Recommended prior reads: {prior_reads_text(e, 'en')}",
                f"Governance: {e['governance']['en']}",
                f"Safety (enforced): {e['safety']['en']}",
                f"Permission: {self.permission}.",
                "",
                e["description"]["zh"],
                f"建議先讀取：{prior_reads_text(e, 'zh')}",
                f"治理與審批：{e['governance']['zh']}",
                f"安全說明：{e['safety']['zh']}",
            ]
        )

    def annotations(self) -> types.ToolAnnotations:
        return types.ToolAnnotations(
            title=self.title(),
            readOnlyHint=self.read_only,
            destructiveHint=self.destructive,
            idempotentHint=self.idempotent,
            openWorldHint=False,
        )

    def meta(self) -> dict[str, Any]:
        e = self.entry
        return {
            "sms_marketing/kind": self.kind,
            "sms_marketing/prior_reads": e["prior_reads"],
            "sms_marketing/permission": self.permission,
            "sms_marketing/governance": e["governance"],
            "sms_marketing/safety": e["safety"],
        }

    def as_mcp_tool(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            title=self.title(),
            description=self.description(),
            inputSchema=self.advertised_input_schema(),
            outputSchema=self.output_schema,
            annotations=self.annotations(),
            _meta=self.meta(),
        )

    @cached_property
    def input_validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.input_schema)

    @cached_property
    def output_validator(self) -> Draft202012Validator:
        # Compiled once: jsonschema.validate() re-checks the schema on every call.
        return Draft202012Validator(self.output_schema)

    @cached_property
    def _output_checker(self) -> jsonschema_rs.Draft202012Validator:
        return jsonschema_rs.Draft202012Validator(self.output_schema)

    def output_problem(self, result: Any) -> str | None:
        """What is wrong with a handler's answer against the output schema, or None.

        Every call is checked, so the check is the compiled Rust validator (jsonschema-rs): the
        Python one took a third of a config.get call. A value JSON cannot carry (a datetime left
        unserialised) makes it raise; the Python validator then names the problem."""
        try:
            if self._output_checker.is_valid(result):
                return None
            return next(iter(self._output_checker.iter_errors(result))).message
        except (ValueError, TypeError):
            problem = next(iter(self.output_validator.iter_errors(result)), None)
            return problem.message if problem is not None else "a value JSON cannot carry"

    def validate_input(self, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "Tool arguments must be a JSON object.",
                hint="See the tool's inputSchema.",
            )
        nul = _nul_path(arguments)
        if nul is not None:
            # PostgreSQL text cannot hold NUL, not even in a filter: refused here, for every tool,
            # instead of failing in the database as an internal error.
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"{nul or 'arguments'}: text may not contain the NUL character (U+0000).",
                field=nul or None,
                hint="Remove the NUL character.",
            )
        # Rules stated as a combination at the root ("at least one criterion", "exactly one of")
        # are the service's to refuse: it names the field and the fix, where jsonschema can only
        # say "not valid under any of the given schemas".
        errors = sorted(
            (e for e in self.input_validator.iter_errors(arguments) if e.path or e.validator not in ROOT_RULES),
            key=lambda e: list(e.path),
        )
        if errors:
            # Our own words, never jsonschema's text (it quotes the input back).
            described = [schema_error_text(e) for e in errors[:10]]
            path, text = described[0]
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                f"{path or 'arguments'} {text}",
                field=path or None,
                hint=f"Arguments must match the inputSchema of {self.name}.",
                details={"problems": [{"field": f, "message": m} for f, m in described]},
            )
        return arguments


def _nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (value or key) holding a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}".strip(".")
            if "\x00" in str(key):
                return where
            found = _nul_path(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}.{index}".strip("."))
            if found is not None:
                return found
    return None


ROOT_RULES = frozenset({"anyOf", "oneOf", "allOf", "not", "if", "dependentRequired"})

# Keywords that belong to one JSON type, for splitting {"type": [...]} into anyOf branches.
_TYPE_KEYWORDS: dict[str, frozenset[str]] = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}),
    "object": frozenset(
        {
            "properties",
            "required",
            "additionalProperties",
            "patternProperties",
            "propertyNames",
            "minProperties",
            "maxProperties",
        }
    ),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"}),
}
_TYPE_KEYWORDS["integer"] = _TYPE_KEYWORDS["number"]


def portable(schema: Any) -> Any:
    """The schema with every type array ({"type": ["string", "null"]}) written as anyOf.

    Type arrays are valid JSON Schema, but strict ajv (allowUnionTypes off) and several agent
    clients refuse them; anyOf of single types is what pydantic emits and every client takes.
    Each branch keeps its own type's keywords; annotations and the rest stay outside."""
    if isinstance(schema, list):
        return [portable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: (value if key in ("enum", "const", "default", "examples") else portable(value))
        for key, value in schema.items()
    }
    types_ = out.get("type")
    if not isinstance(types_, list):
        return out
    if len(types_) == 1:
        out["type"] = types_[0]
        return out
    owned = frozenset().union(*(_TYPE_KEYWORDS.get(t, frozenset()) for t in types_))
    branches = [{"type": t, **{k: v for k, v in out.items() if k in _TYPE_KEYWORDS.get(t, ())}} for t in types_]
    rest = {k: v for k, v in out.items() if k != "type" and k not in owned}
    return {**rest, "anyOf": branches}


def type_arrays(schema: Any, path: str = "") -> list[str]:
    """Where a schema still uses a type array (a test keeps every advertised schema free of them)."""
    if isinstance(schema, list):
        return [p for i, item in enumerate(schema) for p in type_arrays(item, f"{path}/{i}")]
    if not isinstance(schema, dict):
        return []
    found = [path or "/"] if isinstance(schema.get("type"), list) else []
    return found + [p for key, value in schema.items() for p in type_arrays(value, f"{path}/{key}")]


_REGISTRY: dict[str, ToolSpec] = {}


def register_tool(
    name: str,
    *,
    permission: str,
    input_schema: dict[str, Any],
    output_schema: dict[str, Any],
    destructive: bool = False,
    refine_input: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[Handler], Handler]:
    entry = catalogue().get(name)
    if entry is None:
        raise LookupError(f"{name} is not in the tool catalogue")
    input_schema, output_schema = portable(input_schema), portable(output_schema)
    Draft202012Validator.check_schema(input_schema)
    Draft202012Validator.check_schema(output_schema)

    def decorator(handler: Handler) -> Handler:
        _REGISTRY[name] = ToolSpec(
            name=name,
            permission=permission,
            input_schema=input_schema,
            output_schema=output_schema,
            handler=handler,
            destructive=destructive,
            entry=entry,
            refine_input=refine_input,
        )
        return handler

    return decorator


_loaded = False


def load_tools() -> dict[str, ToolSpec]:
    """Import every installed app's ``mcp_tools`` module once."""
    global _loaded
    if not _loaded:
        for app_config in apps.get_app_configs():
            module = f"{app_config.name}.mcp_tools"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
        _loaded = True
    return _REGISTRY


def registered_tools() -> list[ToolSpec]:
    return sorted(load_tools().values(), key=lambda s: s.name)


def get_tool(name: str) -> ToolSpec | None:
    return load_tools().get(name)


def error_code_enums() -> dict[str, type[StrEnum]]:
    """Each project app's own error-code enum (``<app>/errors.py``), by app name, in app order.

    The kernel's shared ``ErrorCode`` is not among them; the tool reference lists both."""
    found: dict[str, type[StrEnum]] = {}
    for app_config in apps.get_app_configs():
        if app_config.name == "smsplatform" or not Path(app_config.path).is_relative_to(settings.BASE_DIR):
            continue
        module_name = f"{app_config.name}.errors"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, StrEnum) and value.__module__ == module_name:
                found[app_config.name] = value
    return found


# Shared schema pieces -------------------------------------------------------
# Every app's mcp_tools.py builds its schemas from these, so a fragment (the write envelope above
# all) is defined here once and cannot drift between apps.

STR: dict[str, Any] = {"type": "string"}
NULL: dict[str, Any] = {"type": "null"}
# Nullable fields as anyOf, not type arrays (see portable()).
NSTR: dict[str, Any] = {"anyOf": [STR, NULL]}
INT: dict[str, Any] = {"type": "integer"}
NINT: dict[str, Any] = {"anyOf": [INT, NULL]}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
NOBJ: dict[str, Any] = {"anyOf": [OBJ, NULL]}
ARR: dict[str, Any] = {"type": "array"}
STRS: dict[str, Any] = {"type": "array", "items": STR}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": NSTR,
        "hint": NSTR,
    },
    "required": ["code", "message"],
}

# The write envelope (spine 4 and 5): what every write tool takes around its own fields.

IDEMPOTENCY_KEY = {
    "type": "string",
    "minLength": 8,
    "maxLength": 200,
    "pattern": "^[A-Za-z0-9._:\\-]+$",
    "description": "Unique per intended write (a UUID). Retrying with the same key returns the first result.",
}

REASON: dict[str, Any] = {"type": "string", "maxLength": 1000}


def base_version_token(description: str) -> dict[str, Any]:
    """The ``base_version_token`` input of an update; ``description`` names the read that returns it."""
    return {"type": "string", "minLength": 3, "maxLength": 100, "description": description}


def write_input(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """A write tool's input: its own fields plus the envelope, ``reason`` (unless the tool gives its
    own) and a required ``idempotency_key``."""
    return object_schema(
        {**properties, "reason": properties.get("reason", REASON), "idempotency_key": IDEMPOTENCY_KEY},
        [*(required or []), "idempotency_key"],
    )


# What a governed write answers (compliance.governance.governed_write): executed with its result,
# or pending_approval with the action request, its approver role, policy, expiry and a hint.
GOVERNED_OUTPUT_PROPS: dict[str, Any] = {
    "status": {"type": "string", "enum": ["executed", "pending_approval"]},
    "action": STR,
    "action_request_id": INT,
    "required_role": STR,
    "policy": STR,
    "expires_at": STR,
    "hint": STR,
}


def governed_output(result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The output schema of a governed write; ``result`` describes what an executed write returns."""
    return object_schema({**GOVERNED_OUTPUT_PROPS, "result": result or OBJ}, ["status", "action"])


def object_schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object schema; ``$defs`` of embedded pydantic schemas are hoisted to the root,
    where their ``#/$defs/...`` references resolve."""
    defs: dict[str, Any] = {}
    props = {}
    for name, schema in properties.items():
        if isinstance(schema, dict) and "$defs" in schema:
            schema = dict(schema)
            defs.update(schema.pop("$defs"))
        props[name] = schema
    out: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": required or [],
        "additionalProperties": False,
    }
    if defs:
        out["$defs"] = defs
    return out
