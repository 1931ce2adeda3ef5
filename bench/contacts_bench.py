"""Contacts at scale on PostgreSQL: segments.preview, audiences.list, contacts.search, CSV import.

Usage: python bench/contacts_bench.py [--contacts 1000000] [--import-rows 100000] [--repeat 5]
       [--database-url URL] [--keep] [--reuse NAME]

Creates a throwaway database on the PostgreSQL server named by --database-url /
BENCH_DATABASE_URL / DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres), migrates
it, and builds the issue's dataset with set-based SQL (generate_series, INSERT ... SELECT): 1M
contacts (a few outside Hong Kong and some in a country no gateway covers), 90% with marketing
consent evidence, 100k opt-outs (STOP, web, invalid, blocked), 20k phones present in two audiences
(duplicates), 2M rows of send history over 30 days, 300k orders. The load runs with the bulk
loader's usual shortcuts (secondary indexes dropped and rebuilt afterwards, foreign-key triggers
off when the role may, no synchronous commit), then VACUUM ANALYZE, as a live database would be.
Then it measures, through the real services, each figure --repeat times, and prints medians:

- segments.preview over both audiences with a tag and a purchase criterion (target <= 1.0 s),
  and over both audiences without a filter (every contact);
- audiences.list (sendable count per audience);
- contacts.search by phone, 500 random numbers (target <= 5 ms each; median and p95);
- CSV imports of new contacts with consent columns, phone normalisation included
  (target >= 30,000 rows/s), each of --import-rows new numbers, phone parsing timed apart.

The machine line shows the load average and a CPU reference (10M Python additions, CPU seconds),
since these figures are only comparable on a quiet machine. --keep keeps the database; --reuse
NAME measures an existing one (built by an earlier --keep run) without rebuilding it.

Without PostgreSQL it prints why and exits 0 (``make bench`` runs every script). The database is
dropped at the end unless kept.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)  # progress shows as it happens
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402  (bench/ is on sys.path when run)
    admin_sql,
    database_url_argument,
    load,
    machine,
    on_throwaway_database,
    summary,
    timed,
    with_db,
)

__all__ = ["admin_sql", "build", "load", "machine", "summary", "timed", "with_db"]


DATASET = """
-- Contacts: 96% HK mobiles, 3% Singapore, 1% US (no gateway covers US).
INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, updated_at)
SELECT CASE WHEN i % 100 < 96 THEN '+852' || (94000000 + i)::text
            WHEN i % 100 < 99 THEN '+659' || lpad(i::text, 7, '0')
            ELSE '+1415' || lpad(i::text, 7, '0') END,
       CASE WHEN i % 100 < 96 THEN 'HK' WHEN i % 100 < 99 THEN 'SG' ELSE 'US' END,
       CASE WHEN i % 3 = 0 THEN 'en' ELSE 'zh-hant' END,
       '',
       CASE i % 4 WHEN 0 THEN '["vip", "hk"]' WHEN 1 THEN '["regular"]' WHEN 2 THEN '["regular", "lapsed"]'
            ELSE '[]' END::jsonb,
       'bench', 'CRM-' || i, 1, now() - interval '400 days', now()
FROM generate_series(1, {contacts}) i;

INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, proof_reference,
    recorded_at, actor_channel, actor_token_name)
SELECT id, 'sms', 'marketing', 'I agree to receive offers by SMS', 'web_form', now() - interval '300 days',
       'form-' || id, now(), 'system', 'bench'
FROM contacts_contact WHERE id % 10 <> 3;

-- 100k opt-outs: 80% STOP, 10% web, 5% invalid, 5% blocked.
INSERT INTO contacts_optout (phone, contact_id, reason, source, message_text, language, note, occurred_at,
    recorded_at, actor_channel, actor_token_name, sync_state)
SELECT phone, id,
       CASE WHEN id % 200 < 160 THEN 'stop' WHEN id % 200 < 180 THEN 'web'
            WHEN id % 200 < 190 THEN 'invalid' ELSE 'blocked' END,
       'sms:bench', 'STOP', 'en', '', now() - interval '10 days', now(), 'system', 'bench', 'not_applicable'
FROM contacts_contact WHERE id % 10 = 5 AND id <= {contacts};

INSERT INTO contacts_audience (name, description, source, region, sync_source, purchase_behaviour, created_at)
VALUES ('All members', '', 'crm', 'HK', 'crm', '', now()), ('Spring fair', '', 'import', 'HK', '', '', now());
INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at)
SELECT a.id, c.id, now() FROM contacts_contact c, contacts_audience a WHERE a.name = 'All members';
-- 20k phones also in the second list: duplicates across lists.
INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at)
SELECT a.id, c.id, now() FROM contacts_contact c, contacts_audience a
WHERE a.name = 'Spring fair' AND c.id % 50 = 7;

-- 2M rows of send history over 30 days (80% marketing).
INSERT INTO gateways_outboundmessage (gateway_id, sender_id, destination, country, body, encoding, segments, cost,
    currency, purpose, state, reference, quota_reference, request_receipt, attempts, error_code, error_reason,
    created_at, updated_at)
SELECT g.id, '#SHOPHK', c.phone, c.country, 'Spring sale', 'GSM-7', 1, 0.30, 'HKD',
       CASE WHEN s % 5 = 0 THEN 'transactional' ELSE 'marketing' END, 'delivered', 'campaign:' || (s % 40),
       'bench', true, 1, '', '', now() - (s % 43200) * interval '1 minute', now()
FROM generate_series(1, {messages}) s
JOIN contacts_contact c ON c.id = 1 + (s::bigint * 7919) % {contacts}
CROSS JOIN (SELECT id FROM gateways_gateway WHERE code = 'bench') g;

-- 300k orders over the last year.
INSERT INTO contacts_customerfact (contact_id, kind, external_id, status, amount, currency, offer_code, occurred_at,
    data, ingested_at)
SELECT 1 + (s::bigint * 104729) % {contacts}, 'order', 'order-' || s, CASE WHEN s % 10 = 0 THEN 'cancelled' ELSE 'paid' END,
       100, 'HKD', CASE WHEN s % 7 = 0 THEN 'SPRING10' ELSE '' END, now() - (s % 365) * interval '1 day',
       '{{}}'::jsonb, now()
FROM generate_series(1, {orders}) s;
"""


BIG_TABLES = (
    "contacts_contact",
    "contacts_consentevidence",
    "contacts_optout",
    "contacts_audiencemembership",
    "contacts_customerfact",
    "gateways_outboundmessage",
)


def build(cursor: Any, contacts: int) -> None:
    """Load the dataset the way a bulk loader would: secondary indexes (those backing no
    constraint) dropped first and rebuilt after, foreign-key triggers off if this role may."""
    cursor.execute("SET synchronous_commit = off")
    cursor.execute("SET maintenance_work_mem = '512MB'")
    cursor.execute("SET work_mem = '256MB'")
    cursor.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
        "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        [list(BIG_TABLES)],
    )
    indexes = cursor.fetchall()
    for name, _definition in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    # Superuser only: no foreign-key triggers. Otherwise every key is checked: slower, same data.
    with contextlib.suppress(Exception):
        cursor.execute("SET session_replication_role = replica")
    try:
        sql = DATASET.format(contacts=contacts, messages=2 * contacts, orders=3 * contacts // 10)
        for statement in sql.split(";\n"):
            if statement.strip():
                cursor.execute(statement)
        for _name, definition in indexes:
            cursor.execute(definition)
    finally:
        # Nothing of the loader's settings may reach the measurements on this connection.
        cursor.execute("RESET ALL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each timed measurement (medians reported)")
    parser.add_argument(
        "--only",
        default="preview,audiences,search,import",
        help="comma-separated measurements to run (preview, audiences, search, import)",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="one more CSV import, instrumented: wall, client CPU and server CPU per phase",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="NAME", help="measure this existing database (from --keep); no build")
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database("contacts_bench", args.database_url, lambda: run(args), keep=args.keep, reuse=args.reuse)


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection

    from compliance.roles import Role
    from contacts.models import Audience, Contact
    from contacts.selectors import audiences_list
    from gateways.models import Gateway, GatewayRate, Provider
    from smsplatform.kernel.actor import Actor, Channel

    print(f"machine: {machine()}; PostgreSQL {connection.cursor().connection.info.server_version}")
    print(f"before: {load()}")
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - t0:.1f} s")

    # The generated contacts (imports add others, with another source).
    contacts = Contact.objects.filter(source="bench").count() if args.reuse else args.contacts
    if not args.reuse:
        gateway = Gateway.objects.create(
            code="bench", name="bench", provider=Provider.SIMULATOR, countries=["HK", "SG"]
        )
        for country in ("HK", "SG"):
            GatewayRate.objects.create(gateway=gateway, country=country, price_per_segment=Decimal("0.30"))
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            build(cursor, contacts)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        connection.ensure_connection()
        with connection.cursor() as cursor:
            # Outside a transaction: VACUUM sets the visibility map (index-only scans), ANALYZE the stats.
            cursor.execute("VACUUM ANALYZE")
        print(f"built in {built:.1f} s, then VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s")
        user = get_user_model().objects.create_user(username="bench_crm", password="x")  # noqa: S106
        user.groups.set([Group.objects.get(name=Role.CRM), Group.objects.get(name=Role.MARKETING)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM contacts_optout")
        opt_outs = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM gateways_outboundmessage")
        messages = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM (SELECT contact_id FROM contacts_audiencemembership GROUP BY contact_id "
            "HAVING count(*) > 1) d"
        )
        duplicates = cursor.fetchone()[0]
    print(
        f"dataset: {contacts:,} contacts, {opt_outs:,} opt-outs, {duplicates:,} duplicate phones, "
        f"{messages:,} messages of send history"
    )

    user = get_user_model().objects.get(username="bench_crm")
    actor = Actor(user=user, channel=Channel.API, token_name="bench")  # noqa: S106
    audiences = list(Audience.objects.filter(name__in=["All members", "Spring fair"]).values_list("pk", flat=True))
    repeat = max(1, args.repeat)
    only = {part.strip() for part in args.only.split(",")}
    if "preview" in only:
        measure_preview(actor, audiences, repeat)
    if "audiences" in only:
        timings, listed = timed(lambda: audiences_list(actor=actor), repeat)
        sendable = {a["name"]: a["sendable"] for a in listed["audiences"]}
        print(f"audiences.list: {summary(timings)}; sendable per audience {sendable}")
    if "search" in only:
        measure_search(actor, contacts, args.searches)
    if "import" in only:
        measure_import(actor, audiences, args.import_rows, repeat, phases=args.phases)
    print(f"after: {load()}")


def measure_preview(actor: Any, audiences: list[int], repeat: int) -> None:
    from contacts.services import segment_preview

    criteria = {
        "all": [
            {"audiences": audiences},
            {"tags": {"any": ["vip", "regular"]}},
            {"any": [{"days_since_last_purchase": {"min": 30}}, {"language": ["en"]}]},
        ]
    }
    segment_preview(actor=actor, criteria=criteria)  # warm the caches once
    timings, preview = timed(lambda: segment_preview(actor=actor, criteria=criteria), repeat)
    total = preview["sendable"] + sum(preview["exclusions"].values())
    assert total == preview["matched"], preview
    print(
        f"segments.preview: {summary(timings)} (target <= 1.0 s); matched {preview['matched']:,}, "
        f"sendable {preview['sendable']:,}, exclusions {preview['exclusions']}"
    )
    broad = {"audiences": audiences}
    timings, everything = timed(lambda: segment_preview(actor=actor, criteria=broad), repeat)
    print(
        f"segments.preview (both audiences, no filter): {summary(timings)}; "
        f"matched {everything['matched']:,}, sendable {everything['sendable']:,}"
    )


def measure_search(actor: Any, contacts: int, searches: int) -> None:
    import phonenumbers

    from contacts.selectors import contacts_search

    rng = random.Random(7)
    phones: list[str] = []
    while len(phones) < searches:
        i = rng.randrange(1, contacts)
        phone = f"+852{94000000 + i}"
        if i % 100 < 96 and phonenumbers.is_valid_number(phonenumbers.parse(phone)):
            phones.append(phone)
    contacts_search(actor=actor, phone=phones[0])
    samples = []
    for phone in phones:
        t0 = time.perf_counter()
        found = contacts_search(actor=actor, phone=phone)
        samples.append(time.perf_counter() - t0)
        assert found["count"] == 1, phone
    samples.sort()
    print(
        f"contacts.search by phone: {summary(samples, 1000, 'ms')}, p95 {samples[int(len(samples) * 0.95)] * 1000:.2f} ms "
        f"(target <= 5 ms)"
    )


def import_phases(run: Callable[[], Any]) -> str:
    """Run one import with each phase timed: wall seconds, client CPU seconds and the PostgreSQL
    backend's CPU seconds (read from /proc when the server runs on this machine; '-' otherwise).
    CPU seconds are what a busy machine distorts least; wall time includes the waiting."""
    from unittest import mock

    import psycopg
    from django.db import connection

    import contacts.imports as imports
    import smsplatform.kernel.idempotency as idempotency

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")

    def server_cpu() -> float:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    spent: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def phase(name: str) -> Any:
        start = (time.perf_counter(), time.process_time(), server_cpu())
        try:
            yield
        finally:
            end = (time.perf_counter(), time.process_time(), server_cpu())
            total = spent.setdefault(name, [0.0, 0.0, 0.0])
            for i in range(3):
                total[i] += end[i] - start[i]

    def timed_function(module: Any, name: str) -> Any:
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return original(*args, **kwargs)

        return mock.patch.object(module, name, wrapper)

    original_copy = psycopg.Cursor.copy

    @contextlib.contextmanager
    def copy(self: Any, statement: str, *args: Any, **kwargs: Any) -> Any:
        with phase("  " + " ".join(statement.split()[:2])), original_copy(self, statement, *args, **kwargs) as c:
            yield c

    def statement(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        with phase("  " + " ".join(sql.split())[:48]):
            return execute(sql, params, many, context)

    original_commit = connection.commit

    def commit() -> Any:
        with phase("COMMIT"):
            return original_commit()

    with contextlib.ExitStack() as stack:
        for module, name in (
            (imports, "import_parse"),
            (idempotency, "request_fingerprint"),
            (imports, "import_check"),
            (imports, "_copy_rows"),
            (imports, "_staged_rows"),
        ):
            stack.enter_context(timed_function(module, name))
        stack.enter_context(mock.patch.object(psycopg.Cursor, "copy", copy))
        stack.enter_context(mock.patch.object(connection, "commit", commit))
        stack.enter_context(connection.execute_wrapper(statement))
        with phase("total"):
            run()
    lines = [
        f"{'wall s':>8} {'client':>7} {'server':>7}  phase (CPU s; statements and COPYs indented, listed before the phase holding them)"
    ]
    for name, (wall, client, server) in spent.items():
        if wall >= 0.01:
            lines.append(f"{wall:8.3f} {client:7.2f} {server:7.2f}  {name}")
    return "\n".join(lines)


def measure_import(actor: Any, audiences: list[int], rows: int, repeat: int, phases: bool = False) -> None:
    """New numbers each run (blocks no contact has yet, so a --reuse run imports new ones too), in
    mobile ranges phonenumbers accepts in full (61, 63, 64, 65, 69), written the three ways files
    have them."""
    from contacts.imports import contacts_import, import_parse
    from contacts.models import Contact

    stride = max(rows, 100_000)
    candidates = [prefix * 1_000_000 + k for prefix in (61, 63, 64, 65, 69) for k in range(0, 1_000_000, stride)]
    blocks = [
        block
        for block in candidates
        if block + rows <= (block // 1_000_000 + 1) * 1_000_000
        and not Contact.objects.filter(phone__gte=f"+852{block}", phone__lt=f"+852{block + rows}").exists()
    ][: repeat + phases]

    def csv_text(block: int) -> str:
        lines = ["phone,language,tags,consent_wording,consent_source,consent_obtained_at,consent_proof_reference"]
        for i in range(rows):
            local = str(block + i)
            number = f"{local[:4]} {local[4:]}" if i % 3 == 0 else (f"+852{local}" if i % 3 == 1 else local)
            lines.append(f"{number},en,new;spring,I agree to SMS offers,pos,2026-01-05T10:00:00+08:00,receipt-{i}")
        return "\n".join(lines) + "\n"

    rates, parse_rates, results = [], [], []
    for run_no, block in enumerate(blocks[:repeat]):
        text = csv_text(block)
        t0 = time.perf_counter()
        import_parse(text, batch_consent=None)
        parse_rates.append(rows / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        result = contacts_import(
            actor=actor,
            csv_text=text,
            source="bench",
            audience_id=audiences[0],
            idempotency_key=f"bench-import-{os.getpid()}-{run_no}",
        )
        rates.append(rows / (time.perf_counter() - t0))
        assert result["status"] == "executed", result
        results.append(result["result"])
    print(
        f"CSV import: median {statistics.median(rates):,.0f} rows/s (min {min(rates):,.0f}, max {max(rates):,.0f}, "
        f"n={len(rates)}) of {rows:,} rows each (target >= 30,000 rows/s); parsing and validation alone "
        f"{statistics.median(parse_rates):,.0f} rows/s; {results[-1]}"
    )
    if phases and len(blocks) > repeat:
        text = csv_text(blocks[repeat])
        breakdown = import_phases(
            lambda: contacts_import(
                actor=actor,
                csv_text=text,
                source="bench",
                audience_id=audiences[0],
                idempotency_key=f"bench-import-{os.getpid()}-phases",
            )
        )
        print(f"CSV import phases ({rows:,} rows, {load()}):\n{breakdown}")


if __name__ == "__main__":
    main()
