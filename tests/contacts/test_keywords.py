"""The inbound keyword handler: STOP in English and Chinese (width, case and space variants),
START and HELP, configurable lists, every reply audited."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.models import OptOut
from compliance.optouts import phone_is_suppressed
from compliance.roles import Role
from contacts.keywords import keyword_classify, keyword_normalise
from contacts.models import ConsentEvidence
from contacts.selectors import contact_get
from gateways.adapters.base import InboundEvent
from gateways.delivery.inbound import inbound_receive
from gateways.models import Gateway
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.models import AuditLog
from tests.support.contacts import api_actor, create_contact

pytestmark = pytest.mark.usefixtures("known_gateways")
_ids = itertools.count(1)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("STOP", "en"),
        ("stop", "en"),
        ("Stop", "en"),
        ("  sToP  ", "en"),
        ("STOP!", "en"),
        ("ＳＴＯＰ", "en"),  # full-width letters
        ("ｓｔｏｐ", "en"),
        ("S T O P", "en"),
        ("\u3000Stop\u3000", "en"),  # ideographic spaces
        ("unsubscribe", "en"),
        ("ＵＮＳＵＢＳＣＲＩＢＥ", "en"),
        ("End", "en"),
        ("quit.", "en"),
        ("Cancel", "en"),
        ("opt out", "en"),
        ("OptOut", "en"),
        ("取消", "zh-hant"),
        ("退訂", "zh-hant"),
        (" 退 訂 ", "zh-hant"),
        ("停止", "zh-hant"),
        ("停止。", "zh-hant"),
        ("TD", "zh-hant"),
        ("td", "zh-hant"),
        ("ＴＤ", "zh-hant"),
        ("ｔｄ", "zh-hant"),
    ],
)
def test_stop_keywords_in_both_languages(text: str, language: str, db: Any) -> None:
    match = keyword_classify(text)
    assert match is not None and match.kind == "stop" and match.language == language, text


@pytest.mark.parametrize("text", ["don't stop", "stopping", "", "   ", "取消訂單", "please call me", "STOP IT"])
def test_other_messages_are_not_keywords(text: str, db: Any) -> None:
    assert keyword_classify(text) is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("START", "start"),
        ("ｓｔａｒｔ", "start"),
        ("unstop", "start"),
        ("開始", "start"),
        ("help", "help"),
        ("ＨＥＬＰ", "help"),
        ("幫助", "help"),
        ("info", "help"),
    ],
)
def test_start_and_help(text: str, kind: str, db: Any) -> None:
    match = keyword_classify(text)
    assert match is not None and match.kind == kind


def test_normalise() -> None:
    assert keyword_normalise("  Ｓｔｏｐ！ ") == "stop"
    assert keyword_normalise("退\u3000訂") == "退訂"


def test_lists_are_configurable_but_stop_start_help_always_work(technical: Any) -> None:
    token = platform_config_get()["base_version_token"]
    unsubscribe = {
        **platform_config_get()["config"]["unsubscribe"],
        "keywords": {"en": ["UNSUB"], "zh-hant": ["退出"]},
        "start_keywords": ["YES"],
        "help_keywords": ["?"],
    }
    platform_config_update(
        actor=api_actor(technical),
        changes={"unsubscribe": unsubscribe},
        base_version_token=token,
        idempotency_key="kw-config-0001",
    )
    assert keyword_classify("ｕｎｓｕｂ").kind == "stop"  # type: ignore[union-attr]
    assert keyword_classify("退出").language == "zh-hant"  # type: ignore[union-attr]
    assert keyword_classify("取消") is None  # removed from the list
    assert keyword_classify("stop").kind == "stop"  # type: ignore[union-attr]
    assert keyword_classify("yes").kind == "start"  # type: ignore[union-attr]
    assert keyword_classify("start").kind == "start"  # type: ignore[union-attr]
    assert keyword_classify("HELP").kind == "help"  # type: ignore[union-attr]


# --- through the inbound path ---------------------------------------------------------------------


def _inbound(body: str, source: str = "+85291234567") -> Any:
    gateway = Gateway.objects.get(code="simulator")
    event = InboundEvent(source=source, destination="#SHOPHK", body=body, provider_message_id=f"mo-{next(_ids)}")
    [message] = inbound_receive(gateway=gateway, events=[event])
    return message


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "language"), [("ＳＴＯＰ", "en"), ("退 訂", "zh-hant"), ("ｔｄ", "zh-hant")])
def test_a_stop_reply_suppresses_at_once_and_the_reply_is_audited(body: str, language: str) -> None:
    message = _inbound(body)
    assert phone_is_suppressed("+85291234567")
    opt_out = OptOut.objects.get()
    assert (opt_out.reason, opt_out.message_text, opt_out.language) == ("stop", body, language)
    assert opt_out.source == f"sms:{message.gateway_id}" and opt_out.actor_channel == "system"
    result = message.handler_result["inbound_keyword_handler"]
    assert result["kind"] == "stop" and result["reply"]
    audit: Any = AuditLog.objects.get(action="keyword.stop")
    assert audit.after["reply"] == result["reply"] and audit.after["body"] == body
    assert audit.after["phone"] == "+852****4567"
    if language == "zh-hant":
        assert "取消訂閱" in result["reply"]


@pytest.mark.django_db
def test_start_is_explicit_consent_and_lifts_the_stop(make_user: Any) -> None:
    crm = make_user(Role.CRM)
    cid = create_contact(crm)
    _inbound("stop")
    assert contact_get(actor=api_actor(crm), contact_id=cid)["sendable"] is False
    message = _inbound("Start")
    got = contact_get(actor=api_actor(crm), contact_id=cid)
    assert got["sendable"] is True and got["opted_out"] is False
    start_consent = ConsentEvidence.objects.get(source="sms_start")
    assert start_consent.proof_reference == f"inbound_message:{message.pk}"
    assert OptOut.objects.get().lifted_by_consent == start_consent
    assert AuditLog.objects.filter(action="keyword.start").count() == 1
    assert AuditLog.objects.filter(action="opt_out.lift").count() == 1


@pytest.mark.django_db
def test_start_from_a_number_never_opted_out_records_nothing() -> None:
    message = _inbound("START", source="+85261234567")
    assert message.handler_result["inbound_keyword_handler"]["resubscribe"] == {"lifted": 0, "consent_id": None}
    assert not ConsentEvidence.objects.exists()
    assert AuditLog.objects.filter(action="keyword.start").count() == 1


@pytest.mark.django_db
def test_start_does_not_lift_a_block() -> None:
    from contacts.optouts import opt_out_record
    from smsplatform.kernel.actor import Actor

    opt_out_record(actor=Actor.system("t"), phone="+85291234567", reason="blocked", source="ops")
    _inbound("START")
    assert phone_is_suppressed("+85291234567")


@pytest.mark.django_db
def test_help_is_answered_and_audited_without_an_opt_out() -> None:
    message = _inbound("幫助")
    assert message.handler_result["inbound_keyword_handler"]["kind"] == "help"
    assert not OptOut.objects.exists()
    help_audit: Any = AuditLog.objects.get(action="keyword.help")
    assert help_audit.after["reply"]


@pytest.mark.django_db
def test_ordinary_replies_are_left_alone() -> None:
    message = _inbound("Thanks, see you on Saturday")
    assert message.handler_result == {}
    assert not OptOut.objects.exists() and not AuditLog.objects.filter(action__startswith="keyword.").exists()


# --- the answer is sent back as an SMS -------------------------------------------------------------


@pytest.fixture
def hk_coverage() -> Gateway:
    """The simulator (the gateway the tests' replies come in on) delivers to Hong Kong, with money."""
    from decimal import Decimal

    from gateways.models import GatewayRate
    from gateways.quotas import account_instance

    gateway = Gateway.objects.get(code="simulator")
    gateway.countries, gateway.encodings = ["HK"], ["GSM-7", "UCS-2"]
    gateway.save()
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    return gateway


def _replies_sent(phone: str = "+85291234567") -> list[Any]:
    from gateways.models import OutboundMessage

    return list(OutboundMessage.objects.filter(destination=phone).order_by("id"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ("ＳＴＯＰ", "stop", "You are unsubscribed"),
        ("退 訂", "stop", "取消訂閱"),
        ("幫助", "help", "推廣短訊"),
        ("Start", "start", "subscribed again"),
    ],
)
def test_the_answer_is_queued_as_a_transactional_sms_to_the_sender(
    body: str, kind: str, words: str, hk_coverage: Gateway, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        message = _inbound(body)
    [sms] = _replies_sent()
    assert words in sms.body
    assert (sms.purpose, sms.sender_id, sms.gateway_id) == ("transactional", "#SHOPHK", hk_coverage.pk)
    assert sms.reference == f"keyword:{message.pk}" and sms.quota_reference == f"message:{sms.pk}"
    result = message.handler_result["inbound_keyword_handler"]
    assert result["kind"] == kind and result["reply"] == sms.body
    assert result["reply_sms"] == {"queued": True, "message_id": sms.pk, "gateway": "simulator", "sender_id": "#SHOPHK"}
    audit: Any = AuditLog.objects.get(action=f"keyword.{kind}")
    assert audit.after["reply_sms"]["message_id"] == sms.pk
    assert len(callbacks) == 1  # submitted to the gateway after commit, not before


@pytest.mark.django_db
def test_the_stop_answer_reaches_the_gateway_after_commit(
    hk_coverage: Gateway, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        _inbound("STOP")
    [sms] = _replies_sent()
    sms.refresh_from_db()
    assert sms.state != "queued"  # handed to the (simulated) gateway
    assert phone_is_suppressed("+85291234567")  # the answer goes to an opted-out number: it is not marketing


@pytest.mark.django_db
def test_the_wording_comes_from_the_configuration(hk_coverage: Gateway, technical: Any) -> None:
    config = platform_config_get()
    unsubscribe = config["config"]["unsubscribe"]
    replies = {**unsubscribe["replies"], "help": {"en": "Shop HK: STOP to quit.", "zh-hant": "商店：回覆取消退訂。"}}
    platform_config_update(
        actor=api_actor(technical),
        changes={"unsubscribe": {**unsubscribe, "replies": replies}},
        base_version_token=config["base_version_token"],
        idempotency_key="kw-replies-0001",
    )
    _inbound("help")
    _inbound("幫助", source="+85261234567")
    assert [m.body for m in _replies_sent()] == ["Shop HK: STOP to quit."]
    assert [m.body for m in _replies_sent("+85261234567")] == ["商店：回覆取消退訂。"]


@pytest.mark.django_db
def test_replies_need_both_languages(technical: Any) -> None:
    from smsplatform.kernel.errors import ApplicationError

    config = platform_config_get()
    unsubscribe = config["config"]["unsubscribe"]
    with pytest.raises(ApplicationError) as err:
        platform_config_update(
            actor=api_actor(technical),
            changes={"unsubscribe": {**unsubscribe, "replies": {**unsubscribe["replies"], "stop": {"en": "Bye"}}}},
            base_version_token=config["base_version_token"],
            idempotency_key="kw-replies-0002",
        )
    assert err.value.field is not None and "unsubscribe" in err.value.field


@pytest.mark.django_db
def test_no_answer_where_no_gateway_covers_the_number_and_the_reason_is_recorded(hk_coverage: Gateway) -> None:
    message = _inbound("STOP", source="+6591234567")  # Singapore: nobody delivers there
    assert phone_is_suppressed("+6591234567")  # the opt-out stands
    assert _replies_sent("+6591234567") == []
    sms = message.handler_result["inbound_keyword_handler"]["reply_sms"]
    assert sms["queued"] is False and sms["reason"] == "country_not_covered" and "SG" in sms["detail"]
    audit: Any = AuditLog.objects.get(action="keyword.stop")
    assert audit.after["reply_sms"]["reason"] == "country_not_covered"


@pytest.mark.django_db
def test_no_answer_without_any_gateway_rate_at_all() -> None:
    message = _inbound("HELP")
    assert message.handler_result["inbound_keyword_handler"]["reply_sms"]["reason"] == "country_not_covered"
    assert _replies_sent() == []


@pytest.mark.django_db
def test_no_answer_over_the_transactional_cap(hk_coverage: Gateway) -> None:
    from gateways.models import MessagePurpose, OutboundMessage

    for _ in range(10):  # transactional_per_day defaults to 10
        OutboundMessage.objects.create(
            gateway=hk_coverage,
            sender_id="#SHOPHK",
            destination="+85291234567",
            country="HK",
            body="Your order shipped",
            encoding="GSM-7",
            segments=1,
            purpose=MessagePurpose.TRANSACTIONAL,
            quota_reference="q",
        )
    message = _inbound("HELP")
    assert message.handler_result["inbound_keyword_handler"]["reply_sms"]["reason"] == "frequency_capped"
    assert len(_replies_sent()) == 10


@pytest.mark.django_db
def test_no_answer_when_replies_are_off_or_no_sender_id_is_usable(hk_coverage: Gateway, technical: Any) -> None:
    from gateways.models import SenderId

    SenderId.objects.filter(value="#SHOPHK").delete()
    first = _inbound("HELP")
    assert first.handler_result["inbound_keyword_handler"]["reply_sms"]["reason"] == "sender_id_not_usable"
    config = platform_config_get()
    unsubscribe = config["config"]["unsubscribe"]
    platform_config_update(
        actor=api_actor(technical),
        changes={"unsubscribe": {**unsubscribe, "replies": {**unsubscribe["replies"], "enabled": False}}},
        base_version_token=config["base_version_token"],
        idempotency_key="kw-replies-0003",
    )
    second = _inbound("HELP")
    assert second.handler_result["inbound_keyword_handler"]["reply_sms"]["reason"] == "replies_disabled"
    assert _replies_sent() == []


# --- Simplified and Traditional forms, and their variants (issue 14, item 4) -----------------------

STOP_FORMS = [
    "退訂",
    "退订",
    "取消訂閱",
    "取消订阅",
    "取消",
    "停止",
    "TD",
    "UNSUBSCRIBE",
    "STOP ALL",
    "STOP",
    "stopall",
]
START_FORMS = ["START", "開始", "开始", "訂閱", "订阅", "重新订阅", "UNSTOP"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("退订", "zh-hans"),
        ("取消订阅", "zh-hans"),
        ("取消訂閱", "zh-hant"),
        ("【退订】", "zh-hans"),
        ("退订。", "zh-hans"),
        ("「取消訂閱」", "zh-hant"),
        ("ＴＤ！", "zh-hant"),
        ("Stop All", "en"),
        ("ＳＴＯＰ　ＡＬＬ", "en"),
        ("Unsubscribe.", "en"),
    ],
)
def test_simplified_and_traditional_stop(text: str, language: str, db: Any) -> None:
    match = keyword_classify(text)
    assert match is not None and match.kind == "stop" and match.language == language, text


def test_simplified_and_traditional_stop_work_even_when_removed_from_the_lists(technical: Any) -> None:
    token = platform_config_get()["base_version_token"]
    unsubscribe = {**platform_config_get()["config"]["unsubscribe"], "keywords": {"en": ["UNSUB"]}}
    platform_config_update(
        actor=api_actor(technical),
        changes={"unsubscribe": unsubscribe},
        base_version_token=token,
        idempotency_key="kw-config-hans-1",
    )
    for text in ("退订", "退訂", "取消订阅", "取消訂閱", "STOP ALL", "unsubscribe"):
        assert keyword_classify(text).kind == "stop", text  # type: ignore[union-attr]
    assert keyword_classify("取消") is None  # configurable words stay removable


_DECOR = st.sampled_from(["", " ", "\u3000", "\t", "!", "！", "。", ".", "【", "】", "「", "」", "~", "(", ")", "\n"])


def _variant(word: str, draw: Any) -> str:
    """The word as a person might type it: any case, full-width or not, spaces between letters."""
    chars = []
    for ch in word:
        if ch.isascii() and ch.isalpha():
            ch = draw(st.sampled_from([ch.lower(), ch.upper()]))
            if draw(st.booleans()):
                ch = chr(ord(ch) + 0xFEE0)  # full-width form
        chars.append(ch)
    joiner = draw(st.sampled_from(["", "", " ", "\u3000"]))
    return joiner.join(chars)


@st.composite
def _typed(draw: Any, words: list[str]) -> str:
    word = draw(st.sampled_from(words))
    before = "".join(draw(st.lists(_DECOR, max_size=3)))
    after = "".join(draw(st.lists(_DECOR, max_size=3)))
    return before + _variant(word, draw) + after


@pytest.mark.django_db
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_typed(STOP_FORMS))
def test_property_every_typed_stop_form_opts_out(text: str) -> None:
    match = keyword_classify(text)
    assert match is not None and match.kind == "stop", repr(text)


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_typed(START_FORMS))
def test_property_every_typed_start_form_resubscribes(text: str) -> None:
    match = keyword_classify(text)
    assert match is not None and match.kind == "start", repr(text)


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    word=st.sampled_from(STOP_FORMS),
    prefix=st.sampled_from(["don't ", "請不要", "not ", "我想", "x"]),
    suffix=st.sampled_from(["", "ping", "單", "嗎", "x"]),
)
def test_property_a_keyword_inside_a_sentence_is_not_one(word: str, prefix: str, suffix: str) -> None:
    assert keyword_classify(prefix + word + suffix) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "language"), [("退订", "zh-hans"), ("取消訂閱", "zh-hant"), ("取消订阅！", "zh-hans")]
)
def test_a_simplified_stop_through_the_inbound_path_opts_out_and_answers_in_simplified(
    body: str, language: str
) -> None:
    message = _inbound(body, source="+85291234568")
    assert phone_is_suppressed("+85291234568")
    opt_out = OptOut.objects.get()
    assert (opt_out.reason, opt_out.language) == ("stop", language)
    reply = message.handler_result["inbound_keyword_handler"]["reply"]
    assert ("取消订阅" if language == "zh-hans" else "取消訂閱") in reply
    # START in Simplified lifts it again.
    _inbound("开始", source="+85291234568")
    assert not phone_is_suppressed("+85291234568")
