"""Campaign message counts kept by the database (issue 19): triggers on gateways_outboundmessage
maintain ``BatchMessageCount`` in the same transaction as every change, so the pages and tools
read a few counter rows instead of counting a million messages.

PostgreSQL: statement-level AFTER triggers with transition tables. One statement (the dispatch's
INSERT ... SELECT of a million rows, a claim of 500, one receipt) appends at most one signed row
per (batch, gateway, state, error, charged) key it changed, grouped in SQL: append-only, so the
bind worker, receipts and the claim never wait on a shared counter row. ``message_counts_fold``
(beat, every minute) sums each key's rows into one. SQLite (embedded, one writer): row triggers
keep exactly one row per key.

Readers sum a key's rows (``batch_message_counts``): exact at any moment, folded or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max, Sum

from gateways.models import MessageState  # no model import here: migration 0011 imports this module

MESSAGES = "gateways_outboundmessage"
COUNTS = "gateways_batchmessagecount"
KEY = "batch_id, gateway_id, state, error_code, charged"
CHARGED = "(submitted_at IS NOT NULL OR state = 'unknown')"  # gateways.charges.charged_q, in SQL
COLUMNS = f"{KEY}, n, cost, changed_at"


def _pg_function(name: str, body: str) -> str:
    return f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
    BEGIN
        {body}
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql;"""


_ROWS = f"batch_id, gateway_id, state, error_code, {CHARGED} AS charged"
PG_INSERT = f"""INSERT INTO {COUNTS} ({COLUMNS})
        SELECT {KEY}, count(*), sum(cost), max(updated_at)
        FROM (SELECT {_ROWS}, cost, updated_at FROM new_rows WHERE batch_id IS NOT NULL) d
        GROUP BY {KEY};"""  # noqa: S608 (constants only)
PG_DELETE = f"""INSERT INTO {COUNTS} ({COLUMNS})
        SELECT {KEY}, -count(*), -sum(cost), NULL
        FROM (SELECT {_ROWS}, cost FROM old_rows WHERE batch_id IS NOT NULL) d
        GROUP BY {KEY};"""  # noqa: S608 (constants only)
# An update: the new rows count +1, the old rows -1; keys whose figures did not move write nothing
# (an update of attempts or next_attempt_at, a body purge).
PG_UPDATE = f"""INSERT INTO {COUNTS} ({COLUMNS})
        SELECT {KEY}, sum(n), sum(cost), max(changed_at)
        FROM (
            SELECT {_ROWS}, 1 AS n, cost, updated_at AS changed_at FROM new_rows WHERE batch_id IS NOT NULL
            UNION ALL
            SELECT {_ROWS}, -1 AS n, -cost, NULL FROM old_rows WHERE batch_id IS NOT NULL
        ) d
        GROUP BY {KEY}
        HAVING sum(n) <> 0 OR sum(cost) <> 0;"""  # noqa: S608 (constants only)

POSTGRES_UP = [
    _pg_function(f"{MESSAGES}_count_ins", PG_INSERT),
    _pg_function(f"{MESSAGES}_count_del", PG_DELETE),
    _pg_function(f"{MESSAGES}_count_upd", PG_UPDATE),
    f"""CREATE TRIGGER {MESSAGES}_count_ins AFTER INSERT ON {MESSAGES}
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {MESSAGES}_count_ins();""",
    f"""CREATE TRIGGER {MESSAGES}_count_del AFTER DELETE ON {MESSAGES}
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {MESSAGES}_count_del();""",
    f"""CREATE TRIGGER {MESSAGES}_count_upd AFTER UPDATE ON {MESSAGES}
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {MESSAGES}_count_upd();""",
]
POSTGRES_DOWN = [
    *(f"DROP TRIGGER IF EXISTS {MESSAGES}_count_{op} ON {MESSAGES};" for op in ("ins", "del", "upd")),
    *(f"DROP FUNCTION IF EXISTS {MESSAGES}_count_{op}();" for op in ("ins", "del", "upd")),
]


def _sqlite_add(row: str, sign: str, changed_at: str) -> str:
    """SQLite: add one row (NEW or OLD) to its key's single counter row, creating it if need be."""
    key = (
        f"{row}.batch_id, {row}.gateway_id, {row}.state, {row}.error_code, "
        f"({row}.submitted_at IS NOT NULL OR {row}.state = 'unknown')"
    )
    match = (
        f"batch_id = {row}.batch_id AND gateway_id = {row}.gateway_id AND state = {row}.state "
        f"AND error_code = {row}.error_code "
        f"AND charged = ({row}.submitted_at IS NOT NULL OR {row}.state = 'unknown')"
    )
    return f"""
        INSERT INTO {COUNTS} ({COLUMNS}) SELECT {key}, 0, 0, NULL
            WHERE NOT EXISTS (SELECT 1 FROM {COUNTS} WHERE {match});
        UPDATE {COUNTS} SET n = n {sign} 1, cost = cost {sign} {row}.cost,
            changed_at = CASE WHEN {changed_at} IS NULL THEN changed_at
                              WHEN changed_at IS NULL OR changed_at < {changed_at} THEN {changed_at}
                              ELSE changed_at END
            WHERE {match};"""  # noqa: S608 (constants only)


_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
# Constants only, no input: not an injection vector.
SQLITE_UP = [
    f"""CREATE TRIGGER IF NOT EXISTS {MESSAGES}_count_ins AFTER INSERT ON {MESSAGES}
    FOR EACH ROW WHEN NEW.batch_id IS NOT NULL BEGIN {_sqlite_add("NEW", "+", "NEW.updated_at")} END;""",
    f"""CREATE TRIGGER IF NOT EXISTS {MESSAGES}_count_del AFTER DELETE ON {MESSAGES}
    FOR EACH ROW WHEN OLD.batch_id IS NOT NULL BEGIN {_sqlite_add("OLD", "-", "NULL")} END;""",
    f"""CREATE TRIGGER IF NOT EXISTS {MESSAGES}_count_upd
    AFTER UPDATE OF state, error_code, submitted_at, cost, batch_id, gateway_id ON {MESSAGES}
    FOR EACH ROW WHEN OLD.batch_id IS NOT NULL OR NEW.batch_id IS NOT NULL BEGIN
        {_sqlite_add("OLD", "-", "NULL").replace("WHERE NOT EXISTS", "WHERE OLD.batch_id IS NOT NULL AND NOT EXISTS")}
        {_sqlite_add("NEW", "+", _NOW).replace("WHERE NOT EXISTS", "WHERE NEW.batch_id IS NOT NULL AND NOT EXISTS")}
    END;""",
]
SQLITE_DOWN = [f"DROP TRIGGER IF EXISTS {MESSAGES}_count_{op};" for op in ("ins", "del", "upd")]

UP = {"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}
DOWN = {"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}

# The figures of the messages already there (the migration that adds the triggers, and a rebuild).
BACKFILL = f"""INSERT INTO {COUNTS} ({COLUMNS})
    SELECT {KEY}, count(*), sum(cost), max(updated_at)
    FROM (SELECT {_ROWS}, cost, updated_at FROM {MESSAGES} WHERE batch_id IS NOT NULL) d
    GROUP BY {KEY}"""  # noqa: S608


def message_counts_rebuild() -> None:
    """Recount every key from the messages themselves (the migration; a repair). Locks out writers
    of messages for its duration, so no change falls between the recount and the triggers."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {MESSAGES} IN SHARE MODE")
        cursor.execute(f"DELETE FROM {COUNTS}")  # noqa: S608
        cursor.execute(BACKFILL)


FOLD_LOCK = 1_900_019  # pg_advisory_xact_lock key: one fold at a time


def message_counts_fold() -> int:
    """Sum each key's delta rows into one row (PostgreSQL; SQLite keeps one row per key already),
    keys back at zero dropped.
    One statement deletes the rows it sees and inserts their sums, so a reader sees either the rows
    or their sum, never both; rows appended meanwhile by other transactions are left for next time.
    Returns the rows removed."""
    if connection.vendor != "postgresql":  # one row per key already: drop the keys back at zero
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {COUNTS} WHERE n = 0 AND cost = 0")  # noqa: S608
            return int(cursor.rowcount)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
        cursor.execute(
            f"""WITH gone AS (
                    DELETE FROM {COUNTS} WHERE ({KEY}) IN (
                        SELECT {KEY} FROM {COUNTS} GROUP BY {KEY} HAVING count(*) > 1 OR sum(n) = 0
                    ) RETURNING {COLUMNS}
                ), folded AS (
                    INSERT INTO {COUNTS} ({COLUMNS})
                    SELECT {KEY}, sum(n), sum(cost), max(changed_at) FROM gone GROUP BY {KEY}
                    HAVING sum(n) <> 0 OR sum(cost) <> 0
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM folded)"""  # noqa: S608
        )
        return int(cursor.fetchone()[0])


@dataclass
class BatchFigures:
    """One batch's messages: per state, per gateway, per error code, and the charged cost."""

    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MessageState.values, 0))
    gateways: set[int] = field(default_factory=set)
    errors: dict[tuple[int, str], int] = field(default_factory=dict)  # (gateway id, error code) -> messages
    charged: Decimal = Decimal(0)
    changed_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.states.values())


def batch_message_counts(batch_ids: Iterable[int]) -> dict[int, BatchFigures]:
    """The figures of each batch that has messages, in one grouped query over the counter rows."""
    from gateways.models import BatchMessageCount

    ids = list(batch_ids)
    out: dict[int, BatchFigures] = {}
    if not ids:
        return out
    rows = (
        BatchMessageCount.objects.filter(batch_id__in=ids)
        .values_list("batch_id", "gateway_id", "state", "error_code", "charged")
        .annotate(messages=Sum("n"), amount=Sum("cost"), at=Max("changed_at"))
        .order_by()
    )
    for batch_id, gateway_id, state, error, charged, n, amount, at in rows:
        figures = out.setdefault(batch_id, BatchFigures())
        if at is not None and (figures.changed_at is None or at > figures.changed_at):
            figures.changed_at = at
        if not n:
            continue
        figures.states[state] += int(n)
        figures.gateways.add(gateway_id)
        if charged:
            figures.charged += Decimal(amount or 0)
        if error:
            figures.errors[(gateway_id, error)] = figures.errors.get((gateway_id, error), 0) + int(n)
    return {k: v for k, v in out.items() if v.total}


def state_counts(batch_ids: Iterable[int]) -> dict[str, int]:
    """Messages per state over these batches together (one grouped query)."""
    from gateways.models import BatchMessageCount

    out = dict.fromkeys(MessageState.values, 0)
    ids = list(batch_ids)
    if ids:
        rows = BatchMessageCount.objects.filter(batch_id__in=ids).values_list("state").annotate(n=Sum("n")).order_by()
        for state, n in rows:
            out[state] += int(n or 0)
    return out


def charged_sum(batch_ids: Iterable[int]) -> Decimal:
    """What these batches' messages cost under the charging rule (gateways.charges), from the counters."""
    from gateways.models import BatchMessageCount

    total = BatchMessageCount.objects.filter(batch_id__in=batch_ids, charged=True).aggregate(s=Sum("cost"))["s"]
    return Decimal(total or 0)
