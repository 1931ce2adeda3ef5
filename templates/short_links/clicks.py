"""Short-link clicks: how the redirect records one, and how they reach ``LinkClick``.

SMS_CLICK_BATCH_SECONDS chooses the write path:

``0``: one INSERT per click inside the redirect (on PostgreSQL with an asynchronous commit:
a database crash can lose its last fraction of a second of clicks). One database round
trip per click; the slow path, kept for deployments without a writable local disk.

``N > 0`` (the default): the click spool. The redirect appends one line to its process's
current segment file in SMS_CLICK_SPOOL_DIR (one ``write()``, no database round trip) and
only then answers. A writer thread in each web process seals the segment every N seconds
(sooner once it holds MAX_SEGMENT_CLICKS clicks), fsyncs it and writes all its clicks in one
transaction, together with a ledger row naming the segment (``ClickSpoolSegment``), then
deletes the file. On PostgreSQL the segment's text is one parameter of one statement that
splits, checks and inserts it (no per-click work in Python); elsewhere, or for a segment with a
bad line, multi-row INSERTs. Segments whose process died are written by any
other process that drains the directory: the other web workers (every ORPHAN_SCAN_SECONDS)
and the Celery beat task ``templates.drain_click_spool``.

What a 302 promises about its click (the durability trade-off):

- The web process dies in any way (SIGKILL, OOM kill, segfault, a deploy): nothing is lost.
  The line is in the kernel's page cache before the response is written, and the segment's
  ``flock`` dies with the process, which is how a drain knows it may take the file.
- The machine itself crashes (kernel panic, power loss): clicks not yet fsynced, at most the
  last N seconds of them, can be lost. That is the same kind of window the INSERT path has
  through its asynchronous commit; an fsync per click would cost a disk flush per redirect.
- The database is down or slow: segments stay on disk and are written when it is back.
  Nothing is dropped; the disk is the buffer. If the spool cannot be written (disk full, no
  directory), that click falls back to the INSERT path, and only if that fails too is it
  lost, with an error logged.
- Exactly once: the clicks and the ledger row commit together (with a synchronous commit,
  because the file is deleted afterwards), and a segment whose ledger row exists is deleted
  unwritten. A file is read only under its ``flock`` and only while it is still linked, so
  two drains never write one segment twice.
- Clicks appear in ``LinkClick`` (and in reports) up to N seconds late.
- The spool is per machine: segments left by a dead process are written by the next process
  on the same machine that drains the directory (a new web worker does so at once).

Unique per recipient: a recipient's first human click on a per-recipient link is the unique
one, enforced by the partial unique index ``uniq_linkclick_first_per_recipient``. Each batch
claims its candidates with ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` and writes every
other click (including a candidate that lost to another writer) as a repeat, so concurrent
writers neither fail nor make two unique clicks, and no click is dropped. The unique click is
the recipient's earliest in its segment; should one recipient's clicks land in two processes'
segments within the same N seconds, the one written first is the unique one (how many
recipients clicked is exact either way).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction

from smsplatform.kernel.commits import ASYNC_COMMIT
from templates.models import ClickSpoolSegment, DeviceClass, LinkClick, ShortLink

logger = logging.getLogger(__name__)

# (link id, time, device class, recipient token, may be the recipient's unique click)
Click = tuple[int, datetime, str, str | None, bool]

_TABLE = LinkClick._meta.db_table
_LEDGER = ClickSpoolSegment._meta.db_table
_COLUMNS = "(link_id, clicked_at, device_class, recipient_token, is_unique)"
_DEVICES = frozenset(DeviceClass.values)


# --- writing clicks to the table -----------------------------------------------------------

_INSERT = f"INSERT INTO {_TABLE} {_COLUMNS} VALUES (%s, %s, %s, %s, %s)"  # noqa: S608 - names are ours
# One statement: the click is unique when this recipient has no unique click on the link yet.
# The NOT EXISTS probe uses the partial unique index, which also settles a race between two
# first clicks (the loser gets IntegrityError and is recorded as a repeat).
_INSERT_FIRST = (
    f"INSERT INTO {_TABLE} {_COLUMNS} "  # noqa: S608
    f"SELECT %s, %s, %s, %s, NOT EXISTS (SELECT 1 FROM {_TABLE} "
    "WHERE link_id = %s AND recipient_token = %s AND is_unique)"
)
# The click path's commit need not wait for the WAL flush (PostgreSQL; one implicit
# transaction, sent in the same round trip; smsplatform.kernel.commits). Never used for spool
# segments: their file is deleted after the commit, so that commit must be durable.
_ASYNC_COMMIT = ASYNC_COMMIT + "; "


def _at(when: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(when)


def insert_one(click: Click) -> None:
    """The INSERT path: one click, one round trip (two on the rare lost race)."""
    link_id, when, device, recipient, candidate = click
    prefix = _ASYNC_COMMIT if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        if not candidate:
            cursor.execute(prefix + _INSERT, [link_id, _at(when), device, recipient, False])
            return
        try:
            cursor.execute(prefix + _INSERT_FIRST, [link_id, _at(when), device, recipient, link_id, recipient])
        except IntegrityError:
            cursor.execute(prefix + _INSERT, [link_id, _at(when), device, recipient, False])


# Conflict target: the partial unique index uniq_linkclick_first_per_recipient.
_CLAIM = " ON CONFLICT (link_id, recipient_token) WHERE is_unique DO NOTHING RETURNING link_id, recipient_token"
# PostgreSQL: any number of rows as five array parameters (a VALUES list of thousands of
# placeholders costs more to build and send than the rows themselves).
_UNNEST = (
    f"INSERT INTO {_TABLE} {_COLUMNS} "  # noqa: S608 - our names only
    "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::varchar[], %s::varchar[], %s::boolean[])"
)


def _rows_per_statement() -> int:
    limit = connection.features.max_query_params
    return min(1000, limit // 5) if limit else 1000


def _insert_rows(cursor: Any, rows: Sequence[Click], *, unique: bool) -> list[tuple[int, str | None]]:
    """INSERT rows with is_unique = ``unique``; for unique rows, claim them and return the
    (link, recipient) pairs that won."""
    if not rows:
        return []
    claim = _CLAIM if unique else ""
    if connection.vendor == "postgresql":
        columns = list(zip(*rows, strict=True))
        cursor.execute(
            _UNNEST + claim,
            [list(columns[0]), list(columns[1]), list(columns[2]), list(columns[3]), [unique] * len(rows)],
        )
        return [(int(link_id), rcpt) for link_id, rcpt in cursor.fetchall()] if unique else []
    won: list[tuple[int, str | None]] = []
    step = _rows_per_statement()
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        cursor.execute(
            f"INSERT INTO {_TABLE} {_COLUMNS} VALUES "  # noqa: S608 - placeholders and our names only
            + ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            + claim,
            [v for link_id, when, device, rcpt, _ in chunk for v in (link_id, _at(when), device, rcpt, unique)],
        )
        if unique:
            won.extend((int(link_id), rcpt) for link_id, rcpt in cursor.fetchall())
    return won


def insert_clicks(clicks: Sequence[Click]) -> int:
    """Write clicks with multi-row INSERTs (call inside a transaction); returns how many are unique.

    Within the batch only a recipient's earliest candidate click may be its unique one. Those
    are inserted first with ON CONFLICT DO NOTHING on the partial unique index; the ones that
    came back in RETURNING are the unique clicks, and everything else, including a candidate
    whose recipient already had a unique click, is inserted as a repeat."""
    firsts: list[Click] = []
    others: list[Click] = []
    seen: set[tuple[int, str | None]] = set()
    for click in sorted(clicks, key=lambda c: c[1]):
        key = (click[0], click[3])
        if click[4] and key not in seen:
            seen.add(key)
            firsts.append(click)
        else:
            others.append(click)
    with connection.cursor() as cursor:
        won = set(_insert_rows(cursor, firsts, unique=True))
        _insert_rows(cursor, others + [c for c in firsts if (c[0], c[3]) not in won], unique=False)
    return len(won)


# PostgreSQL: a whole segment as one text parameter, split and checked by the server, with the
# same rules as insert_clicks in one statement: no per-click work in Python at all. A line that
# does not parse, or fails the checks in ``stage``, makes the counts differ from the number of
# lines, and the segment then goes through decode() and insert_clicks() instead.
_SEGMENT = f"""
WITH stage AS MATERIALIZED (
    SELECT n AS seq,
           split_part(line, E'\\t', 1)::bigint AS link_id,
           timestamptz 'epoch' + split_part(line, E'\\t', 2)::bigint * interval '1 microsecond' AS clicked_at,
           split_part(line, E'\\t', 3) AS device,
           nullif(split_part(line, E'\\t', 4), '') AS recipient,
           split_part(line, E'\\t', 5) = '1' AS candidate
    FROM unnest(string_to_array(%s, E'\\n')) WITH ORDINALITY AS l(line, n)
    WHERE line <> ''
      AND split_part(line, E'\\t', 3) IN ('mobile', 'tablet', 'desktop', 'bot')
      AND split_part(line, E'\\t', 5) IN ('0', '1')
      AND split_part(line, E'\\t', 6) = ''
      AND (split_part(line, E'\\t', 5) = '0' OR split_part(line, E'\\t', 4) <> '')
), pick AS (
    SELECT DISTINCT ON (link_id, recipient) seq, link_id, clicked_at, device, recipient
    FROM stage WHERE candidate ORDER BY link_id, recipient, clicked_at, seq
), won AS (
    INSERT INTO {_TABLE} {_COLUMNS}
    SELECT link_id, clicked_at, device, recipient, true FROM pick
    ON CONFLICT (link_id, recipient_token) WHERE is_unique DO NOTHING
    RETURNING link_id, recipient_token
), rest AS (
    -- Hashed NOT IN subplans, never a join: the planner cannot know these CTEs' sizes.
    INSERT INTO {_TABLE} {_COLUMNS}
    SELECT link_id, clicked_at, device, recipient, false FROM stage WHERE seq NOT IN (SELECT seq FROM pick)
    UNION ALL
    SELECT link_id, clicked_at, device, recipient, false FROM pick
    WHERE (link_id, recipient) NOT IN (SELECT link_id, recipient_token::text FROM won)
    RETURNING 1
)
SELECT (SELECT count(*) FROM won), (SELECT count(*) FROM rest)
"""  # noqa: S608 - our names only


class _Mismatch(Exception):
    pass


def _insert_segment_sql(text: str, lines: int) -> None:
    with transaction.atomic(), connection.cursor() as cursor:  # a savepoint to fall back from
        cursor.execute(_SEGMENT, [text])
        won, rest = cursor.fetchone()
        if won + rest != lines:
            raise _Mismatch(f"{won + rest} of {lines} lines")


# --- the spool -------------------------------------------------------------------------------

SUFFIX = ".clicks"  # a named segment: being written (flock held) or waiting for a drain
NAMING = ".new"  # a segment between creation and its name (always empty)
MAX_SEGMENT_CLICKS = 5000
ORPHAN_SCAN_SECONDS = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def spool_dir() -> Path:
    return Path(settings.SMS_CLICK_SPOOL_DIR)


def encode(link_id: int, epoch_us: int, device: str, recipient: str | None, candidate: bool) -> bytes:
    """One click as one line. Codes, tokens and device classes never hold a tab or a newline."""
    return f"{link_id}\t{epoch_us}\t{device}\t{recipient or ''}\t{int(candidate)}\n".encode("ascii")


def decode(data: bytes, name: str) -> list[Click]:
    lines = data.split(b"\n")
    lines.pop()  # b"" after the last newline, or an incomplete line (see write_segment)
    clicks: list[Click] = []
    for raw in lines:
        try:
            link_id, epoch_us, device, recipient, candidate = raw.decode("ascii").split("\t")
            if device not in _DEVICES or candidate not in ("0", "1") or (candidate == "1" and not recipient):
                raise ValueError(device)
            when = _EPOCH + timedelta(microseconds=int(epoch_us))
            clicks.append((int(link_id), when, device, recipient or None, candidate == "1"))
        except ValueError:
            logger.error("Unreadable line %r in click spool segment %s skipped", raw[:200], name)
    return clicks


def _open_segment(directory: Path) -> tuple[int, str]:
    """A new segment, locked before it gets the name drains look for."""
    name = uuid.uuid4().hex
    naming = directory / (name + NAMING)
    fd = os.open(naming, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(naming, directory / (name + SUFFIX))
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(naming)
        raise
    return fd, name


def _read(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(fd: int, name: str, directory: Path) -> int:
    """Write a locked segment's clicks to the table exactly once, then delete its file.

    Returns the clicks written (0 when its ledger row says an earlier drain wrote them)."""
    data = _read(fd)
    whole = data[: data.rfind(b"\n") + 1]
    lines = whole.count(b"\n")
    if len(whole) != len(data):
        # Only a machine crash can leave this: a process's write() happens whole or not at all,
        # and the redirect answers only after it returned.
        logger.warning("Click spool segment %s ends in an incomplete line; it is skipped", name)
    written = 0
    if lines:
        try:
            written = _write_once(whole, lines, name)
        except IntegrityError:
            # A click on a link deleted since (the foreign key is checked at COMMIT): write the
            # others rather than retry this segment forever.
            written = _write_once(whole, lines, name, known_links_only=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / (name + SUFFIX))
    if lines:
        # The ledger row has done its job once the file is gone (a failure here leaves it for
        # the beat task's prune, and the file is already deleted).
        try:
            ClickSpoolSegment.objects.filter(name=name).delete()
        except DatabaseError:
            logger.warning("Could not delete the ledger row of click spool segment %s", name, exc_info=True)
    return written


def _write_once(whole: bytes, lines: int, name: str, *, known_links_only: bool = False) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_LEDGER} (name, clicks, written_at) VALUES (%s, %s, %s) "  # noqa: S608
            "ON CONFLICT (name) DO NOTHING",
            [name, lines, _at(datetime.now(UTC))],
        )
        if cursor.rowcount != 1:
            logger.info("Click spool segment %s was already written; deleting it", name)
            return 0
        if not known_links_only and connection.vendor == "postgresql" and _segment_in_sql(whole, lines, name):
            return lines
        clicks = decode(whole, name)
        if known_links_only:
            known = set(ShortLink.objects.filter(pk__in={c[0] for c in clicks}).values_list("pk", flat=True))
            dropped = [c for c in clicks if c[0] not in known]
            if dropped:
                logger.error("%d clicks in segment %s are on deleted links; dropped", len(dropped), name)
            clicks = [c for c in clicks if c[0] in known]
        insert_clicks(clicks)
        return len(clicks)


def _segment_in_sql(whole: bytes, lines: int, name: str) -> bool:
    try:
        _insert_segment_sql(whole.decode("ascii"), lines)
    except (_Mismatch, UnicodeDecodeError, DataError) as error:
        logger.warning("Click spool segment %s has unreadable lines (%s); writing it line by line", name, error)
        return False
    return True


def drain_spool(directory: Path | None = None) -> int:
    """Write every segment in the directory that no live process holds; returns the clicks
    written. Safe to run anywhere, any number of times, at once with the web workers."""
    directory = directory or spool_dir()
    written = 0
    paths = []
    for path in directory.glob("*" + SUFFIX):
        with contextlib.suppress(OSError):
            paths.append((path.stat().st_mtime_ns, path))
    for _, path in sorted(paths):  # oldest first
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # written and deleted meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive, or another drain has it
            if os.fstat(fd).st_nlink == 0:
                continue  # another drain wrote and deleted it between our open() and flock()
            written += write_segment(fd, path.name.removesuffix(SUFFIX), directory)
        finally:
            os.close(fd)
    # A writer that died between creating a segment and naming it left an empty file.
    stale = time.time() - 60
    for path in directory.glob("*" + NAMING):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < stale and path.stat().st_size == 0:
                path.unlink()
    return written


class ClickSpool:
    """One process's spool writer: the redirect calls append(); a thread calls flush()."""

    def __init__(self, directory: Path, interval: float, *, thread: bool = True) -> None:
        self.directory = directory
        self.interval = interval
        self.setting = (str(directory), interval)
        self.pid = os.getpid()
        self.closed = False
        self.lock = threading.Lock()  # the current segment
        self.flush_lock = threading.Lock()  # one flush at a time (thread, atexit, tests)
        self.wakeup = threading.Event()
        self.stopped = False
        self.fd = -1
        self.name = ""
        self.size = 0
        self.count = 0
        self.sealed: list[tuple[int, str]] = []  # sealed, still locked, not yet written
        directory.mkdir(parents=True, exist_ok=True)
        self.thread: threading.Thread | None = None
        if thread:
            self.thread = threading.Thread(target=self._run, name="click-spool-writer", daemon=True)
            self.thread.start()
        atexit.register(self.close)

    def append(self, line: bytes) -> None:
        """Append one click line; raises OSError if it could not be written whole."""
        with self.lock:
            if self.closed:
                raise OSError("the click spool of this process is closed")
            if self.fd < 0:
                self.fd, self.name = _open_segment(self.directory)
            try:
                done = os.write(self.fd, line)
            except OSError:
                self._retire()
                raise
            if done != len(line):
                # Out of space mid-line: cut the partial line off (or, failing that, leave it
                # last in a segment nothing more is written to, where a drain skips it).
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
                self._retire()
                raise OSError(f"short write to click spool segment {self.name}")
            self.size += done
            self.count += 1
            if self.count >= MAX_SEGMENT_CLICKS:
                self.wakeup.set()

    def _retire(self) -> None:
        """Seal the current segment (caller holds self.lock)."""
        if self.fd >= 0:
            self.sealed.append((self.fd, self.name))
        self.fd, self.name, self.size, self.count = -1, "", 0, 0

    def flush(self) -> int:
        """Seal the current segment and write this process's sealed segments; returns the
        clicks written. A segment whose write fails stays sealed (and locked) for the next try."""
        with self.flush_lock:
            with self.lock:
                if self.count:
                    self._retire()
                pending = list(self.sealed)
            if not pending:
                return 0
            for fd, _ in pending:
                os.fsync(fd)
            _fsync_dir(self.directory)
            written = 0
            for fd, name in pending:
                written += write_segment(fd, name, self.directory)
                with self.lock:
                    self.sealed.remove((fd, name))
                os.close(fd)
            return written

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            connection.close()  # this thread's own connection

    def _loop(self) -> None:
        next_scan = 0.0  # a new worker first writes what dead workers left
        failures = 0
        while not self.stopped:
            try:
                self.flush()
                if time.monotonic() >= next_scan:
                    drain_spool(self.directory)
                    next_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
                failures = 0
            except Exception:
                failures += 1
                logger.exception("Writing spooled clicks failed (attempt %d); they stay in the spool", failures)
                with contextlib.suppress(Exception):
                    connection.close()  # a fresh connection on the next attempt
            self.wakeup.wait(min(self.interval * 2**failures, 30.0) if failures else self.interval)
            self.wakeup.clear()

    def stop(self) -> None:
        self.stopped = True
        self.wakeup.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)

    def close(self) -> None:
        """At exit: write what is spooled. A failure leaves the segments for another drain."""
        if self.pid != os.getpid():
            return  # an atexit handler inherited through fork(): not this process's spool
        self.stop()
        with self.lock:
            self.closed = True  # a click from now on takes the INSERT path
            if self.count:
                self._retire()
            fd, name = self.fd, self.name  # an empty segment, or none
            self.fd = -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.directory / (name + SUFFIX))
            os.close(fd)
        try:
            self.flush()
        except Exception:
            logger.exception("Writing spooled clicks at exit failed; another process will write them")


_spool: ClickSpool | None = None
_spool_lock = threading.Lock()


def _current_spool(interval: float) -> ClickSpool:
    global _spool
    spool = _spool
    setting = (str(settings.SMS_CLICK_SPOOL_DIR), interval)
    if spool is not None and spool.setting == setting and spool.pid == os.getpid():
        return spool
    with _spool_lock:
        spool = _spool
        if spool is None or spool.setting != setting or spool.pid != os.getpid():
            if spool is not None and spool.pid == os.getpid():
                spool.close()  # the settings changed (tests)
            # After fork() the parent's spool (its segment, lock and thread) is not ours.
            spool = _spool = ClickSpool(Path(setting[0]), interval)
    return spool


def record_click(link_id: int, *, device: str, recipient: str | None) -> None:
    """Record one click before the redirect answers (see the module docstring)."""
    # Link scanners and previews are recorded, but never take a recipient's unique click.
    candidate = recipient is not None and device != DeviceClass.BOT
    interval = settings.SMS_CLICK_BATCH_SECONDS
    if interval > 0:
        epoch_us = time.time_ns() // 1000
        try:
            _current_spool(interval).append(encode(link_id, epoch_us, device, recipient, candidate))
            return
        except (OSError, ValueError):
            logger.exception("Click spool unavailable; writing the click on link %s directly", link_id)
        when = _EPOCH + timedelta(microseconds=epoch_us)
    else:
        when = datetime.now(UTC)
    insert_one((link_id, when, device, recipient, candidate))


def flush_clicks() -> int:
    """Write this process's spooled clicks now; returns how many (0 on the INSERT path)."""
    spool = _spool
    if spool is None or spool.pid != os.getpid():
        return 0
    return spool.flush()
