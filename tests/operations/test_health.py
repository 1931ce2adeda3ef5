"""/healthz, /readyz and manage.py platform_status: each check names what is wrong."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from gateways.models import BindState, BindWorkerStatus, Gateway, MessageState, OutboundMessage, Provider
from smsplatform.models import Heartbeat
from smsplatform.operations import health
from smsplatform.operations.health import heartbeat_record, readiness

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def migrated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some test files migrate the shared test database back and forth (contacts' SQLite key
    triggers), which can leave its migration records behind the graph: the migrations check is
    tested on its own, with the plan it is given."""
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets, clean_start=False: [])


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_healthz_answers_without_the_database_or_a_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["X-Request-ID"]
    assert client.post("/healthz").status_code == 405


def test_readyz_fails_without_a_beat_heartbeat_and_passes_with_a_fresh_one(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False and body["failing"] == ["beat"]
    assert "celery beat" in checks(body)["beat"]["detail"]
    assert checks(body)["database"]["status"] == "ok" and checks(body)["migrations"]["status"] == "ok"

    heartbeat_record()
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["ready"] is True

    Heartbeat.objects.update(at=timezone.now() - timedelta(minutes=5))
    body = client.get("/readyz").json()
    assert body["failing"] == ["beat"] and "s old" in checks(body)["beat"]["detail"]


def test_the_beat_heartbeat_is_a_periodic_task_run_by_a_worker() -> None:
    from smsplatform.schedules import PERIODIC
    from smsplatform.tasks import beat_heartbeat

    assert ("Beat heartbeat", "smsplatform.beat_heartbeat", 10) in PERIODIC
    beat_heartbeat()
    assert Heartbeat.objects.get(name="beat").at > timezone.now() - timedelta(seconds=5)


def _worker(gateway: Gateway, state: str, *, failing_over_to: str = "", age: int = 0) -> None:
    now = timezone.now()
    BindWorkerStatus.objects.create(
        gateway=gateway,
        owner=f"host:{gateway.pk}:{state}",
        host="host",
        pid=1,
        state=state,
        state_since=now - timedelta(minutes=1),
        heartbeat_at=now - timedelta(seconds=age),
        started_at=now - timedelta(hours=1),
        last_error="bind failed: Connection refused" if state != BindState.BOUND else "",
        failing_over_to=failing_over_to,
    )


def test_each_enabled_smpp_gateway_must_be_bound_or_failing_over() -> None:
    heartbeat_record()
    bound = Gateway.objects.create(code="smpp-a", name="A", provider=Provider.SMPP, countries=["HK"])
    _worker(bound, BindState.BOUND)
    assert checks(readiness())["gateway_binds"]["status"] == "ok"

    over = Gateway.objects.create(code="smpp-b", name="B", provider=Provider.SMPP, countries=["HK"])
    _worker(over, BindState.DOWN, failing_over_to="smpp-a")
    report = readiness()
    assert report["ready"] is True and checks(report)["gateway_binds"]["status"] == "warn"
    assert "smpp-b is down, failing over to smpp-a" in checks(report)["gateway_binds"]["detail"]

    dead = Gateway.objects.create(code="smpp-c", name="C", provider=Provider.SMPP, countries=["HK"])
    _worker(dead, BindState.BOUND, age=600)  # its heartbeat stopped: taken for dead
    report = readiness()
    assert report["ready"] is False and report["failing"] == ["gateway_binds"]
    assert "smpp-c: no_worker" in checks(report)["gateway_binds"]["detail"]

    dead.enabled = False
    dead.save()
    assert readiness()["ready"] is True  # a disabled gateway is not expected to bind


@override_settings(SMS_RECEIPT_LAG_LIMIT_SECONDS=60)
def test_receipt_lag_warns_then_fails() -> None:
    heartbeat_record()
    gateway = Gateway.objects.create(code="sim-lag", name="Sim", provider=Provider.SIMULATOR, countries=["HK"])

    def sent(seconds_ago: int) -> OutboundMessage:
        return OutboundMessage.objects.create(
            gateway=gateway,
            sender_id="Shop",
            destination="+85251234567",
            country="HK",
            body="hi",
            encoding="GSM-7",
            segments=1,
            purpose="marketing",
            state=MessageState.SUBMITTED,
            quota_reference="q",
            submitted_at=timezone.now() - timedelta(seconds=seconds_ago),
        )

    fresh = sent(10)
    assert checks(readiness())["receipt_lag"]["status"] == "ok"
    OutboundMessage.objects.filter(pk=fresh.pk).update(submitted_at=timezone.now() - timedelta(seconds=90))
    lag = checks(readiness())["receipt_lag"]
    assert lag["status"] == "warn" and "sim-lag" in lag["detail"]
    assert lag["facts"]["gateways"]["sim-lag"]["outstanding"] == 1
    OutboundMessage.objects.filter(pk=fresh.pk).update(submitted_at=timezone.now() - timedelta(seconds=200))
    assert readiness()["failing"] == ["receipt_lag"]
    OutboundMessage.objects.filter(pk=fresh.pk).update(state=MessageState.DELIVERED)
    assert checks(readiness())["receipt_lag"]["status"] == "ok"


def test_a_broken_check_is_a_failed_check_not_a_500(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat_record()

    def broken() -> health.CheckResult:
        raise RuntimeError("broker unreachable at redis://10.0.0.9")

    monkeypatch.setitem(health._CHECKS, "broker", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    broker = checks(response.json())["broker"]
    assert broker["status"] == "fail" and "RuntimeError: broker unreachable" in broker["detail"]


def test_unapplied_migrations_fail_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.migrations.executor import MigrationExecutor

    heartbeat_record()

    def plan(self: Any, targets: Any, clean_start: bool = False) -> Any:
        return [(self.loader.get_migration("smsplatform", "0001_initial"), False)]

    monkeypatch.setattr(MigrationExecutor, "migration_plan", plan)
    report = readiness()
    migrations = checks(report)["migrations"]
    assert report["failing"] == ["migrations"] and "manage.py migrate" in migrations["detail"]
    assert migrations["facts"]["unapplied"] == ["smsplatform.0001_initial"]


def test_platform_status_prints_the_same_report_and_exits_non_zero_when_not_ready() -> None:
    out = StringIO()
    with pytest.raises(CommandError, match="not ready: beat"):
        call_command("platform_status", stdout=out)
    assert "FAIL beat" in out.getvalue() and "OK   database" in out.getvalue()

    heartbeat_record()
    out = StringIO()
    call_command("platform_status", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ready"] is True and {c["name"] for c in report["checks"]} >= {
        "database",
        "migrations",
        "database_settings",
        "broker",
        "beat",
        "gateway_binds",
        "receipt_lag",
    }


def test_database_settings_are_reported_and_on_sqlite_nothing_is_asked() -> None:
    result = checks(readiness())["database_settings"]
    if connection.vendor != "postgresql":
        assert result["status"] == "ok" and result["facts"] == {"vendor": "sqlite"}
        return
    assert set(result["facts"]) == {
        "fsync",
        "full_page_writes",
        "synchronous_commit",
        "shared_buffers",
        "max_wal_size",
        "wal_compression",
        "autovacuum",
    }


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's settings")
def test_settings_that_undo_the_pipelines_guarantees_warn_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "SMALL_BUFFER_POOL", 1)  # whatever this server's pool, not small
    assert checks(readiness())["database_settings"]["status"] == "ok"  # fsync, full pages, synchronous on

    with connection.cursor() as cursor:  # as a role or database setting would make it, for this transaction
        cursor.execute("SET LOCAL synchronous_commit TO off")
    result = checks(readiness())["database_settings"]
    assert result["status"] == "warn" and result["facts"]["synchronous_commit"] == "off"
    assert "synchronous_commit is off" in result["detail"] and "twice" in result["detail"]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO on")

    # A server whose fsync is not what the pipeline needs (here: the wanted value stands in for it).
    monkeypatch.setitem(health.DURABLE_SETTINGS, "fsync", ("never", "fsync is off: ..."))
    result = checks(readiness())["database_settings"]
    assert result["status"] == "warn" and result["detail"] == "fsync is off: ..."


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's settings")
def test_a_small_buffer_pool_warns_with_the_advice_and_stays_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat_record()
    monkeypatch.setattr(health, "SMALL_BUFFER_POOL", 1024**5)  # a pebibyte: every server's pool is smaller
    report = readiness()
    result = checks(report)["database_settings"]
    assert result["status"] == "warn" and report["ready"] is True
    assert result["detail"].startswith(f"shared_buffers is {result['facts']['shared_buffers']}:")
    assert "docs/deploy/postgresql.conf" in result["detail"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's settings")
def test_settings_the_server_will_not_show_warn_and_leave_the_other_checks_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heartbeat_record()
    monkeypatch.setattr(health, "SETTINGS_SQL", "SELECT name, current_setting(name) FROM no_such_view WHERE %s IS NULL")
    report = readiness()
    result = checks(report)["database_settings"]
    assert result["status"] == "warn" and result["detail"].startswith("the server's settings could not be read:")
    assert "no_such_view" in result["detail"]
    assert report["ready"] is True and checks(report)["beat"]["status"] == "ok"  # read after it, same connection


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's settings")
def test_a_setting_the_server_does_not_show_is_not_reported_as_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # A managed service may hide a setting from ordinary roles: unknown is not "off".
    monkeypatch.setattr(health, "SMALL_BUFFER_POOL", 1)
    monkeypatch.setitem(health.DURABLE_SETTINGS, "no_such_setting", ("on", "no_such_setting is off"))
    result = checks(readiness())["database_settings"]
    assert result["status"] == "ok" and "no_such_setting" not in result["facts"]
