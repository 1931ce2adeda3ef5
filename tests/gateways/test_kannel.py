"""The Kannel HTTP adapter.

HTTP level (always run): the sendsms request shape and answer mapping through httpx.MockTransport,
dlr-url and sms-service callbacks through the real URL routes.
A real Kannel (marker ``kannel``): ``test_kannel_real.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit

import httpx
import pytest
from django.db import transaction
from django.test import Client

import gateways.adapters.kannel as kannel_adapter
from gateways.adapters.base import OutgoingSms, adapter_for
from gateways.adapters.kannel import KannelAdapter, callback_token, concatenation_udh, provider_id
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

pytestmark = pytest.mark.usefixtures("known_gateways")
SYSTEM = Actor.system("test")
CODE = "kannel-hk"
PASSWORD_ENV, PASSWORD = "TEST_KANNEL_PASSWORD", "sendsms-secret"
DLR_SECRET_ENV, DLR_SECRET = "TEST_KANNEL_DLR_SECRET", "dlr-secret-0123456789"
SENDSMS_URL = "http://kannel.test:13013/cgi-bin/sendsms"
DLR_BASE = "http://platform.example/hooks"
CHINESE = "親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。"
CHINESE_200 = (CHINESE * 6)[:200]


def make_gateway(code: str = CODE, **settings: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code=code,
        name="Kannel",
        provider=Provider.KANNEL,
        countries=["HK"],
        priority=1,
        encodings=["GSM-7", "UCS-2"],
        settings={
            "sendsms_url": SENDSMS_URL,
            "username": "platform",
            "dlr_url_base": DLR_BASE,
            **settings,
        },
        credentials_env={"password": PASSWORD_ENV, "dlr_secret": DLR_SECRET_ENV},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    return gateway


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(DLR_SECRET_ENV, DLR_SECRET)


@pytest.fixture
def gateway(db: Any, secrets: None) -> Gateway:
    return make_gateway(smsc="sim")


class FakeKannel:
    """An httpx transport that answers like smsbox, from a script, and records each request."""

    def __init__(self, *answers: tuple[int, str] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else (202, "0: Accepted for delivery")
        if isinstance(answer, Exception):
            raise answer
        status, text = answer
        return httpx.Response(status, text=text)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def params(self, index: int = 0) -> dict[str, str]:
        query = parse_qs(self.requests[index].url.query.decode(), keep_blank_values=True, strict_parsing=True)
        return {key: values[0] for key, values in query.items()}

    def udh(self, index: int) -> bytes | None:
        for pair in self.requests[index].url.query.decode().split("&"):
            key, _, value = pair.partition("=")
            if key == "udh":
                return unquote_to_bytes(value)
        return None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKannel]:
    """Route every adapter built by the delivery layer through a FakeKannel."""
    fake = FakeKannel()
    monkeypatch.setattr(kannel_adapter, "http_client_factory", lambda gateway: fake.client())
    yield fake


def sms(message_id: int = 41, body: str = "Hello from the shop", encoding: str = "GSM-7", **kwargs: Any) -> OutgoingSms:
    return OutgoingSms(message_id, "#SHOPHK", "+85291234567", body, encoding, 1, **kwargs)


def queue(body: str = "Hello from the shop", destination: str = "+85291234567", code: str = CODE) -> OutboundMessage:
    with transaction.atomic():
        return message_queue(
            actor=SYSTEM,
            gateway_code=code,
            sender_id="#SHOPHK",
            destination=destination,
            body=body,
            purpose="transactional",
        )


# --- sending: the request ----------------------------------------------------------------------


@pytest.mark.django_db
def test_sendsms_request_shape(gateway: Gateway) -> None:
    fake = FakeKannel((202, "0: Accepted for delivery"))
    [outcome] = KannelAdapter(gateway, client=fake.client()).send([sms()])
    assert (outcome.kind, outcome.provider_ids) == ("accepted", ("kannel-41",))
    request = fake.requests[0]
    assert request.method == "GET"
    assert f"{request.url.scheme}://{request.url.host}:{request.url.port}{request.url.path}" == SENDSMS_URL
    params = fake.params()
    dlr_url = params.pop("dlr-url")
    assert params == {
        "username": "platform",
        "password": PASSWORD,
        "from": "#SHOPHK",
        "to": "+85291234567",
        "text": "Hello from the shop",
        "coding": "0",
        "charset": "UTF-8",
        "smsc": "sim",
        "dlr-mask": "31",
    }
    token = callback_token(DLR_SECRET, "kannel-41")
    assert dlr_url == (f"{DLR_BASE}/{CODE}/receipts?msg=41&status=%d&answer=%A&ts=%T&smscid=%F&token={token}")
    assert fake.udh(0) is None  # one part: no concatenation header


@pytest.mark.django_db
def test_ucs2_is_coding_2_and_long_messages_are_split_into_parts_with_their_own_dlr_url(gateway: Gateway) -> None:
    fake = FakeKannel()
    [outcome] = KannelAdapter(gateway, client=fake.client()).send([sms(300, CHINESE_200, "UCS-2")])
    assert outcome.kind == "accepted"
    assert outcome.provider_ids == ("kannel-300", "kannel-300-2", "kannel-300-3")
    assert len(fake.requests) == 3
    texts = []
    for index in range(3):
        params = fake.params(index)
        assert (params["coding"], params["charset"]) == ("2", "UTF-8")
        assert fake.udh(index) == concatenation_udh(300, 3, index + 1) == bytes([5, 0, 3, 300 % 256, 3, index + 1])
        assert len(params["text"]) <= 67
        texts.append(params["text"])
        dlr = urlsplit(params["dlr-url"])
        dlr_params = parse_qs(dlr.query)
        assert dlr_params["msg"] == ["300"]
        assert dlr_params.get("part", ["1"]) == [str(index + 1)]
        assert dlr_params["token"] == [callback_token(DLR_SECRET, provider_id(300, index + 1))]
    assert "".join(texts) == CHINESE_200


@pytest.mark.django_db
def test_no_receipt_wanted_still_hears_of_smsc_rejects(gateway: Gateway) -> None:
    fake = FakeKannel()
    KannelAdapter(gateway, client=fake.client()).send([sms(request_receipt=False)])
    assert fake.params()["dlr-mask"] == "16"


# --- sending: Kannel's answers -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        ((202, "0: Accepted for delivery"), "accepted", ""),
        ((202, "3: Queued for later delivery"), "accepted", ""),
        ((202, "Sent."), "accepted", ""),  # immediate-sendsms-reply = true
        ((403, "Not routable. Do not try again."), "permanent", "not_routable"),
        ((400, "Invalid or missing receiver, rejected"), "permanent", "kannel_rejected"),
        ((400, "Charset or body misformed, rejected"), "permanent", "kannel_rejected"),
        ((403, "Authorization failed for sendsms"), "temporary", "gateway_unavailable"),
        ((404, "Unknown request."), "temporary", "gateway_unavailable"),
        ((503, "Temporal failure, try again later."), "temporary", "gateway_unavailable"),
        ((500, "Sending failed."), "temporary", "gateway_unavailable"),
        ((429, "Too many requests"), "temporary", "throttled"),
        ((504, "Gateway Timeout"), "unknown", "submit_unknown"),
        ((200, "<html>captive portal</html>"), "unknown", "submit_unknown"),
        (httpx.ConnectError("Connection refused"), "temporary", "gateway_unavailable"),
        (httpx.ConnectTimeout("timed out"), "temporary", "gateway_unavailable"),
        (httpx.ReadTimeout("timed out"), "unknown", "submit_unknown"),
        (httpx.RemoteProtocolError("Server disconnected"), "unknown", "submit_unknown"),
    ],
)
def test_answer_mapping(gateway: Gateway, answer: Any, kind: str, code: str) -> None:
    [outcome] = KannelAdapter(gateway, client=FakeKannel(answer).client()).send([sms()])
    assert (outcome.kind, outcome.code) == (kind, code)
    if kind != "accepted":
        assert outcome.provider_ids == ()


@pytest.mark.django_db
def test_after_a_temporary_refusal_the_rest_of_the_batch_is_not_attempted(gateway: Gateway) -> None:
    fake = FakeKannel((202, "0: Accepted for delivery"), (503, "Temporal failure, try again later."))
    outcomes = KannelAdapter(gateway, client=fake.client()).send([sms(1), sms(2), sms(3)])
    assert [o.kind for o in outcomes] == ["accepted", "temporary", "temporary"]
    assert outcomes[2].code == "gateway_unavailable" and "not attempted" in outcomes[2].reason
    assert len(fake.requests) == 2


@pytest.mark.django_db
def test_a_permanent_refusal_does_not_stop_the_batch(gateway: Gateway) -> None:
    fake = FakeKannel((403, "Not routable. Do not try again."))
    outcomes = KannelAdapter(gateway, client=fake.client()).send([sms(1), sms(2)])
    assert [o.kind for o in outcomes] == ["permanent", "accepted"]


@pytest.mark.django_db
def test_a_part_refused_after_earlier_parts_were_accepted_is_unknown_never_resent(gateway: Gateway) -> None:
    fake = FakeKannel((202, "0: Accepted for delivery"), (503, "Temporal failure, try again later."))
    [outcome] = KannelAdapter(gateway, client=fake.client()).send([sms(7, CHINESE_200, "UCS-2")])
    assert (outcome.kind, outcome.code) == ("unknown", "partial_submit")
    assert "Parts 1-1 of 3" in outcome.reason
    assert len(fake.requests) == 2


@pytest.mark.django_db
def test_missing_configuration_is_temporary_and_sends_nothing(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    gateway = make_gateway()
    fake = FakeKannel()
    [outcome] = KannelAdapter(gateway, client=fake.client()).send([sms()])
    assert (outcome.kind, outcome.code) == ("temporary", "gateway_unavailable")
    assert "password" in outcome.reason and fake.requests == []


@pytest.mark.django_db
def test_the_password_never_reaches_the_logs(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    KannelAdapter(gateway, client=FakeKannel(httpx.ReadTimeout("timed out")).client()).send([sms()])
    KannelAdapter(gateway, client=FakeKannel((403, "Authorization failed for sendsms")).client()).send([sms()])
    assert caplog.records and PASSWORD not in caplog.text


# --- through the delivery layer -------------------------------------------------------------------


@pytest.mark.django_db
def test_submit_through_the_delivery_layer_records_one_part_per_segment(gateway: Gateway, fake: FakeKannel) -> None:
    message = queue(CHINESE_200)
    assert message.segments == 3
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk)["accepted"] == 1
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED
    assert list(message.parts.order_by("part_number").values_list("provider_message_id", flat=True)) == [
        f"kannel-{message.pk}",
        f"kannel-{message.pk}-2",
        f"kannel-{message.pk}-3",
    ]
    assert isinstance(adapter_for(gateway), KannelAdapter)


@pytest.mark.django_db
def test_kannel_down_fails_over_to_the_fallback(gateway: Gateway, fake: FakeKannel) -> None:
    backup = Gateway.objects.create(code="backup", name="b", provider=Provider.SIMULATOR, countries=["HK"], priority=9)
    gateway.fallback = backup
    gateway.save()
    fake.answers.append(httpx.ConnectError("Connection refused"))
    message = queue()
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk)["failed_over"] == 1
    message.refresh_from_db()
    assert (message.gateway, message.state) == (backup, MessageState.QUEUED)


@pytest.mark.django_db
def test_not_routable_fails_the_message(gateway: Gateway, fake: FakeKannel) -> None:
    fake.answers.append((403, "Not routable. Do not try again."))
    message = queue()
    assert messages_submit(actor=SYSTEM, gateway_id=gateway.pk)["permanent"] == 1
    message.refresh_from_db()
    assert (message.state, message.error_code) == (MessageState.FAILED, "not_routable")


# --- dlr-url callbacks ------------------------------------------------------------------------------


def submitted(gateway: Gateway, body: str = "Hello from the shop") -> OutboundMessage:
    """A message as recorded after Kannel accepted it: parts with our provider ids."""
    message = queue(body)
    parts = message.segments
    OutboundMessage.objects.filter(pk=message.pk).update(state=MessageState.SUBMITTED)
    MessagePart.objects.bulk_create(
        MessagePart(message=message, part_number=n, provider_message_id=provider_id(message.pk, n), gateway=gateway)
        for n in range(1, parts + 1)
    )
    return message


def dlr(
    message_id: int | str,
    status: int | str,
    *,
    part: int | None = None,
    answer: str = "",
    token: str | None = None,
    smscid: str = "5f2a",
    code: str = CODE,
) -> httpx.QueryParams:
    pid = provider_id(int(message_id), part or 1) if str(message_id).isdigit() else ""
    params: dict[str, Any] = {"msg": message_id, "status": status, "answer": answer, "ts": int(time.time())}
    params["smscid"] = smscid
    if part is not None:
        params["part"] = part
    params["token"] = callback_token(DLR_SECRET, pid) if token is None else token
    return httpx.QueryParams(params)


def call(client: Client, kind: str, params: httpx.QueryParams, code: str = CODE) -> Any:
    return client.get(f"/hooks/{code}/{kind}?{params}")


DELIVRD = "id:5f2a sub:001 dlvrd:001 submit date:2611280100 done date:2611280100 stat:DELIVRD err:000 text:Hello from"
UNDELIV = "id:5f2a sub:001 dlvrd:000 submit date:2611280100 done date:2611280100 stat:UNDELIV err:001 text:Hello from"


@pytest.mark.django_db
def test_a_signed_delivery_report_is_applied(gateway: Gateway, client: Client) -> None:
    message = submitted(gateway)
    response = call(client, "receipts", dlr(message.pk, 8, answer="ACK/"))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED  # accepted by the SMSC is not delivered
    response = call(client, "receipts", dlr(message.pk, 1, answer=DELIVRD))
    assert response.status_code == 200 and response.json()["applied"] == 1
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    receipt = DeliveryReceipt.objects.filter(status=MessageState.DELIVERED).get()
    assert (receipt.provider_message_id, receipt.provider_status) == (f"kannel-{message.pk}", "1:DELIVRD")
    assert receipt.raw["smscid"] == "5f2a" and "text:" not in receipt.raw["answer"]  # no message text kept


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "answer", "error_code"),
    [
        (2, UNDELIV, "001"),
        (16, "NACK/0x0000000b/Invalid Destination Address", "0x0000000b"),
        (16, "", "smsc_reject"),
    ],
)
def test_undelivered_and_smsc_rejects_fail_the_message(
    gateway: Gateway, client: Client, status: int, answer: str, error_code: str
) -> None:
    message = submitted(gateway)
    assert call(client, "receipts", dlr(message.pk, status, answer=answer)).status_code == 200
    message.refresh_from_db()
    assert (message.state, message.error_code) == (MessageState.FAILED, error_code)


@pytest.mark.django_db
def test_a_multipart_message_is_delivered_only_when_every_part_is(gateway: Gateway, client: Client) -> None:
    message = submitted(gateway, CHINESE_200)
    assert message.segments == 3
    call(client, "receipts", dlr(message.pk, 1, answer=DELIVRD, smscid="a1"))
    call(client, "receipts", dlr(message.pk, 1, part=3, answer=DELIVRD, smscid="a3"))
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED
    assert call(client, "receipts", dlr(message.pk, 1, part=2, answer=DELIVRD, smscid="a2")).status_code == 200
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert set(message.parts.values_list("state", flat=True)) == {MessageState.DELIVERED}


@pytest.mark.django_db
def test_a_token_for_one_part_is_not_valid_for_another(gateway: Gateway, client: Client) -> None:
    message = submitted(gateway, CHINESE_200)
    part_one_token = callback_token(DLR_SECRET, provider_id(message.pk, 1))
    response = call(client, "receipts", dlr(message.pk, 1, part=2, token=part_one_token))
    assert response.status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["0" * 64, "", "forged"])
def test_a_forged_delivery_report_is_refused_and_nothing_is_stored(
    gateway: Gateway, client: Client, token: str
) -> None:
    message = submitted(gateway)
    response = call(client, "receipts", dlr(message.pk, 1, answer=DELIVRD, token=token))
    assert response.status_code == 403 and response.json()["error"]["code"] == "signature_invalid"
    assert not DeliveryReceipt.objects.exists()
    message.refresh_from_db()
    assert message.state == MessageState.SUBMITTED


@pytest.mark.django_db
def test_a_token_made_with_another_secret_is_refused(gateway: Gateway, client: Client) -> None:
    message = submitted(gateway)
    forged = callback_token("not-the-secret", provider_id(message.pk))
    assert call(client, "receipts", dlr(message.pk, 1, token=forged)).status_code == 403
    assert not DeliveryReceipt.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "status=1&token=abc",  # no msg
        "msg=abc&status=1&token=abc",  # msg not a number
        "msg=0&status=1&token=abc",
        "msg={pk}&token={token}",  # no status
        "msg={pk}&status=delivered&token={token}",  # status not a number
        "msg={pk}&status=-1&token={token}",
        "msg={pk}&status=0&token={token}",
        "msg={pk}&part=x&status=1&token={token}",
        "msg={pk}&part=0&status=1&token={token}",
    ],
)
def test_a_malformed_delivery_report_is_refused(gateway: Gateway, client: Client, query: str) -> None:
    message = submitted(gateway)
    token = callback_token(DLR_SECRET, provider_id(message.pk))
    response = client.get(f"/hooks/{CODE}/receipts?" + query.format(pk=message.pk, token=token))
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_callback"
    assert not DeliveryReceipt.objects.exists()


@pytest.mark.django_db
def test_duplicate_and_late_reports_are_idempotent(gateway: Gateway, client: Client) -> None:
    message = submitted(gateway)
    for status in (1, 1, 8, 2):  # delivered twice, then a late SMSC ack and a contradicting failure
        assert call(client, "receipts", dlr(message.pk, status)).status_code == 200
    message.refresh_from_db()
    assert message.state == MessageState.DELIVERED
    assert message.parts.get().state == MessageState.DELIVERED
    assert DeliveryReceipt.objects.count() == 4  # every report is kept


@pytest.mark.django_db
def test_a_report_before_the_submit_answer_is_kept_and_applied_later(gateway: Gateway, client: Client) -> None:
    message = queue()
    assert call(client, "receipts", dlr(message.pk, 1, answer=DELIVRD)).json() == {"received": 1, "applied": 0}
    assert DeliveryReceipt.objects.get().applied_at is None


# --- sms-service (inbound) callbacks -----------------------------------------------------------------


def inbound_token(code: str = CODE) -> str:
    return callback_token(DLR_SECRET, f"kannel-inbound:{code}")


@pytest.mark.django_db
def test_inbound_sms_is_stored_and_nothing_is_sent_back(gateway: Gateway, client: Client) -> None:
    query = f"from=85291234567&to=12345&text=STOP+please&charset=UTF-8&coding=0&ts=1700000000&id=uuid-1&token={inbound_token()}"
    response = client.get(f"/hooks/{CODE}/inbound?{query}")
    assert response.status_code == 200
    assert response.content == b""  # smsbox would send an answer body to the handset as an SMS
    message = InboundMessage.objects.get()
    assert (message.source, message.destination, message.body, message.provider_message_id) == (
        "+85291234567",
        "12345",
        "STOP please",
        "uuid-1",
    )
    client.get(f"/hooks/{CODE}/inbound?{query}")  # Kannel retried: stored once
    assert InboundMessage.objects.count() == 1


@pytest.mark.django_db
def test_inbound_chinese_in_utf8_and_as_raw_ucs2(gateway: Gateway, client: Client) -> None:
    text = "退訂 取消"
    utf8 = quote(text.encode("utf-8"))
    ucs2 = quote(text.encode("utf-16-be"))
    base = f"/hooks/{CODE}/inbound?from=%2B85291234567&to=12345&token={inbound_token()}"
    assert client.get(f"{base}&text={utf8}&charset=UTF-8&coding=2&id=a").status_code == 200
    assert client.get(f"{base}&text={ucs2}&charset=UTF-16BE&coding=2&id=b").status_code == 200
    assert list(InboundMessage.objects.order_by("provider_message_id").values_list("body", flat=True)) == [text, text]
    assert set(InboundMessage.objects.values_list("source", flat=True)) == {"+85291234567"}


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["", "0" * 64, callback_token(DLR_SECRET, "kannel-inbound:other")])
def test_forged_inbound_is_refused(gateway: Gateway, client: Client, token: str) -> None:
    response = client.get(f"/hooks/{CODE}/inbound?from=85291234567&to=12345&text=STOP&token={token}")
    assert response.status_code == 403
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db
def test_a_delivery_report_token_is_not_an_inbound_token(gateway: Gateway, client: Client) -> None:
    # Domain separation: the inbound token signs "kannel-inbound:<code>", a dlr token a provider id.
    token = callback_token(DLR_SECRET, provider_id(1))
    assert client.get(f"/hooks/{CODE}/inbound?from=1&to=2&text=x&token={token}").status_code == 403


@pytest.mark.django_db
def test_inbound_without_numbers_is_malformed(gateway: Gateway, client: Client) -> None:
    response = client.get(f"/hooks/{CODE}/inbound?to=12345&text=STOP&token={inbound_token()}")
    assert response.status_code == 400
    assert not InboundMessage.objects.exists()


@pytest.mark.django_db
def test_inbound_url_for_kannel_conf(gateway: Gateway) -> None:
    url = KannelAdapter(gateway).inbound_url()
    assert url.startswith(f"{DLR_BASE}/{CODE}/inbound?from=%p&to=%P&text=%b&charset=%C&coding=%c&ts=%T&id=%I&token=")
    assert url.endswith(inbound_token())
