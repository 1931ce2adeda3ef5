"""Commerce events intake rate: signed batches of 1,000 through POST /api/v1/events/batch.

Usage: python bench/events_intake_bench.py [--events 100000] [--batch 1000] [--contacts 200000]
       [--database-url URL] [--keep] [--profile]

A throwaway PostgreSQL database: contacts inserted with SQL (E.164 phones, CRM keys), one event
source. The batches (built and signed before the clock starts) go through the whole HTTP stack
in process (Django's test client: middleware, the view, the HMAC check, JSON, validation, the
set-based contact lookups, the one bulk insert per batch, the customer facts update), one after
the other on one connection. Events name their contact by phone (70%, some in local format) or
by external id (30%); types mix orders (paid ones update customer facts), appointments and
behaviour events. Then the same batches again: all duplicates (a retried sender).

Target: >= 10,000 events/s. Without PostgreSQL it prints why and exits 0.

Measured 2026-12-06 (AMD EPYC, 2 cores shared with ~8 other jobs, load average 12-14: loaded),
100,000 events, batches of 1,000, PostgreSQL 15 on the same host: 3,215 events/s wall (311 ms per
batch); client 4.56 + server 4.23 CPU s, i.e. 11,377 events per CPU-second; resending them all
(duplicates): 6,602 events/s wall. The wall figure is the loaded machine's, not the code's.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)

from common import database_url_argument, load, machine, on_throwaway_database  # noqa: E402  (bench/ is on sys.path when run)

CONTACTS = """
INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, updated_at)
SELECT '+852' || (94000000 + i)::text, 'HK', 'zh-hant', '', '[]'::jsonb, 'bench', 'CRM-' || i, 1, now(), now()
FROM generate_series(1, {contacts}) i;
ANALYZE contacts_contact;
"""

TYPES = [
    ("order_placed", 0.2),
    ("order_paid", 0.2),
    ("order_shipped", 0.1),
    ("product_viewed", 0.2),
    ("cart_abandoned", 0.1),
    ("appointment_booked", 0.1),
    ("custom", 0.1),
]


def batch_events(start: int, size: int, contacts: int) -> list[dict[str, Any]]:
    from datetime import UTC, datetime, timedelta

    base = datetime.now(UTC) - timedelta(days=3)
    events = []
    cumulative = []
    total = 0.0
    for name, share in TYPES:
        total += share
        cumulative.append((total, name))
    for n in range(start, start + size):
        i = n % contacts + 1
        kind = next(name for bound, name in cumulative if (n * 7919 % 1000) / 1000 < bound)
        event: dict[str, Any] = {
            "event_id": f"ev-{n}",
            "type": kind,
            "occurred_at": (base + timedelta(seconds=n)).isoformat(),
        }
        if n % 10 < 7:
            # some in local format (parsed), most E.164 (looked up as is)
            event["phone"] = f"{94000000 + i}" if n % 10 == 0 else f"+852{94000000 + i}"
        else:
            event["external_id"] = f"CRM-{i}"
        if kind.startswith("order_"):
            event["order_id"] = f"ORD-{n // 3}"
        if kind == "order_paid":
            event.update(amount=f"{(n % 500) + 0.5:.2f}", currency="HKD", coupon_code="SMS10" if n % 4 == 0 else None)
            event["channel"] = "sms"
        if kind == "appointment_booked":
            event.update(reference=f"APT-{n}", appointment_at=(base + timedelta(days=7)).isoformat())
        if kind == "custom":
            event["name"] = "wishlist_added"
        if kind == "product_viewed":
            event["sku"] = f"SKU-{n % 300}"
            event["url"] = f"https://shop.example/p/{n % 300}"
        events.append({k: v for k, v in event.items() if v is not None})
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the first run")
    database_url_argument(parser)
    args = parser.parse_args()
    os.environ.setdefault("SMS_VAR_DIR", tempfile.mkdtemp(prefix="smsbench-events-"))
    on_throwaway_database("events_intake_bench", args.database_url, lambda: run(args), keep=args.keep)


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from campaigns.automations.intake import signature_header_build
    from campaigns.automations.models import CommerceEvent, EventSource

    print(f"machine: {machine()}")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(CONTACTS.format(contacts=args.contacts))
    source = EventSource.objects.create(code="bench-shop", name="Bench shop")
    bodies = [
        json.dumps({"events": batch_events(start, args.batch, args.contacts)}).encode()
        for start in range(0, args.events, args.batch)
    ]
    print(
        f"{args.events:,} events in {len(bodies)} batches of {args.batch:,} "
        f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each), {args.contacts:,} contacts"
    )
    client = Client()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")

    def server_cpu() -> float:
        """CPU seconds of the PostgreSQL backend serving this process (same host only)."""
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    warm_up = json.dumps({"events": batch_events(10 * args.events, args.batch, args.contacts)}).encode()

    def send_all(bodies: list[bytes] = bodies) -> tuple[float, dict[str, int]]:
        totals = {"accepted": 0, "duplicate": 0, "refused": 0}
        cpu, server = time.process_time(), server_cpu()
        started = time.perf_counter()
        for body in bodies:
            response = client.post(
                "/api/v1/events/batch",
                data=body,
                content_type="application/json",
                headers={
                    "X-Event-Source": source.code,
                    "X-Event-Signature": signature_header_build(source.secret, body),
                },
            )
            assert response.status_code == 200, response.content[:500]
            answer = response.json()
            for key in ("accepted", "duplicate", "refused"):
                totals[key] += answer[key]
        totals["client_cpu_s"] = round(time.process_time() - cpu, 2)  # type: ignore[assignment]
        totals["server_cpu_s"] = round(server_cpu() - server, 2)  # type: ignore[assignment]
        return time.perf_counter() - started, totals

    send_all([warm_up])  # imports and first-request set-up, not timed
    warm = CommerceEvent.objects.count()
    print(load() + " (loaded: shared machine)")
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    elapsed, totals = send_all()
    if profiler:
        profiler.disable()
    stored = CommerceEvent.objects.count() - warm
    print(
        f"new events:  {args.events / elapsed:,.0f} events/s ({elapsed:.2f} s; {elapsed / len(bodies) * 1000:.0f} ms "
        f"per batch) {totals}; stored {stored:,}"
    )
    cpu = totals["client_cpu_s"] + totals["server_cpu_s"]
    print(
        f"  CPU-bound: {args.events / cpu:,.0f} events per CPU-second (client + server CPU summed): the rate "
        "one unloaded core would sustain serving the batches one after another, commit waits aside; the "
        "wall figure above is on the shared, loaded machine"
    )
    elapsed, totals = send_all()
    print(f"resent (all duplicates): {args.events / elapsed:,.0f} events/s ({elapsed:.2f} s) {totals}")
    print(load() + " (loaded: shared machine)")
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
            int(os.environ.get("BENCH_LINES", "30"))
        )


if __name__ == "__main__":
    main()
