"""End-to-end SMPP throughput: queued messages -> bind worker -> SMSC simulator -> receipts in the DB.

Usage: python bench/smpp_throughput.py [--messages 100000] [--window 500] [--database-url URL] [--repeat N]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite;
on PostgreSQL it creates and drops its own database next to the one named).

What it measures, in one run against one simulator (its own process):

* the ceiling: the raw smpplib bind rate (``send_message`` + ``listen``, receipts requested, no
  database), and the simulator itself driven by a minimal struct-built client;
* end to end: a ``manage.py smpp_worker`` process is bound and idle; the messages are queued in
  one transaction; the clock runs from that commit until the last message's final state
  (``final_at``) is recorded -- claim (queued -> submitting), submit_sm with receipts requested,
  submit_sm_resp (provider id per part), deliver_sm receipt, all written to the database;
* receipt ingestion: ``receipts_ingest`` in batches for parts already recorded (the webhook path).

It then checks that every message is delivered, with one part and one receipt, and that the
simulator accepted no message twice (at most once). CPU seconds per process show who paid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402  (bench/ is on sys.path when run)
    migrate,
    server_settings,
    throwaway_database,
    wal_position,
    wal_since,
)

PASSWORD = "sim-pass"


def raw_bind_rate(host: str, port: int, system_id: str, password: str, count: int, window: int) -> float:
    """smpplib as its users use it: one transceiver, ``send_message`` within a window, ``listen``."""
    import smpplib.client

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
            destination_addr=f"8527{i:07d}",
            short_message=b"raw bind rate",
            registered_delivery=1,
        )
    for _ in range(count):
        done.acquire()
    elapsed = time.perf_counter() - start
    with contextlib.suppress(Exception):
        client.disconnect()
    return count / elapsed


def _listen(client: Any) -> None:
    # The benchmark closes the socket under the listener.
    with contextlib.suppress(Exception):
        client.listen()


def simulator_rate(host: str, port: int, system_id: str, password: str, count: int, window: int) -> float:
    """The simulator's own capacity: prebuilt submit_sm (receipts requested), every receipt acked."""
    header = struct.Struct(">IIII")
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bind = f"{system_id}\0{password}\0\0".encode() + bytes((0x34, 0, 0, 0))
    sock.sendall(header.pack(16 + len(bind), 0x09, 0, 1) + bind)
    length = header.unpack(sock.recv(16))[0]
    if length > 16:
        sock.recv(length - 16)
    text = b"simulator rate"
    sent = answered = receipts = 0
    buf = bytearray()
    out: list[bytes] = []
    start = time.perf_counter()
    while answered < count or receipts < count:
        while sent < count and sent - answered < window:
            sent += 1
            body = b"\0\x05\0BENCH\0\x01\x01" + f"8528{sent:07d}".encode() + b"\0\0\0\0\0\0\x01\0\0\0"
            body += bytes((len(text),)) + text
            out.append(header.pack(16 + len(body), 0x04, 0, sent + 1) + body)
        if out:
            sock.sendall(b"".join(out))
            out = []
        data = sock.recv(1 << 20)
        if not data:
            break
        buf += data
        pos = 0
        while len(buf) - pos >= 16:
            length, command, _status, sequence = header.unpack_from(buf, pos)
            if len(buf) - pos < length:
                break
            if command == 0x80000004:
                answered += 1
            elif command == 0x05:
                receipts += 1
                out.append(header.pack(17, 0x80000005, 0, sequence) + b"\0")
            elif command == 0x15:
                out.append(header.pack(16, 0x80000015, 0, sequence))
            pos += length
        del buf[:pos]
    elapsed = time.perf_counter() - start
    if out:
        sock.sendall(b"".join(out))
    sock.close()
    return count / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--ceiling-messages", type=int, default=50_000)
    parser.add_argument("--receipts", type=int, default=50_000, help="receipts for the ingestion figure")
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs (median and best reported)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--worker-args", default="", help="more of the worker's command line, e.g. '--statement-rows 2000'"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    with throwaway_database("smpp_throughput", args.database_url, sqlite_dir=tmp) as url:
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
    from django.db.models import Count, Max
    from django.utils import timezone

    from gateways.models import (
        DeliveryReceipt,
        Gateway,
        GatewayRate,
        MessagePart,
        MessageState,
        OutboundMessage,
        Provider,
        QuotaReservation,
    )
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.kernel.actor import Actor
    from tests.support.smsc import SmscConfig, SmscProcess, find_duplicates, read_log

    log = tmp / "smsc.jsonl"
    smsc = SmscProcess(
        SmscConfig(
            port=0,
            credentials={"bench": PASSWORD, "ceiling": PASSWORD, "simulator": PASSWORD},
            log_path=str(log),
            receipt_delay=(0.0, 0.01),
        ),
        cwd=ROOT,
    ).start()
    assert smsc.process is not None
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    results: list[dict[str, float]] = []
    try:
        ceiling_n = min(args.messages, args.ceiling_messages)
        ceiling = raw_bind_rate(smsc.host, smsc.port, "ceiling", PASSWORD, ceiling_n, args.window)
        simulator = simulator_rate(smsc.host, smsc.port, "simulator", PASSWORD, ceiling_n, args.window)
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
        account.monthly_quota_segments = 100_000_000
        account.save(update_fields=["monthly_quota_segments", "updated_at"])
        if account.balance < Decimal("100000000"):  # funded through the audited service, as operations would
            account_top_up(
                actor=Actor.system("bench"),
                amount=Decimal("100000000") - account.balance,
                reason="bench funds",
                idempotency_key="bench-top-up-1",
            )
        pending = (MessageState.QUEUED, MessageState.SUBMITTING, MessageState.SUBMITTED)
        for attempt in range(args.repeat):
            reference = f"bench-{attempt}"
            QuotaReservation.objects.create(
                reference=reference, segments=args.messages, amount=Decimal("0.3") * args.messages
            )
            binds = int(smsc.stats().get("binds", 0))
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "smpp_worker",
                    "--gateway",
                    "bench-smpp",
                    "--idle-exit",
                    "600",
                    *shlex.split(args.worker_args),
                ],
                cwd=ROOT,
                env=os.environ.copy(),
            )
            while int(smsc.stats().get("binds", 0)) <= binds:  # bound and idle
                if worker.poll() is not None:
                    raise RuntimeError("the worker exited before binding")
                time.sleep(0.05)
            smsc_cpu, worker_cpu = cpu_seconds(smsc.process.pid), cpu_seconds(worker.pid)
            with transaction.atomic():
                OutboundMessage.objects.bulk_create(
                    [
                        OutboundMessage(
                            gateway=gateway,
                            sender_id="#SHOPHK",
                            destination=f"+8526{attempt:02d}{i:05d}",
                            country="HK",
                            body="Weekend sale: 20% off everything. Reply STOP to opt out / 回覆STOP退訂"[:60],
                            encoding="GSM-7",
                            segments=1,
                            cost=Decimal("0.3"),
                            purpose="marketing",
                            quota_reference=reference,
                        )
                        for i in range(args.messages)
                    ],
                    batch_size=10_000,
                )
            committed = timezone.now()
            wal_start = wal_position()
            backends: dict[int, tuple[bool, float]] = {}
            while True:
                time.sleep(1.0)
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()"
                        )
                        for pid, kind in cursor.fetchall():
                            # the worker's connections; autovacuum on our tables apart
                            backends[pid] = (kind == "client backend", cpu_seconds(pid))
                left = OutboundMessage.objects.filter(gateway=gateway, state__in=pending).exists()
                if not left or worker.poll() is not None:
                    break
            smsc_cpu, worker_cpu = cpu_seconds(smsc.process.pid) - smsc_cpu, cpu_seconds(worker.pid) - worker_cpu
            wal_bytes = wal_since(wal_start)
            worker.terminate()
            worker.wait(60)
            batch = OutboundMessage.objects.filter(quota_reference=reference)
            last = batch.aggregate(last=Max("final_at"))["last"]
            elapsed = (last - committed).total_seconds() if last else float("inf")
            states = dict(batch.values_list("state").annotate(n=Count("id")).order_by())
            delivered = states.get(MessageState.DELIVERED, 0)
            results.append(
                {
                    "rate": delivered / elapsed,
                    "elapsed": elapsed,
                    "delivered": delivered,
                    "worker_cpu": worker_cpu,
                    "smsc_cpu": smsc_cpu,
                    "db_cpu": sum(cpu for client, cpu in backends.values() if client),
                    "vacuum_cpu": sum(cpu for client, cpu in backends.values() if not client),
                    "wal_bytes": wal_bytes,
                }
            )
            print(
                f"run {attempt + 1}: {delivered} delivered in {elapsed:.1f}s = {delivered / elapsed:,.0f} msg/s; "
                f"states {states}; CPU s: worker {worker_cpu:.1f}, smsc {smsc_cpu:.1f}, "
                f"worker's db backends {results[-1]['db_cpu']:.1f}, autovacuum {results[-1]['vacuum_cpu']:.1f}"
                + (
                    f"; WAL {wal_bytes / 1e6:,.0f} MB = {wal_bytes / args.messages:,.0f} bytes/msg" if wal_bytes else ""
                ),
                flush=True,
            )
        receipts_rate = ingestion_rate(gateway, args.receipts)
        receipts_rate_2 = ingestion_rate(gateway, args.receipts, threads=2)
        stats = smsc.stats()
    finally:
        smsc.stop()
    records = [r for r in read_log(log, smsc.run_id) if r["system_id"] == "bench"]
    accepted = sum(1 for r in records if r["outcome"] == "accepted")
    duplicates = find_duplicates(records)
    parts = MessagePart.objects.filter(gateway__code="bench-smpp").count()
    receipts = DeliveryReceipt.objects.filter(gateway__code="bench-smpp").count()
    rates = [r["rate"] for r in results]
    print(
        f"# SMPP end to end, {args.messages} messages x {args.repeat}, window {args.window}, {db}, "
        f"{os.cpu_count()} cores"
    )
    if db == "PostgreSQL":
        print(f"PostgreSQL settings: {server_settings()}")
    print(
        f"queued -> receipts recorded: median {statistics.median(rates):,.0f} msg/s, best {max(rates):,.0f} msg/s "
        f"({', '.join(f'{r:,.0f}' for r in rates)})"
    )
    per = args.messages / 1e6
    cpu = results[-1]
    print(
        f"CPU per message (last run): worker {cpu['worker_cpu'] / per:.0f} us, simulator {cpu['smsc_cpu'] / per:.0f} us, "
        f"its db backends {cpu['db_cpu'] / per:.0f} us (+ autovacuum {cpu['vacuum_cpu'] / per:.0f} us)"
    )
    print(
        f"checks: parts {parts}, receipts stored {receipts}, simulator accepted {accepted} for "
        f"{args.messages * args.repeat} messages, submitted twice: {len(duplicates)}, smsc {stats.get('by_status')}"
    )
    print(
        f"receipt ingestion (receipts_ingest, batches of 2000, parts recorded): {receipts_rate:,.0f}/s "
        f"from one connection, {receipts_rate_2:,.0f}/s from two at once"
    )
    print(f"raw smpplib bind rate (no database, same simulator): {ceiling:,.0f} submit_sm/s")
    print(f"simulator alone (struct-built client, same simulator): {simulator:,.0f} submit_sm/s with receipts")


def ingestion_rate(gateway: Any, count: int, batch: int = 2000, threads: int = 1) -> float:
    """receipts_ingest for submitted single-part messages, as webhooks deliver them: in batches,
    from one connection or from ``threads`` at once (disjoint receipts, as concurrent requests)."""
    from decimal import Decimal

    from gateways.adapters.base import ReceiptEvent
    from gateways.delivery.receipts import receipts_ingest
    from gateways.models import MessagePart, MessageState, OutboundMessage

    messages = OutboundMessage.objects.bulk_create(
        [
            OutboundMessage(
                gateway=gateway,
                sender_id="#SHOPHK",
                destination=f"+8525{i:07d}",
                country="HK",
                body="x",
                encoding="GSM-7",
                segments=1,
                cost=Decimal("0.3"),
                purpose="marketing",
                state=MessageState.SUBMITTED,
                quota_reference=f"ingest-{threads}",
            )
            for i in range(count)
        ],
        batch_size=10_000,
    )
    MessagePart.objects.bulk_create(
        [MessagePart(message=m, part_number=1, provider_message_id=f"in-{m.pk}", gateway=gateway) for m in messages],
        batch_size=10_000,
    )
    from django.db import connection

    events = [ReceiptEvent(f"in-{m.pk}", MessageState.DELIVERED, "DELIVRD") for m in messages]
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]

    def ingest(mine: list[list[Any]]) -> None:
        try:
            for part in mine:
                receipts_ingest(gateway=gateway, events=part)
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()

    start = time.perf_counter()
    if threads == 1:
        ingest(batches)
    else:
        runners = [threading.Thread(target=ingest, args=(batches[k::threads],)) for k in range(threads)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
    elapsed = time.perf_counter() - start
    delivered = OutboundMessage.objects.filter(
        quota_reference=f"ingest-{threads}", state=MessageState.DELIVERED
    ).count()
    assert delivered == count, f"{delivered} of {count} delivered"
    return count / elapsed


if __name__ == "__main__":
    main()
