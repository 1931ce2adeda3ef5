"""copy_fit_preview: scenarios, truncation, short-link length, cost, bad input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateways.models import Gateway, GatewayRate
from smsplatform.kernel.errors import ApplicationError
from templates.copy_fit import copy_fit_preview
from tests.support.templates import MARKETING, content, save

pytestmark = pytest.mark.django_db

FOOTER = " 回覆STOP退訂 Reply STOP to opt out"


@pytest.fixture
def hk_gateway(db: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code="tpl-sim-hk", name="Simulator HK", provider="simulator", countries=["HK", "MO"]
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.3500"))
    GatewayRate.objects.create(gateway=gateway, country="MO", price_per_segment=Decimal("0.5000"))
    return gateway


def refused(**kw: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        copy_fit_preview(**kw)
    return err.value


def test_plain_gsm_text(db: Any) -> None:
    out = copy_fit_preview(text="Hello from ShopHK")
    given = out["given"]
    assert (given["encoding"], given["units"], given["segments"], given["characters_left"]) == ("GSM-7", 17, 1, 143)
    assert out["longest"]["segments"] == 1 and out["truncation"] == [] and out["fits"] is True


def test_template_longest_variable_scenario(marketing: Any, hk_gateway: Any) -> None:
    tid = save(marketing)["result"]["template_id"]
    out = copy_fit_preview(template_id=tid, recipients=10_000)
    assert out["source"] == "template" and out["template"]["version"] == 1
    assert "陳大文" in out["given"]["text"]
    # first_name at its max_length of 20 unicode characters
    assert "字" * 20 in out["longest"]["text"] and "字" * 21 not in out["longest"]["text"]
    assert out["longest"]["encoding"] == "UCS-2"
    assert out["longest"]["units"] == out["given"]["units"] + 17
    assert out["longest"]["segments"] >= out["given"]["segments"]
    hk = out["costs"][0]
    assert (
        hk["covered"] is True and hk["gateway"] == "tpl-sim-hk" and hk["segments_billed"] == out["longest"]["segments"]
    )
    per_message = Decimal("0.35") * out["longest"]["segments"]
    assert Decimal(hk["cost_per_message"]) == per_message
    assert Decimal(hk["cost_total"]) == per_message * 10_000
    assert any("max_length" in a for a in out["assumptions"])


def test_variables_override_examples_and_are_bounded(marketing: Any) -> None:
    tid = save(marketing)["result"]["template_id"]
    out = copy_fit_preview(template_id=tid, variables={"first_name": "Amy"})
    assert "Amy" in out["given"]["text"]
    err = refused(template_id=tid, variables={"first_name": "x" * 21})
    assert err.field == "variables.first_name" and "20" in err.message
    err = refused(template_id=tid, variables={"coupon": "X"})
    assert err.field == "variables.coupon"


def test_truncation_by_template_limit_names_the_lost_wording(marketing: Any) -> None:
    body = "【ShopHK】{{first_name}} " + "春季優惠" * 20 + FOOTER
    tid = save(marketing, content(body=body, max_segments=1))["result"]["template_id"]
    out = copy_fit_preview(template_id=tid)
    cut = out["truncation"][0]
    assert cut["limit"] == "template" and cut["max_segments"] == 1 and cut["fits"] is False
    assert cut["cut_text"].endswith("Reply STOP to opt out") and cut["cut_characters"] == len(cut["cut_text"])
    assert "unsubscribe_en" in cut["cuts_required_wording"]
    assert out["fits"] is False


def test_truncation_by_gateway_limit(db: Any, hk_gateway: Any) -> None:
    hk_gateway.settings = {"max_segments": 2}
    hk_gateway.save()
    out = copy_fit_preview(text="x" * 400, countries=["HK"])
    gateway_cut = next(t for t in out["truncation"] if t["limit"].startswith("gateway"))
    assert gateway_cut["max_segments"] == 2 and len(gateway_cut["cut_text"]) == 400 - 2 * 153
    assert out["costs"][0]["segments_billed"] == 2


def test_country_without_gateway_is_not_covered_not_free(db: Any, hk_gateway: Any) -> None:
    out = copy_fit_preview(text="Hi", countries=["hk", "US", "MO"], recipients=5)
    by_country = {c["country"]: c for c in out["costs"]}
    assert by_country["HK"]["covered"] and by_country["MO"]["price_per_segment"] == "0.5000"
    us = by_country["US"]
    assert us["covered"] is False and "cost_per_message" not in us and "not priced" in us["note"]


def test_disabled_gateway_does_not_price(db: Any, hk_gateway: Any) -> None:
    hk_gateway.enabled = False
    hk_gateway.save()
    assert copy_fit_preview(text="Hi")["costs"][0]["covered"] is False


def test_short_link_length_effect(db: Any) -> None:
    url = "https://shop.example.hk/collections/spring-2025/very-long-landing-page?ref=sms&lang=zh-hant"
    out = copy_fit_preview(text=f"ShopHK spring sale {url} Reply STOP to opt out", per_recipient_links=False)
    links = out["short_links"]
    assert links["short_url_example"] == "https://s.example.hk/s/XXXXXXXX"
    assert links["urls_in_text"][0]["characters"] == len(url)
    assert links["longest_with_short_links"]["characters"] < out["longest"]["characters"]
    per_recipient = copy_fit_preview(
        text="Hi {{link}}",
        fields=[{"name": "link", "type": "url", "max_length": 80, "example": "https://s.example.hk/s/abcdefgh"}],
    )
    assert per_recipient["short_links"]["per_recipient"] is True
    assert per_recipient["short_links"]["url_fields"] == ["link"]
    assert per_recipient["longest"]["characters"] == 3 + len("https://s.example.hk/s/XXXXXXXX/rrrrrrrr")


def test_smart_encoding(db: Any) -> None:
    text = "ShopHK’s “spring” sale – now on"
    assert copy_fit_preview(text=text)["given"]["encoding"] == "UCS-2"
    smart = copy_fit_preview(text=text, smart_encoding=True)["given"]
    assert smart["encoding"] == "GSM-7" and smart["smart_encoding_applied"] and smart["replacements"] == 4


def test_pinned_version_and_text_purpose(marketing: Any, compliance: Any) -> None:
    first = save(marketing)["result"]
    save(
        compliance,
        {"max_segments": 2},
        template_id=first["template_id"],
        base_version_token=first["base_version_token"],
    )
    out = copy_fit_preview(template_version_id=first["version_id"])
    assert out["template"]["version"] == 1
    assert copy_fit_preview(text="Your code is 123456", purpose="otp")["required_wording_missing"] == []
    assert copy_fit_preview(text="Sale now")["required_wording_missing"] == ["unsubscribe_zh", "unsubscribe_en"]
    assert copy_fit_preview(text="Sale now", brand="ShopHK")["required_wording_missing"][0] == "brand"


@pytest.mark.parametrize(
    ("kw", "code", "field"),
    [
        ({}, "validation_error", "text"),
        ({"text": "a", "template_id": 1}, "validation_error", "text"),
        ({"text": ""}, "text_empty", "text"),
        ({"text": "x" * 10_000}, "text_too_long", "text"),
        ({"text": "Hi \udc00 there"}, "lone_surrogate", "text"),
        ({"text": "Hi \x07 there"}, "control_character", "text"),
        ({"text": "Hi {{name}}"}, "template_placeholder_undeclared", "variables.name"),
        ({"text": "Hi", "countries": ["HKG"]}, "validation_error", "countries.0"),
        ({"text": "Hi", "countries": []}, "validation_error", "countries"),
        ({"text": "Hi", "recipients": 0}, "validation_error", "recipients"),
        ({"text": "Hi", "max_segments": 0}, "validation_error", "max_segments"),
        ({"text": "Hi", "purpose": "spam"}, "validation_error", "purpose"),
        ({"template_id": 999999}, "not_found", "template_id"),
        ({"template_version_id": 999999}, "not_found", "template_version_id"),
        ({"text": "Hi {{x}}", "variables": {"x": "a\x00b"}}, "control_character", "variables.x"),
    ],
)
def test_bad_input_gets_clear_errors(db: Any, kw: dict[str, Any], code: str, field: str) -> None:
    err = refused(**kw)
    assert (err.code, err.field) == (code, field), err.as_dict()
    assert err.hint


def test_marketing_body_constant_is_valid(marketing: Any) -> None:
    out = copy_fit_preview(text=MARKETING["body"], variables={"first_name": "Amy"}, brand="ShopHK")
    assert out["required_wording_missing"] == []


def test_twilio_gateway_costs_whole_grapheme_clusters(db: Any, hk_gateway: Any) -> None:
    """Twilio splits by itself and keeps a ZWJ emoji whole: an emoji across our part boundary costs
    one part more there, and only there."""
    Gateway.objects.create(code="tpl-twilio-mo", name="Twilio MO", provider="twilio", countries=["MO"], priority=1)
    GatewayRate.objects.create(
        gateway=Gateway.objects.get(code="tpl-twilio-mo"), country="MO", price_per_segment=Decimal("0.5000")
    )
    head = "【ShopHK】"
    text = head + "親" * (65 - len(head)) + "👨\u200d👩\u200d👧"  # the emoji starts 2 units before the boundary
    text += "親" * (134 - 73 - len(FOOTER)) + FOOTER
    out = copy_fit_preview(text=text, countries=["HK", "MO"], brand="ShopHK", max_segments=2)
    assert out["given"]["units"] == 134 and out["given"]["segments"] == out["longest"]["segments"] == 2
    hk, mo = out["costs"]
    assert (hk["gateway"], hk["segments_billed"], hk["cost_per_message"]) == ("tpl-sim-hk", 2, "0.7000")
    assert (mo["gateway"], mo["segments_billed"], mo["cost_per_message"]) == ("tpl-twilio-mo", 3, "1.5000")
    assert mo["example_cost_per_message"] == "1.5000"
    assert any("Twilio" in a for a in out["assumptions"])
    # A Twilio gateway limited to 2 parts would cut this copy; the SMPP-counted one would not.
    Gateway.objects.filter(code="tpl-twilio-mo").update(settings={"max_segments": 2})
    out = copy_fit_preview(text=text, countries=["HK", "MO"], brand="ShopHK")
    (cut,) = out["truncation"]
    assert cut["limit"] == "gateway tpl-twilio-mo (MO)" and cut["fits"] is False
    assert cut["cut_text"] == "ut"  # the emoji moved 2 units on, pushing the last 2 characters out


def _set_short_domain(domain: str) -> None:
    from gateways.platform_config import platform_config_update
    from smsplatform.config_service import platform_config_get
    from smsplatform.kernel.actor import Actor

    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"short_links": {**config["config"]["short_links"], "domain": domain}},
        base_version_token=config["base_version_token"],
        idempotency_key=f"short-domain-{domain}",
        reason="test",
    )


@pytest.mark.parametrize("per_recipient", [True, False])
def test_link_in_free_text_counts_the_short_link_as_sent(db: Any, per_recipient: bool) -> None:
    """{{link}} in free copy needs no declaration (a campaign fills it with its short link), and
    a URL given for it is the landing page: both scenarios count the short URL, per the
    configured short domain, code length and recipient token."""
    _set_short_domain("go.shop-example.hk")
    short = "https://go.shop-example.hk/s/XXXXXXXX" + ("/rrrrrrrr" if per_recipient else "")
    text = "ShopHK sale {{link}}" + FOOTER
    out = copy_fit_preview(text=text, per_recipient_links=per_recipient)
    expected = len(text) - len("{{link}}") + len(short)
    assert out["given"]["characters"] == out["longest"]["characters"] == expected
    assert out["short_links"]["url_fields"] == ["link"] and out["short_links"]["short_url_example"] == short
    assert short in out["given"]["text"]

    landing = "https://shop.example.hk/collections/spring-2025/very-long-landing-page?utm_source=sms"
    given = copy_fit_preview(text=text, variables={"link": landing}, per_recipient_links=per_recipient)
    assert given["given"]["characters"] == expected and landing not in given["given"]["text"]
    assert given["short_links"]["url_values_replaced"] == [
        {"field": "link", "given": landing, "given_characters": len(landing), "counted_as": short}
    ]
    # A declared url field is counted the same way, whatever its example.
    declared = copy_fit_preview(
        text=text,
        per_recipient_links=per_recipient,
        fields=[{"name": "link", "type": "url", "max_length": 200, "example": landing}],
    )
    assert declared["given"]["characters"] == declared["longest"]["characters"] == expected


def test_other_undeclared_placeholders_are_still_refused(db: Any) -> None:
    err = refused(text="Hi {{name}} {{link}}")
    assert err.code == "template_placeholder_undeclared" and err.field == "variables.name"
