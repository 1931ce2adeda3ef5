"""Commits that do not wait for the WAL flush (PostgreSQL's asynchronous commit), and when that is safe.

A PostgreSQL commit normally waits until its WAL is on disk. Under a campaign the bulk lane writes
megabytes of WAL a second, and a commit waits for the flush of everything written before it: in
bench/otp_latency.py an OTP request spent up to 50-70 ms of its time in its two commits, the
largest part of its tail (docs/OTP.md, "Asynchronous commit of a send").

``commit_unflushed()`` lets the current transaction commit as soon as its WAL is written to the
server's buffers (``SET LOCAL synchronous_commit TO OFF``: this transaction only). What PostgreSQL
guarantees still holds: the database stays consistent, and a crash loses whole transactions, only
the last ones committed this way (at most three ``wal_writer_delay``, 600 ms by default). The WAL is
flushed in order, so once any later transaction commits synchronously, every earlier one is on disk.

So it is safe for a transaction whose effects reach the world outside the database only through a
later synchronous commit. An OTP send is one: its message leaves only when a sender claims it, and
the claim commits synchronously before the submit_sm, which puts the send's verification, message,
audit row and idempotency record on disk with it. A crash can lose a send whose code never left
(the caller was answered; checking it answers not found and the person asks for a new code, as for
an SMS lost on the way), never a code that left without its records. Never use it for a transaction
whose effect is already outside (a claim before its submit, a notification), for money charged, for
consent, or for a check (a lost wrong guess would give the guesser one more).
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"


def commit_unflushed(using: str = DEFAULT_DB_ALIAS) -> None:
    """Let the current transaction commit without waiting for its WAL flush (see the module
    docstring for when that is safe). PostgreSQL only; nothing elsewhere (SQLite's commit is its
    own). Call it inside the transaction: outside one it would change nothing."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("commit_unflushed() is called inside the transaction it applies to.")
    with connection.cursor() as cursor:
        cursor.execute(ASYNC_COMMIT)
