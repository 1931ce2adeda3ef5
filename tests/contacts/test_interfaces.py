"""contacts.search/get/upsert, opt_outs.list, contacts.opt_out, frequency_caps.get over MCP
(official client, live server) and REST: each safety note tried through the interface."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from compliance.models import OptOut
from compliance.optouts import phone_is_suppressed
from compliance.roles import Role
from contacts.models import Contact
from tests.support.contacts import consent
from tests.support.mcp import run, structured, tool_error

pytestmark = pytest.mark.django_db(transaction=True)


def test_tools_over_mcp(live_server: Any, make_user: Any, token_for: Any, marketing: Any) -> None:
    url = f"{live_server.url}/mcp"
    crm_key = token_for(make_user(Role.CRM))
    marketer_key = token_for(marketing)

    async def crm(session: Any) -> dict[str, Any]:
        call = session.call_tool
        out: dict[str, Any] = {}
        out["bare"] = await call(
            "sms_marketing.contacts.upsert",
            {"phone": "+85261234567", "source": "crm", "idempotency_key": "mcp-up-0001"},
        )
        out["created"] = await call(
            "sms_marketing.contacts.upsert",
            {"phone": "9123 4567", "source": "web", "consent": consent(), "idempotency_key": "mcp-up-0002"},
        )
        out["invalid"] = await call(
            "sms_marketing.contacts.upsert", {"phone": "12345", "source": "crm", "idempotency_key": "mcp-up-0003"}
        )
        out["no_key"] = await call("sms_marketing.contacts.upsert", {"phone": "+85291234567", "source": "crm"})
        out["duplicate"] = await call(
            "sms_marketing.contacts.upsert",
            {"phone": "+85291234567", "source": "crm", "tags": ["x"], "idempotency_key": "mcp-up-0004"},
        )
        found = structured(await call("sms_marketing.contacts.search", {"phone": "+85291234567"}))
        out["found"] = found
        cid = found["contacts"][0]["contact_id"]
        got = structured(await call("sms_marketing.contacts.get", {"contact_id": cid}))
        out["got"] = got
        out["opt_out"] = await call(
            "sms_marketing.contacts.opt_out",
            {"contact_id": cid, "reason": "stop", "message_text": "STOP", "idempotency_key": "mcp-oo-0001"},
        )
        out["stale"] = await call(
            "sms_marketing.contacts.upsert",
            {
                "contact_id": cid,
                "base_version_token": got["base_version_token"],
                "source": "crm",
                "tags": ["vip"],
                "idempotency_key": "mcp-up-0005",
            },
        )
        fresh = structured(await call("sms_marketing.contacts.get", {"contact_id": cid}))
        out["silent_clear"] = await call(
            "sms_marketing.contacts.upsert",
            {
                "contact_id": cid,
                "base_version_token": fresh["base_version_token"],
                "source": "crm",
                "consent": consent(obtained_at=timezone.now().isoformat()),
                "idempotency_key": "mcp-up-0006",
            },
        )
        out["lift_without_consent"] = await call(
            "sms_marketing.contacts.upsert",
            {
                "contact_id": cid,
                "base_version_token": structured(await call("sms_marketing.contacts.get", {"contact_id": cid}))[
                    "base_version_token"
                ],
                "source": "crm",
                "lift_opt_out": True,
                "idempotency_key": "mcp-up-0007",
            },
        )
        out["opt_outs"] = await call("sms_marketing.opt_outs.list", {"reason": "stop"})
        out["caps"] = await call("sms_marketing.frequency_caps.get", {})
        return out

    r = run(url, crm_key, crm)
    assert structured(r["bare"])["result"]["sendable"] is False  # no consent evidence: never sendable
    created = structured(r["created"])
    assert created["status"] == "executed" and created["result"]["sendable"] is True
    assert tool_error(r["invalid"])["code"] == "phone_invalid" and tool_error(r["invalid"])["field"] == "phone"
    assert tool_error(r["no_key"])["field"] == "idempotency_key"
    assert tool_error(r["duplicate"])["code"] == "version_token_required"
    assert r["found"]["contacts"][0]["phone"] == "+85291234567"  # CRM may see full numbers
    assert r["got"]["consent_evidence"][0]["source"] == "web_form"
    opted = structured(r["opt_out"])
    assert (opted["status"], opted["action"]) == ("executed", "contacts.opt_out")
    assert opted["result"]["suppressed"] is True
    assert tool_error(r["stale"])["code"] == "stale_version_token"
    cleared = structured(r["silent_clear"])["result"]
    assert cleared["opted_out"] is True and cleared["sendable"] is False  # consent alone lifts nothing
    assert tool_error(r["lift_without_consent"])["field"] == "consent"
    assert structured(r["opt_outs"])["active_by_reason"]["stop"] == 1
    assert structured(r["caps"])["caps"]["per_day"] >= 0
    assert phone_is_suppressed("+85291234567") and OptOut.objects.get().lifted_at is None

    async def marketer(session: Any) -> dict[str, Any]:
        call = session.call_tool
        return {
            "search": await call("sms_marketing.contacts.search", {"phone": "91234567"}),
            "opt_outs": await call("sms_marketing.opt_outs.list", {}),
            "upsert": await call(
                "sms_marketing.contacts.upsert",
                {"phone": "+85298765432", "source": "x", "consent": consent(), "idempotency_key": "mcp-up-0099"},
            ),
        }

    m = run(url, marketer_key, marketer)
    search = structured(m["search"])
    assert search["phones_masked"] is True and search["contacts"][0]["phone"] == "+852****4567"
    assert "name" not in search["contacts"][0] and "tags" not in search["contacts"][0]
    assert {o["phone"] for o in structured(m["opt_outs"])["opt_outs"]} == {"+852****4567"}
    assert tool_error(m["upsert"])["code"] == "permission_denied"
    assert not Contact.objects.filter(phone="+85298765432").exists()


def test_rest(api_for: Any, make_user: Any, marketing: Any) -> None:
    crm = api_for(make_user(Role.CRM))
    created = crm.post(
        "/api/v1/contacts/",
        {"phone": "+85291234567", "source": "crm", "consent": consent(), "idempotency_key": "rest-up-0001"},
        format="json",
    )
    assert created.status_code == 200, created.json()
    cid = created.json()["result"]["contact_id"]
    invalid = crm.post(
        "/api/v1/contacts/", {"phone": "123", "source": "crm", "idempotency_key": "rest-up-0002"}, format="json"
    )
    assert invalid.status_code == 400 and invalid.json()["error"]["field"] == "phone"
    incomplete = crm.post(
        "/api/v1/contacts/",
        {
            "phone": "+85261234567",
            "source": "crm",
            "consent": consent(proof_reference=""),
            "idempotency_key": "rest-up-0003",
        },
        format="json",
    )
    assert incomplete.status_code == 400
    got = crm.get(f"/api/v1/contacts/{cid}/").json()
    assert got["phone"] == "+85291234567" and got["base_version_token"]
    assert crm.get("/api/v1/contacts/999999/").status_code == 404

    stop = crm.post(
        "/api/v1/opt-outs/", {"contact_id": cid, "reason": "stop", "idempotency_key": "rest-oo-0001"}, format="json"
    )
    assert stop.status_code == 200 and stop.json()["result"]["suppressed"] is True
    assert (stop.json()["status"], stop.json()["action"]) == ("executed", "contacts.opt_out")
    again = crm.post(
        "/api/v1/opt-outs/", {"contact_id": cid, "reason": "stop", "idempotency_key": "rest-oo-0001"}, format="json"
    )
    assert again.json() == stop.json()  # the same key: the first answer again, envelope and all
    stale = crm.post(
        "/api/v1/contacts/",
        {
            "contact_id": cid,
            "base_version_token": got["base_version_token"],
            "source": "crm",
            "idempotency_key": "rest-up-0004",
        },
        format="json",
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version_token"
    assert crm.get("/api/v1/opt-outs/?reason=stop").json()["count"] == 1
    assert crm.get("/api/v1/opt-outs/?reason=bogus").json()["error"]["field"] == "reason"
    assert crm.get("/api/v1/frequency-caps/").status_code == 200

    market = api_for(marketing)
    searched = market.get("/api/v1/contacts/?phone=91234567").json()
    assert searched["contacts"][0]["phone"] == "+852****4567"
    assert market.get("/api/v1/contacts/?opted_out=maybe").json()["error"]["field"] == "opted_out"
    assert market.get(f"/api/v1/contacts/{cid}/").json()["phone"] == "+852****4567"
    denied = market.post(
        "/api/v1/opt-outs/", {"phone": "+85291234567", "idempotency_key": "rest-oo-0002"}, format="json"
    )
    assert denied.status_code == 403
    assert market.post("/api/v1/contacts/", {"phone": "+85261234567"}, format="json").status_code == 403
    assert phone_is_suppressed("+85291234567")


def test_rest_refuses_fields_it_does_not_take_as_mcp_does(api_for: Any, make_user: Any) -> None:
    """An upsert that tries to clear a STOP or set the version through a field the interface does
    not take is refused, naming the field (as the MCP schema refuses it), never silently dropped."""
    crm = api_for(make_user(Role.CRM))
    created = crm.post(
        "/api/v1/contacts/",
        {"phone": "+85291234567", "source": "crm", "consent": consent(), "idempotency_key": "rest-strict-01"},
        format="json",
    )
    cid = created.json()["result"]["contact_id"]
    crm.post(
        "/api/v1/opt-outs/", {"contact_id": cid, "reason": "stop", "idempotency_key": "rest-strict-02"}, format="json"
    )
    token = crm.get(f"/api/v1/contacts/{cid}/").json()["base_version_token"]
    for extra, field in (
        ({"opted_out": False}, "opted_out"),
        ({"version": 1}, "version"),
        ({"consent": {**consent(), "lifts_opt_out": True}}, "consent.lifts_opt_out"),
    ):
        refused = crm.post(
            "/api/v1/contacts/",
            {
                "contact_id": cid,
                "base_version_token": token,
                "source": "crm",
                "idempotency_key": f"rest-strict-{field}",
                **extra,
            },
            format="json",
        )
        assert refused.status_code == 400, refused.json()
        assert refused.json()["error"]["field"] == field
    assert phone_is_suppressed("+85291234567")
    assert crm.get("/api/v1/opt-outs/?reason=stop").json()["count"] == 1


def test_admin_masks_phones_and_opts_out(client: Any, make_user: Any) -> None:
    from tests.support.contacts import create_contact

    officer = make_user(Role.COMPLIANCE)
    marketer = make_user(Role.MARKETING)
    cid = create_contact(make_user(Role.CRM))
    client.force_login(marketer)
    page = client.get("/admin/contacts/contact/").content.decode()
    assert "+852****4567" in page and "+85291234567" not in page
    assert client.get(f"/admin/contacts/contact/{cid}/change/").status_code == 200
    client.force_login(officer)
    assert "+85291234567" in client.get("/admin/contacts/contact/").content.decode()
    response = client.post(
        "/admin/contacts/contact/", {"action": "opt_out_selected", "_selected_action": [str(cid)]}, follow=True
    )
    assert response.status_code == 200
    assert phone_is_suppressed("+85291234567")
    assert OptOut.objects.get().reason == "admin"
    assert client.get("/admin/compliance/optout/").status_code == 200
    assert client.post(f"/admin/compliance/optout/{OptOut.objects.get().pk}/delete/").status_code == 403


def test_audiences_and_segments_over_mcp_and_rest(
    live_server: Any, make_user: Any, token_for: Any, api_for: Any, marketing: Any
) -> None:
    from contacts.models import Audience, AudienceMembership, Segment
    from tests.support.contacts import create_contact

    crm_user = make_user(Role.CRM)
    audience = Audience.objects.create(name="Members", source="crm", region="HK")
    for phone, with_consent in (("+85291234567", True), ("+85261234567", False)):
        AudienceMembership.objects.create(
            audience=audience, contact_id=create_contact(crm_user, phone=phone, with_consent=with_consent)
        )
    url = f"{live_server.url}/mcp"

    async def body(session: Any) -> dict[str, Any]:
        call = session.call_tool
        out: dict[str, Any] = {"audiences": await call("sms_marketing.audiences.list", {})}
        out["bad"] = await call("sms_marketing.segments.preview", {"criteria": {"tags": {"some": ["x"]}}})
        preview = await call("sms_marketing.segments.preview", {"criteria": {"audiences": [audience.pk]}})
        out["preview"] = preview
        pid = structured(preview)["segment_preview_id"]
        out["widen"] = await call(
            "sms_marketing.segments.create",
            {"segment_preview_id": pid, "name": "x", "criteria": {}, "idempotency_key": "mcp-seg-0001"},
        )
        out["create"] = await call(
            "sms_marketing.segments.create",
            {"segment_preview_id": pid, "name": "Members", "idempotency_key": "mcp-seg-0002"},
        )
        out["again"] = await call(
            "sms_marketing.segments.create",
            {"segment_preview_id": pid, "name": "Again", "idempotency_key": "mcp-seg-0003"},
        )
        return out

    r = run(url, token_for(marketing), body)
    listed = structured(r["audiences"])["audiences"][0]
    assert listed["members"] == 2 and listed["sendable"] == 1 and "+852" not in str(listed)
    assert tool_error(r["bad"])["field"] == "criteria.tags"
    preview = structured(r["preview"])
    assert preview["matched"] == 2 and preview["sendable"] + sum(preview["exclusions"].values()) == 2
    assert preview["exclusions"]["no_consent"] == 1
    assert tool_error(r["widen"])["field"] == "criteria"
    created = structured(r["create"])["result"]
    assert created["sendable"] == preview["sendable"]
    assert created["criteria"] == preview["criteria"] and created["audience_ids"] == preview["audience_ids"]
    assert tool_error(r["again"])["code"] == "preview_already_used"
    assert Segment.objects.count() == 1

    api = api_for(marketing)
    assert api.get("/api/v1/audiences/").json()["count"] == 1
    rest_preview = api.post("/api/v1/segments/preview/", {"criteria": {"country": ["HK"]}}, format="json").json()
    assert rest_preview["matched"] == 2
    widened = api.post(
        "/api/v1/segments/",
        {
            "segment_preview_id": rest_preview["segment_preview_id"],
            "name": "y",
            "criteria": {"country": ["SG"]},
            "idempotency_key": "rest-seg-0001",
        },
        format="json",
    )
    assert widened.status_code == 400 and widened.json()["error"]["field"] == "criteria"
    created = api.post(
        "/api/v1/segments/",
        {"segment_preview_id": rest_preview["segment_preview_id"], "name": "HK", "idempotency_key": "rest-seg-0002"},
        format="json",
    )
    assert created.status_code == 200, created.json()
    facts = api_for(make_user(Role.TECHNICAL))
    bad = facts.post(
        "/api/v1/customer-facts/",
        {"facts": [{"phone": "+85291234567", "kind": "order", "external_id": "o1"}], "idempotency_key": "rest-facts-1"},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"]["errors"][0]["field"] == "facts.0.occurred_at"
    ok = facts.post(
        "/api/v1/customer-facts/",
        {
            "facts": [
                {
                    "phone": "+85291234567",
                    "kind": "order",
                    "external_id": "o1",
                    "occurred_at": timezone.now().isoformat(),
                }
            ],
            "idempotency_key": "rest-facts-2",
        },
        format="json",
    )
    assert ok.status_code == 200 and ok.json() == {"ingested": 1}
    assert (
        api.post("/api/v1/customer-facts/", {"facts": [], "idempotency_key": "x" * 10}, format="json").status_code
        == 403
    )
