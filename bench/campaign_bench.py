"""One campaign of a million recipients on PostgreSQL, end to end through the SMPP worker.

Usage: python bench/campaign_bench.py [--recipients 1000000] [--window 500] [--workers 1] [--database-url URL]

Builds a throwaway database (set-based SQL): the recipients with marketing consent in one
audience, plus 2% more contacts that opted out; a per-recipient short link; an SMPP gateway
pointing at the project's SMSC simulator (receipts requested). Then, through the real services:

- segments.preview and campaigns.create_draft over the whole audience;
- sms_marketing.cost_preview for the campaign (target <= 2 s);
- dispatch: recipients materialised with one INSERT ... SELECT (rendered text, per-recipient
  token, gateway and price per country, batches), quota reserved;
- the SMPP bind worker(s) submit every message, the simulator returns a receipt for each, and
  the receipts are recorded: dispatch start to the last receipt recorded (target >= 5,000 msg/s);
- the raw smpplib bind rate against the same simulator, as the ceiling.

Without PostgreSQL it prints why and exits 0 (``make bench`` runs every script).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens

from common import database_url_argument, machine, on_throwaway_database  # noqa: E402  (bench/ is on sys.path when run)
from smpp_bench import stop_worker  # noqa: E402
from smpp_throughput import raw_bind_rate  # noqa: E402

DATASET = """
INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, updated_at)
SELECT '+852' || (60000000 + i)::text, 'HK', CASE WHEN i % 3 = 0 THEN 'en' ELSE 'zh-hant' END, '',
       '["member"]'::jsonb, 'bench', '', 1, now() - interval '100 days', now()
FROM generate_series(1, {total}) i;

INSERT INTO contacts_consentevidence (contact_id, channel, purpose, wording, source, obtained_at, proof_reference,
    recorded_at, actor_channel, actor_token_name)
SELECT id, 'sms', 'marketing', 'I agree to receive offers by SMS', 'web_form', now() - interval '90 days',
       'form-' || id, now(), 'system', 'bench'
FROM contacts_contact;

INSERT INTO contacts_audience (name, description, source, region, sync_source, purchase_behaviour, created_at)
VALUES ('Members', '', 'crm', 'HK', '', '', now());

INSERT INTO contacts_audiencemembership (audience_id, contact_id, added_at)
SELECT (SELECT id FROM contacts_audience WHERE name = 'Members'), id, now() FROM contacts_contact;

INSERT INTO contacts_optout (phone, contact_id, reason, source, message_text, language, occurred_at, recorded_at,
    sync_state, actor_channel, actor_token_name, note)
SELECT phone, id, 'stop', 'sms', 'STOP', 'en', now() - interval '10 days', now(), 'synced', 'system', 'bench', ''
FROM contacts_contact WHERE id > {recipients};
ANALYZE;
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--no-send", action="store_true", help="stop after the dispatch")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the dispatch")
    parser.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN ANALYZE)")
    parser.add_argument(
        "--bilingual",
        action="store_true",
        help="Chinese + English copy (UCS-2, 2 parts) instead of English copy in one GSM-7 segment",
    )
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database(
        "campaign_bench", args.database_url, lambda: run(args, os.environ["DATABASE_URL"]), keep=args.keep
    )


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - start, out


def run(args: argparse.Namespace, url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="campaignbench-"))
    os.environ.update(
        DATABASE_URL=url,
        SMS_VAR_DIR=str(tmp),
        DJANGO_SETTINGS_MODULE="smsplatform.settings",
        # Outside debug the settings refuse the public default key: the bench brings its own.
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or "bench-secret-key-" + "x" * 40,
        BENCH_SMPP_PASSWORD="sim-pass",  # noqa: S106 - the simulator's throwaway credential
        CELERY_BROKER_URL=f"filesystem://{tmp}",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from decimal import Decimal

    from django.db import connection

    from campaigns import tasks
    from campaigns.dispatch import campaign_dispatch
    from campaigns.selectors import cost_preview
    from campaigns.services import campaign_create_draft, campaign_send_approved
    from compliance.roles import Role
    from contacts.services import segment_create, segment_preview
    from gateways.models import (
        Gateway,
        GatewayRate,
        MessageState,
        OutboundMessage,
        Provider,
        SenderId,
        SenderIdKind,
        SenderIdStatus,
    )
    from gateways.platform_config import platform_config_update
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.config_service import platform_config_get
    from smsplatform.kernel.actor import Actor, Channel
    from templates.services import short_link_create
    from templates.short_links.preview import short_link_preview
    from tests.support.smsc import SmscConfig, SmscProcess

    print(f"# campaign of {args.recipients:,} recipients, PostgreSQL, {machine()}")
    total = int(args.recipients * 1.02)
    seconds, _ = timed(_sql, connection, DATASET.format(total=total, recipients=args.recipients))
    print(f"dataset: {total:,} contacts ({total - args.recipients:,} opted out) in {seconds:.1f}s")

    from django.contrib.auth.models import Group, User

    manager = User.objects.create_user("bench-manager", password=None)
    manager.groups.add(Group.objects.get(name=Role.MARKETING), Group.objects.get(name=Role.APPROVER))
    actor = Actor(user=manager, channel=Channel.MCP, token_name="bench")  # noqa: S106 - a token label
    config = platform_config_get()
    changes: dict[str, Any] = {"schedule": {**config["config"]["schedule"], "quiet_hours": {}}}  # no wait for 09:00
    if not args.bilingual:
        # English-only opt-out wording (outside Hong Kong's bilingual rule): one GSM-7 segment per message.
        changes["unsubscribe"] = {**config["config"]["unsubscribe"], "require_bilingual_footer": False}
    platform_config_update(
        actor=Actor.system("bench"),
        changes=changes,
        base_version_token=config["base_version_token"],
        idempotency_key="bench-config-1",
    )

    smsc = SmscProcess(
        SmscConfig(
            port=0, credentials={"bench": "sim-pass"}, log_path=str(tmp / "smsc.jsonl"), receipt_delay=(0.0, 0.01)
        ),
        cwd=ROOT,
    ).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        gateway = Gateway.objects.create(
            code="bench-smpp",
            name="bench",
            provider=Provider.SMPP,
            countries=["HK"],
            window_size=args.window,
            max_rate_per_second=100_000,
            encodings=["GSM-7", "UCS-2"],
            settings={"host": smsc.host, "port": smsc.port, "system_id": "bench"},
            credentials_env={"password": "BENCH_SMPP_PASSWORD"},
        )
        GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.01"))
        SenderId.objects.create(
            value="#SHOPHK",
            kind=SenderIdKind.SSRS,
            brand="ShopHK",
            status=SenderIdStatus.REGISTERED,
            regions=["HK"],
            ssrs_registered_regions=["HK"],
        )
        account = account_instance()
        account.monthly_quota_segments = 100_000_000
        account.save(update_fields=["monthly_quota_segments", "updated_at"])
        if account.balance < Decimal("100000000"):  # funded through the audited service, as operations would
            account_top_up(
                actor=Actor.system("bench"),
                amount=Decimal("100000000") - account.balance,
                reason="bench funds",
                idempotency_key="bench-top-up-1",
            )
        audience_id = connection.cursor().execute("SELECT id FROM contacts_audience").fetchone()[0]

        seconds, preview = timed(segment_preview, actor=actor, criteria={"audiences": [audience_id]})
        print(f"segments.preview: {seconds:.2f}s ({preview['sendable']:,} sendable of {preview['matched']:,})")
        segment = segment_create(
            actor=actor,
            segment_preview_id=preview["segment_preview_id"],
            name="All members",
            idempotency_key="bench-segment",
        )["result"]
        link_preview = short_link_preview(
            actor=actor,
            url="https://shop.example.com/sale",
            utm={"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "bench"},
            per_recipient=True,
        )
        link = short_link_create(
            actor=actor, short_link_preview_id=link_preview["short_link_preview_id"], idempotency_key="bench-link"
        )["result"]
        data = {
            "name": "Bench sale",
            "segment_id": segment["segment_id"],
            "text": (
                "ShopHK: weekend sale, 20% off everything {{link}} Reply STOP to opt out 回覆STOP退訂"
                if args.bilingual
                else "ShopHK: weekend sale, 20% off everything {{link}} Reply STOP to opt out"
            ),
            "language": "bilingual" if args.bilingual else "en",
            "brand": "ShopHK",
            "short_link_id": link["short_link_id"],
            "sender_id": "#SHOPHK",
            "gateway": "bench-smpp",
            "batch_size": args.batch_size,
            "batch_interval_seconds": 0,
            "budget": "1000000",
        }
        seconds, draft = timed(campaign_create_draft, actor=actor, data=data, idempotency_key="bench-draft")
        draft = draft["result"]
        print(
            f"campaigns.create_draft: {seconds:.2f}s ({draft['recipients']:,} recipients, "
            f"{draft['segments_per_message']} segment(s) {draft['encoding']})"
        )
        runs = [timed(cost_preview, actor=actor, campaign_id=draft["campaign_id"])[0] for _ in range(3)]
        print(f"cost_preview: median {statistics.median(runs):.2f}s (runs {', '.join(f'{r:.2f}' for r in runs)})")

        ceiling = raw_bind_rate(smsc.host, smsc.port, "bench", "sim-pass", 50_000, args.window)
        print(f"raw smpplib bind rate (no database, same simulator): {ceiling:,.0f} submit_sm/s")
        if not args.no_send:
            for _ in range(args.workers):
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "smpp_worker", "--gateway", "bench-smpp"],
                        cwd=ROOT,
                        env=os.environ.copy(),
                    )
                )
            time.sleep(2)  # bound and idle before the clock starts
        tasks.dispatch_campaign.delay = lambda *a, **k: None  # type: ignore[method-assign,assignment]  # timed below
        campaign_send_approved(
            actor=actor,
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,
            idempotency_key="bench-send",
        )
        start = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            outcome = profiler.runcall(campaign_dispatch, campaign_id=draft["campaign_id"], version=1)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        else:
            outcome = campaign_dispatch(campaign_id=draft["campaign_id"], version=1)
        dispatch_s = time.perf_counter() - start
        print(
            f"dispatch: {outcome['messages']:,} messages in {outcome['batches']} batches, {dispatch_s:.1f}s "
            f"({outcome['messages'] / dispatch_s:,.0f} rows/s, quota reserved {outcome['reserved_amount']})"
        )
        if args.no_send:
            return
        final = (MessageState.DELIVERED, MessageState.FAILED, MessageState.EXPIRED)
        expected = outcome["messages"]
        done = 0
        while True:
            time.sleep(2)
            done = OutboundMessage.objects.filter(gateway=gateway, state__in=final).count()
            elapsed = time.perf_counter() - start
            print(f"  {elapsed:6.1f}s  {done:,} final")
            if done >= expected or any(w.poll() is not None for w in workers) or elapsed > 3600:
                break
        elapsed = time.perf_counter() - start
        delivered = OutboundMessage.objects.filter(gateway=gateway, state=MessageState.DELIVERED).count()
        stats = smsc.stats()
        print(
            f"end to end (dispatch start -> last receipt recorded): {delivered:,} delivered of {expected:,} in "
            f"{elapsed:.1f}s = {delivered / elapsed:,.0f} msg/s; SMSC: {stats.get('by_status', {})}"
        )
    finally:
        stop_worker(*workers)
        smsc.stop()
        connection.close()


def _sql(connection: Any, script: str) -> None:
    with connection.cursor() as cursor:
        for statement in (s.strip() for s in script.split(";")):
            if statement:
                cursor.execute(statement)


if __name__ == "__main__":
    main()
