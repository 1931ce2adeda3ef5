"""A database trigger that moves an outbound message's ``updated_at`` on every change of its state
or error, whichever path wrote it: the delivery layer updates messages in bulk (``update()`` and
raw SQL), which Django's ``auto_now`` never sees. Used by gateways migration 0006 and its test."""

from __future__ import annotations

TABLE = "gateways_outboundmessage"
CHANGED = "(OLD.state IS DISTINCT FROM NEW.state OR OLD.error_code IS DISTINCT FROM NEW.error_code)"

POSTGRES_UP = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_touch() RETURNS trigger AS $$
    BEGIN
        IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
            NEW.updated_at := clock_timestamp();
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql;""",
    # The WHEN clause keeps the function off rows whose state and error did not change.
    f"""CREATE TRIGGER {TABLE}_touch BEFORE UPDATE ON {TABLE}
        FOR EACH ROW WHEN {CHANGED} EXECUTE FUNCTION {TABLE}_touch();""",
]
POSTGRES_DOWN = [f"DROP TRIGGER IF EXISTS {TABLE}_touch ON {TABLE};", f"DROP FUNCTION IF EXISTS {TABLE}_touch();"]

# SQLite has no BEFORE-row assignment: an AFTER trigger writes the time (recursive triggers are
# off, and the inner UPDATE names no watched column anyway). The format is Django's for SQLite.
SQLITE_UP = [  # constants only, no input: not an injection vector
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_touch AFTER UPDATE OF state, error_code ON {TABLE}
    FOR EACH ROW WHEN {CHANGED.replace("IS DISTINCT FROM", "IS NOT")} AND NEW.updated_at IS OLD.updated_at
    BEGIN
        UPDATE {TABLE} SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = NEW.id;
    END;"""  # noqa: S608
]
SQLITE_DOWN = [f"DROP TRIGGER IF EXISTS {TABLE}_touch;"]

UP = {"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}
DOWN = {"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}
