"""What every benchmark here shares: the machine line and load average printed beside each figure,
timing helpers, and a throwaway PostgreSQL database made for one run and dropped after it.

A bench imports it as ``from common import ...`` (bench/ is on sys.path when a bench runs)."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load() -> str:
    """Load average and a CPU reference: the figures below mean little on a busy machine."""
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    reference = time.process_time() - started
    try:
        averages = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        averages = "?"
    return f"load average {averages}; 10M Python additions took {reference:.2f} CPU s"


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def admin_sql(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(statement)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    timings, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - started)
    return timings, result


def summary(timings: list[float], unit: float = 1.0, suffix: str = "s") -> str:
    values = [t * unit for t in timings]
    digits = 2 if unit > 1 else 3
    return (
        f"median {statistics.median(values):.{digits}f} {suffix} "
        f"(min {min(values):.{digits}f}, max {max(values):.{digits}f}, n={len(values)})"
    )


def database_url_argument(parser: argparse.ArgumentParser) -> None:
    """--database-url: the PostgreSQL server to make the throwaway database on."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="a PostgreSQL server URL; the bench makes its own database there and drops it afterwards",
    )


def django_environment(database_url: str) -> None:
    """Point Django at the bench's database. Outside debug the settings refuse the public default
    key, so benches bring their own."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsplatform.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-" + "x" * 40)


@contextlib.contextmanager
def throwaway_database(
    label: str,
    database_url: str | None,
    *,
    sqlite_dir: Path | None = None,
    keep: bool = False,
    reuse: str | None = None,
) -> Iterator[str | None]:
    """A new PostgreSQL database made for one run, with Django pointed at it, dropped afterwards
    (``keep`` leaves it; ``reuse`` names one kept earlier and makes nothing). Gives its URL, or,
    when ``database_url`` is not PostgreSQL, a SQLite file in ``sqlite_dir`` if the bench runs on
    SQLite too, else None: the bench says why and is skipped, so `make bench` does not fail."""
    if not (database_url or "").startswith("postgres"):
        if sqlite_dir is not None:
            url = database_url or f"sqlite:///{sqlite_dir / 'bench.sqlite3'}"
            django_environment(url)
            yield url
        else:
            print(f"{label}: needs PostgreSQL (--database-url postgresql://...); skipped.", flush=True)
            yield None
        return
    assert database_url is not None
    name = reuse or f"smsplatform_{label}_{os.getpid()}"
    if not reuse:
        try:
            admin_sql(database_url, f'CREATE DATABASE "{name}"')
        except Exception as exc:  # the server is not there: say so, do not fail `make bench`
            print(f"{label}: cannot create a database on {database_url} ({exc}); skipped.", flush=True)
            yield None
            return
    url = with_db(database_url, name)
    django_environment(url)
    try:
        yield url
    finally:
        if reuse:
            pass
        elif keep:
            print(f"kept database {name}: measure it again with --reuse {name}", flush=True)
        else:
            from django.db import connections

            connections.close_all()
            admin_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str] | None = None) -> None:
    """Apply the migrations to the bench's database in a subprocess, as a deploy does."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def on_throwaway_database(
    label: str,
    database_url: str,
    run: Callable[[], None],
    *,
    keep: bool = False,
    reuse: str | None = None,
) -> None:
    """Run ``run`` on a throwaway PostgreSQL database (see throwaway_database); skipped without one."""
    with throwaway_database(label, database_url, keep=keep, reuse=reuse) as url:
        if url is not None:
            run()


def wal_position() -> str | None:
    """PostgreSQL's WAL insert position (None elsewhere): the WAL a send writes is what every
    synchronous commit beside it, an OTP's claim first, waits to flush (docs/OTP.md)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        return str(cursor.fetchone()[0])


def wal_since(start: str | None) -> int:
    """Bytes of WAL the whole cluster wrote since ``start`` (the bench runs alone on it)."""
    from django.db import connection

    if start is None:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)::bigint", [start])
        return int(cursor.fetchone()[0])


def server_settings() -> str:
    """PostgreSQL's settings that shape the figures, for the line above them ('' elsewhere): those
    the readiness check ``database_settings`` reports (docs/deploy/postgresql.conf)."""
    from django.db import connection

    from smsplatform.operations.health import database_settings_check

    if connection.vendor != "postgresql":
        return ""
    return ", ".join(f"{name} {value}" for name, value in database_settings_check().facts.items())


def server_counter(*queries: str) -> int:
    """The first of ``queries`` this PostgreSQL answers (the statistics views move between
    versions), as an integer; 0 elsewhere."""
    from django.db import DatabaseError, connection, transaction

    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        for query in queries:
            try:
                with transaction.atomic():
                    cursor.execute(query)
                    return int(cursor.fetchone()[0])
            except DatabaseError:
                continue
    return 0


def checkpoints() -> int:
    """Checkpoints so far: each one's writes, and the full-page images after it, compete with every commit."""
    return server_counter(
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer",  # PostgreSQL 17+
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
    )


def buffers_written_by_backends() -> int:
    """Data pages that sessions had to write out themselves so far: each one is a session's query
    waiting on a write, and writes that compete with the WAL's flushes. A buffer pool too small for
    the campaign's rows makes this grow with every message sent."""
    return server_counter(
        # PostgreSQL 16+: pg_stat_io, client backends' writes of shared buffers.
        "SELECT coalesce(sum(writes), 0) FROM pg_stat_io"
        " WHERE backend_type = 'client backend' AND object = 'relation' AND context = 'normal'",
        "SELECT buffers_backend FROM pg_stat_bgwriter",  # up to PostgreSQL 16
    )
