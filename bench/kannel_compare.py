"""The peer side by side (issue 15): Kannel and our SMPP bind worker in front of the same simulator.

Usage: python bench/kannel_compare.py [--messages 20000] [--window 500] [--http-clients 32]
       [--dlr-mask 31] [--kannel-log-level 2] [--database-url URL]
Needs Kannel (``bash scripts/install_kannel.sh``; without it the script says so and exits 0) and
PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite; on
PostgreSQL it creates and drops its own database next to the one named).

One simulator (its own process, receipts 0-10 ms after each submit, receipt text as real SMSCs
send it), the same N messages (same destinations, same GSM-7 text) through each:

* ours: the messages are queued under one hold (as a campaign dispatch queues them), then a
  ``manage.py smpp_worker`` process binds; the clock runs from the first claim
  (``submit_started_at``) to the last final state recorded in the database (``final_at``).
* Kannel: Debian's bearerbox + smsbox (tests/support/kannel.py, as the Kannel tests start them;
  transceiver bind, the same SMPP window as ours, log files at ``--kannel-log-level``), sent
  through smsbox's sendsms interface by ``--http-clients`` threads with keep-alive connections,
  each request with ``dlr-mask`` (default 31, as the platform's Kannel adapter asks: the SMSC's
  acknowledgement, then the receipt) and a ``dlr-url`` pointing at a receiver (its own process)
  that records every callback. The clock runs from the first sendsms request to the last final
  delivery report (type 1, 2 or 16) received.

Prints both rates, the ratio (the goal: ours >= 5x Kannel), CPU seconds per process and the load
average: on a busy machine both figures drop, and the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import migrate, throwaway_database  # noqa: E402  (bench/ is on sys.path when run)

PASSWORD = "sim-pass"
BODY = "Your code is 482913. It expires in 10 minutes."
SENDER = "#SHOPHK"
FINAL_DLR = {1, 2, 16}  # delivered, undelivered, SMSC reject (4 buffered and 8 SMSC ack are not final)


def destination(i: int) -> str:
    return f"+85261{i:06d}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the delivery-report receiver (its own process) ----------------------------------------------


def _receiver(port: Any, finals: Any, stop: Any, results: Any) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    calls: list[tuple[float, int, int]] = []  # (monotonic time, message index, DLR type)
    final_seen: set[int] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for smsbox's HTTP client

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            try:
                n, kind = int(query["n"][0]), int(query["type"][0])
            except (KeyError, ValueError):
                n, kind = -1, -1
            now = time.monotonic()
            with lock:
                calls.append((now, n, kind))
                if kind in FINAL_DLR and n not in final_seen:
                    final_seen.add(n)
                    finals.value = len(final_seen)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # smsbox opens many connections at once; the default backlog (5) drops them

    server = Server(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    server.shutdown()
    with lock:
        results.put(calls)


class Receiver:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.port, self.finals = context.Value("i", 0), context.Value("i", 0)
        self._stop, self._results = context.Event(), context.Queue()
        self.process = context.Process(
            target=_receiver, args=(self.port, self.finals, self._stop, self._results), daemon=True
        )

    def start(self) -> Receiver:
        self.process.start()
        deadline = time.monotonic() + 20
        while not self.port.value:
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("the delivery-report receiver did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> list[tuple[float, int, int]]:
        self._stop.set()
        calls: list[tuple[float, int, int]] = self._results.get(timeout=60)
        self.process.join(10)
        return calls


# --- Kannel ---------------------------------------------------------------------------------------


def run_kannel(args: argparse.Namespace, smsc: Any, tmp: Path) -> dict[str, Any]:
    from tests.support.kannel import SENDSMS_PASSWORD, SENDSMS_USER, Kannel

    receiver = Receiver().start()
    kannel = Kannel(
        workdir=tmp / "kannel",
        smsc_host=smsc.host,
        smsc_port=smsc.port,
        system_id="kannel",
        smsc_password=PASSWORD,
        log_level=args.kannel_log_level,
        max_pending_submits=args.window,
    )
    kannel.start()
    bearerbox, smsbox = (p.pid for p in kannel.processes)
    dlr_base = f"http://127.0.0.1:{receiver.port.value}/dlr"
    counter = itertools.count()
    counter_lock = threading.Lock()
    answers: dict[str, int] = {}
    answers_lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", kannel.sendsms_port, timeout=60)
        mine: dict[str, int] = {}
        while True:
            with counter_lock:
                i = next(counter)
            if i >= args.messages:
                break
            query = urlencode(
                {
                    "username": SENDSMS_USER,
                    "password": SENDSMS_PASSWORD,
                    "from": SENDER,
                    "to": destination(i),
                    "text": BODY,
                    "coding": "0",
                    "charset": "UTF-8",
                    "dlr-mask": str(args.dlr_mask),
                    "dlr-url": f"{dlr_base}?n={i}&type=%d",
                }
            )
            try:
                connection.request("GET", f"/cgi-bin/sendsms?{query}")
                response = connection.getresponse()
                answer = f"{response.status} {response.read().decode(errors='replace').strip()[:40]}"
            except (OSError, http.client.HTTPException) as error:
                answer = f"error {type(error).__name__}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", kannel.sendsms_port, timeout=60)
            mine[answer] = mine.get(answer, 0) + 1
        connection.close()
        with answers_lock:
            for answer, n in mine.items():
                answers[answer] = answers.get(answer, 0) + n

    try:
        before = {
            "bearerbox": cpu_seconds(bearerbox),
            "smsbox": cpu_seconds(smsbox),
            "simulator": cpu_seconds(smsc.process.pid),
            "receiver": cpu_seconds(receiver.process.pid or 0),
            "http clients": time.process_time(),
        }
        threads = [threading.Thread(target=client) for _ in range(args.http_clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent_in = time.monotonic() - started
        clients_cpu = time.process_time() - before["http clients"]
        accepted = sum(n for answer, n in answers.items() if answer.startswith("202"))
        # Wait for the last final report; give up after 60 s without progress.
        last_count, last_progress = -1, time.monotonic()
        while receiver.finals.value < accepted and time.monotonic() - last_progress < 60:
            if receiver.finals.value != last_count:
                last_count, last_progress = receiver.finals.value, time.monotonic()
            time.sleep(0.2)
        cpu = {
            "bearerbox": cpu_seconds(bearerbox) - before["bearerbox"],
            "smsbox": cpu_seconds(smsbox) - before["smsbox"],
            "simulator": cpu_seconds(smsc.process.pid) - before["simulator"],
            "receiver": cpu_seconds(receiver.process.pid or 0) - before["receiver"],
            "http clients": clients_cpu,
        }
        loadavg = load()
    finally:
        kannel.kill()
        calls = receiver.stop()
    finals: dict[int, tuple[float, int]] = {}
    kinds: dict[int, int] = {}
    for at, n, kind in calls:
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind in FINAL_DLR and n not in finals:
            finals[n] = (at, kind)
    last = max((at for at, _ in finals.values()), default=started)
    elapsed = last - started
    delivered = sum(1 for _, kind in finals.values() if kind == 1)
    return {
        "rate": len(finals) / elapsed if elapsed > 0 else 0.0,
        "delivered_rate": delivered / elapsed if elapsed > 0 else 0.0,
        "elapsed": elapsed,
        "finals": len(finals),
        "delivered": delivered,
        "callbacks": dict(sorted(kinds.items())),
        "answers": answers,
        "sent_in": sent_in,
        "cpu": cpu,
        "load": loadavg,
    }


# --- ours -----------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace, smsc: Any) -> dict[str, Any]:
    from decimal import Decimal

    from django.db import connection, transaction
    from django.db.models import Count, Max, Min

    from gateways.models import (
        Gateway,
        GatewayRate,
        MessageState,
        OutboundMessage,
        Provider,
        QuotaReservation,
    )
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.kernel.actor import Actor

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
    account_top_up(
        actor=Actor.system("bench"), amount=Decimal("100000000"), reason="bench funds", idempotency_key="bench-kannel"
    )
    reference = "bench-compare"
    QuotaReservation.objects.create(reference=reference, segments=args.messages, amount=Decimal("0.3") * args.messages)
    with transaction.atomic():
        OutboundMessage.objects.bulk_create(
            [
                OutboundMessage(
                    gateway=gateway,
                    sender_id=SENDER,
                    destination=destination(i),
                    country="HK",
                    body=BODY,
                    encoding="GSM-7",
                    segments=1,
                    cost=Decimal("0.3"),
                    purpose="transactional",
                    quota_reference=reference,
                )
                for i in range(args.messages)
            ],
            batch_size=10_000,
        )
    smsc_cpu = cpu_seconds(smsc.process.pid)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "smpp_worker", "--gateway", "bench-smpp", "--idle-exit", "5"],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    pending = (MessageState.QUEUED, MessageState.SUBMITTING, MessageState.SUBMITTED)
    batch = OutboundMessage.objects.filter(quota_reference=reference)
    backends: dict[int, tuple[bool, float]] = {}
    worker_cpu = 0.0

    def sample() -> None:
        nonlocal worker_cpu
        # The worker's CPU includes its start (Django, bind): a few tenths of a second.
        worker_cpu = cpu_seconds(worker.pid) or worker_cpu
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
                for pid, kind in cursor.fetchall():
                    # the worker's connections (autovacuum apart); a backend gone keeps its last figure
                    backends[pid] = (kind == "client backend", cpu_seconds(pid) or backends.get(pid, (True, 0.0))[1])

    while True:
        time.sleep(0.5)
        sample()
        if not batch.filter(state__in=pending).exists() or worker.poll() is not None:
            break
    sample()
    smsc_cpu = cpu_seconds(smsc.process.pid) - smsc_cpu
    loadavg = load()
    worker.terminate()
    worker.wait(60)
    span = batch.aggregate(first=Min("submit_started_at"), last=Max("final_at"))
    elapsed = (span["last"] - span["first"]).total_seconds() if span["first"] and span["last"] else 0.0
    states = dict(batch.values_list("state").annotate(n=Count("id")).order_by())
    delivered = states.get(MessageState.DELIVERED, 0)
    final = sum(n for state, n in states.items() if state not in pending)
    return {
        "rate": final / elapsed if elapsed else 0.0,
        "delivered_rate": delivered / elapsed if elapsed else 0.0,
        "elapsed": elapsed,
        "finals": final,
        "delivered": delivered,
        "states": states,
        "cpu": {
            "worker": worker_cpu,
            "simulator": smsc_cpu,
            "db backends": sum(cpu for client, cpu in backends.values() if client),
        },
        "load": loadavg,
    }


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=500, help="SMPP window, ours and Kannel's")
    parser.add_argument("--http-clients", type=int, default=32, help="concurrent sendsms clients")
    parser.add_argument("--dlr-mask", type=int, default=31, help="Kannel's dlr-mask (31: as the adapter asks)")
    parser.add_argument("--kannel-log-level", type=int, default=2, help="0 debug .. 4 panic")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()

    from tests.support.kannel import KANNEL_INSTALLED

    if not KANNEL_INSTALLED:
        print("SKIPPED: Kannel is not installed (bearerbox/smsbox not found); run `bash scripts/install_kannel.sh`")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-kannel-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    with throwaway_database("kannel_compare", args.database_url, sqlite_dir=tmp) as url:
        if url is None:
            return 0
        os.environ["BENCH_SMPP_PASSWORD"] = PASSWORD
        migrate()
        run(args, tmp)
    return 0


def run(args: argparse.Namespace, tmp: Path) -> None:
    import django

    django.setup()
    from django.db import connection

    from tests.support.smsc import SmscConfig, SmscProcess, find_duplicates, read_log

    log = tmp / "smsc.jsonl"
    smsc = SmscProcess(
        SmscConfig(
            port=0,
            credentials={"bench": PASSWORD, "kannel": PASSWORD},
            log_path=str(log),
            receipt_delay=(0.0, 0.01),
        ),
        cwd=ROOT,
    ).start()
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    try:
        ours = run_ours(args, smsc)
        print(
            f"ours: {ours['finals']} final ({ours['delivered']} delivered), first submit to last receipt "
            f"{ours['elapsed']:.2f}s = {ours['rate']:,.0f} msg/s; states {ours['states']}; CPU s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in ours["cpu"].items())
            + f"; load average {ours['load']}",
            flush=True,
        )
        kannel = run_kannel(args, smsc, tmp)
        print(
            f"kannel: {kannel['finals']} final reports ({kannel['delivered']} delivered), first request to last "
            f"final report {kannel['elapsed']:.2f}s = {kannel['rate']:,.0f} msg/s (requests sent in "
            f"{kannel['sent_in']:.1f}s); sendsms answers {kannel['answers']}; callbacks by DLR type "
            f"{kannel['callbacks']}; CPU s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in kannel["cpu"].items())
            + f"; load average {kannel['load']}",
            flush=True,
        )
    finally:
        smsc.stop()
    records = list(read_log(log, smsc.run_id))
    by_system = {system: [r for r in records if r["system_id"] == system] for system in ("bench", "kannel")}
    ratio = ours["rate"] / kannel["rate"] if kannel["rate"] else float("inf")
    print(
        f"# Kannel vs our SMPP worker, {args.messages} messages each, same simulator, window {args.window}, "
        f"{db}, {os.cpu_count()} cores; Kannel: {args.http_clients} sendsms clients, dlr-mask {args.dlr_mask}, "
        f"log-level {args.kannel_log_level}"
    )
    print(
        f"ours {ours['rate']:,.0f} msg/s, Kannel {kannel['rate']:,.0f} msg/s: {ratio:.1f}x Kannel (goal >= 5x); "
        f"load average {load()}"
    )
    # CPU per message of the gateway itself (the simulator, the HTTP clients and the receiver apart):
    # less sensitive to a busy machine than the rates.
    ours_cpu = (ours["cpu"]["worker"] + ours["cpu"]["db backends"]) / args.messages * 1e6
    kannel_cpu = (kannel["cpu"]["bearerbox"] + kannel["cpu"]["smsbox"]) / args.messages * 1e6
    print(
        f"CPU per message: ours {ours_cpu:.0f} us (worker + its db backends), Kannel {kannel_cpu:.0f} us "
        f"(bearerbox + smsbox): {kannel_cpu / ours_cpu if ours_cpu else float('inf'):.1f}x less"
    )
    print(
        "checks: simulator records "
        + ", ".join(
            f"{system} {len(rows)} (submitted twice: {len(find_duplicates(rows))})"
            for system, rows in by_system.items()
        )
    )


if __name__ == "__main__":
    sys.exit(main())
