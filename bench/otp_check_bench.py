"""OTP checks per second on PostgreSQL, through the real service (otp_check: on PostgreSQL one statement
that counts, compares keyed hashes, writes the audit row and the counter), with the CPU time per check of
the client processes and of their PostgreSQL backends (read from /proc when the server is local).

Usage: python bench/otp_check_bench.py [--verifications 4000] [--processes 4] [--database-url URL]

Runs with production settings (DJANGO_DEBUG off unless set). Builds a throwaway database, one
approved template and N pending verifications (max_checks 5) with a known code; each process then
checks its share: four wrong codes and the right one per verification (the fifth check approves it). Target >= 2,000 checks/s. Prints the load average:
on a shared machine the figure is a floor.

Without PostgreSQL it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from contacts_bench import admin_sql, load, machine, with_db  # noqa: E402

CODE = "482913"


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    # Production settings (DEBUG off: no query log kept per statement), with a key of this run's own.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsplatform.settings")
    import django

    django.setup()


def _prepare(count: int) -> list[str]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from campaigns.otp.codes import code_hash
    from campaigns.otp.models import OtpTemplate, OtpTemplateVersion, Verification

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create(username="bench", is_superuser=True, is_staff=True)
    template = OtpTemplate.objects.create(name="Bench", purpose="login", version=1)
    version = OtpTemplateVersion.objects.create(
        template=template,
        number=1,
        name="Bench",
        purpose="login",
        body_en="Code {code}",
        body_zh_hant="驗證碼{code}",
        allowed_countries=["HK"],
        sender_id="#BENCH",
        approved_at=timezone.now(),
    )
    OtpTemplate.objects.filter(pk=template.pk).update(current_version=version)
    expires = timezone.now() + timedelta(hours=1)
    rows = []
    for i in range(count):
        public_id = f"VEbench{i:025d}"
        rows.append(
            Verification(
                public_id=public_id,
                template=template,
                template_version=version,
                phone=f"+8529{i:07d}",
                country="HK",
                locale="en",
                code_hash=code_hash(verification_id=public_id, code=CODE),
                max_sends=5,
                max_checks=5,
                expires_at=expires,
                created_by=user,
                channel="api",
            )
        )
    Verification.objects.bulk_create(rows, batch_size=2000)
    return [r.public_id for r in rows]


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of the PostgreSQL backend serving this process, when the server
    runs on this machine (/proc); None otherwise."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker(url: str, ids: list[str], start: Any, out: Any) -> None:
    _django(url)
    from django.contrib.auth import get_user_model

    from campaigns.otp.services import otp_check
    from smsplatform.kernel.actor import Actor, Channel

    actor = Actor(user=get_user_model().objects.get(username="bench"), channel=Channel.API, token_name="bench")  # noqa: S106 - a token name, not a secret
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    start.wait()
    began, cpu, server = time.perf_counter(), time.process_time(), _backend_cpu(backend)
    checks = approved = 0
    for vid in ids:
        for wrong in ("000000", "111111", "222222", "333333"):
            otp_check(actor=actor, verification_id=vid, code=wrong)
            checks += 1
        approved += otp_check(actor=actor, verification_id=vid, code=CODE)["status"] == "approved"
        checks += 1
    server_after = _backend_cpu(backend)
    server_cpu = server_after - server if server is not None and server_after is not None else None
    out.put((checks, approved, time.perf_counter() - began, time.process_time() - cpu, server_cpu))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verifications", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--db-prefix", default="otp_bench", help="name prefix of the throwaway database")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        print("PostgreSQL only: set --database-url or DATABASE_URL to a PostgreSQL server.")
        return 0
    name = f"{args.db_prefix}_{os.getpid()}"
    try:
        admin_sql(args.database_url, f"CREATE DATABASE {name}")
    except Exception as exc:  # no server: say why, succeed (make bench runs every script)
        print(f"PostgreSQL not reachable ({exc.__class__.__name__}); skipped.")
        return 0
    url = with_db(args.database_url, name)
    try:
        _django(url)
        ids = _prepare(args.verifications)
        from django.db import connections

        connections.close_all()
        ctx = multiprocessing.get_context("fork")
        start, out = ctx.Barrier(args.processes + 1), ctx.Queue()
        shares = [ids[i :: args.processes] for i in range(args.processes)]
        procs = [ctx.Process(target=_worker, args=(url, share, start, out)) for share in shares]
        for p in procs:
            p.start()
        start.wait()
        began = time.perf_counter()
        results = [out.get() for _ in procs]
        wall = time.perf_counter() - began
        for p in procs:
            p.join()
        checks = sum(r[0] for r in results)
        approved = sum(r[1] for r in results)
        print(f"machine: {machine()}")
        print(
            f"{checks} checks ({approved} approvals) by {args.processes} processes in {wall:.2f} s: "
            f"{checks / wall:,.0f} checks/s (target >= 2,000/s)"
        )
        client_ms = 1000 * sum(r[3] for r in results) / checks
        servers = [r[4] for r in results]
        server = f"{1000 * sum(servers) / checks:.2f} ms" if None not in servers else "n/a (server not on this machine)"
        # CPU per check does not depend on how busy the machine is: with C cores free the rate
        # would be about C / (client + server CPU) checks/s, waits for disk flushes aside.
        print(f"CPU per check: client (Django + service) {client_ms:.2f} ms, PostgreSQL backend {server}")
        print(f"loaded: {load()}")
        assert approved == len(ids), "every verification approved exactly once"
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(args.database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
