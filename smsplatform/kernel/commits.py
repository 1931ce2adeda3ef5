"""Commits that do not wait for the WAL flush (PostgreSQL's asynchronous commit), and when that is safe.

A PostgreSQL commit normally waits until its WAL is on disk. Under a campaign the bulk lane writes
megabytes of WAL a second, and a commit waits for the flush of everything written before it: in
bench/otp_latency.py an OTP request spent up to 50-70 ms of its time in its two commits, the
largest part of its tail (docs/OTP.md, "Asynchronous commit of a send").

``ASYNC_COMMIT`` (sent with a statement of the transaction: ``insert_unless_conflict(unflushed=True)``,
the OTP counters' upsert) lets the current transaction commit as soon as its WAL is written to the
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

ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"
