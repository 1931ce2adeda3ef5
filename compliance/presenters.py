"""What an action request will do, said in human terms on its approval page.

Compliance sits below the apps whose writes it holds, so it cannot import them to describe their
requests. Each app registers a presenter for its own action types from its ``apps.py``; an action
without one is shown as labelled rows of its frozen payload and facts. Presenters only read: the
frozen payload and facts, and the owning app's selectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from compliance.governance import payload_shown
from compliance.models import ActionRequest, ActionType, RequestState
from smsplatform.admin_utils import error_text, readable
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import PlatformConfig, PlatformConfigVersion

# presenter(action_request, actor of the person looking) -> safe HTML
Presenter = Callable[[ActionRequest, Actor], SafeString]

_PRESENTERS: dict[str, Presenter] = {}

# Payload entries the page shows elsewhere (the requester's reason) or that mean nothing to a person.
HIDDEN_KEYS = {"base_version_token", "reason"}


def action_presenter_register(actions: Iterable[str], presenter: Presenter) -> None:
    for action in actions:
        _PRESENTERS[action] = presenter


def payload_presentation(request: ActionRequest, actor: Actor) -> SafeString:
    """The fallback: the frozen payload and the policy's facts as labelled rows."""
    shown = payload_shown(request.action, request.payload or {})
    payload = {k: v for k, v in shown.items() if k not in HIDDEN_KEYS}
    return format_html(
        "<h3>What it will do</h3>{}<h3>What the policy saw</h3>{}",
        readable(payload),
        readable(request.facts or {}),
    )


def action_request_presentation(*, request: ActionRequest, actor: Actor) -> SafeString:
    presenter = _PRESENTERS.get(request.action, payload_presentation)
    try:
        return presenter(request, actor)
    except ApplicationError as exc:
        # The object is gone or not visible to this reader: say so, and still show what was asked.
        return format_html(
            '<p class="errornote">Could not read the current state: {}</p>{}',
            error_text(exc),
            payload_presentation(request, actor),
        )


# --- configuration changes -----------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def config_changes_diff(before: dict[str, Any], changes: dict[str, Any]) -> list[dict[str, Any]]:
    """Only the settings that change, each by its dotted path, with the value before and after."""
    old = _flatten({name: before.get(name) for name in changes})
    new = _flatten(changes)
    missing = object()
    return [
        {"setting": path, "before": old.get(path), "after": new.get(path)}
        for path in sorted(set(old) | set(new))
        if old.get(path, missing) != new.get(path, missing)
    ]


def config_update_presentation(request: ActionRequest, actor: Actor) -> SafeString:
    changes = (request.payload or {}).get("changes") or {}
    version = (request.facts or {}).get("version")
    base = PlatformConfigVersion.objects.filter(version=version).first() if version is not None else None
    current = PlatformConfig.objects.filter(singleton=1).values_list("version", flat=True).first()
    rows = config_changes_diff(base.data if base else {}, changes)
    table = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
        ((row["setting"], readable(row["before"]), readable(row["after"])) for row in rows),
    )
    stale = (
        format_html(
            '<p class="errornote">The configuration changed since this request (version {} now, {} then): '
            "approving will be refused as stale; the requester must ask again.</p>",
            current,
            version,
        )
        if request.state == RequestState.PENDING and current is not None and version is not None and current != version
        else ""
    )
    return format_html(
        "<h3>Change {} setting{} of configuration version {}</h3>{}"
        '<table class="readable" id="config-diff"><tr><th>setting</th><th>before</th><th>after</th></tr>{}</table>'
        '<p><a href="{}">The configuration now</a> · <a href="{}">its versions</a></p>',
        len(rows),
        "" if len(rows) == 1 else "s",
        version if version is not None else "?",
        stale,
        table or format_html("<tr><td colspan=3>{}</td></tr>", "No value changes."),
        reverse("admin:smsplatform_platformconfig_changelist"),
        reverse("admin:smsplatform_platformconfigversion_changelist"),
    )


action_presenter_register([ActionType.CONFIG_UPDATE], config_update_presentation)
