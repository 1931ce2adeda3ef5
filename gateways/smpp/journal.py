"""The bind worker's wire journal: which of its claimed messages may have reached the SMSC.

A bind worker claims messages (queued -> submitting, committed) some time before it writes
them to the socket: it keeps a few thousand ready so the window never idles. When the worker is
killed (SIGKILL, the OOM killer, a lost container) the database alone cannot tell a claimed
message that was never written -- safe to send later -- from one that was written and never
answered, which must never be sent again. Without the journal every claimed message of a killed
worker would become 'unknown' and never be sent.

The journal tells them apart. Inside the claim's transaction, before it commits, the claimed ids
are appended (record ``C``); before a submit_sm goes into the socket, its message's id is
appended (record ``W``); once a message is no longer the worker's (its outcome committed,
requeued, failed over, withdrawn, its claim rolled back) its id is appended as released (record
``R``), so recovery never touches a message another worker may have claimed since. A message
whose every written part is known not to have reached the SMSC (refused with ESME_RTHROTTLED,
or its bytes still in the worker's buffer when the link went) is appended as unwritten again
(record ``U``): a kill after that requeues it rather than making it 'unknown'. Appends
are plain ``write(2)`` calls on files opened ``O_APPEND``: they
survive the process being killed (the page cache belongs to the kernel) but not the machine
crashing, so a journal names the boot it was written in, and one from another boot is not
trusted (all its messages are left 'submitting' for the reconciler, which makes them 'unknown').

A live worker holds an exclusive ``flock`` on its lock file. A lock file whose lock can be taken
belongs to a dead worker; ``journals_recover`` (run by every bind worker when it starts and now
and then, and by the reconciler) then reads its segments: messages it claimed and never wrote
that are still 'submitting' go back to 'queued'; those it wrote that are still 'submitting'
become 'unknown' now rather than after the reconciler's timeout. Both are guarded by the row's
state, so a message already recorded, or reconciled, is left as it is.

Files, in ``settings.SMS_SMPP_JOURNAL_DIR``: ``<owner>.lock`` and ``<owner>.<n>.jnl`` segments,
``<owner>`` being the gateway code, pid and a random token. A segment is a header line
``SMSJ1 <boot id> <database>`` (message ids mean something only in the database they came from:
a journal of another database is left alone) and records ``kind (1 byte) | count (uint32 LE) | ids (int64 LE each)``.
Segments roll over at ``SEGMENT_BYTES``; the oldest are deleted once every message claimed in
them (and so in every older one) is settled, so the journal stays small on a worker that runs
for months. A clean stop deletes the whole journal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

MAGIC = b"SMSJ1"
CLAIMED, WRITTEN, RELEASED, UNWRITTEN = b"C", b"W", b"R", b"U"
SEGMENT_BYTES = 8 * 1024 * 1024
_RECORD_HEAD = struct.Struct("<cI")
_SEGMENT = re.compile(r"^(?P<owner>.+)\.(?P<n>\d+)\.jnl$")


def journal_dir() -> Path:
    return Path(getattr(settings, "SMS_SMPP_JOURNAL_DIR", Path(settings.VAR_DIR) / "smpp-journal"))


def database_scope() -> str:
    """Which database the message ids belong to (no credentials: a digest of where it is)."""
    db = connection.settings_dict
    where = f"{connection.vendor}|{db.get('HOST') or ''}|{db.get('PORT') or ''}|{db.get('NAME') or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def boot_id() -> str:
    """This boot's identity (Linux); '' where the system does not say (then nothing is trusted)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _record(kind: bytes, ids: Sequence[int]) -> bytes:
    return _RECORD_HEAD.pack(kind, len(ids)) + struct.pack(f"<{len(ids)}q", *ids)


class Journal:
    """One live worker's journal. Thread-safe: claims (main thread), writes (link thread) and
    settlements (flush thread) append under one lock."""

    def __init__(self, gateway_code: str, directory: Path | None = None) -> None:
        self.directory = directory or journal_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", gateway_code)
        self.owner = f"{safe}.{os.getpid()}-{secrets.token_hex(4)}"
        self._boot = boot_id()
        self._scope = database_scope()
        self._lock = threading.Lock()
        self._lock_fd = os.open(self.directory / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours until we stop (or die)
        self._fd = -1
        self._size = 0
        self.segment = -1
        self._open: dict[int, int] = {}  # segment -> its claimed messages not settled yet
        self._oldest = 0
        self._roll()

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.owner}.{segment}.jnl"

    def _roll(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self.segment += 1
        self._fd = os.open(self._path(self.segment), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        header = f"{MAGIC.decode()} {self._boot} {self._scope}\n".encode()
        os.write(self._fd, header)
        self._size = len(header)
        self._open[self.segment] = 0

    def _append(self, kind: bytes, ids: Sequence[int]) -> None:
        data = _record(kind, ids)
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the journal can no longer vouch for anything
            raise OSError(errno.ENOSPC, f"journal write cut short ({written} of {len(data)} bytes)")
        self._size += written

    def claimed(self, ids: Sequence[int]) -> int:
        """Record a claim (before it commits); returns the segment the messages belong to."""
        with self._lock:
            if self._size >= SEGMENT_BYTES:
                self._roll()
            if ids:
                self._append(CLAIMED, ids)
                self._open[self.segment] += len(ids)
            return self.segment

    def written(self, ids: Sequence[int]) -> None:
        """Record messages about to be written to the socket (call before writing them)."""
        if ids:
            with self._lock:
                self._append(WRITTEN, ids)

    def unwritten(self, ids: Sequence[int]) -> None:
        """Record messages none of whose parts can have reached the SMSC after all (every part
        written so far was refused, or never left this process's buffer)."""
        if ids:
            with self._lock:
                self._append(UNWRITTEN, ids)

    def settled(self, messages: Iterable[tuple[int, int]]) -> None:
        """Messages no longer this worker's (their outcome committed, requeued, failed over, made
        'unknown', or a claim rolled back): (message id, segment of its claim) each. They are
        recorded as released -- recovery must not touch a message another worker may hold by
        then -- and the oldest segments that hold nothing open are deleted."""
        messages = list(messages)
        with self._lock:
            if messages:
                self._append(RELEASED, [pk for pk, _segment in messages])
            for _pk, segment in messages:
                self._open[segment] -= 1
            while self._oldest < self.segment and self._open.get(self._oldest, 0) <= 0:
                self._open.pop(self._oldest, None)
                with contextlib.suppress(FileNotFoundError):
                    self._path(self._oldest).unlink()
                self._oldest += 1

    def close(self, *, clean: bool) -> None:
        """Stop journaling. ``clean``: every claimed message was settled, so the journal goes."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if clean:
                for segment in range(self._oldest, self.segment + 1):
                    with contextlib.suppress(FileNotFoundError):
                        self._path(segment).unlink()
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / f"{self.owner}.lock").unlink()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock: an unclean journal is recoverable now
                self._lock_fd = -1


@dataclass
class JournalContents:
    trusted: bool
    scope: str = ""
    claimed: set[int] = field(default_factory=set)
    written: set[int] = field(default_factory=set)
    problem: str = ""


def journal_read(paths: Sequence[Path], current_boot: str) -> JournalContents:
    """A dead worker's segments, read in order: ``claimed`` holds the messages it claimed and had
    not released when it died, ``written`` those of them it had started writing (a message
    claimed again starts afresh). Untrusted when written in another boot (or one not known), or
    when a record is cut short or malformed: then no message is known to be unwritten."""
    contents = JournalContents(trusted=True)
    held, written = contents.claimed, contents.written
    for path in paths:
        data = path.read_bytes()
        newline = data.find(b"\n")
        header = data[:newline].decode(errors="replace").split(" ") if newline >= 0 else []
        if len(header) != 3 or header[0] != MAGIC.decode():
            return JournalContents(trusted=False, problem=f"{path.name}: not a journal segment")
        contents.scope = header[2]
        if not current_boot or header[1] != current_boot:
            return JournalContents(trusted=False, scope=header[2], problem=f"{path.name}: from an earlier boot")
        pos = newline + 1
        while pos < len(data):
            if len(data) - pos < _RECORD_HEAD.size:
                return JournalContents(trusted=False, problem=f"{path.name}: record cut short at {pos}")
            kind, count = _RECORD_HEAD.unpack_from(data, pos)
            pos += _RECORD_HEAD.size
            end = pos + 8 * count
            if kind not in (CLAIMED, WRITTEN, RELEASED, UNWRITTEN) or end > len(data):
                return JournalContents(trusted=False, problem=f"{path.name}: bad record at {pos}")
            ids = struct.unpack_from(f"<{count}q", data, pos)
            if kind == CLAIMED:
                held.update(ids)
                written.difference_update(ids)
            elif kind == WRITTEN:
                written.update(i for i in ids if i in held)
            elif kind == UNWRITTEN:
                written.difference_update(ids)
            else:
                held.difference_update(ids)
                written.difference_update(ids)
            pos = end
    return contents


@dataclass
class Recovery:
    journals: int = 0
    requeued: int = 0
    unknown: int = 0
    untrusted: int = 0


def journals_recover(directory: Path | None = None) -> Recovery:
    """Recover the journals of dead bind workers (see the module docstring). Safe to run from
    any number of processes at once: a journal is recovered by whoever takes its lock."""
    from gateways.delivery.reconcile import messages_mark_unknown, messages_requeue
    from smsplatform.kernel.actor import Actor

    directory = directory or journal_dir()
    result = Recovery()
    if not directory.is_dir():
        return result
    actor = Actor.system("smpp_journal.recover")
    current_boot, scope = boot_id(), database_scope()
    for lock_path in sorted(directory.glob("*.lock")):
        owner = lock_path.name[: -len(".lock")]
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # recovered (or cleanly closed) a moment ago
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its worker is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # someone else recovered it between our open and our lock
            segments = sorted(
                (p for p in directory.glob(f"{glob_escape(owner)}.*.jnl") if _owner_of(p) == owner),
                key=lambda p: int(_SEGMENT.match(p.name).group("n")),  # type: ignore[union-attr]
            )
            contents = journal_read(segments, current_boot)
            if contents.scope and contents.scope != scope:
                continue  # another database's worker: not ours to touch
            result.journals += 1
            if contents.trusted:
                never_written = sorted(contents.claimed - contents.written)
                written = sorted(contents.written)
                if never_written:
                    result.requeued += messages_requeue(actor=actor, message_ids=never_written)
                if written:
                    result.unknown += messages_mark_unknown(
                        actor=actor,
                        message_ids=written,
                        reason="The bind worker stopped after writing the message to the SMSC and before "
                        "recording its answer: it may have been sent, so it is never sent again.",
                    )
                logger.info("recovered journal %s: %d requeued, %d unknown", owner, len(never_written), len(written))
            else:
                # Leave every message to the reconciler: 'unknown' after its timeout, never resent.
                result.untrusted += 1
                logger.warning(
                    "journal %s not trusted (%s): its messages are left to the reconciler", owner, contents.problem
                )
            for path in segments:
                path.unlink()
            lock_path.unlink()
        finally:
            os.close(fd)
    return result


def _owner_of(path: Path) -> str | None:
    match = _SEGMENT.match(path.name)
    return match.group("owner") if match else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


__all__ = ["Journal", "Recovery", "journal_dir", "journal_read", "journals_recover"]
