"""The inbound keyword handler: STOP in English and Chinese (width, case and space variants),
START and HELP, configurable lists, every reply audited."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from compliance.keywords import keyword_classify, keyword_normalise
from compliance.optouts import phone_is_suppressed
from compliance.roles import Role
from contacts.models import ConsentEvidence, OptOut
from contacts.selectors import contact_get
from gateways.adapters.base import InboundEvent
from gateways.delivery import inbound_receive
from gateways.models import Gateway
from smsplatform.config_service import platform_config_get, platform_config_update
from smsplatform.models import AuditLog
from tests.contacts.factories import api_actor, create_contact

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
    from compliance.optouts import opt_out_record
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
