"""Automation flows at scale on PostgreSQL: 100,000 enrolments due at once, submitted to the SMSC
simulator through the SMPP bind worker.

Usage: python bench/automations_bench.py [--enrolments 100000] [--window 500] [--database-url URL]

Builds a throwaway database: N contacts, N ``order_shipped`` events (set-based SQL), an approved
transactional template, an SMPP gateway pointing at the project's SMSC simulator, and an active
flow sending one message per event. Then, through the real code:

- the beat scan (events -> enrolments, one ON CONFLICT DO NOTHING insert per chunk);
- the tick (claims with SKIP LOCKED, every send-time rule re-checked set-based, messages inserted
  in bulk with quota held), with the bind worker already bound;
- tick start to the last message submitted (target: 100,000 within 30 s), counted from the
  simulator's own log (each destination exactly once).

Without PostgreSQL it prints why and exits 0 (``make bench`` runs every script).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens

from common import database_url_argument, load, machine, on_throwaway_database  # noqa: E402  (bench/ is on sys.path when run)
from smpp_bench import order_shipped_flow  # noqa: E402

DATASET = """
INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, updated_at)
SELECT '+852' || (60000000 + i)::text, 'HK', 'en', '', '[]'::jsonb, 'bench', '', 1, now(), now()
FROM generate_series(1, {total}) i;

INSERT INTO automations_commerceevent (source_id, event_id, type, name, contact_id, phone, external_id, occurred_at,
    received_at, order_ref, currency, refund_of, coupon_code, channel, click_token, link_code, payload, payload_hash)
SELECT {source}, 'evt-' || c.id, 'order_shipped', '', c.id, c.phone, '', now() - interval '1 minute', now(),
       'A-' || c.id, '', '', '', '', '', '', '{{}}'::jsonb, repeat('0', 64)
FROM contacts_contact c;
ANALYZE;
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--enrolments", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the tick")
    parser.add_argument("--profile-scan", action="store_true", help="print a cProfile of the first scan")
    parser.add_argument("--queries", action="store_true", help="print the tick's slowest statements")
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database("automations_bench", args.database_url, lambda: run(args, os.environ["DATABASE_URL"]))


def run(args: argparse.Namespace, url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="automationsbench-"))
    os.environ.update(
        DATABASE_URL=url,
        SMS_VAR_DIR=str(tmp),
        DJANGO_SETTINGS_MODULE="smsplatform.settings",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or "bench-secret-key-" + "x" * 40,
        BENCH_SMPP_PASSWORD="sim-pass",  # noqa: S106 - the simulator's throwaway credential
        CELERY_BROKER_URL=f"filesystem://{tmp}",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from datetime import timedelta
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone

    from campaigns.automations.engine import enrolments_send_due, events_scan
    from campaigns.automations.models import EventSource
    from gateways.models import (
        Gateway,
        GatewayRate,
        MessageState,
        OutboundMessage,
        Provider,
        SenderId,
        SenderIdKind,
        SenderIdStatus,
    )
    from gateways.platform_config import platform_config_update
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.config_service import platform_config_get
    from smsplatform.kernel.actor import Actor
    from tests.support.smsc import SmscConfig, SmscProcess

    print(f"# automations: {args.enrolments:,} enrolments due at once, PostgreSQL, {machine()}")
    print(f"# {load()}")
    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("bench"),
        changes={
            "frequency_caps": {**config["config"]["frequency_caps"], "transactional_per_day": 1000},
        },
        base_version_token=config["base_version_token"],
        idempotency_key="bench-config-1",
    )
    source = EventSource.objects.create(code="bench", name="bench")
    flow_start = timezone.now() - timedelta(minutes=5)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in DATASET.format(total=args.enrolments, source=source.pk).split(";"):
            if statement.strip():
                cursor.execute(statement)
    print(f"dataset: {args.enrolments:,} contacts and events in {time.perf_counter() - started:.1f}s")
    smsc = SmscProcess(
        SmscConfig(
            port=0, credentials={"bench": "sim-pass"}, log_path=str(tmp / "smsc.jsonl"), receipt_delay=(0.0, 0.01)
        ),
        cwd=ROOT,
    ).start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        gateway = Gateway.objects.create(
            code="bench-smpp",
            name="bench",
            provider=Provider.SMPP,
            countries=["HK"],
            window_size=args.window,
            max_rate_per_second=100_000,
            encodings=["GSM-7", "UCS-2"],
            settings={"host": smsc.host, "port": smsc.port, "system_id": "bench"},
            credentials_env={"password": "BENCH_SMPP_PASSWORD"},
        )
        GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.01"))
        SenderId.objects.create(
            value="#SHOPHK",
            kind=SenderIdKind.SSRS,
            brand="ShopHK",
            status=SenderIdStatus.REGISTERED,
            regions=["HK"],
            ssrs_registered_regions=["HK"],
        )
        account = account_instance()
        account.monthly_quota_segments = 100_000_000
        account.save(update_fields=["monthly_quota_segments", "updated_at"])
        account_top_up(
            actor=Actor.system("bench"),
            amount=Decimal("10000000"),
            reason="bench funds",
            idempotency_key="bench-top-up",
        )
        order_shipped_flow(gateway, flow_start)
        started = time.perf_counter()
        scanned = 0
        if args.profile_scan:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            counts = profiler.runcall(events_scan)
            scanned += counts["enrolled"]
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        while True:
            counts = events_scan()
            scanned += counts["enrolled"]
            if not counts["events"]:
                break
        print(f"scan: {scanned:,} enrolments in {time.perf_counter() - started:.1f}s")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "smpp_worker", "--gateway", "bench-smpp"], cwd=ROOT, env=os.environ.copy()
        )
        time.sleep(2)  # bound and idle before the clock starts
        start = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            sent = profiler.runcall(enrolments_send_due, budget_seconds=300)
            pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(35)
        elif args.queries:
            spent: dict[str, list[float]] = {}

            def timing(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
                began = time.perf_counter()
                try:
                    return execute(sql, params, many, context)
                finally:
                    spent.setdefault(" ".join(sql.split())[:110], []).append(time.perf_counter() - began)

            with connection.execute_wrapper(timing):
                sent = enrolments_send_due(budget_seconds=300)
            for sql, times in sorted(spent.items(), key=lambda kv: -sum(kv[1]))[:12]:
                print(f"  {sum(times):6.2f}s {len(times):4d}x  {sql}")
        else:
            sent = enrolments_send_due(budget_seconds=300)
        tick_s = time.perf_counter() - start
        print(f"tick: {sent['sent']:,} messages queued in {tick_s:.1f}s ({sent['sent'] / tick_s:,.0f}/s); {sent}")
        pending = (MessageState.QUEUED, MessageState.SUBMITTING)
        while True:
            left = OutboundMessage.objects.filter(gateway=gateway, state__in=pending).count()
            elapsed = time.perf_counter() - start
            if left == 0 or elapsed > 600 or worker.poll() is not None:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - start
        submitted = OutboundMessage.objects.filter(gateway=gateway).exclude(state__in=pending).count()
        per_phone = Counter(r["destination"] for r in smsc.submitted() if r["outcome"] == "accepted")
        print(
            f"tick start -> last submitted: {submitted:,} of {sent['sent']:,} in {elapsed:.1f}s "
            f"({submitted / elapsed:,.0f} msg/s; target 100,000 within 30 s); simulator log: {len(per_phone):,} "
            f"destinations, max submissions per destination {max(per_phone.values(), default=0)}"
        )
        print(f"# {load()}")
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        smsc.stop()
        connection.close()


if __name__ == "__main__":
    main()
