"""Receipt ingestion rate: N submitted messages, their receipts ingested in batches.

Usage: python bench/receipts_bench.py [--messages 50000] [--batch 2000] [--database-url URL]
Uses a throwaway database (PostgreSQL by default if BENCH_DATABASE_URL is set, else SQLite).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "smsplatform.settings"
    # Outside debug the settings refuse the public default key: benches bring their own.
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-" + "x" * 40)
    sys.path.insert(0, str(ROOT))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from decimal import Decimal

    from gateways.adapters.base import ReceiptEvent
    from gateways.delivery.receipts import receipts_ingest
    from gateways.models import Gateway, MessagePart, MessageState, OutboundMessage, Provider

    gateway = Gateway.objects.create(code="bench", name="bench", provider=Provider.SMPP, countries=["HK"])
    messages = OutboundMessage.objects.bulk_create(
        [
            OutboundMessage(
                gateway=gateway,
                sender_id="BENCH",
                destination=f"+8525{i:07d}",
                country="HK",
                body="x",
                encoding="GSM-7",
                segments=1,
                cost=Decimal("0.3"),
                purpose="marketing",
                state=MessageState.SUBMITTED,
                quota_reference="bench",
            )
            for i in range(args.messages)
        ],
        batch_size=5000,
    )
    MessagePart.objects.bulk_create(
        [MessagePart(message=m, part_number=1, provider_message_id=f"p{m.pk}", gateway=gateway) for m in messages],
        batch_size=5000,
    )
    events = [ReceiptEvent(f"p{m.pk}", MessageState.DELIVERED, "DELIVRD") for m in messages]
    start = time.perf_counter()
    for i in range(0, len(events), args.batch):
        receipts_ingest(gateway=gateway, events=events[i : i + args.batch])
    elapsed = time.perf_counter() - start
    delivered = OutboundMessage.objects.filter(state=MessageState.DELIVERED).count()
    db = "PostgreSQL" if os.environ["DATABASE_URL"].startswith("postgres") else "SQLite"
    print(
        f"receipts ingested: {len(events)} in {elapsed:.2f}s = {len(events) / elapsed:,.0f}/s "
        f"(batches of {args.batch}, {db}); delivered messages: {delivered}"
    )


if __name__ == "__main__":
    main()
