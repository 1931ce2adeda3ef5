"""OTP latency with and without a campaign on the same SMPP gateway: OTP request -> submit_sm at the SMSC.

Usage: python bench/otp_latency.py [--recipients 1000000] [--otps 400] [--otp-interval S] [--window 500]
                                   [--rate 0] [--lanes split|shared] [--database-url URL]
                                   [--disk-probe DIR] [--breakdown]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite;
on PostgreSQL it creates and drops its own database next to the one named).

One run, one simulator (its own process, its JSON-lines log of every submit_sm with the time it
was read), one gateway and its bind workers (``manage.py smpp_worker``): with ``--lanes split``
(the default, the deployment the README ("Gateways") recommends for a gateway that carries OTP beside
campaigns) a priority-lane worker and a bulk-lane worker at ``--nice 10``, each on a bind of its
own; with ``--lanes shared`` one worker sends both lanes on one bind.

1. no campaign: the worker is bound and idle; ``--otps`` OTPs are requested ``--otp-interval``
   seconds apart;
2. campaign: the worker is stopped, ``--recipients`` queued campaign messages are written in bulk
   (as the dispatch writes them, like bench/smpp_throughput.py), the worker is started again and,
   once it is bound and sending them, the same number of OTPs is requested at the same spacing.
   Only OTPs requested while campaign messages were still being submitted count as "with the
   campaign" (the others are reported apart).

Latency of one OTP: from just before ``otp_request(phone)`` (which queues it: the OTP app's send
will replace its body) to the simulator's record of its submit_sm (same host, same clock). Each
OTP goes to a number of its own, so the simulator's record names it. p50/p95/p99 are printed
for both phases with the campaign's own rate, the simulator's duplicate check and the load
average (the machine may be shared: figures taken under load are labelled so), and this host's
kernel writeback settings; with ``--disk-probe DIR`` the storage's own flush latency in each phase
(bench/disk_probe.py), measured beside the database's WAL.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402  (bench/ is on sys.path when run)
    buffers_written_by_backends,
    checkpoints,
    migrate,
    server_settings,
    throwaway_database,
    wal_position,
    wal_since,
)
from disk_probe import DiskProbe, host_writeback  # noqa: E402
from smpp_bench import (  # noqa: E402
    PASSWORD,
    SENDER,
    campaign_messages_write,
    gateway_on,
    latency_summary,
    percentile,
    smsc_start,
    start_worker,
    stop_worker,
    wait_sent,
)

GATEWAY = "bench-otp"
OTP_PREFIX = "+85292"  # OTP numbers: +85292 + 6 digits; campaign numbers: +8526 + 7 digits


_SEND: dict[str, Any] = {}  # the approved OTP template and the sending actor (otp_setup)


def otp_setup() -> None:
    """An OTP template requested by a compliance user and approved by an approver, through the
    governance spine as in production, and the technical user whose integration sends the codes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from campaigns.otp.services import otp_template_save
    from compliance.roles import Role
    from compliance.services import action_request_approve
    from smsplatform.kernel.actor import Actor, Channel

    users = {}
    for role in (Role.COMPLIANCE, Role.APPROVER, Role.TECHNICAL):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-{role}")
        user.groups.add(Group.objects.get(name=role))
        users[role] = Actor(user=user, channel=Channel.API, token_name="bench")  # noqa: S106 - a token label
    held = otp_template_save(
        actor=users[Role.COMPLIANCE],
        idempotency_key=f"bench-otp-template-{uuid.uuid4()}",
        content={
            "name": f"Bench login code {uuid.uuid4().hex[:6]}",
            "purpose": "login",
            "body_en": "Your ShopHK code is {code}. Valid for {minutes} minutes.",
            "body_zh_hant": "你的ShopHK驗證碼是{code}，{minutes}分鐘內有效。",
            "code_length": 6,
            "alphabet": "digits",
            "allowed_countries": ["HK"],
            "sender_id": SENDER,
            "gateway": GATEWAY,
            # The bench's integration sends a few hundred codes an hour to distinct phones.
            "limits": {
                "token": {"count": 100_000, "window_seconds": 3600},
                "country": {"count": 100_000, "window_seconds": 3600},
            },
        },
    )
    outcome = action_request_approve(
        actor=users[Role.APPROVER], action_request_id=held["action_request_id"], reason="bench template"
    )
    assert outcome["state"] == "executed", outcome
    from campaigns.otp.models import OtpTemplate

    _SEND["template_id"] = OtpTemplate.objects.order_by("-pk").values_list("pk", flat=True)[0]
    _SEND["actor"] = users[Role.TECHNICAL]


def otp_request(phone: str) -> int:
    """The OTP request as the platform serves it: campaigns.otp's otp_send (approved template, abuse
    defence, verification, the code's SMS queued in the priority lane and handed to its gateway's
    sender after the commit). Returns the message id; the code itself is never seen here."""
    from campaigns.otp.services import otp_send

    answer = otp_send(
        actor=_SEND["actor"],
        template_id=_SEND["template_id"],
        phone=phone,
        client_ip=f"10.{int(phone[-6:-4])}.{int(phone[-4:-2])}.{int(phone[-2:])}",  # each person their own IP
        idempotency_key=f"bench-otp-{uuid.uuid4()}",
    )
    assert answer["status"] == "executed", answer
    return int(answer["result"]["message_id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1_000_000, help="queued campaign messages")
    # 400 a phase: a p99 from the 4 slowest, not from the one or two slowest of a smaller sample.
    parser.add_argument("--otps", type=int, default=400, help="OTPs per phase")
    parser.add_argument(
        "--otp-interval",
        type=float,
        default=None,
        help="seconds between OTP requests (default: spread over the campaign's expected run at 10,000 msg/s)",
    )
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--rate", type=int, default=0, help="the gateway's max submit_sm/s (0: unlimited)")
    parser.add_argument(
        "--lanes",
        choices=("split", "shared"),
        default="split",
        help="split: a priority-lane worker and a bulk-lane worker (--nice 10); shared: one worker",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--bulk-worker-args",
        default="",
        help="more of the bulk-lane worker's command line, e.g. '--statement-rows 2000' (split lanes)",
    )
    parser.add_argument(
        "--disk-probe",
        metavar="DIR",
        help="measure the storage's flushes beside the run in DIR, a directory on the device the "
        "database's WAL is on (bench/disk_probe.py): the database on this host",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="time each request's own CPU, statements and commits (adds a little to every request)",
    )
    args = parser.parse_args()
    if args.otp_interval is None:
        args.otp_interval = max(0.05, args.recipients / 10_000 / max(1, args.otps))
    tmp = Path(tempfile.mkdtemp(prefix="otpbench-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    with throwaway_database("otp_latency", args.database_url, sqlite_dir=tmp) as url:
        if url is None:
            return
        os.environ["BENCH_SMPP_PASSWORD"] = PASSWORD
        migrate()
        run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> None:
    import django

    django.setup()

    from django.db import connection

    from gateways.models import (
        MessageState,
        OutboundMessage,
    )

    log = tmp / "smsc.jsonl"
    smsc = smsc_start(tmp)
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    gateway = gateway_on(smsc, GATEWAY, window=args.window, rate=args.rate or 100_000)
    requested: dict[str, tuple[str, float]] = {}  # OTP destination (no '+') -> (phase, request time)
    # Distinct numbers in distinct ranges (the pumping defence blocks a burst into one range).
    phones = (f"{OTP_PREFIX}{(n * 1009) % 1_000_000:06d}" for n in range(1, 1_000_000))
    otp_setup()
    workers: list[subprocess.Popen[bytes]] = []

    def start_workers() -> list[subprocess.Popen[bytes]]:
        if args.lanes == "shared":
            return [start_worker(smsc, GATEWAY)]
        return [
            start_worker(smsc, GATEWAY, "--lane", "priority"),
            start_worker(
                smsc,
                GATEWAY,
                "--lane",
                "bulk",
                "--nice",
                os.environ.get("BULK_NICE", "10"),
                *shlex.split(args.bulk_worker_args),
            ),
        ]

    campaign_window: tuple[float, float] = (0.0, 0.0)
    idle_window: tuple[float, float] = (0.0, 0.0)
    disk = DiskProbe(args.disk_probe, tmp / "disk-probe.txt") if args.disk_probe else None
    checkpoints_during = 0
    campaign_wal = 0
    backend_writes = 0
    try:
        # 1. No campaign: bound and idle.
        workers = start_workers()
        if disk:
            disk.start()
        idle_start = time.time()
        otp_phase("idle", args, phones, requested)
        idle_window = (idle_start, time.time())
        wait_sent(GATEWAY, 30)
        stop_worker(*workers)
        # 2. The campaign: written in bulk while the worker is stopped, then sent.
        reference = "campaign:bench-otp"
        took = campaign_messages_write(gateway, args.recipients, reference)
        print(f"campaign: {args.recipients:,} queued messages written in {took:.1f}s", flush=True)
        workers = start_workers()
        checkpoints_before = checkpoints()
        wal_start = wal_position()
        backend_writes_before = buffers_written_by_backends()
        campaign_start = time.time()
        # Start once the campaign is flowing (the worker has claimed ahead and is writing).
        while not OutboundMessage.objects.filter(quota_reference=reference).exclude(state=MessageState.QUEUED).exists():
            time.sleep(0.05)
        otp_phase("campaign", args, phones, requested)
        wait_sent(GATEWAY, max(60, args.recipients / 1_000))
        campaign_end = time.time()
        campaign_window = (campaign_start, campaign_end)
        checkpoints_during = checkpoints() - checkpoints_before
        campaign_wal = wal_since(wal_start)
        backend_writes = buffers_written_by_backends() - backend_writes_before
        stop_worker(*workers)
        workers = []
        stats = smsc.stats()
    finally:
        if disk:
            disk.stop()
        if workers:
            stop_worker(*workers)
        smsc.stop()
    # The simulator's log, streamed (a million records do not fit in memory as dicts).
    first_at: dict[str, float] = {}
    campaign_times: list[float] = []
    accepted: Counter[str] = Counter()
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("kind") != "submit_sm" or record.get("run") != smsc.run_id:
                continue
            destination = record["destination"]
            if record["outcome"] == "accepted":
                accepted[destination] += 1
            if destination.startswith(OTP_PREFIX[1:]):
                first_at.setdefault(destination, float(record["time"]))
            elif record["outcome"] == "accepted":
                campaign_times.append(float(record["time"]))
    last_campaign = max(campaign_times, default=0.0)
    idle, loaded, after = [], [], []
    missing = 0
    for destination, (phase, at) in requested.items():
        sent = first_at.get(destination[1:])
        if sent is None:
            missing += 1
            continue
        latency = max(0.0, sent - at)
        if phase == "idle":
            idle.append(latency)
        elif at <= last_campaign:
            loaded.append(latency)
        else:
            after.append(latency)
    # Where the time went, per OTP: the request itself (queue + commit), request -> claim by the
    # worker (submit_started_at), claim -> submit_sm read by the SMSC (the link and the window).
    parts: dict[str, list[list[float]]] = {"idle": [[], [], []], "campaign": [[], [], []]}
    slowest: list[tuple[float, float, float, float]] = []  # campaign OTPs: total, and its three parts
    claimed_at = {
        destination: (created.timestamp(), started.timestamp())
        for destination, created, started in OutboundMessage.objects.filter(
            purpose="otp", submit_started_at__isnull=False
        ).values_list("destination", "created_at", "submit_started_at")
        if started is not None
    }
    for destination, (phase, at) in requested.items():
        sent = first_at.get(destination[1:])
        if sent is None or destination not in claimed_at or (phase == "campaign" and at > last_campaign):
            continue
        created, started = claimed_at[destination]
        for i, value in enumerate((created - at, started - at, sent - started)):
            parts[phase][i].append(value * 1000)
        if phase == "campaign":
            slowest.append(
                ((sent - at) * 1000, (created - at) * 1000, (started - created) * 1000, (sent - started) * 1000)
            )
    duplicates = [destination for destination, n in accepted.items() if n > 1]  # one message per number
    campaign_rate = len(campaign_times) / (last_campaign - min(campaign_times)) if len(campaign_times) > 1 else 0.0
    load = os.getloadavg()
    print(
        f"# OTP latency (request -> submit_sm at the SMSC), {db}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    print(
        f"campaign: {args.recipients:,} recipients on the same gateway ({args.lanes} lanes, window {args.window}, "
        f"rate {'unlimited' if not args.rate else args.rate}"
        f"{', bulk worker ' + args.bulk_worker_args if args.bulk_worker_args else ''}), {len(campaign_times):,} submitted at "
        f"{campaign_rate:,.0f} msg/s over {campaign_window[1] - campaign_window[0]:.0f}s"
    )
    print(f"OTPs: {args.otps} per phase, one every {args.otp_interval * 1000:.0f} ms")
    if db == "PostgreSQL":
        print(f"PostgreSQL settings: {server_settings()}")
        # Each checkpoint's writes (and the full-page images after it) compete with every commit.
        print(f"PostgreSQL checkpoints while the campaign ran: {checkpoints_during}")
        # What every synchronous commit beside the campaign (a code's claim first) flushes behind.
        print(
            f"WAL while the campaign ran: {campaign_wal / 1e6:,.0f} MB, "
            f"{campaign_wal / max(len(campaign_times), 1):,.0f} bytes per campaign message"
        )
        # Data pages the sessions wrote out themselves: a buffer pool too small for the campaign
        # (docs/deploy/postgresql.conf). Those writes compete with the claim's WAL flush.
        print(f"data pages written by the sessions themselves while the campaign ran: {backend_writes:,}")
    # A claim's commit waits for its WAL flush: the storage's own stalls under the campaign's writes.
    print(f"this host's writeback: {host_writeback(args.disk_probe)}")
    if disk:
        print(f"storage flushes (8 KB + fdatasync every 10 ms in {args.disk_probe}):")
        print(f"  no campaign:       {disk.summary(*idle_window)}")
        print(f"  with the campaign: {disk.summary(*campaign_window)}")
    print(latency_summary("no campaign           ", idle, "OTP"))
    print(latency_summary("with the campaign     ", loaded, "OTP"))
    if after:
        print(latency_summary("requested after its end", after, "OTP"))
    if idle and loaded:
        print(
            f"p99 with the campaign / without: {percentile(loaded, 99) / max(percentile(idle, 99), 1e-6):.2f}x; "
            f"p50: {percentile(loaded, 50) / max(percentile(idle, 50), 1e-6):.2f}x"
        )
    for phase, (queued_ms, claim_ms, link_ms) in parts.items():
        if queued_ms:
            print(
                f"  {phase:8s} p50/p99 ms: request -> row queued {percentile(queued_ms, 50):.0f}/"
                f"{percentile(queued_ms, 99):.0f}, request -> claimed {percentile(claim_ms, 50):.0f}/"
                f"{percentile(claim_ms, 99):.0f}, claimed -> at the SMSC {percentile(link_ms, 50):.0f}/"
                f"{percentile(link_ms, 99):.0f}"
            )
    for total, queued, claimed, at_smsc in sorted(slowest, reverse=True)[: max(1, len(slowest) // 100)]:
        print(
            f"  slowest with the campaign: {total:.0f} ms = request -> row queued {queued:.0f} + queued -> "
            f"claimed {claimed:.0f} + claimed -> at the SMSC {at_smsc:.0f}"
        )
    if args.breakdown:
        breakdown_print()
    print(
        f"checks: OTPs never seen at the SMSC {missing}, submitted twice {len(duplicates)}, "
        f"smsc {stats.get('by_status')}"
    )


_BREAKDOWN: dict[str, list[tuple[float, float, float, float, int, str]]] = {}  # phase -> per request (--breakdown)


class _Timed:
    """Per request (--breakdown): the time in SQL statements and in commits, and how many of each."""

    def __init__(self) -> None:
        self.sql = self.commit = self.slowest = 0.0
        self.statements = 0
        self.slowest_sql = ""

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = time.perf_counter() - started
            self.sql += took
            self.statements += 1
            if took > self.slowest:
                self.slowest, self.slowest_sql = took, f"{took * 1000:.0f} ms {' '.join(sql.split())[:60]}"


def otp_request_timed(phone: str, phase: str) -> None:
    """otp_request, with its wall time, its own CPU, its statements' time and its commits' time."""
    from django.db import connection

    timed = _Timed()
    commit = connection.commit

    def timed_commit() -> None:
        started = time.perf_counter()
        try:
            commit()
        finally:
            timed.commit += time.perf_counter() - started

    connection.commit = timed_commit  # type: ignore[method-assign]
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        with connection.execute_wrapper(timed):
            otp_request(phone)
    finally:
        del connection.commit
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    _BREAKDOWN.setdefault(phase, []).append(
        (wall * 1000, cpu * 1000, timed.sql * 1000, timed.commit * 1000, timed.statements, timed.slowest_sql)
    )


def breakdown_print() -> None:
    """Where the request's time went (--breakdown): percentiles of each part, and the slowest 1%."""
    for phase, rows in _BREAKDOWN.items():
        walls, cpus, sqls, commits = ([float(r[i]) for r in rows] for i in range(4))
        print(
            f"  {phase:8s} request p50/p99 ms: wall {percentile(walls, 50):.0f}/{percentile(walls, 99):.0f}, "
            f"own CPU {percentile(cpus, 50):.0f}/{percentile(cpus, 99):.0f}, statements "
            f"{percentile(sqls, 50):.0f}/{percentile(sqls, 99):.0f}, commits "
            f"{percentile(commits, 50):.0f}/{percentile(commits, 99):.0f} ({rows[0][4]} statements)"
        )
        for wall, cpu, sql, commit, _n, slowest in sorted(rows, reverse=True)[: max(1, len(rows) // 100)]:
            print(
                f"    slow: wall {wall:.0f} = CPU {cpu:.0f} + statements {sql:.0f} + commits {commit:.0f} "
                f"+ elsewhere {wall - cpu - sql - commit:.0f} (statements and commits include their CPU); "
                f"slowest statement {slowest}"
            )


def otp_phase(phase: str, args: argparse.Namespace, phones: Any, requested: dict[str, tuple[str, float]]) -> None:
    next_at = time.monotonic()
    for _ in range(args.otps):
        phone = next(phones)
        at = time.time()
        if args.breakdown:
            otp_request_timed(phone, phase)
        else:
            otp_request(phone)
        requested[phone] = (phase, at)
        next_at += args.otp_interval
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
