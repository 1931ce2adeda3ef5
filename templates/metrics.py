"""The short-link click spool's backlog, for the operators' metrics: bytes of clicks recorded on
this host's disk and not yet written to the database (each web process drains its own)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from templates.short_links.clicks import spool_dir


def click_spool_state() -> Iterator[GaugeMetricFamily]:
    directory = spool_dir()
    files = [p for p in directory.glob("*") if p.is_file()] if directory.exists() else []
    backlog = GaugeMetricFamily("sms_click_spool_bytes", "Click spool bytes on this host not yet in the database")
    backlog.add_metric([], float(sum(p.stat().st_size for p in files)))
    yield backlog
    segments = GaugeMetricFamily("sms_click_spool_files", "Click spool segment files on this host")
    segments.add_metric([], float(len(files)))
    yield segments
