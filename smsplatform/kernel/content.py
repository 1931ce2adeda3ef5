"""Promotion in a message body: outside links and discount wording (zh/en).

Here in the kernel because more than one layer refuses promotion: OTP templates
(templates/content_rules.py) and the gateway test SMS (gateways/delivery/queue.py), neither of
which may carry marketing that skips consent, the suppression list and the footer rules.
"""

from __future__ import annotations

import re
import unicodedata

URL_IN_TEXT_RE = re.compile(
    r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|hk|io|co|shop|store|app|ly|me|cn|info)\b"
    r"(?:/\S*)?",
    re.IGNORECASE,
)
PROMO_WORDS_EN = tuple(
    "sale|discount|offer|promo|promotion|coupon|voucher|deal|deals|cashback|rebate|clearance|bonus|"
    "free gift|buy now|shop now|limited time".split("|")
)
PROMO_WORDS_ZH = tuple(
    "優惠 折扣 減價 特價 促銷 限時 低至 免費送 贈品 現金回贈 大減價 着數 著數 買一送一 优惠 折扣碼".split()
)
PROMO_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in PROMO_WORDS_EN if w[0].isalnum()) + r")\b"
    r"|\d+\s*%\s*off|\d+(?:\.\d+)?\s*折|" + "|".join(re.escape(w) for w in PROMO_WORDS_ZH),
    re.IGNORECASE,
)


def promotion_found(body: str) -> list[str]:
    """What makes ``body`` promotional: each URL in the text, then each promotional word."""
    text = unicodedata.normalize("NFKC", body)
    found = [f"URL {match.group(0)!r}" for match in URL_IN_TEXT_RE.finditer(text)]
    found += [f"promotional wording {match.group(0)!r}" for match in PROMO_RE.finditer(text)]
    return found
