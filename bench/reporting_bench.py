"""Reports at scale on PostgreSQL: a campaign of a million messages with their receipts, 150,000
clicks, 30,000 orders and 3,000 refunds.

Usage: python bench/reporting_bench.py [--messages 1000000] [--clicks 150000] [--orders 30000]
       [--refunds 3000] [--repeat 5] [--keep] [--database-url URL]

Builds a throwaway database with set-based SQL (generate_series), then:
- the first full refresh of the aggregates (reporting.refresh_aggregates' body, run to completion);
- campaign_reports.get (target <= 150 ms), conversion_attribution.get (<= 500 ms) and
  link_clicks.list aggregated (<= 150 ms), each timed --repeat times (median);
- freshness: one second of a 5,000 msg/s send's receipts (5 batches turned delivered), then one
  refresh of the messages: its time plus the beat interval is the report's lag.
The figures are "loaded": the machine is shared; its load average is printed with them.
Without PostgreSQL it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)

from common import database_url_argument, load, machine, on_throwaway_database, summary, timed  # noqa: E402

DATASET = """
INSERT INTO contacts_contact (phone, country, language, name, tags, source, crm_key, version, created_at, updated_at)
SELECT '+852' || (60000000 + i)::text, 'HK', 'en', '', '[]'::jsonb, 'bench', '', 1, now(), now()
FROM generate_series(1, {n}) i;
INSERT INTO campaigns_sendbatch (campaign_id, number, kind, state, size, not_before, quota_reference, created_at, stop_reason)
SELECT {campaign}, b, 'initial', 'completed', 1000, now() - interval '2 days', 'q' || b, now(), ''
FROM generate_series(1, ({n} + 999) / 1000) b;
INSERT INTO gateways_outboundmessage (gateway_id, sender_id, destination, country, body, encoding, segments, cost,
    currency, purpose, state, reference, quota_reference, request_receipt, batch_id, contact_id, attempts,
    error_code, error_reason, created_at, submitted_at, final_at, updated_at)
SELECT {gateway} + (i % 2), '#SHOPHK', c.phone, 'HK', 'x', 'GSM-7', 1, 0.45, 'HKD', 'marketing',
       CASE WHEN i % 100 < 92 THEN 'delivered' WHEN i % 100 < 97 THEN 'failed'
            WHEN i % 100 < 99 THEN 'expired' ELSE 'submitted' END,
       'campaign', 'q', true, sb.id, c.id, 1,
       CASE WHEN i % 100 BETWEEN 92 AND 96 THEN 'E' || (i % 3) ELSE '' END, '',
       t0 + (i % 86400) * interval '1 second', t0 + (i % 86400) * interval '1 second' + interval '1 second',
       CASE WHEN i % 100 < 99 THEN t0 + (i % 86400) * interval '1 second' + interval '9 seconds' END, now()
FROM (SELECT generate_series(1, {n}) i, timestamptz '2026-11-02 00:00+00' t0) g
JOIN contacts_contact c ON c.id = g.i
JOIN campaigns_sendbatch sb ON sb.campaign_id = {campaign} AND sb.number = (g.i - 1) / 1000 + 1;
INSERT INTO sms_templates_linkclick (link_id, clicked_at, device_class, recipient_token, is_unique)
SELECT {link}, timestamptz '2026-11-02 00:00+00' + (k % 86400) * interval '1 second' + interval '30 minutes',
       CASE WHEN k % 20 = 0 THEN 'bot' WHEN k % 3 = 0 THEN 'desktop' ELSE 'mobile' END,
       substr(md5('{salt}' || ((((k - 1) % ({clicks} * 4 / 5)) + 1) * 7 % {n} + 1)::text), 1, 8),
       k % 20 <> 0 AND k <= {clicks} * 4 / 5
FROM generate_series(1, {clicks}) k
ON CONFLICT (link_id, recipient_token) WHERE is_unique DO NOTHING;
INSERT INTO automations_eventsource (code, name, enabled, secret, secret_previous, created_at, updated_at)
VALUES ('shop', 'Shop', true, 's', '', now(), now());
INSERT INTO automations_commerceevent (source_id, event_id, type, name, contact_id, phone, external_id, occurred_at,
    received_at, order_ref, amount, currency, refund_of, coupon_code, channel, click_token, link_code, payload,
    payload_hash)
SELECT (SELECT id FROM automations_eventsource WHERE code = 'shop'), 'o' || k, 'order_paid', '', c.id, c.phone, '',
       timestamptz '2026-11-02 02:00+00' + (k % 86400) * interval '1 second', now(), 'ORD' || k,
       50 + (k % 400), 'HKD', '', CASE WHEN k % 50 = 0 THEN 'SPRING' ELSE '' END,
       CASE WHEN k % 25 = 0 THEN 'email' ELSE '' END, '', '', '{{}}'::jsonb, ''
FROM generate_series(1, {orders}) k JOIN contacts_contact c ON c.id = (k * 7) % {n} + 1;
INSERT INTO automations_commerceevent (source_id, event_id, type, name, contact_id, phone, external_id, occurred_at,
    received_at, order_ref, amount, currency, refund_of, coupon_code, channel, click_token, link_code, payload,
    payload_hash)
SELECT source_id, 'r' || event_id, 'order_refunded', '', contact_id, phone, '', occurred_at + interval '2 days',
       now(), '', 20, 'HKD', order_ref, '', '', '', '', '{{}}'::jsonb, ''
FROM automations_commerceevent WHERE type = 'order_paid' ORDER BY id LIMIT {refunds};
ANALYZE;
"""


def build(args: argparse.Namespace) -> int:
    import uuid
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from campaigns.content import recipient_token_salt
    from campaigns.models import Campaign
    from contacts.models import Segment
    from gateways.models import Gateway
    from templates.models import ShortLink

    user = get_user_model().objects.create_superuser("bench", "bench@example.hk", "x")
    gw = Gateway.objects.create(code="sim-a", name="A", provider="simulator", countries=["HK"])
    Gateway.objects.create(code="sim-b", name="B", provider="simulator", countries=["HK"])
    segment = Segment.objects.create(
        name="Members", criteria={}, preview_id=uuid.uuid4(), matched_count=0, sendable_count=0, created_by=user
    )
    campaign = Campaign.objects.create(
        name="Bench",
        state="completed",
        segment=segment,
        sender_id="#SHOPHK",
        owner=user,
        created_by=user,
        dispatched_at=timezone.now() - timedelta(days=40),
        variables={"coupon_code": "SPRING"},
    )
    link = ShortLink.objects.create(
        code="bench",
        short_domain="s.example.hk",
        original_url="https://shop.example.hk/",
        target_url="https://shop.example.hk/?utm_source=sms",
        landing_host="shop.example.hk",
        utm={"utm_source": "sms"},
        expires_at=timezone.now() + timedelta(days=30),
        campaign_id=campaign.pk,
        per_recipient=True,
        preview_id=uuid.uuid4(),
        owner=user,
        created_by=user,
    )
    campaign.short_link = link
    campaign.save(update_fields=["short_link"])
    sql = DATASET.format(
        n=args.messages,
        campaign=campaign.pk,
        gateway=gw.pk,
        link=link.pk,
        salt=recipient_token_salt(campaign.pk, link.pk),
        clicks=args.clicks,
        orders=args.orders,
        refunds=args.refunds,
    )
    with connection.cursor() as cursor:
        for statement in sql.split(";\n"):
            if statement.strip():
                t = time.perf_counter()
                cursor.execute(statement)
                print(f"  {statement.strip().split(chr(10))[0][:60]}... {time.perf_counter() - t:.1f} s")
    return campaign.pk


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from reporting.aggregates import refresh_all, refresh_messages
    from reporting.selectors import campaign_report_get, conversion_attribution_get, link_clicks_list
    from smsplatform.kernel.actor import Actor, Channel
    from smsplatform.schedules import REPORT_REFRESH_SECONDS

    print(machine())
    t = time.perf_counter()
    campaign_id = build(args)
    print(f"data set built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    runs = 0
    while True:  # the first refresh, to completion (batches are capped per run)
        result = refresh_all()
        runs += 1
        if runs >= 2 and not result["clicks"] and not result["conversions"] and result["batches"] < 400:
            break
    print(f"first full refresh: {time.perf_counter() - t:.1f} s in {runs} runs (loaded)")
    actor = Actor(user=get_user_model().objects.get(username="bench"), channel=Channel.API)
    report = campaign_report_get(actor=actor, campaign_id=campaign_id)
    attribution = conversion_attribution_get(actor=actor, campaign_id=campaign_id)
    print(
        f"report: {report['messages']['total']} messages, {report['messages']['delivered']} delivered, "
        f"{report['clicks']['total']} human clicks ({report['clicks']['scanner_and_bot_clicks']} bot), "
        f"{attribution['orders']} orders credited, revenue {attribution['revenue']}, roi {attribution['roi']}"
    )
    print(load())
    for name, fn, target in (
        ("campaign_reports.get", lambda: campaign_report_get(actor=actor, campaign_id=campaign_id), 150),
        ("conversion_attribution.get", lambda: conversion_attribution_get(actor=actor, campaign_id=campaign_id), 500),
        ("link_clicks.list (aggregated)", lambda: link_clicks_list(actor=actor, campaign_id=campaign_id), 150),
    ):
        timings, _ = timed(fn, args.repeat)
        print(f"{name}: {summary(timings, 1000, 'ms')} (target <= {target} ms, loaded)")
    # Freshness: one second of receipts of a 5,000 msg/s send (five 1,000-message batches).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gateways_outboundmessage SET state = 'submitted', final_at = NULL "
            "WHERE batch_id IN (SELECT id FROM campaigns_sendbatch WHERE campaign_id = %s ORDER BY id DESC LIMIT 5)",
            [campaign_id],
        )
    refresh_messages()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gateways_outboundmessage SET state = 'delivered', final_at = now() "
            "WHERE batch_id IN (SELECT id FROM campaigns_sendbatch WHERE campaign_id = %s ORDER BY id DESC LIMIT 5)",
            [campaign_id],
        )
    # The receipt path marks batches dirty through DeliveryReceipt.applied_at; this data set has no
    # receipt rows, so the five batches are marked as never aggregated instead (same refresh work).
    from reporting.models import ReportBatchState

    ReportBatchState.objects.filter(
        batch_id__in=ReportBatchState.objects.filter(campaign_id=campaign_id)
        .order_by("-batch_id")
        .values("batch_id")[:5]
    ).delete()
    timings, _ = timed(refresh_messages, 1)
    after = campaign_report_get(actor=actor, campaign_id=campaign_id)["messages"]["pending_receipts"]
    print(
        f"freshness: 5,000 receipts folded by one refresh in {timings[0] * 1000:.0f} ms (beat every "
        f"{REPORT_REFRESH_SECONDS} s: reports current within ~{REPORT_REFRESH_SECONDS + timings[0]:.1f} s); "
        f"pending receipts now {after} (loaded)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--clicks", type=int, default=150_000)
    parser.add_argument("--orders", type=int, default=30_000)
    parser.add_argument("--refunds", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database("reporting_bench", args.database_url, lambda: run(args), keep=args.keep)


if __name__ == "__main__":
    main()
