"""Prometheus metrics (prometheus-client), safe under gunicorn and Celery's prefork pool.

Two kinds:
- Events counted where they happen: submit outcomes and receipts per gateway, MCP tool and REST
  view latency. In a process of many workers set ``PROMETHEUS_MULTIPROC_DIR`` (an empty
  directory per host, shared by that host's web and worker processes): each process writes its
  own file and ``/metrics`` adds them up (prometheus-client's multiprocess mode).
- State read from the database when ``/metrics`` is scraped: queue depth per gateway and lane,
  receipt lag, bind state, approvals pending and their age, and what the apps above register
  (OTP blocks, click spool backlog). Apps add these through ``metrics_source_register`` from
  ``ready()``, so the kernel imports no app.

``SMS_METRICS=0`` turns the event metrics off (the benchmarks compare with and without)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

ENABLED = os.environ.get("SMS_METRICS", "1") != "0"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES_SUBMITTED = Counter(
    "sms_messages_submitted", "Submit attempts answered by the gateway, by outcome", ["gateway", "outcome"]
)
RECEIPTS = Counter("sms_receipts", "Delivery receipts received, by status", ["gateway", "status"])
MCP_TOOL_SECONDS = Histogram(
    "sms_mcp_tool_seconds", "MCP tool call time in the server", ["tool", "outcome"], buckets=LATENCY_BUCKETS
)
HTTP_SECONDS = Histogram(
    "sms_http_request_seconds",
    "REST and page request time, by route",
    ["view", "method", "status"],
    buckets=LATENCY_BUCKETS,
)

Source = Callable[[], Iterable[GaugeMetricFamily]]
_SOURCES: dict[str, Source] = {}


def metrics_source_register(name: str, source: Source) -> None:
    """Add gauges read at scrape time (apps call this from ``ready()``)."""
    _SOURCES[name] = source


def outcomes_count(gateway: str, counts: dict[str, int]) -> None:
    if ENABLED:
        for outcome, n in counts.items():
            if n:
                MESSAGES_SUBMITTED.labels(gateway, outcome).inc(n)


def receipts_count(gateway: str, statuses: Iterable[str]) -> None:
    if ENABLED:
        tally: dict[str, int] = {}
        for status in statuses:
            tally[status] = tally.get(status, 0) + 1
        for status, n in tally.items():
            RECEIPTS.labels(gateway, status).inc(n)


def tool_observe(tool: str, outcome: str, seconds: float) -> None:
    if ENABLED:
        MCP_TOOL_SECONDS.labels(tool, outcome).observe(seconds)


class StateCollector:
    """Runs every registered source at scrape time; a failing source is reported as
    ``sms_metrics_source_up{source=...} 0`` rather than failing the scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("sms_metrics_source_up", "Whether a state source answered", labels=["source"])
        for name, source in list(_SOURCES.items()):
            try:
                yield from source()
                up.add_metric([name], 1)
            except Exception:
                up.add_metric([name], 0)
        yield up


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        for collector in list(REGISTRY._collector_to_names):
            registry.register(collector)
    registry.register(StateCollector())
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: allowed from the addresses in ``SMS_METRICS_ALLOWED_IPS`` (default: this
    machine) or to a user with the ``smsplatform.view_metrics`` permission."""
    remote = request.META.get("REMOTE_ADDR", "")
    user = getattr(request, "user", None)
    allowed = remote in settings.SMS_METRICS_ALLOWED_IPS or (
        user is not None and user.is_authenticated and user.has_perm("smsplatform.view_auditlog")
    )
    if not allowed:
        return HttpResponse(
            "metrics are served to the monitoring network only\n", status=403, content_type="text/plain"
        )
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times every request by its route name (never by its raw path: no ids or phones as labels)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if not ENABLED:
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name if match else "") or "unmatched"
        if view not in ("metrics", "short-link"):
            HTTP_SECONDS.labels(view, request.method, str(response.status_code)).observe(time.perf_counter() - started)
        return response


def process_exit(pid: int) -> None:
    """gunicorn's ``child_exit`` hook: forget a dead worker's live gauges (multiprocess mode)."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
