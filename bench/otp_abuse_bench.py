"""OTP abuse defence on PostgreSQL: what abuse_check costs per send, alone and under concurrency.

Usage: python bench/otp_abuse_bench.py [--sends 2000] [--threads 1,4,8] [--database-url URL]

Builds a throwaway database (migrations only), then, through the real abuse_check:

- distinct numbers spread over many ranges, one country, by 1..N threads (each its own
  connection): sends per second and the median / p95 latency of one check. Every send of one
  country takes the country counter's row lock for the length of its transaction, so this
  measures that hot row too;
- one phone hammered by N threads (limit 5): the five that pass and the refusals per second;
- a sequential sweep of one range (+85251230000...): how many sends pass before the block.

Without PostgreSQL it prints why and exits 0 (``make bench`` runs every script).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens

from common import database_url_argument, load, machine, on_throwaway_database  # noqa: E402  (bench/ is on sys.path when run)

# The API token name the sends are counted under (a name, not a secret).
TOKEN_NAME = "bench"


def _threads(n: int, work: Any) -> tuple[float, list[list[float]], list[list[str]]]:
    """Run work(i) -> (latencies, outcomes) in n threads released together; wall time and results."""
    from django.db import connection

    barrier = threading.Barrier(n + 1)
    latencies: list[list[float]] = [[] for _ in range(n)]
    outcomes: list[list[str]] = [[] for _ in range(n)]

    def run(i: int) -> None:
        try:
            barrier.wait()
            latencies[i], outcomes[i] = work(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, outcomes


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from campaigns.otp.abuse import abuse_check
    from campaigns.otp.models import OtpRateCounter, PumpingBlock
    from smsplatform.kernel.errors import ApplicationError

    call_command("migrate", verbosity=0)
    print(machine())
    print(load())

    def attempt(phone: str, limits: dict[str, Any], ip: str) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            abuse_check(limits=limits, phone=phone, country="HK", client_ip=ip, token_name=TOKEN_NAME)
            outcome = "sent"
        except ApplicationError as exc:
            outcome = exc.code
        return time.perf_counter() - started, outcome

    # Ranges of 1,000 numbers, one send per range per thread round: no range ever bursts.
    roomy = {"ip": {"count": 10**6, "window_seconds": 3600}, "token": {"count": 10**6, "window_seconds": 3600}}
    roomy["country"] = {"count": 10**6, "window_seconds": 3600}
    base = 51_000_000
    for n in [int(x) for x in args.threads.split(",")]:
        OtpRateCounter.objects.all().delete()
        per_thread = args.sends // n

        def spread(i: int, per_thread: int = per_thread, n: int = n) -> tuple[list[float], list[str]]:
            times, outs = [], []
            for k in range(per_thread):
                number = base + (k * n + i) * 1000  # a new range every send
                took, outcome = attempt(f"+852{number}", roomy, f"10.0.{i}.{k % 250}")
                times.append(took)
                outs.append(outcome)
            return times, outs

        wall, latencies, outcomes = _threads(n, spread)
        flat = sorted(t for per in latencies for t in per)
        sent = sum(o == "sent" for per in outcomes for o in per)
        p95 = flat[int(len(flat) * 0.95) - 1] * 1000
        print(
            f"distinct numbers, {n} thread(s): {len(flat)} checks in {wall:.2f} s = {len(flat) / wall:.0f}/s; "
            f"latency median {statistics.median(flat) * 1000:.2f} ms, p95 {p95:.2f} ms; {sent} passed"
        )

    for n in [int(x) for x in args.threads.split(",")]:
        OtpRateCounter.objects.all().delete()
        limits = {**roomy, "phone": {"count": 5, "window_seconds": 3600}}

        def hammer(i: int, limits: dict[str, Any] = limits, per_thread: int = args.sends // n) -> Any:
            times, outs = [], []
            for _ in range(per_thread):
                took, outcome = attempt("+85291234567", limits, f"10.1.{i}.1")
                times.append(took)
                outs.append(outcome)
            return times, outs

        wall, _latencies, per_thread_outcomes = _threads(n, hammer)
        results = [o for per in per_thread_outcomes for o in per]
        print(
            f"one phone, {n} thread(s): {len(results)} attempts in {wall:.2f} s = {len(results) / wall:.0f}/s; "
            f"passed {results.count('sent')} (limit 5), refused {results.count('rate_limited')}"
        )

    OtpRateCounter.objects.all().delete()
    sweep = [attempt(f"+8525123{k:04d}", roomy, "10.2.0.1")[1] for k in range(1000)]
    first = sweep.index("otp_range_blocked") if "otp_range_blocked" in sweep else None
    print(
        f"sweep +85251230000..0999: {sweep.count('sent')} sent, blocked from send #{first}; "
        f"{PumpingBlock.objects.count()} block row(s)"
    )
    print(load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--threads", default="1,4,8")
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database("otp_abuse_bench", args.database_url, lambda: run(args))


if __name__ == "__main__":
    main()
