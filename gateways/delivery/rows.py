"""Rows and helpers the delivery modules share: the psycopg cursor for array
parameters, a message's quota hold and the per-reservation totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.db import connection


def pg_cursor() -> Any:
    """A server-side-binding psycopg cursor on Django's connection (same transaction): id and
    provider-id lists go as one binary array parameter (``= ANY(%b)``), not as thousands of
    client-side quoted literals."""
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


class QuotaHolder(Protocol):
    """What a quota movement reads of a message: its reservation, parts and cost."""

    @property
    def quota_reference(self) -> str: ...
    @property
    def segments(self) -> int: ...
    @property
    def cost(self) -> Decimal: ...


class HeldRow(NamedTuple):
    """A message's quota hold as read from its row (id, quota reference, segments, cost)."""

    pk: int
    quota_reference: str
    segments: int
    cost: Decimal


def quota_totals(messages: Iterable[QuotaHolder]) -> dict[str, tuple[int, Decimal]]:
    """Segments and amount per reservation: quota moves once per reservation, not per message."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for m in messages:
        segments, amount = totals.get(m.quota_reference, (0, Decimal(0)))
        totals[m.quota_reference] = (segments + m.segments, amount + m.cost)
    return totals


def chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
