"""Database helpers for tests: the PostgreSQL-only mark and a helper that really races threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL row locks and real concurrency"
)


def race(n: int, fn: Any) -> list[Any]:
    """Run ``fn(i)`` for i in 0..n-1 in n threads released together; each thread's result or
    exception, in order. Each thread uses (and closes) its own database connection."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
