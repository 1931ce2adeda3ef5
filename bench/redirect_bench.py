"""Short-link redirects with the click recorded, on a gunicorn server over loopback.

Usage: python bench/redirect_bench.py [--connections 16] [--requests 20000] [--database-url URL]

Starts its own server on a free loopback port with a throwaway database: SQLite by default, or
a fresh database created (and dropped afterwards) on the PostgreSQL server named by
--database-url / BENCH_DATABASE_URL. Links are made through the real services
(short_links.preview + short_links.create). The load generator is a small keep-alive HTTP/1.1
client on asyncio streams, so that the figure measures the server rather than an HTTP library.

Three scenarios: a link without click tracking (the redirect alone: the ceiling of Django and
gunicorn on this machine), a shared link and a per-recipient link (unique-click check). The
tracked ones run twice: with the default one INSERT per click in the request, and with
SMS_CLICK_BATCH_SECONDS=0.05 (clicks queued per worker, one INSERT per batch). Every answer
must be a 302 to the stored target (each request carries ?next=http://evil.example/), and after
each server stops the clicks table must hold exactly one row per tracked request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)

SETUP = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from smsplatform.kernel.actor import Actor, Channel
from templates.selectors import short_link_preview
from templates.services import short_link_create

user = get_user_model().objects.get(username="demo_marketing")
actor = Actor(user=user, channel=Channel.API, token_name="bench")
out = {}
for name, per_recipient, tracking in (("shared", False, True), ("per_recipient", True, True), ("untracked", False, False)):
    preview = short_link_preview(
        actor=actor,
        url="https://shop.example.hk/spring-sale?ref=sms",
        utm={"utm_source": "sms", "utm_medium": "bench", "utm_campaign": "redirect_" + name},
        per_recipient=per_recipient,
        tracking=tracking,
    )
    created = short_link_create(
        actor=actor, short_link_preview_id=preview["short_link_preview_id"], idempotency_key="bench-" + name + "-link"
    )
    assert created["status"] == "executed", created
    out[name] = {"code": created["result"]["code"], "target": created["result"]["target_url"]}
print(json.dumps(out))
"""

COUNT = """
import django
django.setup()
from templates.models import LinkClick
print(LinkClick.objects.count(), LinkClick.objects.filter(is_unique=True).count())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _connection(port: int, paths: list[str], target: str, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in paths:
            request = (
                f"GET {path}?next=http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            latencies.append((time.perf_counter() - start) * 1000)
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 302"):
                raise RuntimeError(f"unexpected answer: {lines[0]}")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if headers.get("location") != target:
                raise RuntimeError(f"redirect left the stored target: {headers.get('location')}")
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def _worker(args: tuple[int, list[list[str]], str]) -> list[float]:
    port, per_connection, target = args
    latencies: list[float] = []

    async def run() -> None:
        await asyncio.gather(*(_connection(port, paths, target, latencies) for paths in per_connection))

    asyncio.run(run())
    return latencies


def hammer(port: int, paths: list[str], target: str, connections: int, processes: int) -> tuple[list[float], float]:
    chunks = [paths[i::connections] for i in range(connections)]
    per_process = [chunks[i::processes] for i in range(processes)]
    with multiprocessing.Pool(processes) as pool:
        start = time.perf_counter()
        results = pool.map(_worker, [(port, group, target) for group in per_process])
        elapsed = time.perf_counter() - start
    return [x for r in results for x in r], elapsed


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout.strip()


def _throwaway_postgres(url: str) -> tuple[str, str]:
    import psycopg

    name = f"smsbench_redirect_{os.getpid()}"
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), name


def _drop_postgres(url: str, name: str) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_server(env: dict[str, str], args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "smsplatform.wsgi", "-b", f"127.0.0.1:{port}"),
            *("-w", str(args.workers), "-k", "gthread", "--threads", str(args.threads)),
            *("--keep-alive", "30", "--log-level", "warning"),
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    return server, port


def _measure(port: int, paths: list[str], target: str, args: argparse.Namespace) -> dict[str, float]:
    hammer(port, paths[:2000], target, args.connections, args.clients)  # warm-up
    rounds = [hammer(port, paths, target, args.connections, args.clients) for _ in range(args.rounds)]
    rates = sorted(len(lat) / elapsed for lat, elapsed in rounds)
    latencies = [x for lat, _ in rounds for x in lat]
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "req_per_s": round(statistics.median(rates), 1),
        "best_req_per_s": round(rates[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20000, help="per round and scenario")
    # One request at a time per process and twice as many processes as cores measured best
    # on a 2-core machine (less GIL hand-over than threads while a click INSERT waits).
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per scenario (median reported)")
    parser.add_argument("--batch-seconds", type=float, default=0.05, help="SMS_CLICK_BATCH_SECONDS of batch mode")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="smsbench-redirect-"))
    env = {**os.environ, "SMS_VAR_DIR": str(tmp), "DJANGO_SECRET_KEY": "bench-secret-key-" + "x" * 40}
    env.pop("CELERY_BROKER_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": "smsplatform.settings", "LOG_LEVEL": "WARNING"})
    pg_name = None
    if args.database_url:
        env["DATABASE_URL"], pg_name = _throwaway_postgres(args.database_url)
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    results: dict[str, dict[str, float]] = {}
    checks: list[str] = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([sys.executable, "manage.py", "seed_demo", "--quiet"], cwd=ROOT, env=env, check=True)
        links = json.loads(_python(SETUP, env))
        rng = random.Random(7)
        # Per-recipient: 5,000 recipients, so most clicks are first clicks (the NOT EXISTS path)
        # and the rest are repeats.
        recipients = [f"r{n:07d}" for n in range(5000)]
        tracked = [
            ("shared link", [f"/s/{links['shared']['code']}"] * args.requests, links["shared"]["target"]),
            (
                "per-recipient link",
                [f"/s/{links['per_recipient']['code']}/{rng.choice(recipients)}" for _ in range(args.requests)],
                links["per_recipient"]["target"],
            ),
        ]
        untracked = [f"/s/{links['untracked']['code']}"] * args.requests
        modes = [("one INSERT per click", "0"), (f"batched ({args.batch_seconds}s)", str(args.batch_seconds))]
        for mode, batch_seconds in modes:
            before = int(_python(COUNT, env).split()[0])
            server, port = _start_server({**env, "SMS_CLICK_BATCH_SECONDS": batch_seconds}, args)
            try:
                if not results:
                    results["untracked (no click)"] = _measure(port, untracked, links["untracked"]["target"], args)
                for name, paths, target in tracked:
                    results[f"{name}, {mode}"] = _measure(port, paths, target, args)
            finally:
                server.terminate()  # a normal stop: batch mode writes what is still queued
                server.wait(30)
            recorded = int(_python(COUNT, env).split()[0]) - before
            expected = len(tracked) * (args.rounds * args.requests + 2000)  # rounds and warm-ups
            if recorded != expected:
                raise SystemExit(f"{mode}: {recorded} clicks recorded for {expected} tracked requests")
            checks.append(f"{mode}: {recorded} clicks recorded for {expected} tracked requests")
        unique = int(_python(COUNT, env).split()[1])
    finally:
        if pg_name and args.database_url:
            _drop_postgres(args.database_url, pg_name)

    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    db = "PostgreSQL" if pg_name else "SQLite"
    print(
        f"# short-link redirect (302 to the stored target + click recorded), {args.connections} keep-alive "
        f"connections, gunicorn {args.workers}x{args.threads} gthread, {db}, {os.cpu_count()} cores ({cpu}), "
        "load generator on the same machine"
    )
    for name, r in results.items():
        print(
            f"{name:<44} {r['req_per_s']:>7} req/s median of {args.rounds} (best {r['best_req_per_s']:>7})  "
            f"p50 {r['p50_ms']:>6} ms  p99 {r['p99_ms']:>6} ms"
        )
    for line in checks:
        print(line)
    print(f"unique per-recipient clicks: {unique} (of 5,000 recipients)")


if __name__ == "__main__":
    main()
