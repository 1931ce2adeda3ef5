"""The admin: approval queue, decisions, configuration editing, read-only audit log."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.models import ActionRequest, RequestState
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_data, platform_config_get
from smsplatform.models import AuditLog
from tests.support.actors import actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_request(user: Any, gateway: str, key: str) -> int:
    result = platform_config_update(
        actor=actor(user),
        changes={"default_gateway": gateway},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key=key,
    )
    return int(result["action_request_id"])


def test_queue_lists_pending_first(approver: Any, technical: Any, config_policy: Any) -> None:
    first = make_request(technical, "a", "adm-key-0001")
    second = make_request(technical, "b", "adm-key-0002")
    ActionRequest.objects.filter(pk=second).update(state=RequestState.REJECTED)
    third = make_request(technical, "c", "adm-key-0003")
    page = logged_in(approver).get(reverse("admin:compliance_actionrequest_changelist"))
    assert page.status_code == 200
    ids = [r.pk for r in page.context["cl"].result_list]
    assert ids == [third, first, second]


def test_approver_sees_payload_and_approves(approver: Any, technical: Any, config_policy: Any) -> None:
    request_id = make_request(technical, "simulator", "adm-key-0004")
    client = logged_in(approver)
    page = client.get(reverse("admin:compliance_actionrequest_change", args=[request_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Approve and execute" in html and "&quot;default_gateway&quot;: &quot;simulator&quot;" in html
    response = client.post(
        reverse("admin:compliance_actionrequest_decide", args=[request_id]), {"decision": "approve", "reason": "fine"}
    )
    assert response.status_code == 302
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.EXECUTED
    assert platform_config_data()["default_gateway"] == "simulator"
    assert AuditLog.objects.filter(action="action_request.approve", channel="admin").exists()


def test_requester_cannot_approve_in_the_admin(make_user: Any, config_policy: Any) -> None:
    both = make_user("technical", "approver")
    request_id = make_request(both, "x", "adm-key-0005")
    client = logged_in(both)
    page = client.get(reverse("admin:compliance_actionrequest_change", args=[request_id]))
    assert "Approve and execute" not in page.content.decode()
    client.post(reverse("admin:compliance_actionrequest_decide", args=[request_id]), {"decision": "approve"})
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING


def test_reject_without_reason_is_refused(approver: Any, technical: Any, config_policy: Any) -> None:
    request_id = make_request(technical, "x", "adm-key-0006")
    response = logged_in(approver).post(
        reverse("admin:compliance_actionrequest_decide", args=[request_id]),
        {"decision": "reject", "reason": ""},
        follow=True,
    )
    assert "needs a reason" in response.content.decode()
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING


def test_non_approver_cannot_decide(marketing: Any, technical: Any, config_policy: Any) -> None:
    request_id = make_request(technical, "x", "adm-key-0007")
    logged_in(technical).post(
        reverse("admin:compliance_actionrequest_decide", args=[request_id]), {"decision": "approve"}
    )
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING


def _config_form(client: Client, **changes: Any) -> dict[str, Any]:
    from smsplatform.config_service import platform_config_instance

    url = reverse("admin:smsplatform_platformconfig_change", args=[platform_config_instance().pk])
    form = client.get(url).context["adminform"].form
    # What the browser would post: each field's value as its widget shows it.
    data = {name: form.fields[name].prepare_value(form[name].value()) for name in form.fields}
    data = {name: "" if value is None or value is False else value for name, value in data.items()}
    data.update(changes)
    return {"url": url, "data": data}


def test_config_edit_through_admin_is_governed(technical: Any, config_policy: Any) -> None:
    client = logged_in(technical)
    form = _config_form(client, default_sender_id="#SHOPHK", reason="SSRS done")
    response = client.post(form["url"], form["data"], follow=True)
    assert response.status_code == 200
    request = ActionRequest.objects.get()
    assert request.channel == "admin" and request.payload["changes"] == {"default_sender_id": "#SHOPHK"}
    assert platform_config_data()["default_sender_id"] == ""


def test_config_edit_errors_shown_on_the_field(technical: Any) -> None:
    """The service's error lands on the setting it names; the form's own type checks come first."""
    client = logged_in(technical)
    form = _config_form(client, schedule__time_zone="Nowhere/City")
    response = client.post(form["url"], form["data"])
    assert response.status_code == 200
    assert "unknown time zone" in str(response.context["adminform"].form.errors["schedule__time_zone"])
    quiet = _config_form(client, schedule__quiet_hours='{"HK": {"start": "25:00", "end": "09:00"}}')
    errors = client.post(quiet["url"], quiet["data"]).context["adminform"].form.errors
    assert list(errors) == ["schedule__quiet_hours"], errors
    for name, value in [
        ("frequency_caps__per_day", "many"),
        ("schedule__min_lead_minutes", "-1"),
        ("approval__business_hours__weekdays", "Monday"),
        ("tracking__attribution_model", "random"),
    ]:
        bad = _config_form(client, **{name: value})
        errors = client.post(bad["url"], bad["data"]).context["adminform"].form.errors
        assert list(errors) == [name], (name, errors)
    assert platform_config_data()["schedule"]["time_zone"] == "Asia/Hong_Kong"  # nothing written
    assert not AuditLog.objects.filter(action__startswith="config").exists()


def test_config_is_a_form_per_section_with_typed_fields(technical: Any) -> None:
    """Each section's settings as typed inputs with their help text, not a raw JSON textarea."""
    client = logged_in(technical)
    url = _config_form(client)["url"]
    page = client.get(url)
    html = page.content.decode()
    form = page.context["adminform"].form
    assert 'type="number"' in html and 'type="checkbox"' in html
    assert 'name="frequency_caps__per_day"' in html and 'name="frequency_caps"' not in html
    assert "A schedule must be at least this far ahead. From 0 to 10080." in html
    titles = [fieldset.name for fieldset in page.context["adminform"]]
    assert {"Schedule", "Frequency caps", "Short links", "Unsubscribe"} <= set(titles)
    assert form["tracking__per_recipient_links"].value() is True
    assert form.initial["approval__business_hours__weekdays"] == [0, 1, 2, 3, 4]
    assert "\n0\n1\n2\n3\n4</textarea>" in html  # one weekday per line


def test_config_edit_of_typed_settings_writes_only_the_changed_sections(technical: Any) -> None:
    client = logged_in(technical)
    form = _config_form(
        client,
        frequency_caps__per_week="5",
        tracking__per_recipient_links="",  # an unchecked checkbox
        approval__business_hours__weekdays="0\n1\n2",
        reason="caps",
    )
    client.post(form["url"], form["data"])
    data = platform_config_data()
    assert data["frequency_caps"]["per_week"] == 5 and data["frequency_caps"]["per_day"] == 1
    assert data["tracking"]["per_recipient_links"] is False
    assert data["approval"]["business_hours"]["weekdays"] == [0, 1, 2]
    entry = AuditLog.objects.get(action="config.update")
    assert set(entry.after or {}) == {"frequency_caps", "tracking", "approval"}, entry.after


def test_config_edit_direct_when_no_policy(technical: Any) -> None:
    client = logged_in(technical)
    form = _config_form(client, default_gateway="simulator")
    client.post(form["url"], form["data"])
    assert platform_config_data()["default_gateway"] == "simulator"


def test_marketing_cannot_edit_config(marketing: Any) -> None:
    from smsplatform.config_service import platform_config_instance

    url = reverse("admin:smsplatform_platformconfig_change", args=[platform_config_instance().pk])
    assert logged_in(marketing).post(url, {"default_gateway": "x"}).status_code == 403
    assert platform_config_data()["default_gateway"] == ""


def test_audit_log_is_read_only_in_admin(make_user: Any, technical: Any) -> None:
    make_request_direct = platform_config_update(
        actor=actor(technical),
        changes={"default_gateway": "x"},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key="adm-key-0010",
    )
    assert make_request_direct["status"] == "executed"
    entry = AuditLog.objects.get()
    client = logged_in(technical)
    assert client.get(reverse("admin:smsplatform_auditlog_changelist")).status_code == 200
    assert client.get(reverse("admin:smsplatform_auditlog_change", args=[entry.pk])).status_code == 200
    assert (
        client.post(reverse("admin:smsplatform_auditlog_change", args=[entry.pk]), {"reason": "x"}).status_code == 403
    )
    assert (
        client.post(reverse("admin:smsplatform_auditlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    assert client.get(reverse("admin:smsplatform_auditlog_add")).status_code == 403
    assert AuditLog.objects.get().reason == ""
