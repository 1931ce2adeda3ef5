"""One-by-one sends against bulk sends through the SMPP bind worker (issue 15, item 4).

Usage: python bench/smpp_one_by_one.py [--messages 20000] [--window 500] [--database-url URL]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway
SQLite; on PostgreSQL it creates and drops its own database next to the one named).

Two batches of the same size, in one run, against one simulator (its own process, receipt text
as real SMSCs send it):

* bulk: the messages under one shared quota hold (as a campaign dispatch queues them);
* one by one: each message its own ``message_queue`` call, so each has its own hold (test SMS,
  STOP replies, OTP, automation steps).

Each batch is queued first, then a ``manage.py smpp_worker`` process is started; the clock runs
from the first claim (``submit_started_at``) to the last final state (``final_at``): first
submit to last receipt. The goal: one by one >= 80% of the bulk rate. Load average is printed:
on a busy machine both figures drop, and the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import migrate, throwaway_database  # noqa: E402  (bench/ is on sys.path when run)

PASSWORD = "sim-pass"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-1by1-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    with throwaway_database("smpp_one_by_one", args.database_url, sqlite_dir=tmp) as url:
        if url is None:
            return
        os.environ["BENCH_SMPP_PASSWORD"] = PASSWORD
        migrate()
        run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> None:
    import django

    django.setup()
    from decimal import Decimal

    from django.db import connection, transaction
    from django.db.models import Count, Max, Min

    from gateways.delivery.queue import message_queue
    from gateways.models import (
        Gateway,
        GatewayRate,
        MessageState,
        OutboundMessage,
        Provider,
        QuotaReservation,
        SenderId,
        SenderIdKind,
        SenderIdStatus,
    )
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.kernel.actor import Actor
    from tests.support.smsc import SmscConfig, SmscProcess, find_duplicates, read_log

    actor = Actor.system("bench")
    log = tmp / "smsc.jsonl"
    smsc = SmscProcess(
        SmscConfig(port=0, credentials={"bench": PASSWORD}, log_path=str(log), receipt_delay=(0.0, 0.01)),
        cwd=ROOT,
    ).start()
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    body = "Your code is 482913. It expires in 10 minutes."
    results: dict[str, dict[str, Any]] = {}
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
        GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
        SenderId.objects.create(
            value="#SHOPHK",
            kind=SenderIdKind.SSRS,
            brand="Shop",
            status=SenderIdStatus.REGISTERED,
            regions=["HK"],
            ssrs_registered_regions=["HK"],
        )
        account = account_instance()
        account.monthly_quota_segments = 100_000_000
        account.save(update_fields=["monthly_quota_segments", "updated_at"])
        account_top_up(actor=actor, amount=Decimal("100000000"), reason="bench funds", idempotency_key="bench-1by1")
        for label in ("bulk", "one_by_one"):
            started = time.perf_counter()
            if label == "bulk":
                reference = "bench-bulk"
                QuotaReservation.objects.create(
                    reference=reference, segments=args.messages, amount=Decimal("0.3") * args.messages
                )
                with transaction.atomic():
                    OutboundMessage.objects.bulk_create(
                        [
                            OutboundMessage(
                                gateway=gateway,
                                sender_id="#SHOPHK",
                                destination=f"+85261{i:06d}",
                                country="HK",
                                body=body,
                                encoding="GSM-7",
                                segments=1,
                                cost=Decimal("0.3"),
                                purpose="transactional",
                                quota_reference=reference,
                                reference=label,
                            )
                            for i in range(args.messages)
                        ],
                        batch_size=10_000,
                    )
            else:
                for i in range(args.messages):
                    with transaction.atomic():
                        message_queue(
                            actor=actor,
                            gateway_code="bench-smpp",
                            sender_id="#SHOPHK",
                            destination=f"+85291{i:06d}",
                            body=body,
                            purpose="transactional",
                            reference=label,
                        )
            queued_in = time.perf_counter() - started
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "smpp_worker", "--gateway", "bench-smpp", "--idle-exit", "3"],
                cwd=ROOT,
                env=os.environ.copy(),
            )
            pending = (MessageState.QUEUED, MessageState.SUBMITTING, MessageState.SUBMITTED)
            batch = OutboundMessage.objects.filter(reference=label)
            while batch.filter(state__in=pending).exists() and worker.poll() is None:
                time.sleep(0.5)
            worker.terminate()
            worker.wait(60)
            span = batch.aggregate(first=Min("submit_started_at"), last=Max("final_at"))
            elapsed = (span["last"] - span["first"]).total_seconds() if span["first"] and span["last"] else 0.0
            states = dict(batch.values_list("state").annotate(n=Count("id")).order_by())
            delivered = states.get(MessageState.DELIVERED, 0)
            results[label] = {
                "rate": delivered / elapsed if elapsed else 0.0,
                "elapsed": elapsed,
                "states": states,
                "queued_in": queued_in,
            }
            print(
                f"{label}: {delivered} delivered, first submit to last receipt {elapsed:.2f}s = "
                f"{results[label]['rate']:,.0f} msg/s (queued in {queued_in:.1f}s); states {states}; "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        smsc.stop()
    records = [r for r in read_log(log, smsc.run_id) if r["system_id"] == "bench"]
    ratio = results["one_by_one"]["rate"] / results["bulk"]["rate"] if results.get("bulk", {}).get("rate") else 0.0
    print(
        f"# SMPP one by one vs bulk, {args.messages} messages each, window {args.window}, {db}, {os.cpu_count()} cores"
    )
    print(
        f"bulk {results['bulk']['rate']:,.0f} msg/s, one by one {results['one_by_one']['rate']:,.0f} msg/s: "
        f"{ratio:.0%} of bulk (goal >= 80%); load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"checks: simulator records {len(records)}, submitted twice: {len(find_duplicates(records))}")


if __name__ == "__main__":
    main()
