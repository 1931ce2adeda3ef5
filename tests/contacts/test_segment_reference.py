"""segments.preview's set-based SQL against a plain-Python reading of the documented rules.

Random small worlds (contacts in several audiences, consent of either purpose or none, opt-outs of
every reason, some lifted and some for phones no contact has, send history of both purposes and
states around every cap window, orders) are counted both ways; every figure must agree:
matched rows, distinct phones, sendable, each exclusion, per country and per cap window.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from compliance.models import OptOut
from compliance.roles import Role
from contacts.criteria import criteria_audience_ids, criteria_normalise
from contacts.models import Audience, AudienceMembership, ConsentEvidence, Contact, CustomerFact
from contacts.selectors import EXCLUSION_ORDER, segment_counts
from gateways.frequency import frequency_windows
from gateways.models import Gateway, GatewayRate, MessagePurpose, MessageState, OutboundMessage, Provider
from tests.support.contacts import api_actor

pytestmark = pytest.mark.django_db

REASONS = ["stop", "web", "api", "invalid", "blocked", "complaint", "do_not_call"]
TAGS = ["vip", "new", "lapsed"]


def _world(rng: random.Random) -> dict[str, Any]:
    now = timezone.now()
    gateway = Gateway.objects.create(code="ref-gw", name="ref", provider=Provider.SIMULATOR, countries=["HK", "SG"])
    for country in ("HK", "SG"):
        GatewayRate.objects.create(gateway=gateway, country=country, price_per_segment=Decimal("0.25"))
    audiences = [Audience.objects.create(name=f"R{i}", source="crm") for i in range(3)]
    contacts = []
    for i in range(70):
        country = rng.choice(["HK", "HK", "HK", "SG", "US"])
        phone = {"HK": f"+8529{i:07d}", "SG": f"+659{i:07d}", "US": f"+1415{i:07d}"}[country]
        contact = Contact.objects.create(
            phone=phone,
            country=country,
            language=rng.choice(["en", "zh-hant"]),
            tags=rng.sample(TAGS, rng.randrange(len(TAGS) + 1)),
            source="test",
        )
        contacts.append(contact)
        for audience in rng.sample(audiences, rng.choice([0, 1, 1, 1, 2, 3])):
            AudienceMembership.objects.create(audience=audience, contact=contact)
        for purpose in rng.sample(["marketing", "transactional"], rng.randrange(3)):
            for _ in range(rng.choice([1, 1, 2])):
                ConsentEvidence.objects.create(
                    contact=contact,
                    purpose=purpose,
                    wording="w",
                    source="s",
                    obtained_at=now - timedelta(days=50),
                    proof_reference="p",
                    actor_channel="system",
                )
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            OptOut.objects.create(
                phone=phone,
                reason=rng.choice(REASONS),
                source="t",
                actor_channel="system",
                lifted_at=now if rng.random() < 0.3 else None,
            )
        for _ in range(rng.choice([0, 0, 1, 2, 3, 4])):
            OutboundMessage.objects.create(
                gateway=gateway,
                sender_id="#SHOPHK",
                destination=phone,
                country=country,
                body="hi",
                encoding="GSM-7",
                segments=1,
                purpose=rng.choice([MessagePurpose.MARKETING, MessagePurpose.MARKETING, MessagePurpose.TRANSACTIONAL]),
                state=rng.choice([MessageState.DELIVERED, MessageState.QUEUED, MessageState.FAILED]),
                quota_reference="q",
                # Never within a minute of a window's edge: the reference and SQL read "now" apart.
                created_at=now - timedelta(hours=rng.choice([1, 5, 23, 25, 70, 160, 170, 300])),
            )
        for k in range(rng.choice([0, 1, 2])):
            CustomerFact.objects.create(
                contact=contact,
                kind="order",
                external_id=f"o-{i}-{k}",
                status=rng.choice(["paid", "paid", "cancelled"]),
                occurred_at=now - timedelta(days=rng.choice([3, 20, 45, 100, 400])),
            )
    # Opt-outs of phones that are nobody's contact must change nothing.
    OptOut.objects.create(phone="+85298765432", reason="stop", source="t", actor_channel="system")
    return {"audiences": [a.pk for a in audiences], "contacts": contacts, "now": now}


def _matches(criteria: dict[str, Any], contact: Contact, member_of: set[int], now: Any) -> bool:
    ((key, value),) = criteria.items()
    if key == "all":
        return all(_matches(part, contact, member_of, now) for part in value)
    if key == "any":
        return any(_matches(part, contact, member_of, now) for part in value)
    if key == "audiences":
        return bool(member_of & set(value))
    if key == "tags":
        tags = set(contact.tags)
        return (
            ("any" not in value or bool(tags & set(value["any"])))
            and ("all" not in value or set(value["all"]) <= tags)
            and ("none" not in value or not tags & set(value["none"]))
        )
    if key == "country":
        return contact.country in value
    if key == "language":
        return contact.language in value
    if key == "days_since_last_purchase":
        times = [f.occurred_at for f in contact.facts.all() if f.kind == "order" and f.status != "cancelled"]
        if not times:
            return False
        age = now - max(times)
        return age >= timedelta(days=value.get("min", 0)) and age <= timedelta(days=value.get("max", 10_000))
    raise AssertionError(key)


def _reference(world: dict[str, Any], criteria: dict[str, Any], scope: list[int]) -> dict[str, Any]:
    now = timezone.now()
    windows = [w for w in frequency_windows() if "marketing" in w.purposes and w.limit > 0]
    exclusions = dict.fromkeys(EXCLUSION_ORDER, 0)
    by_window = {w.name: 0 for w in windows}
    by_country: dict[str, dict[str, int]] = {}
    rows = distinct = sendable = 0
    for contact in world["contacts"]:
        member_of = set(contact.memberships.values_list("audience_id", flat=True))
        in_scope = member_of & set(scope)
        if not in_scope or not _matches(criteria, contact, member_of, now):
            continue
        rows += len(in_scope)
        distinct += 1
        reasons = set(
            OptOut.objects.filter(phone=contact.phone, lifted_at__isnull=True).values_list("reason", flat=True)
        )
        sent = OutboundMessage.objects.filter(destination=contact.phone).exclude(state=MessageState.FAILED)
        reached = [
            w
            for w in windows
            if sent.filter(purpose__in=w.purposes, created_at__gte=now - timedelta(hours=w.hours)).count() >= w.limit
        ]
        if "invalid" in reasons:
            reason = "invalid"
        elif "blocked" in reasons:
            reason = "blocked"
        elif reasons:
            reason = "opted_out"
        elif not contact.consents.filter(purpose="marketing").exists():
            reason = "no_consent"
        elif contact.country not in ("HK", "SG"):
            reason = "country_not_covered"
        elif reached:
            reason = "frequency_capped"
        else:
            reason = "sendable"
        entry = by_country.setdefault(contact.country, {"contacts": 0, "sendable": 0, "excluded": 0})
        entry["contacts"] += 1
        if reason == "sendable":
            sendable += 1
            entry["sendable"] += 1
        else:
            exclusions[reason] += 1
            entry["excluded"] += 1
            for w in reached if reason == "frequency_capped" else []:
                by_window[w.name] += 1
    exclusions["duplicate_phone"] = rows - distinct
    return {
        "matched": rows,
        "distinct_phones": distinct,
        "sendable": sendable,
        "exclusions": exclusions,
        "by_window": by_window,
        "by_country": by_country,
    }


# The default caps have two windows with one rule (a day's cap of 1 and a 24-hour gap), which the
# preview computes once; the other set has every window different.
CAPS = [None, {"per_day": 2, "per_week": 3, "per_campaign": 1, "transactional_per_day": 10, "min_hours_between": 48}]


@pytest.mark.parametrize("caps", CAPS, ids=["default-caps", "distinct-windows"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_preview_counts_match_the_rules_read_one_contact_at_a_time(
    seed: int, caps: dict[str, int] | None, make_user: Any
) -> None:
    from smsplatform.config_service import platform_config_instance

    if caps is not None:
        config = platform_config_instance()
        config.frequency_caps = caps
        config.save(update_fields=["frequency_caps"])
        assert [(w.hours, w.limit) for w in frequency_windows()] == [(24, 2), (168, 3), (24, 10), (48, 1)]
    rng = random.Random(seed)
    world = _world(rng)
    actor = api_actor(make_user(Role.MARKETING))
    a, b, c = world["audiences"]
    cases = [
        {"audiences": [a, b]},
        {"audiences": [a, b, c]},
        {"all": [{"audiences": [a, c]}, {"tags": {"any": ["vip", "new"]}}]},
        {"all": [{"audiences": [b]}, {"any": [{"country": ["SG", "US"]}, {"tags": {"none": ["lapsed"]}}]}]},
        {"any": [{"language": ["en"]}, {"days_since_last_purchase": {"min": 10, "max": 120}}]},
        {"all": [{"audiences": [a, b, c]}, {"days_since_last_purchase": {"min": 30}}]},
    ]
    for raw in cases:
        criteria = criteria_normalise(raw)
        got = segment_counts(actor=actor, criteria=criteria)
        expected = _reference(world, criteria, got["audience_ids"])
        assert got["audience_ids"] == sorted(criteria_audience_ids(criteria) or world["audiences"])
        for name in ("matched", "distinct_phones", "sendable", "exclusions"):
            assert got[name] == expected[name], (raw, name)
        assert got["matched"] == got["sendable"] + sum(got["exclusions"].values())
        assert {k: v["count"] for k, v in got["frequency_capped_by_window"].items()} == expected["by_window"], raw
        assert {
            e["country"]: {"contacts": e["contacts"], "sendable": e["sendable"], "excluded": e["excluded"]}
            for e in got["by_country"]
        } == expected["by_country"], raw


def test_the_planner_settings_of_the_preview_do_not_outlive_it(make_user: Any) -> None:
    """On PostgreSQL the preview's statement runs with its own planner settings; a caller's
    transaction (a campaign check calls segment_counts inside one) sees its own afterwards."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL planner settings")
    world = _world(random.Random(9))
    actor = api_actor(make_user(Role.MARKETING))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SHOW enable_hashjoin")
        before = cursor.fetchone()
        segment_counts(actor=actor, criteria={"audiences": world["audiences"]})
        cursor.execute("SHOW enable_hashjoin")
        assert cursor.fetchone() == before == ("on",)
        cursor.execute("SHOW work_mem")
        assert cursor.fetchone() != ("192MB",)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seed", [4, 5])
def test_the_preview_split_over_two_connections_counts_the_same(
    seed: int, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many contacts the preview runs as two halves of the id range on two connections at once,
    on one exported snapshot: the figures must be those of the rules (and of one statement)."""
    from django.db import connection

    import contacts.selectors as selectors

    if connection.vendor != "postgresql":
        pytest.skip("the split runs on PostgreSQL only")
    rng = random.Random(seed)
    world = _world(rng)
    actor = api_actor(make_user(Role.MARKETING))
    a, b, c = world["audiences"]
    split_runs: list[int] = []
    run_split = selectors._run_on_one_snapshot

    def counted(statements: Any) -> Any:
        split_runs.append(len(statements))
        return run_split(statements)

    monkeypatch.setattr(selectors, "_run_on_one_snapshot", counted)
    for raw in ({"audiences": [a, b, c]}, {"all": [{"audiences": [a, b]}, {"tags": {"any": ["vip"]}}]}):
        criteria = criteria_normalise(raw)
        monkeypatch.setattr(selectors, "SPLIT_MIN_CONTACTS", 10**9)
        whole = segment_counts(actor=actor, criteria=criteria)
        monkeypatch.setattr(selectors, "SPLIT_MIN_CONTACTS", 0)
        split = segment_counts(actor=actor, criteria=criteria)
        expected = _reference(world, criteria, split["audience_ids"])
        for name in ("matched", "distinct_phones", "sendable", "exclusions"):
            assert split[name] == expected[name] == whole[name], (raw, name)
        assert split["by_country"] == whole["by_country"] and split["matched"] > 0
        assert split["frequency_capped_by_window"] == whole["frequency_capped_by_window"]
    assert split_runs == [2, 2]
