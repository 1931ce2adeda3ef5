"""otp.send and the check on MCP, REST and admin: approved templates only, allowed countries, max sends,
max checks and lock, expiry, single use, idempotency, and the code never in any answer, audit row or log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.otp import services
from campaigns.otp.models import OtpTemplate, Verification, VerificationSend
from campaigns.otp.scrub import otp_bodies_scrub
from campaigns.otp.services import otp_check, otp_send
from gateways.models import MessageState, OutboundMessage
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog, IdempotencyRecord
from tests.otp.conftest import key, mcp
from tests.support.actors import actor
from tests.support.rest import error_of

pytestmark = pytest.mark.django_db

PHONE = "+85291234567"
CODES = ["318274", "905163", "442817", "660391", "127458", "839201", "574630"]


@pytest.fixture(autouse=True)
def known_codes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Codes drawn in order from CODES, so a test knows each code it must never see."""
    issued: list[str] = []

    def draw(*, length: int, alphabet: str) -> str:
        code = CODES[len(issued) % len(CODES)]
        issued.append(code)
        return code

    monkeypatch.setattr(services, "code_generate", draw)
    return issued


def send(user: Any, template: OtpTemplate, **kw: Any) -> dict[str, Any]:
    return otp_send(
        actor=actor(user), template_id=template.pk, phone=kw.pop("phone", PHONE), idempotency_key=key(), **kw
    )


def _no_code_anywhere(*texts: str) -> None:
    audit = json.dumps(list(AuditLog.objects.values("before", "after", "reason")), default=str)
    stored = json.dumps(list(IdempotencyRecord.objects.values("response")), default=str)
    for code in CODES:
        for text in (audit, stored, *texts):
            assert code not in text
    # Nor the full phone number in audit rows.
    assert PHONE not in audit and "91234567" not in audit


def test_send_and_check_over_rest_without_the_code_anywhere(
    template: OtpTemplate,
    tech: Any,
    api_for: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
    known_codes: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = api_for(tech)
    sent = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": PHONE, "client_ip": "203.0.113.9", "idempotency_key": key()},
        format="json",
    )
    assert sent.status_code == 200, sent.content
    result = sent.json()["result"]
    assert result["verification_id"].startswith("VE") and result["phone"] == "+852****4567"
    assert (result["status"], result["sends_used"], result["sends_remaining"], result["checks_remaining"]) == (
        "pending",
        1,
        4,
        5,
    )
    verification = Verification.objects.get()
    code = known_codes[-1]
    assert code not in verification.code_hash and len(verification.code_hash) == 64
    message = OutboundMessage.objects.get()
    assert code in message.body and message.purpose == "otp"  # only the SMS itself carries it
    status = client.get(f"/api/v1/otp/verifications/{result['verification_id']}/")
    assert status.status_code == 200 and status.json()["delivery_state"] == "queued"
    wrong = client.post(
        f"/api/v1/otp/verifications/{result['verification_id']}/check", {"code": "000000"}, format="json"
    )
    assert wrong.json() == {
        "verification_id": result["verification_id"],
        "status": "pending",
        "valid": False,
        "checks_used": 1,
        "checks_remaining": 4,
    }
    right = client.post(f"/api/v1/otp/verifications/{result['verification_id']}/check", {"code": code}, format="json")
    assert right.json()["status"] == "approved" and right.json()["valid"] is True
    # Single use: the same right code again is refused.
    again = client.post(f"/api/v1/otp/verifications/{result['verification_id']}/check", {"code": code}, format="json")
    assert again.status_code == 400 and error_of(again)["code"] == "otp_verification_not_pending"
    texts = [sent.content.decode(), status.content.decode(), wrong.content.decode(), right.content.decode()]
    _no_code_anywhere(*texts, again.content.decode(), caplog.text)


def test_send_over_mcp_and_replay(
    template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any], known_codes: list[str]
) -> None:
    client = api_for(tech)
    args = {"template_id": template.pk, "phone": PHONE, "locale": "zh-Hant", "idempotency_key": "mcp-otp-00001"}
    first = mcp(client, "sms_marketing.otp.send", args)
    assert first["status"] == "executed" and first["result"]["sends_used"] == 1
    assert "驗證碼" in OutboundMessage.objects.get().body
    replay = mcp(client, "sms_marketing.otp.send", args)
    assert replay == first and OutboundMessage.objects.count() == 1  # nothing sent twice
    conflict = mcp(client, "sms_marketing.otp.send", {**args, "locale": "en"})
    assert conflict["error"]["code"] == "idempotency_key_reused"
    _no_code_anywhere(json.dumps(first), json.dumps(replay), json.dumps(conflict))


def test_country_not_allowed_on_every_path(template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any]) -> None:
    singapore = "+6581234567"
    with pytest.raises(ApplicationError) as caught:
        send(tech, template, phone=singapore)
    assert caught.value.code == "otp_country_not_allowed"
    client = api_for(tech)
    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": singapore, "idempotency_key": key()},
        format="json",
    )
    assert error_of(rest)["code"] == "otp_country_not_allowed"
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": singapore, "idempotency_key": key()}
    )
    assert over_mcp["error"]["code"] == "otp_country_not_allowed"
    admin = Client()
    admin.force_login(tech)
    page = admin.post(
        reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": singapore, "locale": "en"}
    )
    assert page.status_code == 200 and "does not send to SG" in page.content.decode()
    assert not Verification.objects.exists() and not OutboundMessage.objects.exists()


def test_unapproved_template_refused_on_rest_and_mcp(
    compliance: Any, tech: Any, otp_gateway: Any, api_for: Callable[[Any], Any]
) -> None:
    from campaigns.otp.services import otp_template_save
    from tests.otp.conftest import CONTENT

    otp_template_save(actor=actor(compliance), idempotency_key=key(), content=CONTENT)
    template = OtpTemplate.objects.get()
    client = api_for(tech)
    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()},
        format="json",
    )
    assert error_of(rest)["code"] == "otp_template_not_approved"
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()}
    )
    assert over_mcp["error"]["code"] == "otp_template_not_approved"
    admin = Client()
    admin.force_login(tech)
    page = admin.post(reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": PHONE, "locale": "en"})
    assert "no approved version" in page.content.decode()


def test_max_sends_on_every_path_and_resend_invalidates_the_previous_code(
    make_template: Callable[..., OtpTemplate], tech: Any, api_for: Callable[[Any], Any], known_codes: list[str]
) -> None:
    # The per-phone velocity limit (5 an hour by default) would stop the sixth send first: this
    # template allows more, so what refuses it is the verification's own limit of 5 sends.
    template = make_template(limits={"phone": {"count": 20, "window_seconds": 3600}})
    first = send(tech, template)["result"]
    send(tech, template)
    assert otp_check(actor=actor(tech), verification_id=first["verification_id"], code=known_codes[0])["valid"] is False
    send(tech, template)
    client = api_for(tech)
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()}
    )
    assert over_mcp["result"]["sends_used"] == 4
    admin = Client()
    admin.force_login(tech)
    page = admin.post(reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": PHONE, "locale": "en"})
    assert page.status_code == 302
    assert Verification.objects.get().sends == 5
    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()},
        format="json",
    )
    assert rest.status_code == 400 and error_of(rest)["code"] == "otp_max_sends_reached"
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()}
    )
    assert over_mcp["error"]["code"] == "otp_max_sends_reached"
    page = admin.post(reverse("admin:otp_otptemplate_send_test", args=[template.pk]), {"phone": PHONE, "locale": "en"})
    assert "has sent its 5 codes" in page.content.decode()
    assert OutboundMessage.objects.count() == 5 and Verification.objects.get().sends == 5
    # The latest code is the only one that works.
    latest = known_codes[4]
    assert otp_check(actor=actor(tech), verification_id=first["verification_id"], code=latest)["status"] == "approved"
    _no_code_anywhere(page.content.decode(), json.dumps(over_mcp))


def test_max_checks_then_locked(
    template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any], known_codes: list[str]
) -> None:
    vid = send(tech, template)["result"]["verification_id"]
    client = api_for(tech)
    answers = [
        client.post(f"/api/v1/otp/verifications/{vid}/check", {"code": f"00000{i}"}, format="json").json()
        for i in range(5)
    ]
    assert [a["status"] for a in answers] == ["pending"] * 4 + ["locked"]
    assert [a["checks_remaining"] for a in answers] == [4, 3, 2, 1, 0]
    # Even the right code is refused once locked, and the answer never says how close a code was.
    locked = client.post(f"/api/v1/otp/verifications/{vid}/check", {"code": known_codes[0]}, format="json")
    assert error_of(locked)["code"] == "otp_verification_not_pending"
    assert Verification.objects.get().checks == 5


def test_a_check_is_one_transaction_of_few_statements(template: OtpTemplate, tech: Any, known_codes: list[str]) -> None:
    """SQLite: a wrong check is the counting UPDATE ... RETURNING and the audit row; the right one
    adds the approval, the scrub's read and the verified-prefix counter, all in the check's own
    transaction (no transaction or savepoint of its own for the counter). PostgreSQL: one statement
    that counts, compares, writes the audit row and the counter (no BEGIN/COMMIT)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.otp.models import OtpRateCounter

    def statements(vid: str, code: str) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            otp_check(actor=actor(tech), verification_id=vid, code=code)
        return [q["sql"] for q in queries.captured_queries]

    def work(sql: list[str]) -> list[str]:
        return [q for q in sql if q.split()[0] not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]

    vid = send(tech, template)["result"]["verification_id"]
    wrong = statements(vid, "000000")
    right = statements(vid, known_codes[-1])
    if connection.vendor == "postgresql":
        assert len(wrong) == len(right) == 1, (wrong, right)
        assert right[0].startswith("WITH v AS (UPDATE"), right
        assert known_codes[-1] not in right[0], "the statement carries the keyed hash, never the code"
    else:
        assert len(work(wrong)) == 2, wrong
        assert len(work(right)) == 5, right
    # At most the check's own atomic block (a savepoint inside the test's transaction).
    assert sum(q.startswith(("BEGIN", "SAVEPOINT")) for q in right) <= 1, right
    assert Verification.objects.get(public_id=vid).status == "approved"
    assert OtpRateCounter.objects.filter(scope="prefix_verified").count() == 1
    assert AuditLog.objects.filter(action="otp.check").count() == 2


def test_the_postgresql_check_is_prepared_once_per_connection(
    template: OtpTemplate, tech: Any, known_codes: list[str]
) -> None:
    """Django opens connections with psycopg's preparing off, which silently ignored prepare=True: the
    check was parsed and planned on every call. Now the connection holds one prepared check statement,
    used by every check after the first, and Django's own queries still prepare nothing."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("server-side prepared statements are PostgreSQL's")

    def prepared() -> list[tuple[str, int]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
            return [(sql, plans) for sql, plans in cursor.fetchall()]

    vids = [send(tech, template, phone=f"+8529123400{n}")["result"]["verification_id"] for n in range(3)]
    assert prepared() == [], "sending prepares nothing"
    for vid in vids:
        otp_check(actor=actor(tech), verification_id=vid, code="000000")
    statements = prepared()
    assert len(statements) == 1, statements
    sql, executions = statements[0]
    assert sql.startswith("WITH v AS (UPDATE") and executions == 3, statements
    for _ in range(10):  # an ORM query, many times: never prepared
        list(Verification.objects.filter(public_id=vids[0]))
    assert len(prepared()) == 1


def test_an_approval_counts_for_its_number_range(template: OtpTemplate, tech: Any, known_codes: list[str]) -> None:
    """Both paths (PostgreSQL's one statement, SQLite's ORM) add an approval to the verified counter
    of abuse.number_range(), in the configured window; a wrong code adds nothing."""
    from campaigns.otp import abuse
    from campaigns.otp.models import OtpRateCounter

    vid = send(tech, template)["result"]["verification_id"]
    otp_check(actor=actor(tech), verification_id=vid, code="000000")
    assert not OtpRateCounter.objects.filter(scope="prefix_verified").exists()
    assert otp_check(actor=actor(tech), verification_id=vid, code=known_codes[0])["status"] == "approved"
    counter = OtpRateCounter.objects.get(scope="prefix_verified")
    assert counter.key == abuse.verified_slot(PHONE).key == "+8529123"
    assert (counter.count, counter.window_seconds) == (1, abuse.abuse_settings().conversion_window_seconds)
    assert counter.window_start % counter.window_seconds == 0
    vid = send(tech, template, phone="+85291234000")["result"]["verification_id"]
    otp_check(actor=actor(tech), verification_id=vid, code=known_codes[1])
    assert OtpRateCounter.objects.get(scope="prefix_verified").count == 2


def test_expiry(template: OtpTemplate, tech: Any, known_codes: list[str]) -> None:
    vid = send(tech, template)["result"]["verification_id"]
    Verification.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApplicationError) as caught:
        otp_check(actor=actor(tech), verification_id=vid, code=known_codes[0])
    assert caught.value.code == "otp_verification_expired"
    assert Verification.objects.get().status == "expired"
    # A new send starts a new verification.
    again = send(tech, template)["result"]
    assert again["verification_id"] != vid and again["sends_used"] == 1


def test_check_needs_its_permission(
    template: OtpTemplate, tech: Any, compliance: Any, api_for: Callable[[Any], Any]
) -> None:
    vid = send(tech, template)["result"]["verification_id"]
    refused = api_for(compliance).post(f"/api/v1/otp/verifications/{vid}/check", {"code": "123456"}, format="json")
    assert refused.status_code == 403


def test_scrub_rewrites_sent_bodies(template: OtpTemplate, tech: Any, known_codes: list[str]) -> None:
    send(tech, template)
    message = OutboundMessage.objects.get()
    assert otp_bodies_scrub() == 0  # still queued: the sender needs its text
    OutboundMessage.objects.update(state=MessageState.SUBMITTED)
    assert otp_bodies_scrub() == 1
    message.refresh_from_db()
    assert known_codes[0] not in message.body and "******" in message.body
    assert VerificationSend.objects.get().scrubbed_at is not None
    assert otp_bodies_scrub() == 0


def test_admin_pages_never_show_code_hash_or_phone(
    template: OtpTemplate, tech: Any, known_codes: list[str], make_user: Any
) -> None:
    send(tech, template)
    verification = Verification.objects.get()
    message = OutboundMessage.objects.get()
    admin = Client()
    admin.force_login(make_user(superuser=True))
    pages = [
        admin.get(reverse("admin:otp_verification_changelist")),
        admin.get(reverse("admin:otp_verification_change", args=[verification.pk])),
        admin.get(reverse("admin:gateways_outboundmessage_change", args=[message.pk])),
    ]
    for page in pages:
        assert page.status_code == 200
        text = page.content.decode()
        assert known_codes[0] not in text and verification.code_hash not in text
    assert PHONE not in pages[0].content.decode() and PHONE not in pages[1].content.decode()
    # The list (it fits a 1,280 px screen beside both sidebars): the id shortened with the full one
    # on hover, the template by name, sends and checks as used/allowed, one short time with the
    # request and the expiry in full on hover.
    listing = pages[0].content.decode()
    assert f'title="{verification.public_id}">{verification.public_id[:12]}…' in listing
    assert f'<td class="field-template_name">{template.name}</td>' in listing
    assert ">1/5<" in listing and ">0/5<" in listing
    created, expires = timezone.localtime(verification.created_at), timezone.localtime(verification.expires_at)
    assert (
        f'title="requested {created:%Y-%m-%d %H:%M:%S %Z}, expires {expires:%Y-%m-%d %H:%M:%S %Z}">'
        f"{created:%m-%d %H:%M}<" in listing
    )


def test_delivery_status_shows_an_otp_state_receipts_and_charge_never_its_code(
    template: OtpTemplate,
    tech: Any,
    api_for: Callable[[Any], Any],
    known_codes: list[str],
    make_user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Issue 16: an OTP's delivery receipts, cost and status appear in delivery_status.get (by the
    message_id otp.send answers, or by phone), over MCP and REST; its body (the code) never does,
    the phone is masked for a role without full numbers, and it is never offered for resend."""
    from compliance.roles import Role

    with django_capture_on_commit_callbacks(execute=True):  # the submit task runs: the simulator takes it
        message_id = send(tech, template)["result"]["message_id"]
    message = OutboundMessage.objects.get(pk=message_id)
    operations = make_user(Role.OPERATIONS)
    over_mcp = mcp(api_for(operations), "sms_marketing.delivery_status.get", {"message_id": message_id})
    (row,) = over_mcp["messages"]
    assert row["purpose"] == "otp" and row["campaign_id"] is None and row["batch"] is None
    assert row["state"] == message.state != MessageState.QUEUED
    assert row["gateway"] == "otp-sim" and row["segments"] == message.segments
    assert row["charge"] == str(message.cost) and row["charged"] is True and row["currency"] == message.currency
    assert [p["provider_message_id"] for p in row["provider_message_ids"]] == list(
        message.parts.order_by("part_number").values_list("provider_message_id", flat=True)
    )
    assert row["resend"]["eligible"] is False and row["resend"]["reason"] == "otp"
    assert over_mcp["phones_masked"] and row["phone"] != PHONE and row["phone"].endswith(PHONE[-4:])
    by_phone = api_for(operations).get("/api/v1/delivery-status/", {"phone": PHONE})
    assert by_phone.status_code == 200
    assert [m["message_id"] for m in by_phone.json()["messages"]] == [message_id]
    assert by_phone.json()["phones_masked"] and by_phone.json()["messages"][0]["phone"] == row["phone"] != PHONE
    # A campaign's or a batch's list never takes in a code.
    by_campaign = api_for(make_user(superuser=True)).get("/api/v1/delivery-status/", {"phone": PHONE, "campaign_id": 1})
    assert by_campaign.status_code == 200 and by_campaign.json()["messages"] == []
    for text in (json.dumps(over_mcp), by_phone.content.decode(), by_campaign.content.decode()):
        assert known_codes[0] not in text


def test_a_tampered_promotional_version_is_still_refused_over_mcp_and_rest(
    template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any]
) -> None:
    """Defence in depth: should a promotional body reach the database around the rules, the outbound
    queue refuses an OTP that carries promotion, and nothing is sent or counted."""
    from campaigns.otp.models import OtpTemplateVersion

    OtpTemplateVersion.objects.filter(pk=template.current_version_id or 0).update(
        body_en="Code {code}. 20% off at shop.hk"
    )
    client = api_for(tech)
    over_mcp = mcp(
        client, "sms_marketing.otp.send", {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()}
    )
    assert over_mcp["error"]["code"] == "body_promotional"
    rest = client.post(
        "/api/v1/otp/verifications/",
        {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()},
        format="json",
    )
    assert error_of(rest)["code"] == "body_promotional"
    assert not Verification.objects.exists() and not OutboundMessage.objects.exists()
    _no_code_anywhere(json.dumps(over_mcp), rest.content.decode())


def test_the_code_goes_through_the_gateway_and_out_of_every_log(
    template: OtpTemplate,
    tech: Any,
    api_for: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
    known_codes: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The whole path with the submit task run (eager Celery, the simulator adapter and its receipt):
    DEBUG logs of every logger never carry the code; the scrub then rewrites the stored body."""
    from campaigns.otp.tasks import scrub_codes

    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        sent = api_for(tech).post(
            "/api/v1/otp/verifications/",
            {"template_id": template.pk, "phone": PHONE, "idempotency_key": key()},
            format="json",
        )
    assert sent.status_code == 200
    message = OutboundMessage.objects.get()
    assert message.state != MessageState.QUEUED  # the simulator took it
    assert scrub_codes() == 1
    message.refresh_from_db()
    assert known_codes[0] not in message.body
    status = api_for(tech).get(f"/api/v1/otp/verifications/{sent.json()['result']['verification_id']}/")
    assert status.json()["delivery_state"] == message.state
    _no_code_anywhere(caplog.text, sent.content.decode(), status.content.decode())


def test_cancel(template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any], known_codes: list[str]) -> None:
    client = api_for(tech)
    vid = send(tech, template)["result"]["verification_id"]
    canceled = client.post(f"/api/v1/otp/verifications/{vid}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    refused = client.post(f"/api/v1/otp/verifications/{vid}/check", {"code": known_codes[0]}, format="json")
    assert error_of(refused)["code"] == "otp_verification_not_pending"
    again = client.post(f"/api/v1/otp/verifications/{vid}/cancel")
    assert error_of(again)["code"] == "otp_verification_not_pending"
    assert send(tech, template)["result"]["verification_id"] != vid  # a new send starts afresh


def test_rest_check_reads_the_token_and_its_permissions_in_one_statement(
    template: OtpTemplate, tech: Any, api_for: Callable[[Any], Any]
) -> None:
    """On PostgreSQL the token's statement carries the user's permissions (no two more reads per
    call); nothing is cached across calls: a role taken away refuses the very next call."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    verification_id = send(tech, template)["result"]["verification_id"]
    client = api_for(tech)
    url = f"/api/v1/otp/verifications/{verification_id}/check"
    with CaptureQueriesContext(connection) as ctx:
        assert client.post(url, {"code": "000000"}, format="json").status_code == 200
    reads = [q["sql"] for q in ctx.captured_queries if "auth_permission" in q["sql"]]
    if connection.vendor == "postgresql":
        assert len(reads) == 1 and "smsplatform_apitoken" in reads[0], reads
    tech.groups.clear()
    refused = client.post(url, {"code": "000000"}, format="json")
    assert refused.status_code == 403, refused.content
    assert Verification.objects.get(public_id=verification_id).checks == 1


@pytest.mark.django_db(transaction=True)
def test_a_send_commits_unflushed_and_the_claim_that_sends_it_waits_for_the_flush(
    template: OtpTemplate, tech: Any
) -> None:
    """PostgreSQL: the send's two transactions (its rate-limit slots, one statement in autocommit,
    then the verification and its message) commit without waiting for the WAL flush; the claim
    that hands the message to the
    SMSC (here the eager Celery submit right after the commit) commits synchronously, which puts
    the send's records on disk before any code leaves (smsplatform.kernel.commits)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    with CaptureQueriesContext(connection) as queries:
        message_id = send(tech, template)["result"]["message_id"]
    blocks: list[list[str]] = []  # each transaction's statements: BEGIN ... COMMIT, or one in autocommit
    open_block = False
    for sql in (q["sql"] for q in queries.captured_queries):
        if sql.startswith("BEGIN"):
            blocks.append([])
            open_block = True
        elif sql.startswith(("COMMIT", "ROLLBACK")):
            open_block = False
        elif open_block:
            blocks[-1].append(sql)
        else:
            blocks.append([sql])

    def unflushed(block: list[str]) -> bool:
        return any("synchronous_commit TO OFF" in sql for sql in block)

    counters = [b for b in blocks if any('INSERT INTO "otp_otpratecounter"' in sql for sql in b)]
    verification = [b for b in blocks if any('INSERT INTO "otp_verification"' in sql for sql in b)]
    assert len(counters) == len(verification) == 1 and unflushed(counters[0]) and unflushed(verification[0])
    after = blocks[blocks.index(verification[0]) + 1 :]
    assert after and not any(unflushed(b) for b in after), "the claim and the charge wait for their flush"
    assert OutboundMessage.objects.get(pk=message_id).state != MessageState.QUEUED  # claimed and sent
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on", "nothing leaks to the connection's next transaction"


def test_a_send_names_its_quota_hold_before_the_insert(template: OtpTemplate, tech: Any) -> None:
    """The message and its reservation are named after the verification and the send's number, known
    before the message's insert: no UPDATE to rename them after it. A resend holds anew."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gateways.models import QuotaReservation

    with CaptureQueriesContext(connection) as queries:
        first = send(tech, template)["result"]
    vid = first["verification_id"]
    assert not [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "gateways_outboundmessage"')]
    again = send(tech, template)["result"]
    assert again["verification_id"] == vid
    for message_id, number in ((first["message_id"], 1), (again["message_id"], 2)):
        reference = OutboundMessage.objects.get(pk=message_id).quota_reference
        assert reference == f"otp:{vid}:{number}"
        assert QuotaReservation.objects.filter(reference=reference).exists()


@pytest.mark.django_db(transaction=True)
def test_the_campaign_is_asked_to_yield_before_the_first_read_once_the_gateway_is_known(
    template: OtpTemplate, tech: Any
) -> None:
    """PostgreSQL: the first send of a template asks its gateway's bulk lane to yield once the
    template is read; the next ones ask first thing, before the idempotency and template reads
    (the process remembers the gateway), and once only. A stale hint (the template moved to
    another gateway) costs one NOTIFY more: the right gateway is asked when the template is read,
    and remembered."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gateways.delivery.queue import bulk_yield_channel

    if connection.vendor != "postgresql":
        pytest.skip("the yield is a PostgreSQL NOTIFY")
    assert template.current_version is not None
    gateway = template.current_version.gateway
    services._yield_hints.pop(template.pk, None)

    def notifies(phone: str) -> list[tuple[int, str]]:
        with CaptureQueriesContext(connection) as queries:
            send(tech, template, phone=phone)
        return [(i, q["sql"]) for i, q in enumerate(queries.captured_queries) if "sms_bulk_yield" in q["sql"]]

    first = notifies("+85291230001")
    assert len(first) == 1 and first[0][0] > 0 and bulk_yield_channel(gateway) in first[0][1]
    second = notifies("+85291230002")
    assert [i for i, _sql in second] == [0] and bulk_yield_channel(gateway) in second[0][1]
    services._yield_hints[template.pk] = "elsewhere"
    stale = notifies("+85291230003")
    assert [bulk_yield_channel("elsewhere") in sql for _i, sql in stale] == [True, False]
    assert bulk_yield_channel(gateway) in stale[1][1] and services._yield_hints[template.pk] == gateway
