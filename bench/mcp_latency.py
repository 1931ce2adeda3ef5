"""config.get over MCP vs. the bare DRF view, one client and 16 concurrent clients, on one gunicorn server.

Usage: python bench/mcp_latency.py [--clients 16] [--requests 2000] [--sequential 400] [--database-url URL]
Target (issue 14): MCP p50 at most 1.5x the DRF view's, sequentially and concurrently; the ratio is printed.
Starts its own server on a free loopback port with a throwaway database (SQLite by default,
or the PostgreSQL named by --database-url / BENCH_DATABASE_URL), seeds it, measures, stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cpu_seconds(master: int) -> float:
    """User + system CPU of gunicorn's workers (the master's children), from /proc (Linux).

    The server-side cost of a request, free of the client's and of other load on the machine:
    on a shared box, wall-clock latency mostly measures queueing."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def hammer(
    make_request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], clients: int, total: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.perf_counter()
                response = await make_request(http)
                latencies.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=400, help="requests from one client, one at a time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="smsbench-"))
    env = {**os.environ, "SMS_VAR_DIR": str(tmp), "DJANGO_SECRET_KEY": "bench-secret-key-" + "x" * 40}
    env["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    env.pop("CELERY_BROKER_URL", None)
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([py, "manage.py", "seed_demo", "--quiet"], cwd=ROOT, env=env, check=True)
    token = subprocess.run(
        [
            py,
            "-c",
            "import django; django.setup(); from smsplatform.management.commands.seed_demo import demo_key; "
            "print(demo_key('demo_marketing'))",
        ],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "smsplatform.settings"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [
            py,
            "-m",
            "gunicorn",
            "smsplatform.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    mcp_headers = {**headers, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "sms_marketing.config.get", "arguments": {}},
    }

    async def mcp(http: httpx.AsyncClient) -> httpx.Response:
        response = await http.post(f"{base}/mcp", headers=mcp_headers, content=json.dumps(call))
        if response.status_code == 200 and response.json()["result"].get("isError"):
            raise RuntimeError(response.text[:300])
        return response

    async def rest(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(f"{base}/api/v1/config/", headers=headers)

    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/api/v1/health/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        results = {}
        runs = [(1, args.sequential), (args.clients, args.requests)]
        for (clients, total), (name, fn) in itertools.product(
            runs, (("mcp config.get", mcp), ("rest GET /api/v1/config/", rest))
        ):
            name = f"{name} x{clients}"
            asyncio.run(hammer(fn, clients, 200))  # warm-up
            cpu_before = server_cpu_seconds(server.pid)
            latencies, elapsed = asyncio.run(hammer(fn, clients, total))
            cpu_ms = (server_cpu_seconds(server.pid) - cpu_before) * 1000 / len(latencies)
            results[name] = {
                "server_cpu_ms": round(cpu_ms, 2),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                "req_per_s": round(len(latencies) / elapsed, 1),
                "requests": len(latencies),
            }
    finally:
        server.terminate()
        server.wait(10)

    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    db = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
    print(
        f"# config.get latency, {args.clients} concurrent clients, gunicorn {args.workers}x{args.threads} gthread, "
        f"{db}, {os.cpu_count()} cores ({cpu})"
    )
    for name, r in results.items():
        print(
            f"{name:<32} p50 {r['p50_ms']:>7} ms  p99 {r['p99_ms']:>7} ms  {r['req_per_s']:>8} req/s  "
            f"server CPU {r['server_cpu_ms']:>6} ms/req  (n={r['requests']})"
        )
    for clients in (1, args.clients):
        mcp_p50 = results[f"mcp config.get x{clients}"]["p50_ms"]
        rest_p50 = results[f"rest GET /api/v1/config/ x{clients}"]["p50_ms"]
        mcp_cpu = results[f"mcp config.get x{clients}"]["server_cpu_ms"]
        rest_cpu = results[f"rest GET /api/v1/config/ x{clients}"]["server_cpu_ms"]
        print(
            f"MCP / DRF at {clients} client(s): server CPU {mcp_cpu / rest_cpu:.2f}x, "
            f"p50 {mcp_p50 / rest_p50:.2f}x (target <= 1.5x)"
        )


if __name__ == "__main__":
    main()
