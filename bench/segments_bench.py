"""Throughput of the SMS segment engine on a realistic mix of bodies; needs no Django.

Run from the repository root: ``python bench/segments_bench.py [--texts N] [--rounds R]``.  It builds a fixed,
seeded corpus of 70-300-character bodies (a third English GSM text with some extension characters and a few
accented letters, a third Traditional Chinese, a third mixed emoji text), checks that ``count_segments`` and
``analyse`` agree on every body, then reports the best of R rounds in texts per second on one core.

Side by side: when Node.js and npm are on the machine, the same texts go through Twilio's published segment
calculator (npm ``sms-segments-calculator``, installed into ``var/bench-node`` on first use, never committed)
by ``bench/segments_compare.mjs``: its rate on one core and how often its encoding and segment count agree
with ours, both the SMPP-style count and the Twilio mode (``count_segments_clusters``, grapheme clusters kept
whole), which should agree on every text (``--no-compare`` skips it).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smsplatform.kernel.segments import analyse, count_segments, count_segments_clusters

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


COMPARE_PACKAGE = "sms-segments-calculator@1.3.0"
ROOT = Path(__file__).resolve().parent.parent


def compare(texts: list[str], ours: list[tuple[str, int]], twilio_mode: list[tuple[str, int]], rounds: int) -> None:
    """Twilio's calculator on the same texts (Node.js), side by side; skipped with a note without Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        print("side by side: skipped (node and npm are not installed)")
        return
    modules = ROOT / "var" / "bench-node"
    if not (modules / "node_modules" / "sms-segments-calculator").is_dir():
        modules.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(modules), COMPARE_PACKAGE],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"side by side: skipped (npm install {COMPARE_PACKAGE} failed: {done.stderr.strip()[:200]})")
            return
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as corpus_file:
        json.dump(texts, corpus_file, ensure_ascii=False)
        corpus_file.flush()
        done = subprocess.run(
            [node, str(ROOT / "bench" / "segments_compare.mjs"), str(modules), corpus_file.name, str(rounds)],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        print(f"side by side: failed ({done.stderr.strip()[:300]})")
        return
    theirs = json.loads(done.stdout)
    results = [(encoding, int(segments)) for encoding, segments in theirs["results"]]
    differ = [i for i, (a, b) in enumerate(zip(ours, results, strict=True)) if a != b]
    print(
        f"{COMPARE_PACKAGE} (Twilio, Node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}): "
        f"{theirs['rate']:,.0f} texts/s on the same texts; encoding and segments agree on "
        f"{len(texts) - len(differ):,} of {len(texts):,}"
    )
    # Twilio's calculator keeps a grapheme cluster (a ZWJ sequence, an emoji with a skin-tone modifier or a
    # variation selector) in one part; ours, like SMPP concatenation, may split between whole characters
    # anywhere (never inside a surrogate pair or a GSM escape).
    clusters = re.compile("[\u200d\ufe0f\U0001f3fb-\U0001f3ff]")
    explained = sum(1 for i in differ if clusters.search(texts[i]) and results[i][1] > ours[i][1])
    if differ:
        print(
            f"  {explained} of the {len(differ)} differences are texts where it keeps a grapheme cluster (ZWJ "
            "sequence, skin tone, variation selector) whole across parts and so needs one more part"
        )
    for i in [i for i in differ if not (clusters.search(texts[i]) and results[i][1] > ours[i][1])][:3]:
        print(f"  differs: ours {ours[i]}, theirs {results[i]}: {texts[i][:60]!r}...")
    # What Twilio gateways are estimated with: the same rule as its calculator, so no difference is expected.
    differ = [i for i, (a, b) in enumerate(zip(twilio_mode, results, strict=True)) if a != b]
    print(
        f"  Twilio mode (count_segments_clusters): encoding and segments agree on "
        f"{len(texts) - len(differ):,} of {len(texts):,}"
    )
    for i in differ[:3]:
        print(f"  differs: ours {twilio_mode[i]}, theirs {results[i]}: {texts[i][:60]!r}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-compare", action="store_true", help="skip the side by side with Twilio's calculator")
    args = parser.parse_args()

    texts = corpus(args.texts)
    mix = Counter(count_segments(text)[0] for text in texts)
    for text in texts[:3000]:
        result = analyse(text)
        assert count_segments(text) == (result.encoding, result.units, result.segments), text
        result = analyse(text, keep_clusters=True)
        assert count_segments_clusters(text) == (result.encoding, result.units, result.segments), text

    count_rate = best_rate(texts, count_segments, args.rounds)
    clusters_rate = best_rate(texts, count_segments_clusters, args.rounds)
    analyse_rate = best_rate(texts[:10_000], analyse, max(1, args.rounds // 2))
    long_text = (CHINESE + "🎉") * (10_000 // (len(CHINESE) + 1))
    started = time.perf_counter()
    long_result = analyse(long_text, smart_encoding=True)
    long_ms = (time.perf_counter() - started) * 1000

    print(f"python {platform.python_version()} on {platform.machine()}, {len(texts)} texts, mix {dict(mix)}")
    print(f"count_segments: {count_rate:,.0f} texts/s")
    print(f"count_segments_clusters (Twilio gateways): {clusters_rate:,.0f} texts/s")
    print(f"analyse:        {analyse_rate:,.0f} texts/s")
    print(f"analyse of one {len(long_text)}-character text ({long_result.segments} parts): {long_ms:.1f} ms")
    if not args.no_compare:
        ours: list[tuple[str, int]] = [
            (str(encoding), segments) for encoding, _units, segments in map(count_segments, texts)
        ]
        twilio_mode: list[tuple[str, int]] = [
            (str(encoding), segments) for encoding, _units, segments in map(count_segments_clusters, texts)
        ]
        compare(texts, ours, twilio_mode, max(1, args.rounds // 2))


if __name__ == "__main__":
    main()
