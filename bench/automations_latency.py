"""Transactional flow latency with and without a campaign on the same SMPP gateway: event intake ->
submit_sm at the SMSC.

Usage: python bench/automations_latency.py [--recipients 100000] [--events 100] [--event-interval S]
                                           [--tick-interval 5] [--window 500] [--database-url URL]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite;
on PostgreSQL it creates and drops its own database next to the one named). Modelled on
bench/otp_latency.py.

One run, one simulator (its own process, its JSON-lines log of every submit_sm with the time it
was read), one SMPP gateway, one ``manage.py smpp_worker`` process, an active transactional flow
("order shipped": one message per event) on that gateway, and the beat's ``automations.tick``
(scan, then send what is due) called every ``--tick-interval`` seconds by a thread of this
process (production: the beat schedule's 5 s, smsplatform/schedules.py):

1. no campaign: the worker is bound and idle; ``--events`` ``order_shipped`` events are posted
   through ``events_ingest`` (what POST /api/v1/events/batch calls after authenticating the
   source), one per batch, ``--event-interval`` seconds apart;
2. campaign: the worker is stopped, ``--recipients`` queued campaign messages are written in bulk
   (as the dispatch writes them), the worker is started again and, once it is sending them, the
   same number of events is posted at the same spacing. Only events posted while campaign
   messages were still being submitted count as "with the campaign".

Latency of one event: from just before ``events_ingest`` to the simulator's record of its
message's submit_sm (same host, same clock); each event's contact has a number of its own.
Parts: intake -> message queued by the tick (the beat's wait is most of it), queued -> claimed by
the worker, claimed -> at the SMSC. The load average is printed (a shared machine: figures under
load are labelled so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import migrate, throwaway_database  # noqa: E402  (bench/ is on sys.path when run)
from smpp_bench import (  # noqa: E402
    PASSWORD,
    campaign_messages_write,
    gateway_on,
    latency_summary,
    order_shipped_flow,
    percentile,
    smsc_start,
    start_worker,
    stop_worker,
    wait_sent,
)

GATEWAY = "bench-flow"
EVENT_PREFIX = "+85292"  # the flow's contacts: +85292 + 6 digits; campaign numbers: +8526 + 7 digits


def load_label() -> str:
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    state = "loaded" if one > cores else "idle-ish"
    return f"{state}: load average {one:.2f} {five:.2f} {fifteen:.2f} on {cores} cores"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000, help="queued campaign messages")
    parser.add_argument("--events", type=int, default=100, help="events per phase")
    parser.add_argument("--event-interval", type=float, default=None, help="seconds between events")
    parser.add_argument("--tick-interval", type=float, default=5.0, help="seconds between ticks (beat: 5)")
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--broker",
        default=os.environ.get("BENCH_CELERY_BROKER_URL"),
        help="Celery broker of the priority tick's worker (e.g. redis://127.0.0.1:6379/13); "
        "default a filesystem queue (polled each second: it adds up to 1 s)",
    )
    parser.add_argument(
        "--no-priority-worker",
        action="store_true",
        help="no Celery worker on the priority queue: events wait for the beat's tick (the old figure)",
    )
    args = parser.parse_args()
    if args.event_interval is None:
        # Spread over the campaign's expected run at 3,000 msg/s (this machine's bind worker).
        args.event_interval = max(0.05, min(1.0, args.recipients / 3_000 / max(1, args.events)))
    tmp = Path(tempfile.mkdtemp(prefix="flowlatency-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    with throwaway_database("automations_latency", args.database_url, sqlite_dir=tmp) as url:
        if url is None:
            return
        os.environ["BENCH_SMPP_PASSWORD"] = PASSWORD
        os.environ["CELERY_BROKER_URL"] = args.broker or f"filesystem://{tmp}"
        migrate()
        run(args, tmp)


def setup(args: argparse.Namespace, smsc: Any) -> tuple[Any, Any]:
    """The gateway, sender, funds, template, event source, the flow's contacts and the flow."""
    from datetime import timedelta

    from django.utils import timezone

    from campaigns.automations.models import EventSource
    from contacts.models import Contact

    gateway = gateway_on(smsc, GATEWAY, window=args.window)
    Contact.objects.bulk_create(
        [
            Contact(phone=f"{EVENT_PREFIX}{(n * 1009) % 1_000_000:06d}", country="HK", language="en", source="bench")
            for n in range(1, 2 * args.events + 1)
        ]
    )
    order_shipped_flow(gateway, timezone.now() - timedelta(minutes=5))
    source = EventSource.objects.create(code="bench", name="bench")
    return gateway, source


def run(args: argparse.Namespace, tmp: Path) -> None:
    import django

    django.setup()

    from django.db import connection

    from gateways.models import MessageState, OutboundMessage

    log = tmp / "smsc.jsonl"
    smsc = smsc_start(tmp)
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    print(f"# transactional flow latency, {db}; {load_label()} at the start", flush=True)
    gateway, source = setup(args, smsc)
    phones = iter([f"{EVENT_PREFIX}{(n * 1009) % 1_000_000:06d}" for n in range(1, 2 * args.events + 1)])
    posted: dict[str, tuple[str, float]] = {}  # destination (no '+') -> (phase, intake time)
    ticker_stop = threading.Event()
    ticks: list[float] = []
    ticker = threading.Thread(target=_ticker, args=(args.tick_interval, ticker_stop, ticks), daemon=True)
    ticker.start()
    worker: subprocess.Popen[bytes] | None = None
    priority: subprocess.Popen[bytes] | None = None
    campaign_window = (0.0, 0.0)
    try:
        if not args.no_priority_worker:
            priority = start_priority_worker(tmp)
        worker = start_worker(smsc, GATEWAY)
        event_phase("idle", args, source, phones, posted)
        wait_sent(GATEWAY, 60, purpose="transactional", expected=len(posted))
        stop_worker(worker)
        reference = "campaign:bench-flow"
        took = campaign_messages_write(gateway, args.recipients, reference)
        print(f"campaign: {args.recipients:,} queued messages written in {took:.1f}s")
        worker = start_worker(smsc, GATEWAY)
        campaign_start = time.time()
        while not OutboundMessage.objects.filter(quota_reference=reference).exclude(state=MessageState.QUEUED).exists():
            time.sleep(0.05)
        event_phase("campaign", args, source, phones, posted)
        wait_sent(GATEWAY, max(120, args.recipients / 500), purpose="transactional", expected=len(posted))
        campaign_window = (campaign_start, time.time())
        stop_worker(worker)
        worker = None
        stats = smsc.stats()
    finally:
        ticker_stop.set()
        ticker.join(60)
        if worker is not None:
            stop_worker(worker)
        if priority is not None:
            stop_worker(priority)
        smsc.stop()
    report(args, log, smsc.run_id, posted, campaign_window, stats, db)


def _ticker(interval: float, stop: threading.Event, ticks: list[float]) -> None:
    """The beat: automations.tick every ``interval`` seconds (its own database connection)."""
    from django.db import connection

    from campaigns.automations.engine import flow_tick

    try:
        next_at = time.monotonic()
        while not stop.is_set():
            flow_tick()
            ticks.append(time.time())
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        connection.close()


def event_phase(
    phase: str, args: argparse.Namespace, source: Any, phones: Any, posted: dict[str, tuple[str, float]]
) -> None:
    """One ``order_shipped`` event per batch, as POST /api/v1/events/batch stores it."""
    from django.utils import timezone

    from campaigns.automations.intake import events_ingest

    next_at = time.monotonic()
    for _ in range(args.events):
        phone = next(phones)
        at = time.time()
        answer = events_ingest(
            source=source,
            events=[
                {
                    "event_id": f"evt-{phone[1:]}",
                    "type": "order_shipped",
                    "phone": phone,
                    "occurred_at": timezone.now().isoformat(),
                    "order_id": f"A-{phone[-6:]}",
                }
            ],
        )
        assert answer["accepted"] == 1, answer
        posted[phone[1:]] = (phase, at)
        next_at += args.event_interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def report(
    args: argparse.Namespace,
    log: Path,
    run_id: str,
    posted: dict[str, tuple[str, float]],
    campaign_window: tuple[float, float],
    stats: dict[str, Any],
    db: str,
) -> None:
    from gateways.models import OutboundMessage

    first_at: dict[str, float] = {}
    campaign_times: list[float] = []
    accepted: Counter[str] = Counter()
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("kind") != "submit_sm" or record.get("run") != run_id:
                continue
            destination = record["destination"]
            if record["outcome"] == "accepted":
                accepted[destination] += 1
            if destination.startswith(EVENT_PREFIX[1:]):
                first_at.setdefault(destination, float(record["time"]))
            elif record["outcome"] == "accepted":
                campaign_times.append(float(record["time"]))
    last_campaign = max(campaign_times, default=0.0)
    idle: list[float] = []
    loaded: list[float] = []
    after: list[float] = []
    missing = 0
    for destination, (phase, at) in posted.items():
        sent = first_at.get(destination)
        if sent is None:
            missing += 1
        elif phase == "idle":
            idle.append(max(0.0, sent - at))
        elif at <= last_campaign:
            loaded.append(max(0.0, sent - at))
        else:
            after.append(max(0.0, sent - at))
    rows = {
        destination[1:]: (created.timestamp(), started.timestamp())
        for destination, created, started in OutboundMessage.objects.filter(
            purpose="transactional", submit_started_at__isnull=False
        ).values_list("destination", "created_at", "submit_started_at")
        if started is not None
    }
    parts: dict[str, list[list[float]]] = {"idle": [[], [], []], "campaign": [[], [], []]}
    for destination, (phase, at) in posted.items():
        sent = first_at.get(destination)
        if sent is None or destination not in rows or (phase == "campaign" and at > last_campaign):
            continue
        created, started = rows[destination]
        for i, value in enumerate((created - at, started - created, sent - started)):
            parts[phase][i].append(value * 1000)
    duplicates = [d for d, n in accepted.items() if n > 1]
    rate = len(campaign_times) / (last_campaign - min(campaign_times)) if len(campaign_times) > 1 else 0.0
    print(f"# event intake -> submit_sm at the SMSC, transactional flow, {db}; {load_label()} at the end")
    print(
        f"campaign: {args.recipients:,} recipients on the same gateway (window {args.window}), "
        f"{len(campaign_times):,} submitted at {rate:,.0f} msg/s over {campaign_window[1] - campaign_window[0]:.0f}s"
    )
    print(
        f"events: {args.events} per phase, one every {args.event_interval * 1000:.0f} ms; "
        f"tick every {args.tick_interval:g} s; "
        + ("no priority worker" if args.no_priority_worker else "priority tick on a Celery worker (sms_priority)")
    )
    print(latency_summary("no campaign           ", idle, "event"))
    print(latency_summary("with the campaign     ", loaded, "event"))
    if after:
        print(latency_summary("posted after its end  ", after, "event"))
    for phase, (queued_ms, claim_ms, link_ms) in parts.items():
        if queued_ms:
            print(
                f"  {phase:8s} p50/p99 ms: intake -> queued by the tick {percentile(queued_ms, 50):.0f}/"
                f"{percentile(queued_ms, 99):.0f}, queued -> claimed {percentile(claim_ms, 50):.0f}/"
                f"{percentile(claim_ms, 99):.0f}, claimed -> at the SMSC {percentile(link_ms, 50):.0f}/"
                f"{percentile(link_ms, 99):.0f}"
            )
    print(
        f"checks: events never seen at the SMSC {missing}, submitted twice {len(duplicates)}, "
        f"smsc {stats.get('by_status')}"
    )


def start_priority_worker(tmp: Path) -> subprocess.Popen[bytes]:
    """A Celery worker on the priority queue only (it runs automations.tick_priority, which the
    intake starts for a transactional flow's events), started from an empty queue."""
    from smsplatform.celery import app

    app.control.purge()
    log = tmp / "celery-priority.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "smsplatform",
            "worker",
            "-Q",
            "sms_priority",
            "-P",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
            "-f",
            str(log),
        ],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"the priority worker did not start: {log}")
    print("priority worker: ready", flush=True)
    return worker


if __name__ == "__main__":
    main()
