"""The platform configuration as a form per section, built from its pydantic schema.

Every setting of ``smsplatform.config_schema`` becomes a typed form field (a checkbox, a number
with its bounds, a text with its length, a list one item per line), named ``<section>__<field>``
(nested sections add a level), with the schema's description and bounds as its help text. Maps
(keywords per language, quiet hours per country) stay small JSON boxes of their own. The admin
writes through ``platform_config_update`` with the sections that changed, and the service's error
lands on the field it names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from django import forms
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from smsplatform.config_schema import PlatformConfigData

SEP = "__"


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


class LinesField(forms.CharField):
    """A list of strings or integers, one item per line (commas separate too)."""

    def __init__(self, *, item: type, **kwargs: Any) -> None:
        self.item = item
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "cols": 40}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[Any]:  # type: ignore[override]
        text = super().to_python(value)
        items = [part.strip() for line in str(text).splitlines() for part in line.split(",") if part.strip()]
        if self.item is int:
            try:
                return [int(part) for part in items]
            except ValueError:
                raise forms.ValidationError("Whole numbers only, one per line.") from None
        return items


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _constraints(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, name, None)
            if value is not None:
                out[name] = value
    return out


def _help(info: FieldInfo, limits: dict[str, Any], extra: str = "") -> str:
    parts = [info.description or ""]
    if "ge" in limits or "le" in limits:
        low, high = limits.get("ge"), limits.get("le")
        parts.append(f"From {low} to {high}." if low is not None and high is not None else "")
        parts.append(f"At least {low}." if high is None and low is not None else "")
        parts.append(f"At most {high}." if low is None and high is not None else "")
    if "max_length" in limits:
        parts.append(f"Up to {limits['max_length']} characters.")
    if limits.get("pattern") == r"^([01]\d|2[0-3]):[0-5]\d$":
        parts.append("HH:MM, 24-hour.")
    if limits.get("pattern") == r"^[A-Z]{3}$":
        parts.append("An ISO 4217 code, e.g. HKD.")
    parts.append(extra)
    return " ".join(p for p in parts if p)


def form_field(info: FieldInfo) -> forms.Field:
    """The form field of one schema setting."""
    annotation, optional = _unwrap_optional(info.annotation)
    limits = _constraints(info)
    origin = get_origin(annotation)
    if annotation is bool:
        return forms.BooleanField(required=False, help_text=_help(info, limits))
    if annotation is int:
        return forms.IntegerField(min_value=limits.get("ge"), max_value=limits.get("le"), help_text=_help(info, limits))
    if annotation is Decimal:
        return forms.DecimalField(min_value=limits.get("ge"), help_text=_help(info, limits))
    choices = re.fullmatch(r"\^\(([a-z_|]+)\)\$", str(limits.get("pattern", "")))
    if annotation is str and choices:
        options = choices.group(1).split("|")
        return forms.ChoiceField(choices=[(o, o.replace("_", " ")) for o in options], help_text=_help(info, limits))
    if annotation is str:
        return forms.CharField(
            required=bool(limits.get("min_length")),
            max_length=limits.get("max_length"),
            strip=True,
            empty_value=None if optional else "",
            help_text=_help(info, limits),
        )
    if origin is list and get_args(annotation)[0] in (str, int):
        return LinesField(item=get_args(annotation)[0], required=False, help_text=_help(info, limits, "One per line."))
    return PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 70}),
        help_text=_help(info, limits, "A JSON object, edited as a whole."),
    )


def _leaves(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, (*path, name))
        else:
            yield (*path, name), info


def section_models() -> dict[str, type[BaseModel]]:
    """Each section of the configuration and its schema model (not the top-level strings)."""
    out = {}
    for name, info in PlatformConfigData.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = annotation
    return out


def settings_fields() -> dict[str, tuple[tuple[str, ...], forms.Field]]:
    """Every section setting: form field name -> (its path in the configuration, its form field)."""
    out = {}
    for section, model in section_models().items():
        for path, info in _leaves(model, (section,)):
            out[SEP.join(path)] = (path, form_field(info))
    return out


def value_at(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key, {}) if isinstance(data, dict) else {}
    return data


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def section_changes(
    cleaned: dict[str, Any], current: dict[str, Any], paths: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """The sections whose settings the form changed, each given whole (what config.update takes)."""
    edited: dict[str, Any] = {}
    for name, path in paths.items():
        if name in cleaned:
            _set(edited, path, _jsonable(cleaned[name]))
    changes = {}
    models = section_models()
    for section, candidate in edited.items():
        whole = {**current[section], **candidate}
        for key, value in candidate.items():  # nested sections: merged, not replaced
            if isinstance(value, dict) and isinstance(current[section].get(key), dict):
                whole[key] = {**current[section][key], **value}
        try:
            normalised = models[section].model_validate(whole).model_dump(mode="json")
        except ValidationError:
            changes[section] = whole  # the service names the field at fault
            continue
        if normalised != current[section]:
            changes[section] = whole
    return changes


def error_field(field: str | None, names: set[str]) -> str | None:
    """The form field a service error names (``changes.schedule.quiet_hours.HK.start`` ->
    ``schedule__quiet_hours``): its longest prefix that is a form field, else None (the form)."""
    parts = (field or "").removeprefix("changes.").split(".")
    for end in range(len(parts), 0, -1):
        name = SEP.join(parts[:end])
        if name in names:
            return name
    return None
