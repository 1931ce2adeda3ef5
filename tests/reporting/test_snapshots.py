"""performance_snapshot.record on MCP, REST and admin: evidence, impossible values, the uniqueness key,
governed and versioned overwrites, and the selectors report-core reads."""

from __future__ import annotations

import base64
import hashlib
from datetime import date, timedelta
from typing import Any

import pytest
from django.utils import timezone

from compliance.models import ActionRequest, RequestState
from compliance.services import action_request_approve
from reporting.models import PerformanceSnapshot
from reporting.snapshot_selectors import snapshot_differences, snapshot_versions, snapshots_for
from reporting.snapshots import performance_snapshot_record
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.models import AuditLog
from tests.reporting.conftest import key
from tests.support.factories import CampaignFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

TOOL = "sms_marketing.performance_snapshot.record"
URL = "/api/v1/reporting/snapshots/"
ADMIN_URL = "/admin/reporting/performancesnapshot/record/"
SHA = "a" * 64
INTERFACES = ["mcp", "rest", "admin"]


def snapshot_data(campaign_id: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "subject": {"campaign_id": campaign_id},
        "source_kind": "gateway_portal",
        "source_name": "Simulator console",
        "date_from": "2026-05-01",
        "date_to": "2026-05-31",
        "gateway": "simulator",
        "metrics": {
            "sent": 1000,
            "delivered": 950,
            "failed": 40,
            "clicks": 120,
            "unique_clicks": 100,
            "cost": "350.00",
        },
        "currency": "HKD",
        "evidence": {"url": "https://portal.example.com/exports/may.csv", "sha256": SHA},
    }
    data.update(overrides)
    return data


def _admin_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "campaign_id": data["subject"].get("campaign_id", ""),
        "source_kind": data["source_kind"],
        "source_name": data["source_name"],
        "date_from": data["date_from"],
        "date_to": data["date_to"],
        "gateway": data.get("gateway", ""),
        "currency": data.get("currency", "HKD"),
        "base_version_token": data.get("base_version_token") or "",
        "idempotency_key": key("admin"),
    }
    for name, value in data["metrics"].items():
        fields[name] = value
    attribution = data.get("attribution") or {}
    if "model" in attribution:
        fields["attribution_model"] = attribution["model"]
    for name in ("click_window_hours", "delivery_window_hours"):
        if name in attribution:
            fields[name] = attribution[name]
    if data.get("gateway_performance"):
        import json

        fields["gateway_performance"] = json.dumps(data["gateway_performance"])
    evidence = data.get("evidence") or {}
    if "url" in evidence:
        fields["evidence_url"] = evidence["url"]
    if "sha256" in evidence:
        fields["evidence_sha256"] = evidence["sha256"]
    if "file_base64" in evidence:
        from django.core.files.uploadedfile import SimpleUploadedFile

        fields["evidence_file"] = SimpleUploadedFile(evidence["file_name"], base64.b64decode(evidence["file_base64"]))
    return fields


@pytest.fixture
def record(mcp: Any, api_for: Any, admin_client_for: Any) -> Any:
    """record(via, user, data) -> {"status": ..., ...} | {"error": {...}} | {"form_errors": {...}}."""

    def call(via: str, user: Any, data: dict[str, Any]) -> dict[str, Any]:
        if via == "mcp":
            return mcp(user, TOOL, {**data, "idempotency_key": key("mcp")})
        if via == "rest":
            response = api_for(user).post(URL, {**data, "idempotency_key": key("rest")}, format="json")
            body = response.json()
            if "error" not in body:
                assert response.status_code == (202 if body["status"] == "pending_approval" else 200)
            return dict(body)
        client = admin_client_for(user)
        response = client.post(ADMIN_URL, _admin_fields(data))
        if response.status_code == 302:
            return {"status": "redirect", "messages": [str(m) for m in response.wsgi_request._messages]}
        assert response.status_code == 200
        return {"form_errors": {k: " ".join(v) for k, v in response.context["form"].errors.items()}}

    return call


def _error_field(answer: dict[str, Any], via: str, field: str, admin_field: str, code: str) -> None:
    if via == "admin":
        assert admin_field in answer["form_errors"], answer
        return
    assert answer["error"]["code"] == code and answer["error"]["field"] == field, answer


@pytest.mark.parametrize("via", INTERFACES)
def test_a_snapshot_is_recorded_with_source_range_gateway_and_evidence(
    via: str, record: Any, owner: Any, campaign: Any
) -> None:
    answer = record(via, owner, snapshot_data(campaign.pk))
    assert answer.get("status") in ("executed", "redirect"), answer
    snap = PerformanceSnapshot.objects.get()
    assert (snap.source_kind, snap.source_name, snap.gateway_code) == (
        "gateway_portal",
        "Simulator console",
        "simulator",
    )
    assert (snap.date_from, snap.date_to) == (date(2026, 5, 1), date(2026, 5, 31))
    assert (snap.delivered, snap.cost, snap.version, snap.is_current) == (950, 350, 1, True)
    # A link is never fetched: its stated hash is kept, marked unverified.
    assert (snap.evidence_kind, snap.evidence_sha256, snap.evidence_hash_verified) == ("url", SHA, False)
    assert snap.recorded_by == owner and snap.actor_channel == {"mcp": "mcp", "rest": "api", "admin": "admin"}[via]
    assert AuditLog.objects.filter(action="performance_snapshot.record", object_id=str(snap.pk)).count() == 1
    if via != "admin":
        assert answer["result"]["snapshot"]["evidence"]["hash_verified"] is False
        assert answer["result"]["base_version_token"]


@pytest.mark.parametrize("via", INTERFACES)
def test_an_uploaded_file_is_stored_with_its_computed_sha256(via: str, record: Any, owner: Any, campaign: Any) -> None:
    content = b"date,delivered\n2026-05-01,950\n"
    evidence = {"file_base64": base64.b64encode(content).decode(), "file_name": "may.csv"}
    answer = record(via, owner, snapshot_data(campaign.pk, evidence=evidence))
    assert answer.get("status") in ("executed", "redirect"), answer
    snap = PerformanceSnapshot.objects.get()
    assert snap.evidence_sha256 == hashlib.sha256(content).hexdigest() and snap.evidence_hash_verified
    assert snap.evidence_size == len(content) and snap.evidence_name == "may.csv"
    with snap.evidence_file.open("rb") as stored:
        assert stored.read() == content


@pytest.mark.parametrize("via", INTERFACES)
def test_a_file_whose_stated_hash_differs_is_refused(via: str, record: Any, owner: Any, campaign: Any) -> None:
    evidence = {"file_base64": base64.b64encode(b"x,y\n").decode(), "file_name": "a.csv", "sha256": SHA}
    answer = record(via, owner, snapshot_data(campaign.pk, evidence=evidence))
    _error_field(answer, via, "evidence.sha256", "evidence_sha256", "snapshot_evidence_hash_mismatch")
    assert not PerformanceSnapshot.objects.exists()


@pytest.mark.parametrize("via", INTERFACES)
@pytest.mark.parametrize(
    "evidence,field,admin_field,code",
    [
        ({}, "evidence", "evidence_file", "snapshot_evidence_required"),
        (
            {"url": "https://portal.example.com/x.csv"},
            "evidence.sha256",
            "evidence_sha256",
            "snapshot_evidence_required",
        ),
    ],
)
def test_a_snapshot_without_evidence_is_refused(
    via: str, evidence: dict[str, Any], field: str, admin_field: str, code: str, record: Any, owner: Any, campaign: Any
) -> None:
    answer = record(via, owner, snapshot_data(campaign.pk, evidence=evidence))
    _error_field(answer, via, field, admin_field, code)
    assert not PerformanceSnapshot.objects.exists()


IMPOSSIBLE = [
    ({"metrics": {"delivered": -5}}, "metrics.delivered", "delivered"),
    ({"metrics": {"sent": 100, "delivered": 101}}, "metrics.delivered", "delivered"),
    ({"metrics": {"sent": 100, "delivered": 80, "failed": 30}}, "metrics.failed", "failed"),
    ({"metrics": {"sent": 100, "opt_outs": 101}}, "metrics.opt_outs", "opt_outs"),
    ({"metrics": {"clicks": 10, "unique_clicks": 11}}, "metrics.unique_clicks", "unique_clicks"),
    ({"metrics": {"delivered": 10, "unique_clicks": 11, "clicks": 30}}, "metrics.unique_clicks", "unique_clicks"),
    ({"metrics": {"cost": "-1.00"}}, "metrics.cost", "cost"),
    (
        {
            "metrics": {"conversions": 0, "revenue": "10.00"},
            "attribution": {"model": "last_touch", "click_window_hours": 120},
        },
        "metrics.revenue",
        "revenue",
    ),
    ({"date_from": "2026-06-02", "date_to": "2026-06-01"}, "date_from", "date_from"),
    ({"gateway_performance": {"delivery_rate": 97}}, "gateway_performance.delivery_rate", "gateway_performance"),
]


@pytest.mark.parametrize("via", INTERFACES)
@pytest.mark.parametrize("change,field,admin_field", IMPOSSIBLE)
def test_impossible_values_are_refused_naming_the_field(
    via: str, change: dict[str, Any], field: str, admin_field: str, record: Any, owner: Any, campaign: Any
) -> None:
    answer = record(via, owner, snapshot_data(campaign.pk, **change))
    _error_field(answer, via, field, admin_field, "snapshot_impossible_value")
    assert not PerformanceSnapshot.objects.exists()


@pytest.mark.parametrize("via", INTERFACES)
def test_a_future_date_range_is_refused(via: str, record: Any, owner: Any, campaign: Any) -> None:
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    answer = record(via, owner, snapshot_data(campaign.pk, date_to=tomorrow))
    _error_field(answer, via, "date_to", "date_to", "snapshot_impossible_value")


@pytest.mark.parametrize("via", INTERFACES)
def test_conversions_need_the_attribution_settings(via: str, record: Any, owner: Any, campaign: Any) -> None:
    data = snapshot_data(campaign.pk, metrics={"conversions": 12, "revenue": "3400.00"})
    answer = record(via, owner, data)
    _error_field(answer, via, "attribution.model", "attribution_model", "validation_error")
    data["attribution"] = {"model": "last_touch", "click_window_hours": 120}
    assert record(via, owner, data).get("status") in ("executed", "redirect")
    assert PerformanceSnapshot.objects.get().attribution == {"model": "last_touch", "click_window_hours": 120}


@pytest.mark.parametrize("via", INTERFACES)
def test_overwriting_is_held_for_approval_and_keeps_the_old_version(
    via: str, record: Any, owner: Any, approver: Any, campaign: Any, snapshot_policy: Any
) -> None:
    assert record(via, owner, snapshot_data(campaign.pk)).get("status") in ("executed", "redirect")
    first = PerformanceSnapshot.objects.get()
    changed = snapshot_data(campaign.pk, metrics={"sent": 1000, "delivered": 970})
    # Without the current version's token: refused, and told the token.
    refused = record(via, owner, changed)
    _error_field(refused, via, "base_version_token", "base_version_token", "snapshot_exists")
    token = performance_snapshot_token(first)
    if via != "admin":
        assert refused["error"]["details"]["current_version_token"] == token
    held = record(via, owner, {**changed, "base_version_token": token})
    if via == "admin":
        assert held["status"] == "redirect" and "held for approval" in " ".join(held["messages"])
    else:
        assert held["status"] == "pending_approval" and held["required_role"] == "approver"
    request = ActionRequest.objects.get(action="performance_snapshot.record")
    assert request.facts["overwrites_existing"] is True
    # Nothing changed while it waits.
    assert list(PerformanceSnapshot.objects.values_list("version", "is_current", "delivered")) == [(1, True, 950)]
    action_request_approve(actor=Actor(user=approver, channel=Channel.ADMIN), action_request_id=request.pk)
    request.refresh_from_db()
    assert request.state == RequestState.EXECUTED, request.outcome
    rows = list(PerformanceSnapshot.objects.order_by("version").values_list("version", "is_current", "delivered"))
    assert rows == [(1, False, 950), (2, True, 970)]
    current = snapshots_for(campaign_id=campaign.pk)
    assert [(s["version"], s["metrics"]["delivered"], s["action_request_id"]) for s in current] == [
        (2, 970, request.pk)
    ]
    assert [v["version"] for v in snapshot_versions(first.key)] == [2, 1]
    with pytest.raises(PermissionError):
        first.delete()


def performance_snapshot_token(snapshot: PerformanceSnapshot) -> str:
    from reporting.snapshots import snapshot_token

    return snapshot_token(snapshot)


def test_an_overwrite_with_no_policy_is_refused_not_applied(owner: Any, campaign: Any) -> None:
    act = Actor(user=owner, channel=Channel.MCP)
    performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=key())
    first = PerformanceSnapshot.objects.get()
    with pytest.raises(Exception) as caught:
        performance_snapshot_record(
            actor=act,
            data={**snapshot_data(campaign.pk), "base_version_token": performance_snapshot_token(first)},
            idempotency_key=key(),
        )
    assert getattr(caught.value, "code", None) == "approval_policy_missing"
    assert PerformanceSnapshot.objects.count() == 1


def test_an_approval_after_another_overwrite_fails_on_the_stale_token(
    owner: Any, approver: Any, campaign: Any, snapshot_policy: Any
) -> None:
    act = Actor(user=owner, channel=Channel.MCP)
    performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=key())
    token = performance_snapshot_token(PerformanceSnapshot.objects.get())
    holds = [
        performance_snapshot_record(
            actor=act,
            data={**snapshot_data(campaign.pk, metrics={"delivered": n}), "base_version_token": token},
            idempotency_key=key(),
        )
        for n in (900, 910)
    ]
    decider = Actor(user=approver, channel=Channel.ADMIN)
    action_request_approve(actor=decider, action_request_id=holds[0]["action_request_id"])
    action_request_approve(actor=decider, action_request_id=holds[1]["action_request_id"])
    states = dict(ActionRequest.objects.values_list("pk", "state"))
    assert states[holds[0]["action_request_id"]] == RequestState.EXECUTED
    assert states[holds[1]["action_request_id"]] == RequestState.FAILED
    assert list(PerformanceSnapshot.objects.filter(is_current=True).values_list("delivered", flat=True)) == [900]


@pytest.mark.parametrize("via", INTERFACES)
def test_other_sources_and_ranges_are_separate_snapshots(via: str, record: Any, owner: Any, campaign: Any) -> None:
    record(via, owner, snapshot_data(campaign.pk))
    record(via, owner, snapshot_data(campaign.pk, source_kind="finance_export", source_name="May invoice"))
    record(via, owner, snapshot_data(campaign.pk, date_from="2026-05-02"))
    record(via, owner, snapshot_data(campaign.pk, gateway=""))
    assert PerformanceSnapshot.objects.filter(is_current=True, version=1).count() == 4


@pytest.mark.parametrize("via", ["mcp", "rest"])
def test_a_reader_without_the_permission_is_refused(via: str, record: Any, crm: Any, campaign: Any) -> None:
    answer = record(via, crm, snapshot_data(campaign.pk))
    assert answer["error"]["code"] == "permission_denied"


def test_admin_record_page_refuses_without_the_permission(admin_client_for: Any, crm: Any) -> None:
    response = admin_client_for(crm).get(ADMIN_URL)
    assert response.status_code == 302 and not PerformanceSnapshot.objects.exists()


@pytest.mark.parametrize("via", ["mcp", "rest"])
def test_a_campaign_the_recorder_cannot_see_is_not_found(via: str, record: Any, make_user: Any, campaign: Any) -> None:
    other = make_user("marketing", username="other-marketer")
    answer = record(via, other, snapshot_data(campaign.pk))
    assert answer["error"]["code"] == "not_found" and answer["error"]["field"] == "campaign_id"


def test_snapshots_list_over_rest_and_differences(api_for: Any, owner: Any, campaign: Any) -> None:
    act = Actor(user=owner, channel=Channel.API)
    performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=key())
    other = CampaignFactory.create(owner=owner)
    performance_snapshot_record(actor=act, data=snapshot_data(other.pk), idempotency_key=key())
    body = api_for(owner).get(URL, {"campaign_id": campaign.pk, "date_from": "2026-05-10"}).json()
    assert body["count"] == 1 and body["snapshots"][0]["subject"]["campaign_id"] == campaign.pk
    assert api_for(owner).get(URL, {"campaign_id": campaign.pk, "date_from": "2026-06-01"}).json()["count"] == 0
    diff = snapshot_differences(body["snapshots"][0], {"delivered": 940, "cost": "352.50", "clicks": 0})
    assert diff["delivered"] == {"snapshot": 950, "computed": 940, "difference": 10, "relative": "0.0106"}
    assert diff["cost"] == {"snapshot": "350.00", "computed": "352.50", "difference": "-2.50", "relative": "-0.0071"}
    assert diff["clicks"]["relative"] is None and diff["clicks"]["difference"] == 120
    # A metric the source did not report has no difference: nothing is guessed.
    assert diff["sent"] == {"snapshot": 1000, "computed": None, "difference": None, "relative": None}
    assert diff["opt_outs"]["difference"] is None
    assert snapshot_differences({"metrics": {"opt_outs": None}}, {"opt_outs": 3})["opt_outs"]["difference"] is None


def test_idempotent_retry_returns_the_first_result(owner: Any, campaign: Any) -> None:
    act = Actor(user=owner, channel=Channel.MCP)
    same = key()
    first = performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=same)
    again = performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=same)
    assert first == again and PerformanceSnapshot.objects.count() == 1


@pytest.mark.parametrize("via", ["mcp", "rest"])
def test_a_snapshot_of_an_unknown_flow_is_refused(via: str, record: Any, owner: Any) -> None:
    answer = record(via, owner, snapshot_data(1, subject={"flow_id": 987654}))
    assert answer["error"]["code"] == "not_found" and answer["error"]["field"] == "subject.flow_id"
    assert not PerformanceSnapshot.objects.exists()


def test_the_approval_page_shows_the_figures_an_overwrite_changes(
    admin_client_for: Any, owner: Any, approver: Any, campaign: Any, snapshot_policy: Any
) -> None:
    act = Actor(user=owner, channel=Channel.MCP)
    performance_snapshot_record(actor=act, data=snapshot_data(campaign.pk), idempotency_key=key())
    token = performance_snapshot_token(PerformanceSnapshot.objects.get())
    held = performance_snapshot_record(
        actor=act,
        data={**snapshot_data(campaign.pk, metrics={"sent": 1000, "delivered": 970}), "base_version_token": token},
        idempotency_key=key(),
    )
    page = admin_client_for(approver).get(f"/admin/compliance/actionrequest/{held['action_request_id']}/change/")
    html = page.content.decode()
    assert page.status_code == 200 and "Overwrite of" in html
    assert "<td>950</td><td>970</td><td>20</td>" in html.replace("'", '"')
