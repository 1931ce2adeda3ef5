"""Short-link redirects with the click recorded, on the short domain's server over loopback.

Usage: python bench/redirect_bench.py [--connections 16] [--requests 20000] [--database-url URL]

Starts its own server on a free loopback port with a throwaway database: SQLite by default, or
a fresh database created (and dropped afterwards) on the PostgreSQL server named by
--database-url / BENCH_DATABASE_URL. Links are made through the real services
(short_links.preview + short_links.create). The server is started with the production command
line of the short domain (templates.short_links.server: gunicorn serving templates.short_links.app);
``--app django`` serves the main domain's Django stack (smsplatform.wsgi, the fallback view) on
the same gunicorn for comparison. The load generator is a raw keep-alive HTTP/1.1 client on
epoll (a few microseconds of CPU per request), so that the figure measures the server.

Three scenarios: a link without click tracking (the redirect alone: the ceiling of the server
on this machine), a shared link and a per-recipient link (unique-click check), each on
two servers: with SMS_CLICK_BATCH_SECONDS=0 (one INSERT per click in the request) and with the
click spool (the default, SMS_CLICK_BATCH_SECONDS=0.5: a line appended to a local file, written
by each worker with one statement per segment). Both servers run at once and take turns, one
round of one scenario at a time, so that they share the machine's other load alike. Every answer
must be a 302 to the stored target (each request carries ?next=http://evil.example/). At the
end the INSERT server is stopped normally; the spool server gets a last burst and is killed with
SIGKILL (master and workers) right after its last 302, then the beat task's drain runs once; the
clicks table must then hold exactly one row per tracked request (none lost, none twice).

Besides requests per second, each scenario reports the server's CPU time per request: gunicorn's
processes plus, on PostgreSQL, their database backends (told apart by application_name), from
/proc; the load generator's own CPU is not counted. Both figures are only comparable within one
run on a shared machine: other work there slows and inflates everything (the load average is
printed with the results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templates.short_links import server as short_server  # noqa: E402 - the repository on the path first

UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)

SETUP = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from smsplatform.kernel.actor import Actor, Channel
from templates.short_links.preview import short_link_preview
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

DRAIN = """
import django
django.setup()
from templates.tasks import drain_click_spool
print(drain_click_spool())
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


def _requests(paths: list[str]) -> list[bytes]:
    return [
        f"GET {path}?next=http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n".encode()
        for path in paths
    ]


class _Connection:
    """One keep-alive connection sending its requests one after the other."""

    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.port, self.requests, self.next, self.buffer, self.started = port, requests, 0, b"", 0.0
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def send(self) -> None:
        self.started = time.perf_counter()
        self.sock.sendall(self.requests[self.next])
        self.next += 1

    def answered(self, target: bytes) -> tuple[bool, bool]:
        """Whether the buffer holds a whole answer (checked and consumed), and whether the
        server closes the connection after it."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False, False
        head = self.buffer[: end + 2]
        lower = head.lower()
        length = _header(head, lower, b"content-length")
        body = int(length) if length else 0
        if len(self.buffer) < end + 4 + body:
            return False, False
        if not head.startswith(b"HTTP/1.1 302 "):
            raise RuntimeError(f"unexpected answer: {head[: head.find(b'HTTP/1.1') + 40]!r}")
        location = _header(head, lower, b"location")
        if location != target:
            raise RuntimeError(f"redirect left the stored target: {location!r}")
        self.buffer = self.buffer[end + 4 + body :]
        return True, _header(head, lower, b"connection").lower() == b"close"


def _header(head: bytes, lower: bytes, name: bytes) -> bytes:
    start = lower.find(b"\r\n" + name + b":")
    if start < 0:
        return b""
    start += len(name) + 3
    return head[start : head.find(b"\r\n", start)].strip()


def _worker(args: tuple[int, list[list[str]], str]) -> list[float]:
    """A raw keep-alive HTTP/1.1 client on epoll: a few microseconds of CPU per request, so that
    the figures measure the server rather than the load generator."""
    port, per_connection, target = args
    expected = target.encode("latin-1")
    latencies: list[float] = []
    selector = selectors.DefaultSelector()
    for paths in per_connection:
        if paths:
            conn = _Connection(port, _requests(paths))
            selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.send()
    open_connections = len(selector.get_map())
    while open_connections:
        for key, _ in selector.select():
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a keep-alive connection")
            conn.buffer += data
            done, close = conn.answered(expected)
            if not done:
                continue
            latencies.append((time.perf_counter() - conn.started) * 1000)
            if close:
                selector.unregister(conn.sock)
                conn.sock.close()
                if conn.next < len(conn.requests):
                    conn.sock = conn._connect()
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
            if conn.next < len(conn.requests):
                conn.send()
            else:
                selector.unregister(conn.sock)
                conn.sock.close()
                open_connections -= 1
    selector.close()
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


CRASH_BURST = 3000
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(x) for x in children.read().split()]
    except OSError:
        return []


class ServerCpu:
    """CPU seconds used so far by one server: gunicorn (master and workers) and, on PostgreSQL,
    the backends its workers opened (told apart by their application_name)."""

    def __init__(self, master: int, pg_admin_url: str | None, application_name: str) -> None:
        self.master, self.pg_admin_url, self.application_name = master, pg_admin_url, application_name

    def pids(self) -> set[int]:
        pids = {self.master, *_children(self.master)}
        if self.pg_admin_url:
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [self.application_name]
                ).fetchall()
            pids.update(int(pid) for (pid,) in rows)
        return pids

    def sample(self) -> dict[int, float]:
        cpu = {pid: _cpu_seconds(pid) for pid in self.pids()}
        return {pid: seconds for pid, seconds in cpu.items() if seconds is not None}  # None: exited meanwhile

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU used between two samples by the processes alive at the second (a backend or worker
        that started meanwhile from zero). One that exited meanwhile (a database connection closed
        at CONN_MAX_AGE) is left out rather than subtracting its whole life: an undercount of its
        last moments, never a negative figure."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _start_server(env: dict[str, str], args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    # The production command line of the short domain's server (templates.short_links.server);
    # --app django serves the same gunicorn the main domain's Django stack instead.
    command = short_server.gunicorn_command(f"127.0.0.1:{port}", workers=args.workers, threads=args.threads)
    if args.app == "django":
        command[command.index("templates.short_links.wsgi:application")] = "smsplatform.wsgi:application"
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    return server, port


class Server:
    def __init__(self, mode: str, batch_seconds: str, env: dict[str, str], args: argparse.Namespace) -> None:
        self.mode, self.spool = mode, batch_seconds != "0"
        self.batch_seconds = float(batch_seconds)
        name = "bench-" + ("spool" if self.spool else "insert")
        env = {**env, "SMS_CLICK_BATCH_SECONDS": batch_seconds}
        admin_url = None
        if env["DATABASE_URL"].startswith("postgres"):
            env["DATABASE_URL"] += ("&" if "?" in env["DATABASE_URL"] else "?") + f"application_name={name}"
            admin_url = urlunsplit(urlsplit(env["DATABASE_URL"])._replace(path="/postgres", query=""))
        self.process, self.port = _start_server(env, args)
        self.cpu = ServerCpu(self.process.pid, admin_url, name)


def _summary(samples: list[tuple[list[float], float, float]]) -> dict[str, float]:
    rates = sorted(len(lat) / elapsed for lat, elapsed, _ in samples)
    latencies = [x for lat, _, _ in samples for x in lat]
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "req_per_s": round(statistics.median(rates), 1),
        "best_req_per_s": round(rates[-1], 1),
        "cpu_us_per_req": round(sum(cpu for _, _, cpu in samples) / len(latencies) * 1e6),
    }


def _round(server: Server, paths: list[str], target: str, tracked: bool, args: argparse.Namespace) -> tuple:
    before = server.cpu.sample()
    latencies, elapsed = hammer(server.port, paths, target, args.connections, args.clients)
    if server.spool and tracked:
        time.sleep(server.batch_seconds + 0.3)  # its clicks written, so that their CPU is counted here
    return latencies, elapsed, server.cpu.used(before, server.cpu.sample())


def _kill_tree(server: subprocess.Popen[bytes]) -> None:
    """SIGKILL the master and its workers at once: nothing gets to run an exit handler."""
    for pid in [*_children(server.pid), server.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20000, help="per round and scenario")
    parser.add_argument(
        "--app",
        choices=("short", "django"),
        default="short",
        help="short: the short domain's server as production runs it (templates.short_links.server); "
        "django: the main domain's Django stack (smsplatform.wsgi) on the same gunicorn, for comparison",
    )
    parser.add_argument("--workers", type=int, default=short_server.default_workers())
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per scenario (median reported)")
    parser.add_argument("--batch-seconds", type=float, default=0.5, help="SMS_CLICK_BATCH_SECONDS of the spool")
    parser.add_argument(
        "--modes", default="insert,spool", help="which servers to run: insert (one INSERT per click), spool"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--settings", default="smsplatform.settings", help="DJANGO_SETTINGS_MODULE (e.g. a lean short-domain stack)"
    )
    args = parser.parse_args()

    load_before = f"{os.getloadavg()[0]:.2f}"  # other work on the machine skews every figure
    tmp = Path(tempfile.mkdtemp(prefix="smsbench-redirect-"))
    env = {**os.environ, "SMS_VAR_DIR": str(tmp), "DJANGO_SECRET_KEY": "bench-secret-key-" + "x" * 40}
    env.pop("CELERY_BROKER_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": args.settings, "LOG_LEVEL": "WARNING"})
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
        all_modes = {
            "insert": ("one INSERT per click", "0"),
            "spool": (f"spool ({args.batch_seconds}s)", str(args.batch_seconds)),
        }
        modes = [all_modes[m.strip()] for m in args.modes.split(",") if m.strip()]
        scenarios = [("untracked (no click)", untracked, links["untracked"]["target"], False)]
        scenarios += [(name, paths, target, True) for name, paths, target in tracked]
        # All servers run at once and take turns, one round of each scenario at a time, so that
        # each sees the same share of whatever else the machine is doing.
        servers = [Server(mode, batch_seconds, env, args) for mode, batch_seconds in modes]
        try:
            for server in servers:
                for _, paths, target, _ in scenarios:
                    hammer(server.port, paths[:2000], target, args.connections, args.clients)  # warm-up
            samples: dict[str, list[tuple[list[float], float, float]]] = {}
            for _ in range(args.rounds):
                for server in servers:
                    for name, paths, target, is_tracked in scenarios:
                        sample = _round(server, paths, target, is_tracked, args)
                        samples.setdefault(f"{name}, {server.mode}", []).append(sample)
            results.update({key: _summary(value) for key, value in samples.items()})
            for server in servers:
                if server.spool:  # a last burst, killed as soon as its last 302 is in
                    burst = (tracked[1][1] * CRASH_BURST)[:CRASH_BURST]
                    hammer(server.port, burst, tracked[1][2], args.connections, args.clients)
        finally:
            for server in sorted(servers, key=lambda server: not server.spool):  # the kill first
                if server.spool:
                    _kill_tree(server.process)  # a crash: only what is on disk survives
                else:
                    server.process.terminate()
                    server.process.wait(30)
        expected = len(servers) * len(tracked) * (args.rounds * args.requests + 2000)  # rounds and warm-ups
        expected += CRASH_BURST * sum(server.spool for server in servers)
        in_table = int(_python(COUNT, env).split()[0])
        if any(server.spool for server in servers):
            drained = int(_python(DRAIN, env))  # templates.drain_click_spool, as beat runs it
            checks.append(
                f"after SIGKILL of every spool server process, {in_table} clicks were in the table "
                f"and the drain task wrote the other {drained}"
            )
        recorded = int(_python(COUNT, env).split()[0])
        if recorded != expected:
            raise SystemExit(f"{recorded} clicks recorded for {expected} tracked requests")
        checks.append(f"{recorded} clicks recorded for {expected} tracked requests (none lost, none twice)")
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
    app = "templates.short_links.server" if args.app == "short" else "Django stack (smsplatform.wsgi)"
    print(
        f"# short-link redirect (302 to the stored target + click recorded), {args.connections} keep-alive "
        f"connections, {app} on gunicorn {args.workers}x{args.threads} gthread, {db}, {os.cpu_count()} cores ({cpu}), "
        f"load generator on the same machine, settings {args.settings}, load average before/after "
        f"{load_before} / {os.getloadavg()[0]:.2f}"
    )
    for name, r in results.items():
        print(
            f"{name:<42} {r['req_per_s']:>7} req/s median of {args.rounds} (best {r['best_req_per_s']:>7})  "
            f"p50 {r['p50_ms']:>6} ms  p99 {r['p99_ms']:>6} ms  server CPU {r['cpu_us_per_req']:>5} us/req"
        )
    for line in checks:
        print(line)
    print(f"unique per-recipient clicks: {unique} (of 5,000 recipients)")


if __name__ == "__main__":
    main()
