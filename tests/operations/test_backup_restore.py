"""The documented backup and restore, run for real: pg_dump of a database with data, restored
into a fresh database, migrated, and the health check passing there with the rows intact."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from gateways.models import Gateway, Provider
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.models import AuditLog

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_dump and pg_restore are PostgreSQL's"),
    pytest.mark.process,
]


def url(name: str) -> str:
    s = connection.settings_dict
    return f"postgresql://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"


def test_a_backup_restores_into_a_fresh_database_that_passes_the_health_check(
    transactional_db: Any, tmp_path: Path
) -> None:
    Gateway.objects.create(code="restore-sim", name="Sim", provider=Provider.SIMULATOR, countries=["HK"])
    audit_record(actor=Actor.system("test"), action="backup.marker", object_type="test", object_id="1")
    audits = AuditLog.objects.count()
    source = url(connection.settings_dict["NAME"])
    dump = tmp_path / "platform.dump"

    backup = subprocess.run(
        ["bash", "scripts/backup.sh", source, str(dump)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert backup.returncode == 0, backup.stderr
    assert dump.exists() and (tmp_path / "platform.dump.sha256").exists()

    target_name = f"restore_{uuid.uuid4().hex[:10]}"
    target = url(target_name)
    try:
        restore = subprocess.run(
            ["bash", "scripts/restore_check.sh", str(dump), target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert "OK   migrations" in restore.stdout and "ready" in restore.stdout
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM gateways_gateway WHERE code = 'restore-sim'").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM smsplatform_auditlog").fetchone() == (audits,)
            # The audit log is append-only in the restored copy too (its trigger came back).
            with pytest.raises(psycopg.Error):
                conn.execute("DELETE FROM smsplatform_auditlog")

        # A damaged dump is refused before anything is restored.
        dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")
        again = subprocess.run(
            ["bash", "scripts/restore_check.sh", str(dump), url(target_name + "_b")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 2 and "checksum mismatch" in again.stderr
    finally:
        with psycopg.connect(url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{target_name}" WITH (FORCE)')
            admin.execute(f'DROP DATABASE IF EXISTS "{target_name}_b" WITH (FORCE)')
