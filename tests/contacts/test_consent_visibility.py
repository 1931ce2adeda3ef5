"""Consent evidence (wording shown, source, proof) is read only with contacts.view_consentevidence,
on every path: the selector, MCP, REST and the admin (issue 14, item 5)."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.roles import Role
from contacts.selectors import contact_get
from tests.support.contacts import api_actor, consent, create_contact
from tests.support.mcp import run, structured

WORDING = consent()["wording"]
PROOF = consent()["proof_reference"]
WITHOUT = [Role.MARKETING, Role.OPERATIONS, Role.APPROVER]
WITH = [Role.CRM, Role.COMPLIANCE]


def _leaks(payload: Any) -> bool:
    text = str(payload)
    return WORDING in text or PROOF in text


@pytest.mark.django_db
@pytest.mark.parametrize("role", WITHOUT)
def test_roles_without_the_permission_do_not_read_the_evidence(make_user: Any, role: Role) -> None:
    cid = create_contact(make_user(Role.CRM))
    got = contact_get(actor=api_actor(make_user(role)), contact_id=cid)
    assert got["consent_evidence"] == [] and got["consent_evidence_withheld"] is True
    assert got["has_consent"] is True  # whether consent exists stays visible
    assert not _leaks(got)


@pytest.mark.django_db
@pytest.mark.parametrize("role", WITH)
def test_roles_with_the_permission_read_it(make_user: Any, role: Role) -> None:
    cid = create_contact(make_user(Role.CRM))
    got = contact_get(actor=api_actor(make_user(role)), contact_id=cid)
    assert got["consent_evidence_withheld"] is False
    [evidence] = got["consent_evidence"]
    assert (evidence["wording"], evidence["proof_reference"], evidence["source"]) == (WORDING, PROOF, "web_form")


@pytest.mark.django_db
def test_rest(api_for: Any, make_user: Any, marketing: Any) -> None:
    cid = create_contact(make_user(Role.CRM))
    hidden = api_for(marketing).get(f"/api/v1/contacts/{cid}/")
    assert hidden.status_code == 200 and hidden.json()["consent_evidence_withheld"] is True
    assert not _leaks(hidden.json())
    shown = api_for(make_user(Role.COMPLIANCE)).get(f"/api/v1/contacts/{cid}/").json()
    assert shown["consent_evidence"][0]["wording"] == WORDING


@pytest.mark.django_db(transaction=True)
def test_mcp(live_server: Any, make_user: Any, token_for: Any, marketing: Any) -> None:
    cid = create_contact(make_user(Role.CRM))
    url = f"{live_server.url}/mcp"

    async def get(session: Any) -> Any:
        return await session.call_tool("sms_marketing.contacts.get", {"contact_id": cid})

    hidden = structured(run(url, token_for(marketing), get))
    assert hidden["consent_evidence"] == [] and hidden["consent_evidence_withheld"] is True
    assert not _leaks(hidden)
    shown = structured(run(url, token_for(make_user(Role.CRM)), get))
    assert shown["consent_evidence"][0]["proof_reference"] == PROOF


@pytest.mark.django_db
def test_admin(client: Any, make_user: Any, marketing: Any) -> None:
    cid = create_contact(make_user(Role.CRM))
    client.force_login(marketing)
    page = client.get(f"/admin/contacts/contact/{cid}/change/")
    assert page.status_code == 200 and not _leaks(page.content.decode())
    assert client.get("/admin/contacts/consentevidence/").status_code == 403
    client.force_login(make_user(Role.COMPLIANCE))
    assert WORDING in client.get(f"/admin/contacts/contact/{cid}/change/").content.decode()
