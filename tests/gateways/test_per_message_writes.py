"""What sending one campaign message writes to the parts and receipts tables.

Every index entry a message's send writes is WAL, and an OTP's claim commits behind
the campaign's WAL (docs/OTP.md, "Less WAL per campaign message"). The two tables keep only the
indexes their lookups use; these tests fail when one comes back, or when a lookup loses the
index it is served by."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from gateways.models import DeliveryReceipt, MessagePart
from tests.support.db import postgres_only

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def _constraints(model: Any) -> list[Any]:
    with connection.cursor() as cursor:
        return list(connection.introspection.get_constraints(cursor, model._meta.db_table).values())


def _indexes(model: Any) -> set[tuple[str, ...]]:
    """Index and unique-constraint column lists of ``model``'s table (the primary key apart)."""
    return {
        tuple(info["columns"])
        for info in _constraints(model)
        if (info["index"] or info["unique"]) and not info["primary_key"]
    }


def _foreign_keys(model: Any) -> set[str]:
    return {info["columns"][0] for info in _constraints(model) if info["foreign_key"]}


def test_a_part_is_indexed_only_by_its_two_unique_keys() -> None:
    # Lookups by message lead uniq_message_part_number, by gateway uniq_part_provider_id: an
    # index of either column alone was two more entries for every part written.
    assert _indexes(MessagePart) == {("gateway_id", "provider_message_id"), ("message_id", "part_number")}


def test_a_receipt_is_indexed_by_its_lookup_and_the_time_it_was_applied() -> None:
    # (gateway, provider id) is how every receipt is found; applied_at is reporting's "receipts
    # applied since" and the pending receipts' sweep. The provider id alone (two indexes on
    # PostgreSQL: plain and pattern) and the gateway alone were three more entries per receipt.
    assert _indexes(DeliveryReceipt) == {("gateway_id", "provider_message_id"), ("applied_at",)}


def test_no_per_row_check_reads_the_message_a_part_belongs_to() -> None:
    # The check ran a locking read of the message for every part written. The gateway's stays:
    # parts and receipts are written while a gateway's messages are, and gateways are never deleted
    # while they have any.
    assert _foreign_keys(MessagePart) == {"gateway_id"}
    assert _foreign_keys(DeliveryReceipt) == {"gateway_id"}


@postgres_only
@pytest.mark.parametrize(
    ("table", "where", "index"),
    [
        # campaigns.selectors (a message's parts), gateways.failover (a message without parts)
        (MessagePart, "message_id = 1", "uniq_message_part_number"),
        # gateways.tasks (parts of messages on a gateway), a gateway's PROTECT check
        (MessagePart, "gateway_id = 1", "uniq_part_provider_id"),
        # receipts_ingest and receipts_apply
        (MessagePart, "gateway_id = 1 AND provider_message_id = 'x'", "uniq_part_provider_id"),
        (DeliveryReceipt, "gateway_id = 1 AND provider_message_id = 'x' AND applied_at IS NULL", "receipt_lookup"),
        (DeliveryReceipt, "gateway_id = 1", "receipt_lookup"),
    ],
)
def test_every_lookup_is_served_by_an_index_that_stays(table: Any, where: str, index: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN SELECT id FROM {table._meta.db_table} WHERE {where}")  # noqa: S608 (ours)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan, plan
