"""The approval page of a snapshot overwrite: the current version beside the proposed one, metric by
metric, so the approver sees exactly which reported figures change (read-only)."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from compliance.models import ActionRequest
from compliance.presenters import payload_presentation
from reporting.models import PerformanceSnapshot
from reporting.snapshot_selectors import snapshot_dict, snapshot_differences
from smsplatform.kernel.actor import Actor


def snapshot_overwrite_presentation(request: ActionRequest, actor: Actor) -> SafeString:
    payload = request.payload or {}
    current = (
        PerformanceSnapshot.objects.select_related("recorded_by")
        .filter(key=payload.get("key"), is_current=True)
        .first()
    )
    if current is None:
        return payload_presentation(request, actor)
    now = snapshot_dict(current)
    # Proposed minus current: a positive difference is a figure the overwrite raises.
    rows = snapshot_differences(payload.get("metrics") or {}, now["metrics"])
    table = format_html_join(
        "",
        "<tr><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                name,
                "—" if r["computed"] is None else r["computed"],
                "—" if r["snapshot"] is None else r["snapshot"],
                "—" if r["difference"] is None else r["difference"],
            )
            for name, r in rows.items()
        ),
    )
    return format_html(
        "<h3>Overwrite of {} (version {}, recorded by {} on {})</h3>"
        "<table><tr><th>metric</th><th>current</th><th>proposed</th><th>change</th></tr>{}</table>"
        "<p>Evidence proposed: {} {} ({}). The current version is kept, marked superseded.</p>",
        current.key,
        current.version,
        now["recorded_by"],
        now["recorded_at"][:10],
        table,
        (payload.get("evidence") or {}).get("kind", ""),
        (payload.get("evidence") or {}).get("url") or (payload.get("evidence") or {}).get("file_name", ""),
        "hash verified" if (payload.get("evidence") or {}).get("verified") else "hash stated, not verified",
    )
