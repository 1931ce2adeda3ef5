"""The keyword handler for inbound SMS: STOP (per language), START and HELP.

Keywords come from the configuration (``unsubscribe.keywords`` per language,
``start_keywords``, ``help_keywords``). A reply matches when, after Unicode NFKC
(full-width letters and the ideographic space become ASCII), case folding,
removing every space and trimming punctuation at either end, it *equals* a
keyword: "ｓｔｏｐ", " Stop! " and "退 訂" match, "don't stop" does not.
Simplified Chinese characters are folded to their Traditional forms before
comparing (``退订`` matches the keyword ``退訂``, ``取消订阅`` matches ``取消訂閱``),
so one list serves both scripts; a reply written in Simplified is answered in
``zh-hans`` when that reply is configured, else in ``zh-hant``. STOP, STOP ALL,
UNSUBSCRIBE, 退訂 and 取消訂閱 (the words our own footer and replies use),
START and HELP always work even if removed from the configuration (as carriers
require).

The answer (``unsubscribe.replies``, worded per language) is queued as a transactional SMS
back to the sender, through the gateway the message came in on when it covers the number,
else the preferred one that does, from the number or sender ID that was written to (else the
default sender ID). When it cannot be sent (no gateway covers the number, no usable sender
ID, the transactional cap or quota reached, replies switched off) nothing is queued and the
reason is recorded. Either way the answer and its fate are in the audit log.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from compliance.models import LIFTABLE_REASONS, OptOutReason
from compliance.optouts import active_opt_outs
from contacts.models import ConsentEvidence, ConsentPurpose, Contact
from contacts.optouts import opt_out_record, opt_outs_lift_by_consent
from gateways.models import InboundMessage
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask, phone_parse

ALWAYS_STOP = {"en": ["STOP", "STOP ALL", "UNSUBSCRIBE"], "zh-hant": ["退訂", "取消訂閱"]}
ALWAYS_START = ["START"]
ALWAYS_HELP = ["HELP"]


# Simplified -> Traditional for the characters that opt-out, start and help words are written
# with (退订, 取消订阅, 开始, 帮助, 恢复订阅, 关闭...). A deliberate short table rather than a
# conversion library: keywords are a few words, and a wider fold could merge unrelated words.
_SIMPLIFIED = {
    "订": "訂",
    "阅": "閱",
    "开": "開",
    "帮": "幫",
    "复": "復",
    "启": "啟",
    "动": "動",
    "续": "續",
    "关": "關",
    "闭": "閉",
    "讯": "訊",
    "发": "發",
    "广": "廣",
    "终": "終",
    "绝": "絕",
    "删": "刪",
    "销": "銷",
    "户": "戶",
    "号": "號",
}
# 啓 is a Traditional variant of 啟, folded too but not a sign of Simplified writing.
SIMPLIFIED_TO_TRADITIONAL = str.maketrans({**_SIMPLIFIED, "啓": "啟"})
SIMPLIFIED_ONLY = frozenset(_SIMPLIFIED)


def keyword_normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text or "").casefold().translate(SIMPLIFIED_TO_TRADITIONAL)
    squeezed = "".join(ch for ch in folded if not ch.isspace() and unicodedata.category(ch) not in {"Cf", "Cc"})
    start, end = 0, len(squeezed)
    while start < end and unicodedata.category(squeezed[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(squeezed[end - 1])[0] in "PS":
        end -= 1
    return squeezed[start:end]


@dataclass(frozen=True)
class KeywordMatch:
    kind: str  # "stop" | "start" | "help"
    keyword: str
    language: str


def _language_of(text: str) -> str:
    return "zh-hant" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"


def _script_of(text: str, language: str) -> str:
    """A Chinese keyword written in Simplified characters answers in ``zh-hans``."""
    if language.startswith("zh") and any(ch in SIMPLIFIED_ONLY for ch in text):
        return "zh-hans"
    return language


def keyword_classify(text: str, unsubscribe: dict[str, Any] | None = None) -> KeywordMatch | None:
    policy = unsubscribe or platform_config_data()["unsubscribe"]
    normal = keyword_normalise(text)
    if not normal:
        return None
    stop_words: dict[str, list[str]] = {lang: list(words) for lang, words in (policy.get("keywords") or {}).items()}
    for lang, words in ALWAYS_STOP.items():
        stop_words.setdefault(lang, [])
        stop_words[lang] = [*stop_words[lang], *words]
    for lang, words in stop_words.items():
        for word in words:
            if keyword_normalise(word) == normal:
                # "TD" is listed under Chinese but written in Latin letters: reply in the list's language.
                return KeywordMatch("stop", word, _script_of(text, lang))
    for kind, words in (
        ("start", [*(policy.get("start_keywords") or []), *ALWAYS_START]),
        ("help", [*(policy.get("help_keywords") or []), *ALWAYS_HELP]),
    ):
        for word in words:
            if keyword_normalise(word) == normal:
                return KeywordMatch(kind, word, _script_of(text, _language_of(word)))
    return None


def _reply(replies: dict[str, Any], kind: str, language: str) -> str:
    texts = replies[kind]
    # zh-hans falls back to zh-hant (both read the Traditional wording), anything else to English.
    fallback = texts.get("zh-hant") if language.startswith("zh") else None
    return str(texts.get(language) or fallback or texts["en"])


def _reply_queue(
    actor: Actor, message: InboundMessage, phone: str, text: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Queue ``text`` as a transactional SMS to ``phone``, or return why it is not sent.

    Runs inside the inbound message's transaction; the queueing itself is a savepoint, so a
    refusal half-way (quota, encoding) leaves nothing behind and never undoes the opt-out."""
    from gateways.delivery.queue import message_queue, message_submit_enqueue
    from gateways.frequency import frequency_blocked_purpose, frequency_capped_destinations
    from gateways.models import MessagePurpose
    from gateways.rules import sender_id_check_usable
    from gateways.selectors import segment_prices

    def refused(reason: str, detail: str) -> dict[str, Any]:
        return {"queued": False, "reason": reason, "detail": detail}

    if not config["unsubscribe"]["replies"]["enabled"]:
        return refused("replies_disabled", "unsubscribe.replies.enabled is off")
    try:
        country = phone_parse(phone, field="source").country
    except ApplicationError as exc:
        return refused(exc.code, exc.message)
    # The gateway it came in on when that one covers the number, else the preferred one that does.
    inbound_gateway = message.gateway.code
    gateway_code = inbound_gateway if segment_prices(countries=[country], gateway_code=inbound_gateway) else None
    if gateway_code is None and not segment_prices(countries=[country]):
        return refused("country_not_covered", f"no enabled gateway delivers to {country}")
    purpose = MessagePurpose.TRANSACTIONAL
    if frequency_blocked_purpose(purpose) or any(
        capped.filter(destination=phone).exists() for capped in frequency_capped_destinations(purpose=purpose).values()
    ):
        return refused("frequency_capped", "the number is at its transactional SMS cap")
    senders = list(dict.fromkeys(s for s in (message.destination.strip(), config["default_sender_id"]) if s))
    sender = None
    for candidate in senders:
        try:
            sender_id_check_usable(value=candidate, country=country)
        except ApplicationError:
            continue
        sender = candidate
        break
    if sender is None:
        return refused("sender_id_not_usable", f"none of {senders} is usable for {country}")
    try:
        with transaction.atomic():
            queued = message_queue(
                actor=actor,
                gateway_code=gateway_code,
                sender_id=sender,
                destination=phone,
                body=text,
                purpose=purpose,
                reference=f"keyword:{message.pk}",
                # The answer to the person's own STOP goes to a number that is now opted out.
                keyword_reply=True,
            )
    except ApplicationError as exc:
        return refused(exc.code, exc.message)
    gateway_id, message_ids = queued.gateway_id, [queued.pk]
    # Submitted after commit only: a rolled-back inbound message sends nothing.
    # The same enqueue as every other send (an SMPP bind worker picks queued ones up itself).
    transaction.on_commit(lambda: message_submit_enqueue(gateway_id, message_ids))
    return {"queued": True, "message_id": queued.pk, "gateway": queued.gateway.code, "sender_id": sender}


def _phone(raw: str) -> str:
    try:
        return phone_parse(raw, field="source").e164
    except ApplicationError:
        return raw.strip()[:16]


def inbound_keyword_handler(message: InboundMessage) -> dict[str, Any] | None:
    """Registered with gateways.delivery.inbound; runs inside the inbound message's transaction, so
    the opt-out commits together with the stored message: effective at once."""
    config = platform_config_data()
    match = keyword_classify(message.body, config["unsubscribe"])
    if match is None:
        return None
    actor = Actor.system(f"inbound_sms:{message.gateway_id}")
    phone = _phone(message.source)
    outcome: dict[str, Any] = {"keyword": match.keyword, "kind": match.kind, "language": match.language}
    if match.kind == "stop":
        outcome["opt_out"] = opt_out_record(
            actor=actor,
            phone=phone,
            reason=OptOutReason.STOP,
            source=f"sms:{message.gateway_id}",
            message_text=message.body,
            language=match.language,
            occurred_at=message.received_at,
        )
    elif match.kind == "start":
        outcome["resubscribe"] = _start(actor, message, phone, match)
    reply = _reply(config["unsubscribe"]["replies"], match.kind, match.language)
    outcome["reply"] = reply
    outcome["reply_sms"] = _reply_queue(actor, message, phone, reply, config)
    audit_record(
        actor=actor,
        action=f"keyword.{match.kind}",
        object_type="inbound_message",
        object_id=message.pk,
        after={
            "phone": phone_mask(phone),
            "body": message.body,
            "keyword": match.keyword,
            "language": match.language,
            "reply": reply,
            **{k: v for k, v in outcome.items() if k in {"opt_out", "resubscribe", "reply_sms"}},
        },
    )
    return outcome


def _start(actor: Actor, message: InboundMessage, phone: str, match: KeywordMatch) -> dict[str, Any]:
    """START is explicit consent with evidence (the inbound SMS). It lifts a STOP-type opt-out;
    from a number we never opted out it records nothing."""
    liftable = active_opt_outs().filter(phone=phone, reason__in=LIFTABLE_REASONS)
    if not liftable.exists():
        return {"lifted": 0, "consent_id": None}
    now = timezone.now()
    contact = Contact.objects.select_for_update(of=("self",)).filter(phone=phone).first()
    if contact is None:
        try:
            country = phone_parse(phone).country
        except ApplicationError:
            return {"lifted": 0, "consent_id": None}
        contact = Contact.objects.create(
            phone=phone, country=country, language=match.language, source="sms_start", created_at=now, updated_at=now
        )
    consent = ConsentEvidence.objects.create(
        contact=contact,
        channel="sms",
        purpose=ConsentPurpose.MARKETING,
        wording=f"Replied {message.body.strip()[:50]!r} to {message.destination}",
        source="sms_start",
        obtained_at=message.received_at,
        proof_reference=f"inbound_message:{message.pk}",
        recorded_at=now,
        actor_channel=str(actor.channel),
        actor_token_name=actor.token_name,
    )
    # Consent changed: a token read before this START is stale.
    Contact.objects.filter(pk=contact.pk).update(version=F("version") + 1, updated_at=now)
    lifted = opt_outs_lift_by_consent(actor=actor, phone=phone, consent=consent)
    return {"lifted": lifted, "consent_id": consent.pk, "contact_id": contact.pk}
