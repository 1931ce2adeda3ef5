"""template_save and templates_list: every template rule, versions, tokens, approvals."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.models import ActionRequest, ActionType, Condition, RequestState
from compliance.services import action_request_approve
from smsplatform.kernel.actor import Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog
from templates.models import Template, TemplateVersion, VersionApproval
from templates.selectors import templates_list
from tests.support.actors import actor
from tests.support.templates import MARKETING, OTP, config_change, content, key, policy, save

pytestmark = pytest.mark.django_db


def refused(user: Any, data: dict[str, Any], **kw: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        save(user, data, **kw)
    return err.value


def current(template_id: int) -> dict[str, Any]:
    return dict(templates_list(template_id=template_id)["templates"][0])


# --- creating and versioning ----------------------------------------------------


def test_create_saves_version_one_audited(marketing: Any) -> None:
    result = save(marketing, reason="spring campaign")
    assert result["status"] == "executed"
    saved = result["result"]
    assert saved["version"] == 1 and saved["approval_status"] == VersionApproval.NOT_REQUIRED
    version = TemplateVersion.objects.get(pk=saved["version_id"])
    assert version.body == MARKETING["body"] and version.fields[0]["charset"] == "unicode"
    assert version.created_by == marketing
    entry = AuditLog.objects.get(action="template.save")
    assert entry.user == marketing and entry.after and entry.after["version_id"] == version.pk
    assert entry.reason == "spring campaign"


def test_each_save_is_a_new_immutable_version(marketing: Any, compliance: Any) -> None:
    first = save(marketing)["result"]
    body = MARKETING["body"].replace("8折", "7折")
    second = save(
        compliance,
        {"body": body},
        template_id=first["template_id"],
        base_version_token=first["base_version_token"],
    )["result"]
    assert second["version"] == 2 and second["version_id"] != first["version_id"]
    old = TemplateVersion.objects.get(pk=first["version_id"])
    assert old.body == MARKETING["body"]  # the pinned version is untouched
    listed = current(first["template_id"])
    assert listed["version_id"] == second["version_id"] and listed["body"] == body
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    # Omitted properties kept their value.
    assert listed["brand"] == "ShopHK" and listed["fields"][0]["name"] == "first_name"


def test_update_needs_a_fresh_version_token(marketing: Any, compliance: Any) -> None:
    first = save(marketing)["result"]
    tid, token = first["template_id"], first["base_version_token"]
    err = refused(compliance, {"max_segments": 2}, template_id=tid)
    assert err.code == ErrorCode.VERSION_TOKEN_REQUIRED and err.field == "base_version_token"
    err = refused(compliance, {"max_segments": 2}, template_id=tid, base_version_token="1.0000000000000000")
    assert err.code == ErrorCode.VALIDATION_ERROR and err.field == "base_version_token"
    save(compliance, {"max_segments": 2}, template_id=tid, base_version_token=token)
    err = refused(compliance, {"max_segments": 4}, template_id=tid, base_version_token=token)
    assert err.code == ErrorCode.STALE_VERSION_TOKEN
    assert err.details["current_version_token"] == current(tid)["base_version_token"]
    assert Template.objects.get(pk=tid).version == 2


def test_token_of_another_template_is_refused(marketing: Any, compliance: Any) -> None:
    a = save(marketing)["result"]
    b = save(marketing, content(name="Other"))["result"]
    err = refused(
        compliance, {"max_segments": 2}, template_id=b["template_id"], base_version_token=a["base_version_token"]
    )
    assert err.code == ErrorCode.VALIDATION_ERROR and err.field == "base_version_token"


def test_nothing_changed_is_refused(marketing: Any, compliance: Any) -> None:
    first = save(marketing)["result"]
    err = refused(compliance, {}, template_id=first["template_id"], base_version_token=first["base_version_token"])
    assert err.code == ErrorCode.VALIDATION_ERROR and "Nothing changed" in err.message


def test_name_is_unique(marketing: Any) -> None:
    save(marketing)
    err = refused(marketing, content(body=MARKETING["body"] + " "))
    assert err.code == "template_name_taken" and err.field == "name"


def test_unknown_template_is_not_found(compliance: Any) -> None:
    err = refused(compliance, {"max_segments": 2}, template_id=999999, base_version_token="1.x")
    assert err.code == ErrorCode.NOT_FOUND and err.field == "template_id"


# --- required wording (Hong Kong marketing: brand + unsubscribe in zh and en) -----------


@pytest.mark.parametrize(
    ("body", "missing", "words"),
    [
        (
            "【ShopHK】{{first_name}}，春季優惠！Spring sale. Reply STOP to opt out",
            ["unsubscribe_zh"],
            ["Chinese unsubscribe statement", "回覆STOP退訂"],
        ),
        (
            "【ShopHK】{{first_name}}，春季優惠！Spring sale. 回覆STOP退訂",
            ["unsubscribe_en"],
            ["English unsubscribe statement", "Reply STOP to opt out"],
        ),
        (
            "{{first_name}}，春季優惠！Spring sale. 回覆STOP退訂 Reply STOP to opt out",
            ["brand"],
            ["brand name 'ShopHK'"],
        ),
        (
            "{{first_name}}，春季優惠！Spring sale.",
            ["brand", "unsubscribe_zh", "unsubscribe_en"],
            ["brand name", "Chinese unsubscribe", "English unsubscribe"],
        ),
    ],
)
def test_missing_required_wording_is_refused_naming_what(
    marketing: Any, body: str, missing: list[str], words: list[str]
) -> None:
    err = refused(marketing, content(body=body))
    assert err.code == "template_missing_required_wording" and err.field == "body"
    assert err.details["missing"] == missing
    for word in words:
        assert word in (err.hint or ""), err.hint
    assert not Template.objects.exists() and not AuditLog.objects.exists()


def test_marketing_needs_a_brand(marketing: Any) -> None:
    err = refused(marketing, content(brand=""))
    assert err.code == "template_missing_required_wording" and err.details["missing"] == ["brand"]


def test_save_that_drops_the_chinese_statement_is_refused(marketing: Any, compliance: Any) -> None:
    first = save(marketing)["result"]
    dropped = MARKETING["body"].replace("回覆STOP退訂 ", "")
    err = refused(
        compliance, {"body": dropped}, template_id=first["template_id"], base_version_token=first["base_version_token"]
    )
    assert err.code == "template_missing_required_wording" and err.details["missing"] == ["unsubscribe_zh"]
    assert Template.objects.get().version == 1


@pytest.mark.parametrize(
    "statements",
    [
        "如不想再收到推廣訊息，請回覆「退訂」。Text STOP to unsubscribe.",
        "回覆TD取消 reply UNSUBSCRIBE to opt out",
        "ＲＥＰＬＹ ＳＴＯＰ to opt out 回覆ＳＴＯＰ退訂",  # full-width forms count
        "回覆 stop 退訂. reply stop to opt out",
    ],
)
def test_equivalent_opt_out_instructions_are_accepted(marketing: Any, statements: str) -> None:
    body = "【ShopHK】{{first_name}} spring sale! " + statements
    assert save(marketing, content(body=body))["status"] == "executed"


def test_keyword_without_an_instruction_is_not_a_statement(marketing: Any) -> None:
    body = "【ShopHK】{{first_name}} don't stop shopping! 停止等待。"
    err = refused(marketing, content(body=body))
    assert err.details["missing"] == ["unsubscribe_zh", "unsubscribe_en"]


def test_rules_follow_the_configuration(marketing: Any, technical: Any) -> None:
    # A different preset: one statement in the template's language.
    config_change(technical, unsubscribe={"require_bilingual_footer": False})
    english = content(language="en", body="ShopHK: {{first_name}}, spring sale! Reply STOP to opt out")
    assert save(marketing, english)["status"] == "executed"
    # Custom keyword configured: an instruction with it counts.
    config_change(
        technical,
        unsubscribe={"require_bilingual_footer": True, "keywords": {"en": ["STOP", "NOMORE"], "zh-hant": ["退訂"]}},
    )
    body = "【ShopHK】{{first_name}} 回覆退訂 reply NOMORE"
    assert save(marketing, content(name="Custom keyword", body=body))["status"] == "executed"


def test_list_flags_templates_the_current_rules_reject(marketing: Any, technical: Any) -> None:
    tid = save(marketing, content(body="【ShopHK】{{first_name}} 回覆TD取消 reply END to stop"))["result"][
        "template_id"
    ]
    assert current(tid)["usable"] is True
    config_change(technical, unsubscribe={"keywords": {"en": ["STOP"], "zh-hant": ["退訂"]}})
    listed = current(tid)
    assert listed["usable"] is False
    assert listed["required_wording"]["missing"] == ["unsubscribe_zh", "unsubscribe_en"]


def test_transactional_needs_no_unsubscribe(marketing: Any) -> None:
    data = content(name="Order shipped", purpose="transactional", brand="", body="Your order {{order}} has shipped.")
    data["fields"] = [{"name": "order", "type": "code", "max_length": 12, "example": "A123"}]
    assert save(marketing, data)["status"] == "executed"


# --- OTP --------------------------------------------------------------------------------


def test_valid_otp_template(marketing: Any) -> None:
    assert save(marketing, content(OTP))["status"] == "executed"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ("ShopHK code {{code}}. Details https://shop.example.hk/x", "URL"),
        ("ShopHK code {{code}}. Visit www.shop.hk", "URL"),
        ("ShopHK code {{code}}. shop.example.hk/login", "URL"),
        ("ShopHK code {{code}}. 全場8折!", "8折"),
        ("ShopHK 驗證碼 {{code}}。會員優惠今日開始", "優惠"),
        ("ShopHK code {{code}}. Get 50% off today", "50% off"),
        ("ShopHK code {{code}}. Big SALE now", "SALE"),
        ("ShopHK code {{code}}. Use coupon WELCOME", "coupon"),
    ],
)
def test_otp_never_carries_promotion(marketing: Any, body: str, found: str) -> None:
    err = refused(marketing, content(OTP, body=body))
    assert err.code == "template_otp_promotional" and err.field == "body"
    assert any(found in item for item in err.details["found"]), err.details


def test_otp_rules_for_fields(marketing: Any) -> None:
    url_field = content(OTP, body="ShopHK code {{code}} {{link}}")
    url_field["fields"] = [*OTP["fields"], {"name": "link", "type": "url", "max_length": 40, "example": "x"}]
    assert refused(marketing, url_field).code == "template_otp_promotional"
    no_code = content(OTP, body="ShopHK code {{pin}}")
    no_code["fields"] = [{"name": "pin", "type": "number", "max_length": 6, "example": "123456"}]
    assert refused(marketing, no_code).field == "fields"
    code_in_marketing = content(body=MARKETING["body"] + " {{code}}")
    code_in_marketing["fields"] = [*MARKETING["fields"], OTP["fields"][0]]
    assert refused(marketing, code_in_marketing).field == "fields"


# --- fields and placeholders ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"body": MARKETING["body"] + " {{coupon}}"}, "template_placeholder_undeclared", "body"),
        (
            {"fields": [*MARKETING["fields"], {"name": "extra", "type": "text", "max_length": 5, "example": "x"}]},
            "template_field_unused",
            "fields",
        ),
        (
            {"fields": [{"name": "first_name", "type": "name", "max_length": 2, "example": "陳大文"}]},
            "validation_error",
            "fields.0.example",
        ),
        (
            {"fields": [{"name": "First Name", "type": "name", "max_length": 20, "example": "x"}]},
            "validation_error",
            "fields.0.name",
        ),
        (
            {"fields": [{"name": "first_name", "type": "colour", "max_length": 20, "example": "x"}]},
            "validation_error",
            "fields.0.type",
        ),
        (
            {"fields": [{"name": "first_name", "type": "name", "max_length": 0, "example": "x"}]},
            "validation_error",
            "fields.0.max_length",
        ),
        (
            {"fields": [{"name": "first_name", "type": "name", "max_length": 20}]},
            "validation_error",
            "fields.0.example",
        ),
        (
            {"fields": [{"name": "first_name", "type": "number", "max_length": 20, "example": "abc"}]},
            "validation_error",
            "fields.0.example",
        ),
        (
            {"fields": [{"name": "first_name", "type": "name", "charset": "gsm", "max_length": 20, "example": "陳"}]},
            "validation_error",
            "fields.0.example",
        ),
        ({"purpose": "spam"}, "validation_error", "purpose"),
        ({"language": "klingon"}, "validation_error", "language"),
        ({"max_segments": 11}, "validation_error", "max_segments"),
        ({"name": ""}, "validation_error", "name"),
        ({"name": "bad\x07name"}, "control_character", "name"),
    ],
)
def test_field_and_property_rules(marketing: Any, change: dict[str, Any], code: str, field: str) -> None:
    err = refused(marketing, content(**change))
    assert (err.code, err.field) == (code, field), err.as_dict()
    assert err.hint


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "text_empty"),
        ("   \n ", "text_empty"),
        ("x" * 10_000, "text_too_long"),
        ("【ShopHK】 回覆STOP退訂 Reply STOP to opt out \ud800", "lone_surrogate"),
        ("【ShopHK】 回覆STOP退訂 Reply STOP to opt out \x00", "control_character"),
        ("【ShopHK】 回覆STOP退訂 Reply STOP to opt out \x1b[31m", "control_character"),
        (12345, "validation_error"),
    ],
)
def test_bad_body_gets_a_clear_error(marketing: Any, body: Any, code: str) -> None:
    data = content(body=body, fields=[])
    err = refused(marketing, data)
    assert err.code == code and err.field == "body", err.as_dict()
    assert err.hint
    if code == "text_too_long":
        assert "10,000 characters" in err.message and "1,600" in err.message


def test_unknown_property_is_refused(marketing: Any) -> None:
    err = refused(marketing, content(colour="red"))
    assert err.code == ErrorCode.VALIDATION_ERROR and err.field == "colour"


# --- permissions ---------------------------------------------------------------------------


def test_marketing_adds_but_only_compliance_changes(marketing: Any, compliance: Any, nobody: Any) -> None:
    first = save(marketing)["result"]
    err = refused(
        marketing, {"max_segments": 2}, template_id=first["template_id"], base_version_token=first["base_version_token"]
    )
    assert err.code == ErrorCode.PERMISSION_DENIED and "sms_templates.change_template" in err.message
    assert refused(nobody, content(name="x")).code == ErrorCode.PERMISSION_DENIED


# --- approval policy: brand, OTP and compliance wording ------------------------------------------


def test_sensitive_saves_are_held_and_approval_executes(marketing: Any, approver: Any, template_policy: Any) -> None:
    held = save(marketing)
    assert held["status"] == "pending_approval"
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    assert request.facts["sensitive"] is True
    assert set(request.facts["sensitive_reasons"]) == {"brand", "compliance_wording"}
    assert not Template.objects.exists()
    assert templates_list()["pending_new_template_request_ids"] == [request.pk]
    done = action_request_approve(actor=actor(approver, Channel.ADMIN), action_request_id=request.pk)
    assert done["state"] == RequestState.EXECUTED
    version = TemplateVersion.objects.get()
    assert version.approval_status == VersionApproval.APPROVED and version.action_request_id == request.pk
    assert version.created_by == marketing


@pytest.mark.parametrize(
    ("change", "reasons"),
    [
        ({"body": MARKETING["body"].replace("8折", "7折")}, []),
        ({"max_segments": 2}, []),
        (
            {"brand": "ShopHK Plus", "body": MARKETING["body"].replace("【ShopHK】", "【ShopHK Plus】")},
            ["brand"],
        ),
        ({"body": MARKETING["body"].replace("回覆STOP退訂", "回覆TD取消")}, ["compliance_wording"]),
        (
            {"purpose": "transactional"},
            ["purpose"],
        ),
    ],
)
def test_which_changes_need_approval(
    marketing: Any, compliance: Any, approver: Any, change: dict[str, Any], reasons: list[str]
) -> None:
    first = save(marketing)["result"]  # no policy yet: executes
    policy(ActionType.TEMPLATE_SAVE)
    result = save(compliance, change, template_id=first["template_id"], base_version_token=first["base_version_token"])
    if not reasons:
        assert result["status"] == "executed"
        return
    assert result["status"] == "pending_approval"
    assert ActionRequest.objects.get(pk=result["action_request_id"]).facts["sensitive_reasons"] == reasons
    assert current(first["template_id"])["pending_action_request_ids"] == [result["action_request_id"]]


def test_any_otp_wording_change_needs_approval(marketing: Any, compliance: Any, template_policy: Any) -> None:
    assert save(marketing, content(OTP))["status"] == "pending_approval"  # a new OTP template
    ActionRequest.objects.all().delete()
    template_policy.enabled = False
    template_policy.save()
    first = save(marketing, content(OTP))["result"]
    template_policy.enabled = True
    template_policy.save()
    body = OTP["body"].replace("10分鐘", "5分鐘")
    held = save(
        compliance, {"body": body}, template_id=first["template_id"], base_version_token=first["base_version_token"]
    )
    assert held["status"] == "pending_approval"
    assert ActionRequest.objects.get(pk=held["action_request_id"]).facts["sensitive_reasons"] == ["otp_wording"]


def test_approval_rechecks_the_rules(marketing: Any, compliance: Any, approver: Any, technical: Any) -> None:
    first = save(marketing)["result"]
    policy(ActionType.TEMPLATE_SAVE)
    body = MARKETING["body"].replace("回覆STOP退訂", "回覆TD取消")
    held = save(
        compliance, {"body": body}, template_id=first["template_id"], base_version_token=first["base_version_token"]
    )
    # Meanwhile the opt-out keywords change: TD no longer works, so the held wording is no longer compliant.
    config_change(technical, unsubscribe={"keywords": {"en": ["STOP"], "zh-hant": ["退訂"]}})
    outcome = action_request_approve(actor=actor(approver), action_request_id=held["action_request_id"])
    assert outcome["state"] == RequestState.FAILED
    assert outcome["error"]["code"] == "template_missing_required_wording"
    assert Template.objects.get().version == 1


def test_approval_of_a_stale_change_fails(marketing: Any, compliance: Any, approver: Any) -> None:
    first = save(marketing)["result"]
    policy(ActionType.TEMPLATE_SAVE)
    tid, token = first["template_id"], first["base_version_token"]
    held = save(
        compliance,
        {"brand": "Shop", "body": MARKETING["body"].replace("ShopHK", "Shop")},
        template_id=tid,
        base_version_token=token,
    )
    save(compliance, {"max_segments": 2}, template_id=tid, base_version_token=token)  # not sensitive: executes
    outcome = action_request_approve(actor=actor(approver), action_request_id=held["action_request_id"])
    assert outcome["state"] == RequestState.FAILED and outcome["error"]["code"] == ErrorCode.STALE_VERSION_TOKEN


def test_always_policy_holds_every_save(marketing: Any) -> None:
    policy(ActionType.TEMPLATE_SAVE, Condition.ALWAYS)
    data = content(name="Order shipped", purpose="transactional", brand="", body="Your order has shipped.", fields=[])
    assert save(marketing, data)["status"] == "pending_approval"


# --- idempotency ---------------------------------------------------------------------------


def test_idempotent_retry_and_key_reuse(marketing: Any) -> None:
    first = save(marketing, idempotency_key="tpl-key-0001")
    assert save(marketing, idempotency_key="tpl-key-0001") == first
    assert TemplateVersion.objects.count() == 1
    with pytest.raises(ApplicationError) as err:
        save(marketing, content(name="Another"), idempotency_key="tpl-key-0001")
    assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
    with pytest.raises(ApplicationError) as err:
        save(marketing, content(name="Third"), idempotency_key=None)
    assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REQUIRED


# --- list -------------------------------------------------------------------------------------


def test_list_shows_what_campaigns_need(marketing: Any) -> None:
    save(marketing)
    save(marketing, content(OTP))
    listing = templates_list()
    assert listing["count"] == 2 and [t["name"] for t in listing["templates"]] == ["Login code", "Spring sale"]
    spring = listing["templates"][1]
    assert spring["opt_out_text"] == {"zh": "回覆stop退訂", "en": "reply stop to opt out"}
    assert spring["usable"] is True and spring["base_version_token"].startswith("1.")
    assert spring["encoding"] == "UCS-2" and spring["segments_longest"] >= spring["segments_example"]
    assert "陳大文" in spring["example_text"] and "versions" not in spring
    assert templates_list(purpose="otp")["count"] == 1
    assert templates_list(name_contains="spring")["count"] == 1
    with pytest.raises(ApplicationError) as err:
        templates_list(template_id=424242)
    assert err.value.code == ErrorCode.NOT_FOUND


def test_key_is_required_before_anything_else(marketing: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        save(marketing, idempotency_key="bad key")
    assert err.value.code == ErrorCode.VALIDATION_ERROR and err.value.field == "idempotency_key"
    assert key()  # keys from the helper are valid
