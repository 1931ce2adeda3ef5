"""The Kannel adapter against a real Kannel: Debian's bearerbox + smsbox in front of the SMSC simulator.

One Kannel and one simulator per module (Kannel takes a moment to start); the platform is
pytest-django's live server, which smsbox calls back on the adapter's signed dlr-url (receipts)
and on the sms-service get-url (MO). Messages go the normal way: ``message_queue`` then
``messages_submit``, which sends through ``KannelAdapter`` to smsbox's sendsms interface.

What Kannel does with a long message: the adapter cuts it itself (153 septets / 67 UCS-2 units)
and sends each part as its own sendsms request with a concatenation UDH and its own dlr-url
(``part=n``). Kannel sends each part as one submit_sm (no second split: it keeps our UDH, sets
UDHI) and reports each part on its own dlr-url, so a message is delivered only when every part is.
Kannel reports an SMSC acknowledgement (DLR 8) first, then the handset receipt (1 or 2); a
submit_sm the SMSC refuses comes back as DLR 16 with the SMPP error ("NACK/0x0000000b/...").
An MO in two parts is joined by bearerbox (``sms-combine-concatenated-mo``, on by default) and
reaches the get-url once, recoded to UTF-8 (``mo-recode``).

Skipped, with the reason, when bearerbox/smsbox are not installed (``bash scripts/install_kannel.sh``;
``.ci/run`` runs it, so they run in CI).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest
from django.db import transaction

from gateways.adapters.kannel import KannelAdapter, callback_token, provider_id
from gateways.delivery.queue import message_queue, messages_submit
from gateways.models import (
    DeliveryReceipt,
    Gateway,
    GatewayRate,
    InboundMessage,
    MessageState,
    OutboundMessage,
    Provider,
)
from gateways.quotas import account_instance
from smsplatform.kernel.actor import Actor
from tests.support.kannel import (
    SENDSMS_PASSWORD,
    SENDSMS_USER,
    SMSC_ID,
    Callback,
    CallbackGate,
    Kannel,
    requires_kannel,
)
from tests.support.smsc import SmscThread
from tests.support.smsc_setup import smsc_config

pytestmark = [pytest.mark.kannel, requires_kannel, pytest.mark.usefixtures("known_gateways")]

T = TypeVar("T")

SYSTEM = Actor.system("test")
CODE = "kannel-real"
SENDER = "#SHOPHK"
PASSWORD_ENV, DLR_SECRET_ENV = "TEST_KANNEL_REAL_PASSWORD", "TEST_KANNEL_REAL_DLR_SECRET"
DLR_SECRET = "real-kannel-dlr-secret-0123456789"
CREDENTIALS_ENV = {"password": PASSWORD_ENV, "dlr_secret": DLR_SECRET_ENV}
HANDSET = "+85291234567"
SHORT_CODE = "12345"
GSM_BODY = "Hi {name}, 20% off [today only] at the shop: show this SMS ~ €5 back. Reply STOP to opt out"
CHINESE = "親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。"
CHINESE_200 = (CHINESE * 6)[:200]
TIMEOUT = 15.0


# --- module fixtures: one simulator, one Kannel, the live server gated ----------------------------


@pytest.fixture(scope="module")
def kannel_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PASSWORD_ENV, SENDSMS_PASSWORD)
        patch.setenv(DLR_SECRET_ENV, DLR_SECRET)
        yield


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmscThread]:
    """The SMSC simulator (default fault prefixes), receipts 50-150 ms after each submit."""
    config = smsc_config(tmp_path_factory.mktemp("smsc"), receipt_delay=(0.05, 0.15))
    with SmscThread(config) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def gate(live_server: Any) -> Iterator[CallbackGate]:
    gate = CallbackGate(live_server)
    yield gate
    gate.restore()


@pytest.fixture(scope="module")
def kannel(
    kannel_env: None, sim: SmscThread, gate: CallbackGate, live_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kannel]:
    """bearerbox + smsbox bound (transceiver) to the simulator, MO to the platform's signed get-url."""
    unsaved = Gateway(code=CODE, provider=Provider.KANNEL, credentials_env=CREDENTIALS_ENV)
    kannel = Kannel(
        workdir=tmp_path_factory.mktemp("kannel"),
        smsc_host=sim.host,
        smsc_port=sim.port,
        system_id=sim.system_id,
        smsc_password=sim.password,
        inbound_url=KannelAdapter(unsaved).inbound_url(base=f"{live_server.url}/hooks"),
    )
    try:
        yield kannel.start()
    finally:
        kannel.kill()  # SIGKILL to each box's process group


@pytest.fixture
def gateway(transactional_db: None, kannel: Kannel, gate: CallbackGate, live_server: Any) -> Iterator[Gateway]:
    """The Kannel gateway row (the database is flushed after each test); callbacks are let in
    for the test only."""
    gateway = Gateway.objects.create(
        code=CODE,
        name="Kannel (real)",
        provider=Provider.KANNEL,
        countries=["HK"],
        priority=1,
        encodings=["GSM-7", "UCS-2"],
        settings={
            "sendsms_url": kannel.sendsms_url,
            "username": SENDSMS_USER,
            "smsc": SMSC_ID,
            "dlr_url_base": f"{live_server.url}/hooks",
            "timeout_seconds": 5,
        },
        credentials_env=CREDENTIALS_ENV,
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    gate.open()
    yield gateway
    gate.shut()  # before the flush: late callbacks must not touch the database


# --- helpers --------------------------------------------------------------------------------------


class Waiter:
    def __init__(self, gate: CallbackGate, kannel: Kannel) -> None:
        self.gate, self.kannel = gate, kannel

    def until(self, predicate: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
        """Poll ``predicate`` (with the database lock held) until it is truthy; fail with Kannel's logs."""
        deadline = time.monotonic() + timeout
        while True:
            with self.gate.db():
                value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                calls = "\n".join(f"{c.status} {c.path}?{c.query[:160]}" for c in self.gate.calls)
                pytest.fail(f"timed out waiting for {what}\ncallbacks:\n{calls}\n{self.kannel.logs(30)}")
            time.sleep(0.05)


@pytest.fixture
def wait(gate: CallbackGate, kannel: Kannel) -> Waiter:
    return Waiter(gate, kannel)


def send(gate: CallbackGate, body: str, destination: str = HANDSET) -> OutboundMessage:
    """Queue one message and submit it through the delivery layer (-> KannelAdapter -> smsbox).

    Kannel's callbacks are held until the submit's answer is recorded: on PostgreSQL a receipt
    ingested while ``outcomes_record`` is still writing the parts (an SMSC reject comes back in
    milliseconds) is stored unapplied and never applied -- a race in gateways/delivery/, not
    in the adapter. A receipt that comes strictly before the answer is covered by
    test_kannel.py and test_delivery.py."""
    with gate.hold():
        with transaction.atomic():
            message = message_queue(
                actor=SYSTEM,
                gateway_code=CODE,
                sender_id=SENDER,
                destination=destination,
                body=body,
                purpose="transactional",
            )
        counts = messages_submit(actor=SYSTEM, gateway_id=message.gateway_id, message_ids=[message.pk])
        assert counts["accepted"] == 1, counts
        message.refresh_from_db()
    return message


def submits_for(sim: SmscThread, destination: str) -> list[dict[str, Any]]:
    return [r for r in sim.submitted() if r["destination"] == destination.lstrip("+")]


def at_least(count: int, items: list[T]) -> list[T] | None:
    return items if len(items) >= count else None


def state_of(message: OutboundMessage) -> OutboundMessage | None:
    """The message, when it has left 'submitted' (delivered or failed)."""
    fresh = OutboundMessage.objects.get(pk=message.pk)
    return fresh if fresh.state not in (MessageState.SUBMITTING, MessageState.SUBMITTED) else None


def receipts_for(message: OutboundMessage) -> list[DeliveryReceipt]:
    ids = [provider_id(message.pk, n) for n in range(1, message.segments + 1)]
    return list(DeliveryReceipt.objects.filter(provider_message_id__in=ids).order_by("pk"))


def query_of(call: Callback) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(call.query, keep_blank_values=True).items()}


# --- sending, receipts ----------------------------------------------------------------------------


def test_a_gsm7_message_reaches_the_smsc_and_its_receipt_makes_it_delivered(
    gateway: Gateway, kannel: Kannel, sim: SmscThread, gate: CallbackGate, wait: Waiter
) -> None:
    destination = "+85291230001"
    message = send(gate, GSM_BODY, destination)
    assert (message.state, message.encoding, message.segments) == (MessageState.SUBMITTED, "GSM-7", 1)

    [record] = wait.until(lambda: submits_for(sim, destination), "the submit_sm at the simulator")
    assert record["outcome"] == "accepted"
    assert record["text"] == GSM_BODY  # Kannel's UTF-8 -> GSM 03.38 conversion kept every character
    assert record["data_coding"] == 0 and record["concat_part"] is None
    assert (record["source"], record["source_ton"]) == (SENDER, 5)  # alphanumeric sender
    assert record["registered_delivery"] & 0x01  # a final receipt was asked for

    delivered = wait.until(lambda: state_of(message), "the message to be delivered")
    assert delivered.state == MessageState.DELIVERED and delivered.final_at is not None
    part = delivered.parts.get()
    assert (part.provider_message_id, part.state) == (f"kannel-{message.pk}", MessageState.DELIVERED)
    # Kannel's SMSC acknowledgement (DLR 8: not delivered) and the handset receipt (DLR 1), both
    # carrying the SMSC's message id (%F) and neither keeping the message text. smsbox makes its
    # callbacks concurrently: the acknowledgement may come second.
    receipts = wait.until(lambda: at_least(2, receipts_for(message)), "both delivery reports")
    assert sorted((r.status, r.provider_status) for r in receipts) == [
        (MessageState.DELIVERED, "1:DELIVRD"),
        (MessageState.SUBMITTED, "8:ACK"),
    ]
    assert {r.raw["smscid"] for r in receipts} == {record["message_id"]}
    assert all("text:" not in r.raw["answer"] for r in receipts)
    assert all(c.status == 200 for c in gate.calls if c.path == f"/hooks/{CODE}/receipts")


def test_a_200_character_chinese_message_goes_as_three_ucs2_parts_each_with_its_receipt(
    gateway: Gateway, kannel: Kannel, sim: SmscThread, gate: CallbackGate, wait: Waiter
) -> None:
    destination = "+85291230002"
    message = send(gate, CHINESE_200, destination)
    assert (message.encoding, message.segments) == ("UCS-2", 3)

    records = wait.until(lambda: at_least(3, submits_for(sim, destination)), "three submit_sm")
    assert len(records) == 3  # Kannel did not split our parts again
    records.sort(key=lambda r: r["concat_part"])
    assert [(r["concat_ref"], r["concat_part"], r["concat_total"]) for r in records] == [
        (message.pk % 256, n, 3) for n in (1, 2, 3)
    ]
    assert all(r["data_coding"] == 8 and r["esm_class"] & 0x40 for r in records)  # UCS-2, UDH indicator
    assert all(len(bytes.fromhex(r["short_message_hex"])) <= 140 for r in records)
    assert "".join(r["text"] for r in records) == CHINESE_200

    delivered = wait.until(lambda: state_of(message), "the message to be delivered")
    assert delivered.state == MessageState.DELIVERED
    parts = list(delivered.parts.order_by("part_number"))
    assert [(p.provider_message_id, p.state) for p in parts] == [
        (provider_id(message.pk, n), MessageState.DELIVERED) for n in (1, 2, 3)
    ]
    final = {r.provider_message_id: r.raw["smscid"] for r in receipts_for(message) if r.status == "delivered"}
    # Each part's receipt came on its own dlr-url, with the SMSC id of that part's submit_sm.
    assert final == {provider_id(message.pk, r["concat_part"]): r["message_id"] for r in records}


@pytest.mark.parametrize(
    ("destination", "fault", "provider_status", "error_code"),
    [
        ("+85259002101", "undeliverable", "2:UNDELIV", "001"),  # accepted, then an UNDELIV receipt
        ("+85259000101", "invalid_destination", "16:NACK", "0x0000000b"),  # submit_sm refused
    ],
    ids=["undeliverable", "invalid-destination"],
)
def test_a_simulator_fault_fails_the_message(
    gateway: Gateway,
    kannel: Kannel,
    sim: SmscThread,
    gate: CallbackGate,
    wait: Waiter,
    destination: str,
    fault: str,
    provider_status: str,
    error_code: str,
) -> None:
    message = send(gate, "Your order has shipped", destination)
    assert message.state == MessageState.SUBMITTED  # smsbox queued it: the SMSC answers later

    failed = wait.until(lambda: state_of(message), "the message to fail")
    assert (failed.state, failed.error_code) == (MessageState.FAILED, error_code)
    assert failed.parts.get().state == MessageState.FAILED
    assert provider_status in {r.provider_status for r in receipts_for(message)}
    [record] = submits_for(sim, destination)
    assert record["fault"] == fault


# --- inbound ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("Hi, are you open on Sunday?", 1),
        ((CHINESE * 2)[:100], 2),  # UCS-2 in two deliver_sm: bearerbox joins them
    ],
    ids=["gsm", "ucs2-two-parts"],
)
def test_an_mo_from_the_smsc_arrives_through_smsbox_as_an_inbound_message(
    gateway: Gateway, kannel: Kannel, sim: SmscThread, gate: CallbackGate, wait: Waiter, text: str, parts: int
) -> None:
    statuses = sim.inject_mo(HANDSET, SHORT_CODE, text)
    assert statuses == [0] * parts  # bearerbox acknowledged every deliver_sm

    inbound = wait.until(lambda: InboundMessage.objects.first(), "the MO to be stored")
    assert (inbound.gateway_id, inbound.source, inbound.destination, inbound.body) == (
        gateway.pk,
        HANDSET,
        SHORT_CODE,
        text,
    )
    assert inbound.provider_message_id  # Kannel's id (%I): a retried get-url is stored once
    assert inbound.handled_at is not None  # handed to the inbound handlers
    with gate.db():
        assert InboundMessage.objects.count() == 1
    [call] = [c for c in gate.calls if c.path == f"/hooks/{CODE}/inbound"]
    assert call.status == 200


# --- forged callbacks -------------------------------------------------------------------------------


def test_forged_callbacks_are_refused_and_change_nothing(
    gateway: Gateway, kannel: Kannel, sim: SmscThread, gate: CallbackGate, wait: Waiter
) -> None:
    # A message the SMSC accepts but never reports on: Kannel's acknowledgement (DLR 8) is all.
    destination = "+85259003101"
    message = send(gate, "Your code is 123456", destination)
    wait.until(lambda: [r for r in receipts_for(message) if r.provider_status == "8:ACK"], "the SMSC acknowledgement")
    receipts_url = f"{gateway.settings['dlr_url_base']}/{CODE}/receipts"
    inbound_url = f"{gateway.settings['dlr_url_base']}/{CODE}/inbound"

    # 1. Straight to the webhook: "delivered" with a wrong token, with no token, with the token of
    #    another part, and an MO carrying a delivery report's token.
    forged_tokens = ["0" * 64, "", callback_token(DLR_SECRET, provider_id(message.pk, 2))]
    for token in forged_tokens:
        response = httpx.get(receipts_url, params={"msg": message.pk, "status": 1, "answer": "ACK/", "token": token})
        assert response.status_code == 403, response.text
    dlr_token = callback_token(DLR_SECRET, provider_id(message.pk))
    response = httpx.get(inbound_url, params={"from": HANDSET, "to": SHORT_CODE, "text": "STOP", "token": dlr_token})
    assert response.status_code == 403

    # 2. Through Kannel itself: a sendsms whose dlr-url claims this message with a forged token.
    #    smsbox calls it back after the simulator's receipt, and it is refused.
    forged_dlr = f"{receipts_url}?msg={message.pk}&status=%d&answer=%A&smscid=%F&token={'f' * 64}"
    response = httpx.get(
        kannel.sendsms_url,
        params={
            "username": SENDSMS_USER,
            "password": SENDSMS_PASSWORD,
            "from": "ATTACKER",
            "to": "85291230009",
            "text": "forged",
            "dlr-mask": 31,
            "dlr-url": forged_dlr,
        },
    )
    assert response.status_code == 202, response.text
    refused = wait.until(
        lambda: [
            c
            for c in gate.calls
            if c.status == 403 and query_of(c).get("token") == "f" * 64 and query_of(c).get("status") == "1"
        ],
        "smsbox's forged delivery report to be refused",
    )
    assert query_of(refused[0])["msg"] == str(message.pk)

    with gate.db():
        fresh = OutboundMessage.objects.get(pk=message.pk)
        assert fresh.state == MessageState.SUBMITTED  # pending is never reported delivered
        assert fresh.parts.get().state == MessageState.SUBMITTED
        assert [r.provider_status for r in receipts_for(message)] == ["8:ACK"]
        assert not InboundMessage.objects.exists()


# --- the fixture itself -----------------------------------------------------------------------------


def test_kannel_is_killed_at_once_in_teardown(kannel_factory: Callable[..., Kannel], smsc: SmscThread) -> None:
    """The teardown's kill: SIGKILL to each box's process group (not SIGTERM, on which Kannel shuts
    down gracefully, which can take seconds), both reaped, their ports closed."""
    kannel = kannel_factory(host=smsc.host, port=smsc.port, system_id=smsc.system_id, password=smsc.password)
    processes = list(kannel.processes)
    assert len(processes) == 2 and all(p.poll() is None for p in processes)
    started = time.monotonic()
    kannel.kill()
    assert time.monotonic() - started < 2.0
    assert [p.returncode for p in processes] == [-signal.SIGKILL, -signal.SIGKILL]
    for process in processes:
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # nothing left in its process group
    assert not kannel.port_open(kannel.sendsms_port) and not kannel.port_open(kannel.admin_port)
    assert kannel.processes == []
