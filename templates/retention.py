"""Short-link clicks past their retention period are deleted (smsplatform.operations.retention);
the reporting aggregates built from them are kept."""

from __future__ import annotations

from datetime import datetime

from smsplatform.operations.retention import id_window_purge, retention_register
from templates.models import LinkClick


def link_clicks_purge(cutoff: datetime, size: int) -> int:
    return id_window_purge(model=LinkClick, time_field="clicked_at", cutoff=cutoff, size=size, cursor="link_clicks")


def retention_kinds_register() -> None:
    retention_register("link_clicks", "Short-link clicks (recipient token, device, time)", link_clicks_purge)
