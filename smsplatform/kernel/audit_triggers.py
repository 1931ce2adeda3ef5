"""Database triggers that make the audit log append-only (used by migration 0002 and tests)."""

from __future__ import annotations

TABLE = "smsplatform_auditlog"

POSTGRES_UP = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_immutable() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '{TABLE} is append-only';
    END;
    $$ LANGUAGE plpgsql;""",
    f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_immutable();""",
]
POSTGRES_DOWN = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update ON {TABLE};",
    f"DROP FUNCTION IF EXISTS {TABLE}_immutable();",
]

SQLITE_NO_UPDATE = f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END;"""
SQLITE_NO_DELETE = f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END;"""
SQLITE_UP = [SQLITE_NO_UPDATE, SQLITE_NO_DELETE]
SQLITE_DOWN = [f"DROP TRIGGER IF EXISTS {TABLE}_no_update;", f"DROP TRIGGER IF EXISTS {TABLE}_no_delete;"]

UP = {"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}
DOWN = {"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}
