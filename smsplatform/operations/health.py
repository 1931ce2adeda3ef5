"""Readiness: what an operator (or a load balancer) needs to know before sending traffic here.

``/healthz`` says only that the process answers. ``/readyz`` and ``manage.py platform_status`` run
every registered check: the kernel's own (database, migrations applied, broker, beat heartbeat)
and those the apps above register from their ``apps.py`` (gateways: binds and receipt lag), so
the kernel never imports upward. A check answers ``ok``, ``warn`` (reported, still ready) or
``fail`` (not ready), with a detail naming what is wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 4)}
        if self.detail:
            out["detail"] = self.detail
        if self.facts:
            out["facts"] = self.facts
        return out


Check = Callable[[], CheckResult]
_CHECKS: dict[str, Check] = {}


def health_check_register(name: str, check: Check) -> None:
    """Add a readiness check (apps call this from ``ready()``). Registering a name again replaces it."""
    _CHECKS[name] = check


def _run(name: str, check: Check) -> CheckResult:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # a check that breaks is a failed check, never a 500
        result = CheckResult(name, FAIL, f"{type(exc).__name__}: {str(exc)[:200]}")
    result.name = name
    result.seconds = time.perf_counter() - started
    return result


def readiness(*, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every check (but those in ``skip``), and the overall answer: ready unless one failed."""
    checks = [("database", database_check), *((n, c) for n, c in _CHECKS.items() if n not in skip)]
    results = [_run(name, check) for name, check in checks]
    if results[0].status == FAIL:
        # Without the database every other check only repeats its error.
        results = results[:1]
    status = FAIL if any(r.status == FAIL for r in results) else WARN if any(r.status == WARN for r in results) else OK
    return {
        "status": status,
        "ready": status != FAIL,
        "checked_at": timezone.now().isoformat(),
        "checks": [r.as_dict() for r in results],
        "failing": [r.name for r in results if r.status == FAIL],
    }


def database_check() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return CheckResult("database", OK, facts={"vendor": connection.vendor})


def migrations_check() -> CheckResult:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        return CheckResult(
            "migrations",
            FAIL,
            f"{len(names)} migration(s) not applied: run manage.py migrate",
            {"unapplied": names[:20]},
        )
    return CheckResult("migrations", OK)


def broker_check() -> CheckResult:
    from smsplatform.celery import app

    url = str(app.conf.broker_url or "")
    scheme = url.split("://", 1)[0]
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return CheckResult("broker", OK, "tasks run eagerly in the web process", {"transport": "eager"})
    if scheme == "filesystem":
        folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        import os

        if not os.access(folder, os.W_OK):
            return CheckResult("broker", FAIL, f"the file broker's folder {folder} is not writable")
        return CheckResult("broker", OK, facts={"transport": "filesystem"})
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return CheckResult("broker", OK, facts={"transport": scheme})


def beat_check() -> CheckResult:
    """The heartbeat task beat sends every few seconds and a worker runs: fresh means beat and at
    least one worker are alive."""
    from smsplatform.models import Heartbeat

    limit = timedelta(seconds=settings.SMS_BEAT_HEARTBEAT_MAX_AGE_SECONDS)
    beat = Heartbeat.objects.filter(name=BEAT_HEARTBEAT).first()
    if beat is None:
        return CheckResult("beat", FAIL, "no beat heartbeat yet: is celery beat (and a worker) running?")
    age = timezone.now() - beat.at
    facts = {"last": beat.at.isoformat(), "age_seconds": round(age.total_seconds(), 1), "limit_seconds": limit.seconds}
    if age > limit:
        return CheckResult("beat", FAIL, f"the beat heartbeat is {int(age.total_seconds())} s old", facts)
    return CheckResult("beat", OK, facts=facts)


BEAT_HEARTBEAT = "beat"


def heartbeat_record(name: str = BEAT_HEARTBEAT, **detail: Any) -> None:
    from smsplatform.models import Heartbeat

    Heartbeat.objects.update_or_create(name=name, defaults={"at": timezone.now(), "detail": detail})


# What the send pipeline's guarantees rest on, and the buffer pool it needs (docs/deploy/postgresql.conf).
DURABLE_SETTINGS = {
    "fsync": (
        "on",
        "fsync is off: a crash of the database host can lose or corrupt what was committed, "
        "sends, claims and charges included",
    ),
    "full_page_writes": ("on", "full_page_writes is off: a crash can leave torn pages in the tables"),
}
# Reported with them: what shapes a large send's speed (docs/deploy/postgresql.conf).
REPORTED_SETTINGS = ("synchronous_commit", "shared_buffers", "max_wal_size", "wal_compression", "autovacuum")
SETTINGS_SQL = "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)"
SMALL_BUFFER_POOL = 1024**3  # below this, a million-message send makes the sessions write out pages themselves


def database_settings_check() -> CheckResult:
    """PostgreSQL's settings as this platform's sessions see them. Warns (never fails: the platform
    runs, with less safety or speed) when a setting undoes what the send pipeline relies on: a
    claim, a charge and a check commit only once on disk, so that a database crash can neither send
    a code or campaign message twice nor lose what was charged; and a buffer pool that holds a large
    send's rows, whose pages the sessions would otherwise write out themselves as they send."""
    if connection.vendor != "postgresql":
        return CheckResult("database_settings", OK, facts={"vendor": connection.vendor})
    names = [*DURABLE_SETTINGS, *REPORTED_SETTINGS]
    try:
        # A savepoint: a server that refuses the read (a managed service hiding its settings)
        # leaves the connection usable for the checks after this one.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SETTINGS_SQL, [names])
            facts = dict(sorted(cursor.fetchall()))
            cursor.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))")
            shared_buffers = int(cursor.fetchone()[0])
    except DatabaseError as exc:
        return CheckResult("database_settings", WARN, f"the server's settings could not be read: {str(exc)[:200]}")
    problems = [advice for name, (wanted, advice) in DURABLE_SETTINGS.items() if facts.get(name, wanted) != wanted]
    if facts.get("synchronous_commit") == "off":
        problems.append(
            "synchronous_commit is off for this platform's sessions: claims, charges and checks would "
            "commit before they are on disk, so a database crash could send a message twice"
        )
    if shared_buffers < SMALL_BUFFER_POOL:
        problems.append(
            f"shared_buffers is {facts['shared_buffers']}: a large send's rows do not fit, so the sessions "
            "sending it write pages out themselves before they can go on; give it about a quarter of the "
            "database host's memory (docs/deploy/postgresql.conf)"
        )
    if problems:
        return CheckResult("database_settings", WARN, "; ".join(problems), facts)
    return CheckResult("database_settings", OK, facts=facts)


health_check_register("migrations", migrations_check)
health_check_register("database_settings", database_settings_check)
health_check_register("broker", broker_check)
health_check_register("beat", beat_check)
