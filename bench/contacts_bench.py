"""Contacts at scale on PostgreSQL: segments.preview, contacts.search by phone, CSV import.

Usage: python bench/contacts_bench.py [--contacts 1000000] [--import-rows 100000] [--database-url URL]

Creates a throwaway database on the PostgreSQL server named by --database-url /
BENCH_DATABASE_URL / DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres), migrates
it, and builds the issue's dataset with set-based SQL (generate_series): 1M contacts (a few
outside Hong Kong and some in a country no gateway covers), 90% with marketing consent evidence,
100k opt-outs (STOP, web, invalid, blocked), 20k phones present in two audiences (duplicates),
2M rows of send history over 30 days, 300k orders. Then it measures, through the real services:

- segments.preview over both audiences with a tag and a purchase criterion (target <= 1.0 s);
- contacts.search by phone, 500 random numbers (target <= 5 ms each);
- a CSV import of new contacts with consent columns, phone normalisation included
  (target >= 30,000 rows/s).

Without PostgreSQL it prints why and exits 0 (``make bench`` runs every script). The database is
dropped at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)  # progress shows as it happens
sys.path.insert(0, str(ROOT))


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


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def admin_sql(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(statement)


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
ANALYZE;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        print("contacts_bench: needs PostgreSQL (--database-url postgresql://...); skipped.")
        return
    name = f"smsplatform_contacts_bench_{os.getpid()}"
    try:
        admin_sql(args.database_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # the server is not there: say so, do not fail `make bench`
        print(f"contacts_bench: cannot create a database on {args.database_url} ({exc}); skipped.")
        return
    os.environ["DATABASE_URL"] = with_db(args.database_url, name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsplatform.settings")
    try:
        run(args)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            admin_sql(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection

    from compliance.roles import Role
    from contacts.imports import contacts_import
    from contacts.models import Audience
    from contacts.selectors import contacts_search
    from contacts.services import segment_preview
    from smsplatform.kernel.actor import Actor, Channel

    print(f"machine: {machine()}; PostgreSQL {connection.cursor().connection.info.server_version}")
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - t0:.1f} s")

    from decimal import Decimal

    from gateways.models import Gateway, GatewayRate, Provider

    gateway = Gateway.objects.create(code="bench", name="bench", provider=Provider.SIMULATOR, countries=["HK", "SG"])
    for country in ("HK", "SG"):
        GatewayRate.objects.create(gateway=gateway, country=country, price_per_segment=Decimal("0.30"))
    contacts = args.contacts
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        sql = DATASET.format(contacts=contacts, messages=2 * contacts, orders=3 * contacts // 10)
        for statement in sql.split(";\n"):
            if statement.strip():
                cursor.execute(statement)
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
        f"{messages:,} messages of send history; built in {time.perf_counter() - t0:.1f} s"
    )

    user = get_user_model().objects.create_user(username="bench_crm", password="x")  # noqa: S106
    user.groups.set([Group.objects.get(name=Role.CRM), Group.objects.get(name=Role.MARKETING)])
    actor = Actor(user=user, channel=Channel.API, token_name="bench")  # noqa: S106
    audiences = list(Audience.objects.values_list("pk", flat=True))

    # 1. segments.preview
    criteria = {
        "all": [
            {"audiences": audiences},
            {"tags": {"any": ["vip", "regular"]}},
            {"any": [{"days_since_last_purchase": {"min": 30}}, {"language": ["en"]}]},
        ]
    }
    timings = []
    preview: dict = {}
    for _ in range(5):
        t0 = time.perf_counter()
        preview = segment_preview(actor=actor, criteria=criteria)
        timings.append(time.perf_counter() - t0)
    total = preview["sendable"] + sum(preview["exclusions"].values())
    assert total == preview["matched"], preview
    print(
        f"segments.preview: best {min(timings):.3f} s, median {statistics.median(timings):.3f} s "
        f"(target <= 1.0 s); matched {preview['matched']:,}, sendable {preview['sendable']:,}, "
        f"exclusions {preview['exclusions']}"
    )
    broad = {"audiences": audiences}
    t0 = time.perf_counter()
    everything = segment_preview(actor=actor, criteria=broad)
    print(
        f"segments.preview (both audiences, no filter): {time.perf_counter() - t0:.3f} s; "
        f"matched {everything['matched']:,}, sendable {everything['sendable']:,}"
    )

    # 2. contacts.search by phone
    rng = random.Random(7)
    import phonenumbers

    phones: list[str] = []
    while len(phones) < args.searches:
        i = rng.randrange(1, contacts)
        phone = f"+852{94000000 + i}"
        if i % 100 < 96 and phonenumbers.is_valid_number(phonenumbers.parse(phone)):
            phones.append(phone)
    contacts_search(actor=actor, phone=phones[0])
    samples = []
    for phone in phones:
        t0 = time.perf_counter()
        found = contacts_search(actor=actor, phone=phone)
        samples.append((time.perf_counter() - t0) * 1000)
        assert found["count"] == 1, phone
    samples.sort()
    print(
        f"contacts.search by phone: median {statistics.median(samples):.2f} ms, "
        f"p95 {samples[int(len(samples) * 0.95)]:.2f} ms over {len(samples)} searches (target <= 5 ms)"
    )

    # 3. CSV import with phone normalisation
    rows = args.import_rows
    lines = ["phone,language,tags,consent_wording,consent_source,consent_obtained_at,consent_proof_reference"]
    for i in range(rows):
        local = str(61000000 + i)  # a range phonenumbers accepts in full
        number = f"{local[:4]} {local[4:]}" if i % 3 == 0 else (f"+852{local}" if i % 3 == 1 else local)
        lines.append(f"{number},en,new;spring,I agree to SMS offers,pos,2026-01-05T10:00:00+08:00,receipt-{i}")
    text = "\n".join(lines) + "\n"
    t0 = time.perf_counter()
    result = contacts_import(
        actor=actor, csv_text=text, source="bench", audience_id=audiences[0], idempotency_key="bench-import-0001"
    )
    elapsed = time.perf_counter() - t0
    assert result["status"] == "executed", result
    print(
        f"CSV import: {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s (target >= 30,000 rows/s); "
        f"{result['result']}"
    )


if __name__ == "__main__":
    main()
