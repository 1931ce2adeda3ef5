"""End-to-end SMPP throughput: queued messages -> bind worker -> SMSC simulator -> receipts in the DB.

Usage: python bench/smpp_throughput.py [--messages 100000] [--window 500] [--database-url URL]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite).
Also measures the raw smpplib bind rate against the same simulator (no database): the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def raw_bind_rate(host: str, port: int, system_id: str, password: str, count: int, window: int) -> float:
    import smpplib.client
    import smpplib.consts

    done = threading.Semaphore(0)
    slots = threading.Semaphore(window)
    client = smpplib.client.Client(host, port, allow_unknown_opt_params=True)

    def sent(pdu: Any, **kw: Any) -> None:
        slots.release()
        done.release()

    client.set_message_sent_handler(sent)
    client.set_message_received_handler(lambda pdu, **kw: None)
    client.connect()
    client.bind_transceiver(system_id=system_id, password=password)
    reader = threading.Thread(target=lambda: _listen(client), daemon=True)
    reader.start()
    start = time.perf_counter()
    for i in range(count):
        slots.acquire()
        client.send_message(
            source_addr_ton=5,
            source_addr="BENCH",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=f"8526{i:07d}",
            short_message=b"raw bind rate",
            registered_delivery=1,
        )
    for _ in range(count):
        done.acquire()
    elapsed = time.perf_counter() - start
    return count / elapsed


def _listen(client: Any) -> None:
    # The benchmark closes the socket under the listener.
    with contextlib.suppress(Exception):
        client.listen()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "smsplatform.settings"
    os.environ["BENCH_SMPP_PASSWORD"] = "sim-pass"
    sys.path.insert(0, str(ROOT))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from decimal import Decimal

    from gateways.models import (
        Gateway,
        GatewayRate,
        MessagePart,
        MessageState,
        OutboundMessage,
        Provider,
        QuotaReservation,
    )
    from gateways.quotas import account_instance
    from gateways.smsc import SmscConfig, SmscProcess

    smsc = SmscProcess(
        SmscConfig(
            port=0, credentials={"bench": "sim-pass"}, log_path=str(tmp / "smsc.jsonl"), receipt_delay=(0.0, 0.01)
        ),
        cwd=ROOT,
    ).start()
    try:
        ceiling = raw_bind_rate(smsc.host, smsc.port, "bench", "sim-pass", min(args.messages, 50_000), args.window)
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
        account = account_instance()
        account.balance, account.monthly_quota_segments = Decimal("10000000"), 10_000_000
        account.save()
        QuotaReservation.objects.create(
            reference="bench", segments=args.messages, amount=Decimal("0.3") * args.messages
        )
        OutboundMessage.objects.bulk_create(
            [
                OutboundMessage(
                    gateway=gateway,
                    sender_id="#SHOPHK",
                    destination=f"+8526{i:07d}",
                    country="HK",
                    body="Weekend sale: 20% off everything. Reply STOP to opt out / 回覆STOP退訂"[:60],
                    encoding="GSM-7",
                    segments=1,
                    cost=Decimal("0.3"),
                    purpose="marketing",
                    quota_reference="bench",
                )
                for i in range(args.messages)
            ],
            batch_size=10_000,
        )
        start = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "smpp_worker", "--gateway", "bench-smpp", "--idle-exit", "2"],
            cwd=ROOT,
            env=os.environ.copy(),
        )
        final = (MessageState.DELIVERED, MessageState.FAILED)
        while True:
            time.sleep(0.5)
            done = OutboundMessage.objects.filter(state__in=final).count()
            if done >= args.messages or worker.poll() is not None:
                break
        elapsed = time.perf_counter() - start
        worker.terminate()
        worker.wait(30)
        delivered = OutboundMessage.objects.filter(state=MessageState.DELIVERED).count()
        parts = MessagePart.objects.count()
        stats = smsc.stats()
    finally:
        smsc.stop()
    db = "PostgreSQL" if os.environ["DATABASE_URL"].startswith("postgres") else "SQLite"
    print(f"# SMPP end to end, {args.messages} messages, window {args.window}, {db}, {os.cpu_count()} cores")
    print(
        f"dispatch to receipts recorded: {delivered} delivered in {elapsed:.1f}s = {delivered / elapsed:,.0f} msg/s "
        f"(parts {parts}, smsc accepted {stats.get('by_status', {})})"
    )
    print(f"raw smpplib bind rate (no database, same simulator): {ceiling:,.0f} submit_sm/s")


if __name__ == "__main__":
    main()
