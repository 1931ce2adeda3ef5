"""events_ingest through the batch endpoint: per-event refusals with their reason and field,
duplicates, mixed batches, the batch limit, all-or-nothing writes, contacts by phone or
external id, and the customer facts the events keep current."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from campaigns.automations import intake
from campaigns.automations.intake import events_ingest
from campaigns.automations.models import CommerceEvent, EventSource
from contacts.models import Contact, CustomerFact
from smsplatform.models import AuditLog
from tests.automations.conftest import ago, event
from tests.support.rest import error_of

pytestmark = pytest.mark.django_db


def only(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["results"]) == 1
    return dict(body["results"][0])


REFUSALS = [
    ({"event_id": None}, "event_field_required", "events.0.event_id"),
    ({"event_id": "  "}, "event_field_required", "events.0.event_id"),
    ({"event_id": "x" * 101}, "event_field_invalid", "events.0.event_id"),
    ({"event_id": 12}, "event_field_invalid", "events.0.event_id"),
    ({"type": None}, "event_field_required", "events.0.type"),
    ({"type": "order_teleported"}, "event_type_unknown", "events.0.type"),
    ({"type": "custom"}, "event_field_required", "events.0.name"),
    ({"type": "custom", "name": "Viewed Product!"}, "event_field_invalid", "events.0.name"),
    ({"occurred_at": None}, "event_field_required", "events.0.occurred_at"),
    ({"occurred_at": "yesterday"}, "event_field_invalid", "events.0.occurred_at"),
    ({"occurred_at": "2026-01-01T10:00:00"}, "event_field_invalid", "events.0.occurred_at"),
    ({"occurred_at": 1767232800}, "event_field_invalid", "events.0.occurred_at"),
    ({"occurred_at": ago(minutes=-10)}, "event_in_future", "events.0.occurred_at"),
    ({"occurred_at": ago(days=401)}, "event_too_old", "events.0.occurred_at"),
    ({"phone": None}, "event_field_required", "events.0.phone"),
    ({"phone": "12"}, "phone_invalid", "events.0.phone"),
    ({"phone": "+85212345678"}, "phone_invalid", "events.0.phone"),
    ({"phone": "+85291234569"}, "contact_unknown", "events.0.phone"),
    ({"phone": None, "external_id": "CRM-404"}, "contact_unknown", "events.0.external_id"),
    ({"order_id": None}, "event_field_required", "events.0.order_id"),
    ({"amount": None}, "event_field_required", "events.0.amount"),
    ({"amount": "abc"}, "amount_invalid", "events.0.amount"),
    ({"amount": "-1"}, "amount_invalid", "events.0.amount"),
    ({"amount": "1.005"}, "amount_invalid", "events.0.amount"),
    ({"amount": "NaN"}, "amount_invalid", "events.0.amount"),
    ({"amount": True}, "amount_invalid", "events.0.amount"),
    ({"amount": "1e20"}, "amount_invalid", "events.0.amount"),
    ({"currency": None}, "event_field_required", "events.0.currency"),
    ({"currency": "hkd"}, "currency_invalid", "events.0.currency"),
    ({"currency": "HKDX"}, "event_field_invalid", "events.0.currency"),
    ({"channel": "E-Mail"}, "event_field_invalid", "events.0.channel"),
    ({"type": "appointment_booked", "reference": "APT-1"}, "event_field_required", "events.0.appointment_at"),
    ({"type": "appointment_booked", "appointment_at": "soon"}, "event_field_invalid", "events.0.appointment_at"),
    ({"type": "order_refunded", "order_id": None}, "event_field_required", "events.0.refund_of"),
    ({"link_code": "x" * 17}, "event_field_invalid", "events.0.link_code"),
]


@pytest.mark.parametrize(("changes", "reason", "field"), REFUSALS)
def test_each_refusal_names_its_reason_and_field(
    post: Any, contact: Contact, changes: dict[str, Any], reason: str, field: str
) -> None:
    result = only(post({"events": [event(**changes)]}))
    assert result["status"] == "refused", result
    assert (result["reason"], result["field"]) == (reason, field), result
    assert result["message"]
    assert not CommerceEvent.objects.exists()


def test_an_event_that_is_not_an_object_is_refused(post: Any, contact: Contact) -> None:
    body = post({"events": ["order_paid", None, event()]}).json()
    assert [r["status"] for r in body["results"]] == ["refused", "refused", "accepted"]
    assert body["results"][0]["reason"] == "event_invalid"
    assert body["results"][0]["field"] == "events.0"


def test_phone_and_external_id_naming_different_contacts_is_refused(
    post: Any, contact: Contact, other_contact: Contact
) -> None:
    result = only(post({"events": [event(external_id="CRM-2")]}))
    assert (result["status"], result["reason"]) == ("refused", "contact_mismatch")


def test_accepted_event_is_stored_with_its_fields(post: Any, source: EventSource, contact: Contact) -> None:
    sent = event(
        coupon_code="SMS10",
        channel="sms",
        click_token="tok123",
        link_code="ab12",
        sku="SKU-1",
        items=[{"sku": "SKU-1", "qty": 2}],
    )
    assert only(post({"events": [sent]})) == {"index": 0, "event_id": "e-1", "status": "accepted"}
    stored = CommerceEvent.objects.get()
    assert stored.source_id == source.pk and stored.contact_id == contact.pk
    assert stored.type == "order_paid" and stored.phone == "+85291234567"
    assert stored.order_ref == "ORD-1" and stored.amount == Decimal("120.50") and stored.currency == "HKD"
    assert (stored.coupon_code, stored.channel, stored.click_token, stored.link_code) == (
        "SMS10",
        "sms",
        "tok123",
        "ab12",
    )
    assert stored.payload == {"sku": "SKU-1", "items": [{"sku": "SKU-1", "qty": 2}]}
    assert stored.occurred_at.isoformat()[:16] != "" and len(stored.payload_hash) == 64


def test_contact_by_local_phone_and_by_external_id(post: Any, contact: Contact, other_contact: Contact) -> None:
    body = post(
        {
            "events": [
                event(event_id="a", phone="9123 4567"),
                event(event_id="b", phone=None, external_id="CRM-2"),
                event(event_id="c", phone="+85291234568", external_id="CRM-2"),
            ]
        }
    ).json()
    assert body["accepted"] == 3, body
    by_id = {e.event_id: e for e in CommerceEvent.objects.all()}
    assert by_id["a"].contact_id == contact.pk and by_id["a"].phone == "+85291234567"
    assert by_id["b"].contact_id == other_contact.pk and by_id["b"].phone == "" and by_id["b"].external_id == "CRM-2"
    assert by_id["c"].contact_id == other_contact.pk


def test_every_type_is_accepted_with_its_fields(post: Any, contact: Contact) -> None:
    events = [
        event(event_id="1", type="order_placed", amount=None, currency=None),
        event(event_id="2", type="order_paid"),
        event(event_id="3", type="order_shipped", amount=None, currency=None),
        event(event_id="4", type="order_delivered", amount=None, currency=None),
        event(event_id="5", type="order_refunded", order_id="REF-1", refund_of="ORD-1", amount="20.00"),
        event(event_id="6", type="payment_received", order_id=None, reference="INV-9"),
        event(event_id="7", type="appointment_booked", order_id=None, reference="APT-1", appointment_at=ago(days=-7)),
        event(event_id="8", type="appointment_changed", order_id=None, reference="APT-1", appointment_at=ago(days=-8)),
        event(event_id="9", type="appointment_cancelled", order_id=None, reference="APT-1", amount=None, currency=None),
        event(event_id="10", type="pickup_ready", order_id="ORD-1", pickup_at=ago(days=-1), amount=None, currency=None),
        event(event_id="11", type="product_viewed", order_id=None, amount=None, currency=None, sku="S1"),
        event(event_id="12", type="cart_abandoned", order_id=None, amount="99.00"),
        event(event_id="13", type="link_clicked", order_id=None, amount=None, currency=None, link_code="ab12"),
        event(event_id="14", type="custom", name="wishlist_added", order_id=None, amount=None, currency=None),
    ]
    body = post({"events": events}).json()
    assert body["accepted"] == 14, [r for r in body["results"] if r["status"] != "accepted"]
    refund = CommerceEvent.objects.get(event_id="5")
    assert (refund.order_ref, refund.refund_of) == ("REF-1", "ORD-1")
    assert CommerceEvent.objects.get(event_id="14").name == "wishlist_added"
    assert CommerceEvent.objects.get(event_id="7").appointment_at is not None


def test_a_refund_names_the_order_it_refunds_by_default(post: Any, contact: Contact) -> None:
    post({"events": [event(type="order_refunded", order_id="ORD-7")]})
    assert CommerceEvent.objects.get().refund_of == "ORD-7"


def test_resent_batch_answers_duplicates_and_stores_nothing_twice(post: Any, contact: Contact) -> None:
    batch = {"events": [event(event_id="a"), event(event_id="b")]}
    assert post(batch).json()["accepted"] == 2
    again = post(batch).json()
    assert again["duplicate"] == 2 and again["accepted"] == 0
    assert [r["payload_differs"] for r in again["results"]] == [False, False]
    assert CommerceEvent.objects.count() == 2


def test_duplicate_with_other_content_says_so_and_keeps_the_first(post: Any, contact: Contact) -> None:
    post({"events": [event()]})
    result = only(post({"events": [event(amount="999.00")]}))
    assert result == {"index": 0, "event_id": "e-1", "status": "duplicate", "payload_differs": True}
    assert CommerceEvent.objects.get().amount == Decimal("120.50")


def test_same_event_id_twice_in_one_batch(post: Any, contact: Contact) -> None:
    same = event()
    body = post({"events": [same, dict(same), {**same, "amount": "1.00"}]}).json()
    statuses = [(r["status"], r.get("reason")) for r in body["results"]]
    assert statuses == [("accepted", None), ("duplicate", None), ("refused", "event_id_repeated")]
    assert CommerceEvent.objects.count() == 1


def test_event_ids_are_per_source(post: Any, contact: Contact) -> None:
    other = EventSource.objects.create(code="pos", name="POS")
    post({"events": [event()]})
    result = events_ingest(source=other, events=[event()])
    assert result["accepted"] == 1
    assert CommerceEvent.objects.count() == 2


def test_mixed_batch(post: Any, contact: Contact, other_contact: Contact) -> None:
    post({"events": [event(event_id="old")]})
    body = post(
        {
            "events": [
                event(event_id="new-1"),
                event(event_id="old"),
                event(event_id="bad", type="nope"),
                event(event_id="new-2", phone=None, external_id="CRM-2"),
                event(event_id="ghost", phone="+85291234569"),
            ]
        }
    ).json()
    assert (body["received"], body["accepted"], body["duplicate"], body["refused"]) == (5, 2, 1, 2)
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert set(CommerceEvent.objects.values_list("event_id", flat=True)) == {"old", "new-1", "new-2"}


def test_1001_events_are_refused_whole(post: Any, contact: Contact) -> None:
    response = post({"events": [event(event_id=str(i)) for i in range(1001)]})
    assert response.status_code == 413
    assert error_of(response)["code"] == "event_batch_too_large"
    assert not CommerceEvent.objects.exists()


def test_1000_events_are_accepted(post: Any, contact: Contact) -> None:
    body = post({"events": [event(event_id=str(i)) for i in range(1000)]}).json()
    assert body["accepted"] == 1000
    assert CommerceEvent.objects.count() == 1000


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_request"),
        (b'{"events": []}', "validation_error"),
        (b'{"events": {}}', "validation_error"),
        (b'{"evts": []}', "validation_error"),
        (b'{"events": [], "extra": 1}', "validation_error"),
        (b"[]", "validation_error"),
        (b"[" * 100 + b"]" * 100, "malformed_request"),
        (b'{"events": [{"event_id": "a", "x": NaN}]}', "malformed_request"),
        (b'{"events": [{"event_id": "a", "x": -Infinity}]}', "malformed_request"),
        (b'{"events": [{"event_id": "a", "x": 1e400}]}', "malformed_request"),
    ],
)
def test_malformed_body_is_refused_whole(post: Any, contact: Contact, raw: bytes, code: str) -> None:
    response = post(None, raw=raw)
    assert response.status_code == 400
    assert error_of(response)["code"] == code


def test_body_over_the_limit_is_refused(post: Any, contact: Contact, settings: Any) -> None:
    settings.SMS_EVENTS_MAX_BODY_BYTES = 500
    response = post({"events": [event(event_id=str(i)) for i in range(10)]})
    assert response.status_code == 413


def test_a_database_error_mid_batch_leaves_nothing(
    post: Any, contact: Contact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events are inserted, then the batch fails (here: its audit row): nothing of it stays,
    customer facts included."""

    def fail(**kwargs: Any) -> None:
        raise IntegrityError("simulated failure after the insert")

    monkeypatch.setattr(intake, "audit_record", fail)
    events = [event(event_id=str(i)) for i in range(5)]
    with pytest.raises(IntegrityError):
        events_ingest(source=EventSource.objects.get(code="shop"), events=events)
    assert not CommerceEvent.objects.exists()
    assert not CustomerFact.objects.exists()


def test_a_failed_batch_through_the_endpoint_is_a_500_without_detail_and_leaves_nothing(
    post: Any, contact: Contact, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(rows: Any) -> int:
        raise DatabaseError("disk full")

    monkeypatch.setattr(intake, "_customer_facts_update", fail)
    response = post({"events": [event()]})
    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"
    assert "disk full" not in response.content.decode()
    assert not CommerceEvent.objects.exists()


def test_a_concurrent_insert_of_the_same_key_is_a_duplicate(
    post: Any, source: EventSource, contact: Contact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another batch stored the event between this batch's duplicate check and its insert: ON
    CONFLICT DO NOTHING skips it and the answer says duplicate (with the stored content)."""
    post({"events": [event(event_id="raced")]})
    real = intake._stored_hashes
    calls: list[int] = []

    def blind_first(src: EventSource, event_ids: list[str]) -> dict[str, str]:
        calls.append(1)
        return {} if len(calls) == 1 else real(src, event_ids)

    monkeypatch.setattr(intake, "_stored_hashes", blind_first)
    body = post({"events": [event(event_id="raced", amount="5.00"), event(event_id="fresh")]}).json()
    assert [r["status"] for r in body["results"]] == ["duplicate", "accepted"]
    assert body["results"][0]["payload_differs"] is True
    assert CommerceEvent.objects.count() == 2


def test_queries_per_batch_do_not_grow_with_its_size(source: EventSource) -> None:
    """Contacts are resolved with one query for the phones and one for the external ids, the
    stored duplicates with one; on PostgreSQL the whole batch costs the same number of queries
    at 4 events as at 400 (SQLite's bulk inserts are chunked by its parameter limit)."""
    Contact.objects.bulk_create(
        [Contact(phone=f"+8529{i:07d}", country="HK", source="crm", crm_key=f"K{i}") for i in range(1, 401)]
    )

    def batch(prefix: str, size: int) -> list[dict[str, Any]]:
        return [
            event(event_id=f"{prefix}{i}", phone=f"+8529{i:07d}", order_id=f"{prefix}-order-{i}")
            if i % 2
            else event(event_id=f"{prefix}{i}", phone=None, external_id=f"K{i}", order_id=f"{prefix}-order-{i}")
            for i in range(1, size + 1)
        ]

    counts = []
    for prefix, size in (("s", 4), ("l", 400)):
        with CaptureQueriesContext(connection) as queries:
            assert events_ingest(source=source, events=batch(prefix, size))["accepted"] == size
        sql = [q["sql"] for q in queries.captured_queries]
        assert sum('FROM "contacts_contact"' in q for q in sql) == 2, sql
        assert sum(q.startswith("SELECT") and "automations_commerceevent" in q for q in sql) <= 2
        counts.append(len(sql))
    if connection.vendor == "postgresql":
        assert counts[0] == counts[1], counts


def test_the_audit_row_counts_and_carries_no_phone(post: Any, contact: Contact) -> None:
    post({"events": [event(), event(event_id="x", type="nope")]})
    row = AuditLog.objects.get(action="commerce_events.ingest")
    assert row.after is not None and row.after["accepted"] == 1 and row.after["refused"] == 1
    assert row.token_name == "event_source:shop"
    assert "91234567" not in str(row.after)


def test_the_answer_never_echoes_a_full_phone(post: Any, contact: Contact) -> None:
    text = post({"events": [event(phone="+85291234569"), event(event_id="ok")]}).content.decode()
    assert "91234569" not in text and "91234567" not in text


# --- customer facts --------------------------------------------------------------------------------


def test_order_paid_keeps_the_last_purchase_fact(post: Any, contact: Contact) -> None:
    post({"events": [event(coupon_code="SMS10")]})
    fact = CustomerFact.objects.get(kind="order", external_id="ORD-1")
    assert (fact.contact_id, fact.status, fact.amount, fact.currency, fact.offer_code) == (
        contact.pk,
        "paid",
        Decimal("120.50"),
        "HKD",
        "SMS10",
    )


def test_a_refund_marks_the_order_refunded_and_a_late_payment_does_not_undo_it(post: Any, contact: Contact) -> None:
    post({"events": [event(event_id="pay", occurred_at=ago(days=2))]})
    post({"events": [event(event_id="refund", type="order_refunded", amount="120.50", occurred_at=ago(days=1))]})
    fact = CustomerFact.objects.get(kind="order", external_id="ORD-1")
    assert fact.status == "refunded" and fact.amount == Decimal("120.50")
    # An older paid event arriving late (another event id) does not move the fact back.
    post({"events": [event(event_id="pay-retry", occurred_at=ago(days=3))]})
    assert CustomerFact.objects.get(kind="order", external_id="ORD-1").status == "refunded"


def test_appointment_events_keep_the_appointment_fact(post: Any, contact: Contact) -> None:
    base = {"order_id": None, "amount": None, "currency": None, "reference": "APT-1"}
    post({"events": [event(event_id="b", type="appointment_booked", appointment_at=ago(days=-7), **base)]})
    fact = CustomerFact.objects.get(kind="appointment", external_id="APT-1")
    assert fact.status == "booked" and fact.due_at is not None
    first_due = fact.due_at
    post(
        {
            "events": [
                event(
                    event_id="c",
                    type="appointment_changed",
                    appointment_at=ago(days=-9),
                    occurred_at=ago(hours=2),
                    **base,
                )
            ]
        }
    )
    fact.refresh_from_db()
    assert fact.status == "changed" and fact.due_at > first_due
    post({"events": [event(event_id="x", type="appointment_cancelled", occurred_at=ago(hours=1), **base)]})
    fact.refresh_from_db()
    assert fact.status == "cancelled" and fact.due_at is not None


def test_behaviour_events_change_no_fact(post: Any, contact: Contact) -> None:
    post({"events": [event(type="product_viewed", order_id=None, amount=None, currency=None)]})
    assert not CustomerFact.objects.exists()


def test_an_event_updates_a_fact_the_crm_ingested(post: Any, contact: Contact) -> None:
    """A fact without an event's time (from customer_facts.ingest) is older than any event."""
    from django.utils import timezone

    CustomerFact.objects.create(
        contact=contact, kind="order", external_id="ORD-1", status="pending", occurred_at=timezone.now()
    )
    post({"events": [event()]})
    fact = CustomerFact.objects.get(kind="order", external_id="ORD-1")
    assert fact.status == "paid" and fact.amount == Decimal("120.50")
    assert CustomerFact.objects.count() == 1


def test_a_refund_of_an_unknown_order_creates_no_fact(post: Any, contact: Contact) -> None:
    post({"events": [event(type="order_refunded", order_id="ORD-404")]})
    assert CommerceEvent.objects.count() == 1
    assert not CustomerFact.objects.exists()


def test_the_signal_names_the_new_events_after_commit(
    post: Any, source: EventSource, contact: Contact, django_capture_on_commit_callbacks: Any
) -> None:
    from campaigns.automations.intake import events_ingested

    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    events_ingested.connect(receiver)
    try:
        post({"events": [event(event_id="a")]})
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            events_ingest(
                source=source, events=[event(event_id="a"), event(event_id="b"), event(event_id="c", type="x")]
            )
        assert received == []  # nothing is sent before the commit
        for callback in callbacks:
            callback()
    finally:
        events_ingested.disconnect(receiver)
    assert len(received) == 1
    assert received[0]["source"] == source
    assert received[0]["event_pks"] == [CommerceEvent.objects.get(event_id="b").pk]


def test_no_signal_when_nothing_is_new(
    source: EventSource, contact: Contact, django_capture_on_commit_callbacks: Any
) -> None:
    events_ingest(source=source, events=[event()])
    with django_capture_on_commit_callbacks() as callbacks:
        events_ingest(source=source, events=[event()])
    assert callbacks == []


@pytest.mark.parametrize(
    ("raw_event", "reason"),
    [
        ('"sku": "a\\u0000b"', "control_character"),
        ('"order_id": "O\\u00001"', "control_character"),
        ('"note": {"k\\u0000": 1}', "control_character"),
        ('"sku": "\\ud800"', "lone_surrogate"),
        ('"event_id": "x\\udc00"', "lone_surrogate"),
        ('"note": "a literal \\\\u0000 text"', None),
    ],
)
def test_what_postgresql_cannot_store_is_refused_per_event(
    post: Any, contact: Contact, raw_event: str, reason: str | None
) -> None:
    """A NUL or a lone surrogate in one event refuses that event, never the whole batch (500)."""
    import json

    good = json.dumps(event(event_id="good"))
    bad = json.dumps(event(event_id="bad"))[:-1] + ", " + raw_event + "}"
    body = f'{{"events": [{bad}, {good}]}}'.encode()
    response = post(None, raw=body)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    if reason is None:
        assert [r["status"] for r in results] == ["accepted", "accepted"]
    else:
        assert (results[0]["status"], results[0]["reason"], results[0]["field"]) == ("refused", reason, "events.0")
        assert results[1]["status"] == "accepted"
