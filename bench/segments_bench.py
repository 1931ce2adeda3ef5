"""Throughput of the SMS segment engine on a realistic mix of bodies; needs no Django.

Run from the repository root: ``python bench/segments_bench.py [--texts N] [--rounds R]``.  It builds a fixed,
seeded corpus of 70-300-character bodies (a third English GSM text with some extension characters and a few
accented letters, a third Traditional Chinese, a third mixed emoji text), checks that ``count_segments`` and
``analyse`` agree on every body, then reports the best of R rounds in texts per second on one core.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from templates.segments import analyse, count_segments

ENGLISH_WORDS = (
    "Hi {name}, your order #{n} is ready for pickup. Use code SAVE20 at checkout for 20% off all items "
    "this weekend only! Visit our store or reply STOP to opt out. Offer valid until Sunday [terms apply]. "
    "Price: €25 or ~$27 | Members get free delivery ^ bonus points. Café crème Ä Ö Ü ß é è à ñ @ £ ¥ §"
).split()
CHINESE = (
    "親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。詳情請洽客服專線或瀏覽我們的"
    "官方網站，感謝您長期以來的支持與愛護！限時搶購活動將於週日晚上十二點結束，數量有限，售完為止。"
    "您的驗證碼為八八六五，請於十分鐘內輸入。香港滙豐銀行提醒您注意詐騙電話。𨋢𠱁"
)
EMOJI = ("🎉", "👗", "👠", "🛍️", "😍", "🔥", "💥", "✨", "❤️", "👍🏽", "🇹🇼", "👨‍👩‍👧")
EMOJI_WORDS = "Flash sale today only! Get 50% off at our store, don't miss out. Reply STOP to opt out".split()


def english(rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(ENGLISH_WORDS).replace("{n}", str(rng.randint(1000, 99999))))
    return " ".join(words)[:size]


def chinese(rng: random.Random, size: int) -> str:
    start = rng.randrange(len(CHINESE))
    return (CHINESE[start:] + CHINESE * 3)[:size]


def emoji(rng: random.Random, size: int) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < size:
        out.append(rng.choice(EMOJI) if rng.random() < 0.25 else rng.choice(EMOJI_WORDS))
    return " ".join(out)[:size]


def corpus(count: int, seed: int = 20240601) -> list[str]:
    rng = random.Random(seed)
    makers: tuple[Callable[[random.Random, int], str], ...] = (english, chinese, emoji)
    return [makers[i % 3](rng, rng.randint(70, 300)) for i in range(count)]


def best_rate(texts: list[str], func: Callable[[str], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            func(text)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    texts = corpus(args.texts)
    mix = Counter(count_segments(text)[0] for text in texts)
    for text in texts[:3000]:
        result = analyse(text)
        assert count_segments(text) == (result.encoding, result.units, result.segments), text

    count_rate = best_rate(texts, count_segments, args.rounds)
    analyse_rate = best_rate(texts[:10_000], analyse, max(1, args.rounds // 2))
    long_text = (CHINESE + "🎉") * (10_000 // (len(CHINESE) + 1))
    started = time.perf_counter()
    long_result = analyse(long_text, smart_encoding=True)
    long_ms = (time.perf_counter() - started) * 1000

    print(f"python {platform.python_version()} on {platform.machine()}, {len(texts)} texts, mix {dict(mix)}")
    print(f"count_segments: {count_rate:,.0f} texts/s")
    print(f"analyse:        {analyse_rate:,.0f} texts/s")
    print(f"analyse of one {len(long_text)}-character text ({long_result.segments} parts): {long_ms:.1f} ms")


if __name__ == "__main__":
    main()
