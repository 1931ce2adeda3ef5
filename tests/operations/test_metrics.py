"""/metrics: event counters and the state read at scrape time, with labels that carry no ids or phones."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from compliance.models import ActionRequest, ActionType
from gateways.models import Gateway, MessageState, OutboundMessage, Provider
from smsplatform.operations import metrics

pytestmark = pytest.mark.django_db


def scrape(client: Client, **extra: Any) -> dict[str, list[Any]]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    for sample in (s for samples in families.values() for s in samples):
        if sample.name in (name, name + "_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no {name} {labels} in {sorted(families)}")


def message(gateway: Gateway, *, purpose: str, state: str) -> OutboundMessage:
    return OutboundMessage.objects.create(
        gateway=gateway,
        sender_id="Shop",
        destination="+85251234567",
        country="HK",
        body="hi",
        encoding="GSM-7",
        segments=1,
        purpose=purpose,
        state=state,
        quota_reference="q",
    )


def test_metrics_are_for_the_monitoring_network_or_an_operator(client: Client, make_user: Any) -> None:
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    client.force_login(make_user("marketing"))
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    client.force_login(make_user(superuser=True))
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_queue_depth_by_lane_and_approvals_waiting(client: Client, technical: Any) -> None:
    gateway = Gateway.objects.create(code="sim-m", name="Sim", provider=Provider.SIMULATOR, countries=["HK"])
    for _ in range(3):
        message(gateway, purpose="marketing", state=MessageState.QUEUED)
    message(gateway, purpose="otp", state=MessageState.QUEUED)
    message(gateway, purpose="marketing", state=MessageState.DELIVERED)
    ActionRequest.objects.create(
        action=ActionType.CAMPAIGN_SEND,
        payload={},
        requested_by=technical,
        required_role=Group.objects.get(name="approver"),
        expires_at=timezone.now() + timedelta(hours=1),
        created_at=timezone.now() - timedelta(minutes=10),
    )
    families = scrape(client)
    assert value(families, "sms_queue_depth", gateway="sim-m", lane="marketing", state="queued") == 3
    assert value(families, "sms_queue_depth", gateway="sim-m", lane="transactional", state="queued") == 1
    assert value(families, "sms_approvals_pending", action="campaign.send") == 1
    assert 590 < value(families, "sms_approvals_oldest_age_seconds", action="campaign.send") < 700
    assert value(families, "sms_metrics_source_up", source="gateways") == 1


def test_submit_outcomes_receipts_and_tool_latency_are_counted(client: Client) -> None:
    before = scrape(client)

    def count(families: dict[str, list[Any]], name: str, **labels: str) -> float:
        try:
            return value(families, name, **labels)
        except AssertionError:
            return 0.0

    metrics.outcomes_count("gw-x", {"accepted": 5, "permanent": 1, "temporary": 0})
    metrics.receipts_count("gw-x", ["delivered", "delivered", "failed"])
    metrics.tool_observe("sms_marketing.config.get", "ok", 0.02)
    after = scrape(client)
    assert (
        count(after, "sms_messages_submitted", gateway="gw-x", outcome="accepted")
        - count(before, "sms_messages_submitted", gateway="gw-x", outcome="accepted")
        == 5
    )
    assert (
        count(after, "sms_receipts", gateway="gw-x", status="delivered")
        - count(before, "sms_receipts", gateway="gw-x", status="delivered")
        == 2
    )
    assert count(after, "sms_mcp_tool_seconds_count", tool="sms_marketing.config.get", outcome="ok") >= 1


def test_rest_requests_are_timed_by_route_name_never_by_path(client: Client, api_for: Any, technical: Any) -> None:
    api_for(technical).get("/api/v1/action-requests/987654/")
    families = scrape(client)
    views = {s.labels.get("view") for s in families.get("sms_http_request_seconds", [])}
    assert "api:action-request" in views
    assert not any("987654" in (v or "") for v in views)


def test_a_broken_source_does_not_break_the_scrape(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("db gone")
        yield

    monkeypatch.setitem(metrics._SOURCES, "broken", broken)
    families = scrape(client)
    assert value(families, "sms_metrics_source_up", source="broken") == 0
