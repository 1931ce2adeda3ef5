"""OTP latency with and without a campaign on the same SMPP gateway: OTP request -> submit_sm at the SMSC.

Usage: python bench/otp_latency.py [--recipients 1000000] [--otps 200] [--otp-interval S] [--window 500]
                                   [--rate 0] [--database-url URL]
Needs PostgreSQL for the figure that counts (default: BENCH_DATABASE_URL, else a throwaway SQLite;
on PostgreSQL it creates and drops its own database next to the one named).

One run, one simulator (its own process, its JSON-lines log of every submit_sm with the time it
was read), one gateway, one ``manage.py smpp_worker`` process:

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
average (the machine may be shared: figures taken under load are labelled so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "sim-pass"
GATEWAY = "bench-otp"
SENDER = "#SHOPHK"
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


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(label: str, latencies: list[float]) -> str:
    if not latencies:
        return f"{label}: no OTP measured"
    ms = [x * 1000 for x in latencies]
    return (
        f"{label}: n={len(ms)}  p50 {percentile(ms, 50):.0f} ms  p95 {percentile(ms, 95):.0f} ms  "
        f"p99 {percentile(ms, 99):.0f} ms  max {max(ms):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1_000_000, help="queued campaign messages")
    parser.add_argument("--otps", type=int, default=200, help="OTPs per phase")
    parser.add_argument(
        "--otp-interval",
        type=float,
        default=None,
        help="seconds between OTP requests (default: spread over the campaign's expected run at 5,000 msg/s)",
    )
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--rate", type=int, default=0, help="the gateway's max submit_sm/s (0: unlimited)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    if args.otp_interval is None:
        args.otp_interval = max(0.05, args.recipients / 5_000 / max(1, args.otps))
    tmp = Path(tempfile.mkdtemp(prefix="otpbench-"))
    os.environ["SMS_VAR_DIR"] = str(tmp)
    admin_url = None
    name = f"{os.environ.get('BENCH_DB_PREFIX', 'bench_otp')}_{os.getpid()}"
    if args.database_url and args.database_url.startswith("postgres"):
        parts = urlsplit(args.database_url)
        admin_url = args.database_url
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
        _admin(admin_url, f"CREATE DATABASE {name}")
    else:
        os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "smsplatform.settings"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-" + "x" * 40)
    os.environ["BENCH_SMPP_PASSWORD"] = PASSWORD
    sys.path.insert(0, str(ROOT))
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        run(args, tmp)
    finally:
        if admin_url:
            from django.db import connections

            connections.close_all()
            _admin(admin_url, f"DROP DATABASE IF EXISTS {name}")


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def run(args: argparse.Namespace, tmp: Path) -> None:
    import django

    django.setup()
    from decimal import Decimal

    from django.db import connection, transaction

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
    from tests.support.smsc import SmscConfig, SmscProcess

    log = tmp / "smsc.jsonl"
    smsc = SmscProcess(
        SmscConfig(
            port=0,
            credentials={"bench": PASSWORD},
            log_path=str(log),
            receipt_delay=(0.0, 0.01),
            keep_records=10,
            log_flush_interval=0.5,
        ),
        cwd=ROOT,
    ).start()
    db = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    gateway = Gateway.objects.create(
        code=GATEWAY,
        name="bench",
        provider=Provider.SMPP,
        countries=["HK"],
        window_size=args.window,
        max_rate_per_second=args.rate or 100_000,
        encodings=["GSM-7", "UCS-2"],
        settings={"host": smsc.host, "port": smsc.port, "system_id": "bench"},
        credentials_env={"password": "BENCH_SMPP_PASSWORD"},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    SenderId.objects.get_or_create(
        value=SENDER,
        defaults={
            "kind": SenderIdKind.SSRS,
            "brand": "Shop",
            "status": SenderIdStatus.REGISTERED,
            "regions": ["HK"],
            "ssrs_registered_regions": ["HK"],
        },
    )
    account = account_instance()
    account.monthly_quota_segments = 100_000_000
    account.save(update_fields=["monthly_quota_segments", "updated_at"])
    if account.balance < Decimal("100000000"):
        account_top_up(
            actor=Actor.system("bench"),
            amount=Decimal("100000000") - account.balance,
            reason="bench funds",
            idempotency_key="bench-otp-top-up-1",
        )
    requested: dict[str, tuple[str, float]] = {}  # OTP destination (no '+') -> (phase, request time)
    # Distinct numbers in distinct ranges (the pumping defence blocks a burst into one range).
    phones = (f"{OTP_PREFIX}{(n * 1009) % 1_000_000:06d}" for n in range(1, 1_000_000))
    otp_setup()
    worker: subprocess.Popen[bytes] | None = None
    campaign_window: tuple[float, float] = (0.0, 0.0)
    try:
        # 1. No campaign: bound and idle.
        worker = start_worker(smsc)
        otp_phase("idle", args, phones, requested)
        wait_sent(timeout=30)
        stop_worker(worker)
        # 2. The campaign: written in bulk while the worker is stopped, then sent.
        reference = "campaign:bench-otp"
        QuotaReservation.objects.create(
            reference=reference, segments=args.recipients, amount=Decimal("0.3") * args.recipients
        )
        started = time.perf_counter()
        for start in range(0, args.recipients, 50_000):
            with transaction.atomic():
                OutboundMessage.objects.bulk_create(
                    [
                        OutboundMessage(
                            gateway=gateway,
                            sender_id=SENDER,
                            destination=f"+8526{i:07d}",
                            country="HK",
                            body="Weekend sale: 20% off everything. Reply STOP to opt out",
                            encoding="GSM-7",
                            segments=1,
                            cost=Decimal("0.3"),
                            purpose="marketing",
                            quota_reference=reference,
                        )
                        for i in range(start, min(args.recipients, start + 50_000))
                    ],
                    batch_size=10_000,
                )
        print(
            f"campaign: {args.recipients:,} queued messages written in {time.perf_counter() - started:.1f}s", flush=True
        )
        worker = start_worker(smsc)
        campaign_start = time.time()
        # Start once the campaign is flowing (the worker has claimed ahead and is writing).
        while not OutboundMessage.objects.filter(quota_reference=reference).exclude(state=MessageState.QUEUED).exists():
            time.sleep(0.05)
        otp_phase("campaign", args, phones, requested)
        wait_sent(timeout=max(60, args.recipients / 1_000))
        campaign_end = time.time()
        campaign_window = (campaign_start, campaign_end)
        stop_worker(worker)
        worker = None
        stats = smsc.stats()
    finally:
        if worker is not None:
            stop_worker(worker)
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
    duplicates = [destination for destination, n in accepted.items() if n > 1]  # one message per number
    campaign_rate = len(campaign_times) / (last_campaign - min(campaign_times)) if len(campaign_times) > 1 else 0.0
    load = os.getloadavg()
    print(
        f"# OTP latency (request -> submit_sm at the SMSC), {db}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    print(
        f"campaign: {args.recipients:,} recipients on the same gateway (window {args.window}, "
        f"rate {'unlimited' if not args.rate else args.rate}), {len(campaign_times):,} submitted at "
        f"{campaign_rate:,.0f} msg/s over {campaign_window[1] - campaign_window[0]:.0f}s"
    )
    print(f"OTPs: {args.otps} per phase, one every {args.otp_interval * 1000:.0f} ms")
    print(summary("no campaign           ", idle))
    print(summary("with the campaign     ", loaded))
    if after:
        print(summary("requested after its end", after))
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
    print(
        f"checks: OTPs never seen at the SMSC {missing}, submitted twice {len(duplicates)}, "
        f"smsc {stats.get('by_status')}"
    )


def otp_phase(phase: str, args: argparse.Namespace, phones: Any, requested: dict[str, tuple[str, float]]) -> None:
    next_at = time.monotonic()
    for _ in range(args.otps):
        phone = next(phones)
        at = time.time()
        otp_request(phone)
        requested[phone] = (phase, at)
        next_at += args.otp_interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def start_worker(smsc: Any) -> subprocess.Popen[bytes]:
    binds = int(smsc.stats().get("binds", 0))
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "smpp_worker", "--gateway", GATEWAY, "--idle-exit", "3600"],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    while int(smsc.stats().get("binds", 0)) <= binds:  # bound
        if worker.poll() is not None:
            raise RuntimeError("the worker exited before binding")
        time.sleep(0.05)
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_sent(timeout: float) -> None:
    """Until nothing is queued or being submitted on the bench gateway (or ``timeout`` seconds)."""
    from gateways.models import MessageState, OutboundMessage

    deadline = time.monotonic() + timeout
    pending = (MessageState.QUEUED, MessageState.SUBMITTING)
    while time.monotonic() < deadline:
        if not OutboundMessage.objects.filter(gateway__code=GATEWAY, state__in=pending).exists():
            return
        time.sleep(0.5)
    print(f"warning: messages still pending after {timeout:.0f}s", flush=True)


if __name__ == "__main__":
    main()
