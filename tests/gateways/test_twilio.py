"""The Twilio adapter: request shape and error mapping through the SDK's pluggable HTTP client
(no network), signed status callbacks and inbound SMS through the real URL routes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from django.db import transaction
from django.test import Client as DjangoClient
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from urllib3.exceptions import MaxRetryError, NewConnectionError

import gateways.adapters.twilio as twilio_adapter
from gateways.adapters.base import OutgoingSms, SendOutcome, adapter_for
from gateways.adapters.twilio import TwilioAdapter
from gateways.delivery.queue import message_queue, messages_submit
from gateways.models import (
    DeliveryReceipt,
    Gateway,
    GatewayRate,
    InboundMessage,
    MessagePart,
    MessageState,
    OutboundMessage,
    Provider,
)
from gateways.quotas import account_instance
from smsplatform.kernel.actor import Actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

SYSTEM = Actor.system("test")
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SERVICE_SID = "MG" + "fedcba9876543210" * 2
TOKEN = "test-auth-token-0123456789abcdef"
TOKEN_ENV = "TEST_TWILIO_AUTH_TOKEN"
BASE = "https://sms.example.hk"
CODE = "twilio-hk"
RECEIPTS_URL = f"{BASE}/hooks/{CODE}/receipts"
INBOUND_URL = f"{BASE}/hooks/{CODE}/inbound"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SID = "SM" + "a1b2c3d4e5f60718" * 2
CHINESE = "親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。回覆STOP取消。"


class FakeHttp(HttpClient):
    """The SDK's pluggable HTTP client: records each request, answers from a script."""

    def __init__(self, *answers: Response | Exception) -> None:
        super().__init__(logger=twilio_adapter.logger, is_async=False)
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self.calls.append({"method": method, "url": url, "data": dict(data or {}), "auth": auth, "headers": headers})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def created(sid: str = SID, status: str = "queued", segments: int = 1) -> Response:
    """Twilio's 201, with the parts it says it billed (num_segments, a string in its API)."""
    return Response(
        201, json.dumps({"sid": sid, "status": status, "account_sid": ACCOUNT_SID, "num_segments": str(segments)})
    )


def error(status: int, code: int | None = None, message: str = "error") -> Response:
    if code is None:
        return Response(status, "<html>Service Unavailable</html>")
    return Response(status, json.dumps({"code": code, "message": message, "status": status}))


def sms(
    message_id: int = 1, body: str = "Hello", sender: str = "#SHOPHK", receipt: bool = True, segments: int = 1
) -> OutgoingSms:
    encoding = "UCS-2" if any(ord(c) > 127 for c in body) else "GSM-7"
    return OutgoingSms(message_id, sender, "+85291234567", body, encoding, segments, request_receipt=receipt)


@pytest.fixture
def gateway(db: Any, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    gw = Gateway.objects.create(
        code=CODE,
        name="Twilio HK",
        provider=Provider.TWILIO,
        countries=["HK"],
        priority=1,
        encodings=["GSM-7", "UCS-2"],
        settings={"account_sid": ACCOUNT_SID, "messaging_service_sid": SERVICE_SID, "status_callback_base": BASE},
        credentials_env={"auth_token": TOKEN_ENV},
    )
    GatewayRate.objects.create(gateway=gw, country="HK", price_per_segment=Decimal("0.50"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    return gw


# --- sending ------------------------------------------------------------------------------------


def test_adapter_is_registered_for_the_twilio_provider(gateway: Gateway) -> None:
    assert isinstance(adapter_for(gateway), TwilioAdapter)


def test_request_shape_with_a_sender_id_and_chinese_body(gateway: Gateway) -> None:
    http = FakeHttp(created())
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(body=CHINESE, segments=1)])
    assert outcomes == [SendOutcome.accepted([SID], billed_segments=1)]
    (call,) = http.calls
    assert (call["method"], call["url"]) == ("POST", MESSAGES_URL)
    assert call["auth"] == (ACCOUNT_SID, TOKEN)
    assert call["data"] == {
        "To": "+85291234567",
        "From": "#SHOPHK",
        "Body": CHINESE,
        "StatusCallback": RECEIPTS_URL,
    }


def test_a_long_message_is_one_twilio_message_and_one_part(gateway: Gateway) -> None:
    http = FakeHttp(created(segments=4))
    body = CHINESE * 4
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(body=body, segments=4)])
    assert outcomes == [SendOutcome.accepted([SID], billed_segments=4)]
    assert len(http.calls) == 1 and http.calls[0]["data"]["Body"] == body


def test_messaging_service_is_used_without_a_sender_id(gateway: Gateway) -> None:
    http = FakeHttp(created())
    TwilioAdapter(gateway, http_client=http).send([sms(sender="")])
    data = http.calls[0]["data"]
    assert data["MessagingServiceSid"] == SERVICE_SID and "From" not in data


def test_no_sender_at_all_is_refused_without_calling_twilio(gateway: Gateway) -> None:
    gateway.settings = {"account_sid": ACCOUNT_SID, "status_callback_base": BASE}
    http = FakeHttp()
    (outcome,) = TwilioAdapter(gateway, http_client=http).send([sms(sender="")])
    assert (outcome.kind, outcome.code) == ("permanent", "sender_missing") and http.calls == []


def test_no_status_callback_when_no_receipt_is_wanted(gateway: Gateway) -> None:
    http = FakeHttp(created())
    TwilioAdapter(gateway, http_client=http).send([sms(receipt=False)])
    assert "StatusCallback" not in http.calls[0]["data"]


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (error(429, 20429, "Too Many Requests"), "temporary", "throttled"),
        (error(429), "temporary", "throttled"),
        (error(400, 14107, "SMS send rate limit exceeded"), "temporary", "throttled"),
        (error(400, 21211, "The 'To' number is not a valid phone number."), "permanent", "twilio_21211"),
        (error(400, 21610, "Attempt to send to unsubscribed recipient"), "permanent", "twilio_21610"),
        (
            error(400, 21408, "Permission to send an SMS has not been enabled for the region"),
            "permanent",
            "twilio_21408",
        ),
        (error(400, 21612, "The 'To' phone number is not currently reachable"), "permanent", "twilio_21612"),
        (error(404, 20404, "The requested resource was not found"), "permanent", "twilio_20404"),
        (error(503), "temporary", "gateway_unavailable"),
        (error(500, 20500, "Internal Server Error"), "temporary", "gateway_unavailable"),
        (error(401, 20003, "Authenticate"), "temporary", "gateway_unavailable"),
        (
            Response(
                400,
                json.dumps(
                    {
                        "type": "https://www.twilio.com/docs/errors/21211",
                        "title": "Invalid 'To' Phone Number",
                        "status": 400,
                        "code": 21211,
                    }
                ),
            ),
            "permanent",
            "twilio_21211",
        ),
    ],
)
def test_twilio_errors_map_to_outcomes(gateway: Gateway, answer: Response, kind: str, code: str) -> None:
    (outcome,) = TwilioAdapter(gateway, http_client=FakeHttp(answer)).send([sms()])
    assert (outcome.kind, outcome.code) == (kind, code)
    assert outcome.provider_ids == ()
    if code == "throttled":
        assert outcome.retry_after > 0


def test_connection_refused_is_unavailable_so_the_delivery_layer_can_fail_over(gateway: Gateway) -> None:
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, MESSAGES_URL, NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    )
    outcomes = TwilioAdapter(gateway, http_client=FakeHttp(refused)).send([sms(1), sms(2)])
    assert [(o.kind, o.code) for o in outcomes] == [("temporary", "gateway_unavailable")] * 2


def test_no_answer_after_sending_is_never_resent(gateway: Gateway) -> None:
    http = FakeHttp(requests.exceptions.ReadTimeout("read timed out"))
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(1), sms(2)])
    # The first may have reached Twilio: 'unknown', never retried (no duplicate SMS); the second was never sent.
    assert [(o.kind, o.code) for o in outcomes] == [
        ("unknown", "submit_unknown"),
        ("temporary", "gateway_unavailable"),
    ]
    assert len(http.calls) == 1


def test_a_batch_keeps_per_message_outcomes_in_order(gateway: Gateway) -> None:
    http = FakeHttp(created("SM1"), error(400, 21211), created("SM3"))
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(1), sms(2), sms(3)])
    assert [(o.kind, o.provider_ids, o.code) for o in outcomes] == [
        ("accepted", ("SM1",), ""),
        ("permanent", (), "twilio_21211"),
        ("accepted", ("SM3",), ""),
    ]


def test_after_a_rate_limit_the_rest_of_the_batch_is_not_attempted(gateway: Gateway) -> None:
    http = FakeHttp(created("SM1"), error(429, 20429))
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(1), sms(2), sms(3)])
    assert [(o.kind, o.code) for o in outcomes] == [
        ("accepted", ""),
        ("temporary", "throttled"),
        ("temporary", "throttled"),
    ]
    assert len(http.calls) == 2


def test_missing_auth_token_sends_nothing(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    http = FakeHttp()
    outcomes = TwilioAdapter(gateway, http_client=http).send([sms(1), sms(2)])
    assert [(o.kind, o.code) for o in outcomes] == [("temporary", "gateway_unavailable")] * 2
    assert http.calls == []


# --- callbacks through the URL routes -------------------------------------------------------------


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def post(path: str, params: dict[str, str], signature: str | None, **extra: Any) -> Any:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return DjangoClient().post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", headers=headers, **extra
    )


def status(message_status: str, sid: str = SID, error_code: str = "") -> dict[str, str]:
    params = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": message_status,
        "SmsStatus": message_status,
        "To": "+85291234567",
        "From": "#SHOPHK",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params


def post_receipt(params: dict[str, str], url: str = RECEIPTS_URL) -> Any:
    return post(f"/hooks/{CODE}/receipts", params, sign(url, params))


@pytest.fixture
def submitted(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> OutboundMessage:
    """A message queued and submitted through the delivery layer, Twilio answering 201."""
    monkeypatch.setattr(twilio_adapter, "http_client_factory", lambda gw: FakeHttp(created()))
    with transaction.atomic():
        message = message_queue(
            actor=SYSTEM,
            gateway_code=CODE,
            sender_id="#SHOPHK",
            destination="+85291234567",
            body=CHINESE,
            purpose="transactional",
        )
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk)["accepted"] == 1
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED
    assert list(message.parts.values_list("part_number", "provider_message_id")) == [(1, SID)]
    return message


def test_signed_delivered_receipt_is_stored_and_applied(submitted: OutboundMessage) -> None:
    response = post_receipt(status("delivered"))
    assert response.status_code == 200 and response.json() == {"received": 1, "applied": 1}
    submitted.refresh_from_db()
    assert submitted.state == MessageState.DELIVERED
    receipt = DeliveryReceipt.objects.get()
    assert (receipt.provider_message_id, receipt.status, receipt.provider_status) == (SID, "delivered", "delivered")
    assert receipt.applied_at is not None
    assert "To" not in receipt.raw and receipt.raw["MessageSid"] == SID  # no phone numbers kept


def test_intermediate_statuses_never_deliver(submitted: OutboundMessage) -> None:
    for intermediate in ("queued", "sending", "sent", "accepted"):
        assert post_receipt(status(intermediate)).status_code == 200
    submitted.refresh_from_db()
    assert submitted.state == MessageState.SUBMITTED
    assert set(DeliveryReceipt.objects.values_list("status", flat=True)) == {MessageState.SUBMITTED}


@pytest.mark.parametrize(
    ("message_status", "error_code", "expected_code"),
    [("undelivered", "30003", "30003"), ("failed", "30007", "30007"), ("canceled", "", "canceled")],
)
def test_failures_fail_the_message_with_the_error_code(
    submitted: OutboundMessage, message_status: str, error_code: str, expected_code: str
) -> None:
    assert post_receipt(status(message_status, error_code=error_code)).status_code == 200
    submitted.refresh_from_db()
    assert (submitted.state, submitted.error_code) == (MessageState.FAILED, expected_code)


def test_duplicates_are_accepted_idempotently(submitted: OutboundMessage) -> None:
    for _ in range(2):
        assert post_receipt(status("delivered")).status_code == 200
    submitted.refresh_from_db()
    assert submitted.state == MessageState.DELIVERED
    assert DeliveryReceipt.objects.filter(applied_at__isnull=False).count() == 2
    assert MessagePart.objects.get().state == MessageState.DELIVERED


def test_sent_after_delivered_does_not_downgrade(submitted: OutboundMessage) -> None:
    post_receipt(status("delivered"))
    assert post_receipt(status("sent")).status_code == 200
    submitted.refresh_from_db()
    assert submitted.state == MessageState.DELIVERED
    assert MessagePart.objects.get().state == MessageState.DELIVERED


def test_unsigned_callback_is_refused_and_nothing_stored(submitted: OutboundMessage) -> None:
    response = post(f"/hooks/{CODE}/receipts", status("delivered"), signature=None)
    assert response.status_code == 403 and response.json()["error"]["code"] == "signature_invalid"
    assert not DeliveryReceipt.objects.exists()
    submitted.refresh_from_db()
    assert submitted.state == MessageState.SUBMITTED


def test_forged_signature_is_refused(submitted: OutboundMessage) -> None:
    params = status("delivered")
    for signature in (sign(RECEIPTS_URL, params, token="not-the-token"), "AAAAAAAAAAAAAAAAAAAAAAAAAAA="):
        assert post(f"/hooks/{CODE}/receipts", params, signature).status_code == 403
    # Signed for 'failed', posted as 'delivered': the parameters are covered by the signature.
    assert post(f"/hooks/{CODE}/receipts", params, sign(RECEIPTS_URL, status("failed"))).status_code == 403
    assert not DeliveryReceipt.objects.exists()


@pytest.mark.parametrize(
    "signed_url",
    [
        INBOUND_URL,  # another route of the same gateway
        f"{BASE}/hooks/other/receipts",  # another gateway
        f"https://evil.example/hooks/{CODE}/receipts",  # another host
        f"http://testserver/hooks/{CODE}/receipts",  # what build_absolute_uri() would give behind a proxy
    ],
)
def test_signature_valid_for_another_url_is_refused(submitted: OutboundMessage, signed_url: str) -> None:
    assert post_receipt(status("delivered"), url=signed_url).status_code == 403
    assert not DeliveryReceipt.objects.exists()


def test_the_public_url_is_verified_whatever_host_the_proxy_forwards(submitted: OutboundMessage) -> None:
    params = status("delivered")
    response = post(
        f"/hooks/{CODE}/receipts", params, sign(RECEIPTS_URL, params), HTTP_HOST="127.0.0.1:8000", secure=False
    )
    assert response.status_code == 200
    submitted.refresh_from_db()
    assert submitted.state == MessageState.DELIVERED


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_malformed_signed_callback_is_refused(submitted: OutboundMessage, missing: str) -> None:
    params = status("delivered")
    del params[missing]
    if missing == "MessageSid":
        del params["SmsSid"]
    response = post_receipt(params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_callback"
    assert not DeliveryReceipt.objects.exists()


def test_without_the_auth_token_nothing_can_be_verified(
    submitted: OutboundMessage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    params = status("delivered")
    assert post(f"/hooks/{CODE}/receipts", params, sign(RECEIPTS_URL, params, token="")).status_code == 403
    assert not DeliveryReceipt.objects.exists()


def test_receipt_before_the_submit_answer_is_kept(gateway: Gateway) -> None:
    assert post_receipt(status("delivered", sid="SMunknown")).json() == {"received": 1, "applied": 0}
    assert DeliveryReceipt.objects.get().applied_at is None


# --- inbound --------------------------------------------------------------------------------------


def incoming(body: str = "你好，請問門市幾點開門？", sid: str = "SMinbound0001") -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "MessageSid": sid,
        "SmsSid": sid,
        "From": "+85291234567",
        "To": "+85230012345",
        "Body": body,
        "NumSegments": "1",
        "NumMedia": "0",
    }


def test_signed_inbound_is_stored_once(gateway: Gateway) -> None:
    params = incoming()
    for _ in range(2):
        response = post(f"/hooks/{CODE}/inbound", params, sign(INBOUND_URL, params))
        assert response.status_code == 200
        # Twilio's messaging webhook expects TwiML; an empty <Response/> sends no auto-reply.
        assert response["Content-Type"].startswith("text/xml") and b"<Response></Response>" in response.content
    stored = InboundMessage.objects.get()
    assert (stored.source, stored.destination, stored.body, stored.provider_message_id) == (
        "+85291234567",
        "+85230012345",
        "你好，請問門市幾點開門？",
        "SMinbound0001",
    )


@pytest.mark.parametrize(
    "signature",
    [None, "forged", sign(RECEIPTS_URL, incoming()), sign(INBOUND_URL, incoming(), token="wrong")],
)
def test_unsigned_or_forged_inbound_is_refused(gateway: Gateway, signature: str | None) -> None:
    assert post(f"/hooks/{CODE}/inbound", incoming(), signature).status_code == 403
    assert not InboundMessage.objects.exists()


def test_malformed_inbound_is_refused(gateway: Gateway) -> None:
    params = incoming()
    del params["From"]
    response = post(f"/hooks/{CODE}/inbound", params, sign(INBOUND_URL, params))
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_callback"
    assert not InboundMessage.objects.exists()


def test_twilio_bills_its_own_part_count_and_the_message_is_charged_so(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio splits the message itself (keeping a ZWJ emoji sequence whole across parts, say): its
    num_segments is what it bills, so the message's parts, cost and quota charge follow it."""
    from gateways.models import QuotaReservation
    from smsplatform.models import AuditLog

    monkeypatch.setattr(twilio_adapter, "http_client_factory", lambda gw: FakeHttp(created(segments=3)))
    with transaction.atomic():
        message = message_queue(
            actor=SYSTEM,
            gateway_code=CODE,
            sender_id="#SHOPHK",
            destination="+85291234567",
            body=CHINESE * 2,  # two UCS-2 parts by our count
            purpose="transactional",
        )
    assert (message.segments, message.cost) == (2, Decimal("1.0000"))
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk)["accepted"] == 1
    message.refresh_from_db()
    assert (message.state, message.segments, message.cost) == (MessageState.SUBMITTED, 3, Decimal("1.5000"))
    reservation = QuotaReservation.objects.get(reference=message.quota_reference)
    assert (reservation.settled_segments, reservation.settled_amount) == (3, Decimal("1.5000"))
    rebilled = AuditLog.objects.get(action="messages.rebilled")
    assert (rebilled.after or {})["messages"] == [{"id": message.pk, "estimated": 2, "billed": 3}]
    assert AuditLog.objects.filter(action="messages.rebilled").count() == 1


def test_a_bill_beyond_the_estimate_grows_the_hold_so_the_next_charge_is_taken(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two messages on one hold (as a campaign's): Twilio bills the first far beyond our estimate.
    The hold grows by the difference, so it does not close early and the second is charged too."""
    from gateways.models import QuotaReservation, ReservationState
    from gateways.quotas import quota_reserve

    answers = [created(sid="SM" + "1" * 32, segments=5), created(sid="SM" + "2" * 32, segments=2)]
    monkeypatch.setattr(twilio_adapter, "http_client_factory", lambda gw: FakeHttp(answers.pop(0)))
    with transaction.atomic():
        first, second = (
            message_queue(
                actor=SYSTEM,
                gateway_code=CODE,
                sender_id="#SHOPHK",
                destination=phone,
                body=CHINESE * 2,  # two parts each by our count
                purpose="transactional",
            )
            for phone in ("+85291234567", "+85291234568")
        )
        quota_reserve(actor=SYSTEM, reference="campaign:test:send", segments=4, amount=Decimal("2.0000"))
        OutboundMessage.objects.filter(pk__in=[first.pk, second.pk]).update(quota_reference="campaign:test:send")
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk, message_ids=[first.pk])["accepted"] == 1
    hold = QuotaReservation.objects.get(reference="campaign:test:send")
    assert (hold.state, hold.segments, hold.settled_segments) == (ReservationState.HELD, 7, 5)
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk, message_ids=[second.pk])["accepted"] == 1
    hold.refresh_from_db()
    assert (hold.state, hold.settled_segments, hold.settled_amount) == (ReservationState.SETTLED, 7, Decimal("3.5000"))
    second.refresh_from_db()
    assert second.state == MessageState.SUBMITTED
