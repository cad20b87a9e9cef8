"""A local append-only journal of case snapshots: a case survives a database outage and a crash.

One file per journal directory (`cases.jsonl`), one JSON line per snapshot handed
to the case writer: `{"v": 1, "case_id", "revision", "final", "case": {...}}`.
On start the writer replays the newest snapshot of every case found there; the
repository ignores stale revisions, so replaying what the database already has
changes nothing.

Durability, and why it is split in two (measured on the project's machine, ext4
on a virtio disk: `os.fsync` after a 1 KiB append takes 0.2 ms median, 0.5 ms
p99, but up to 6 ms when other processes write): `append` runs on the asyncio
loop thread, so it only encodes the line (50-100 us) and `write()`s it into the
kernel (10-15 us median; a few ms at worst, when ext4's journal commits), and a
dedicated thread `fsync`s behind it, one fsync for every line written meanwhile
(group commit).
- A crash of the service (exception, SIGKILL, OOM killer) loses nothing that
  `append` returned for: the line is in the kernel's page cache.
- A crash of the machine (power, kernel panic) can lose a line that is not yet
  fsync'ed: its window runs from `append` to the end of the next fsync that
  starts after it (at most two fsyncs: about 0.4 ms typically, 1 ms p99, ~10 ms
  at worst seen here). The database write is not held back for it. A warning is
  logged when one fsync takes longer than `slow_sync_s`.

A line torn by a crash (or garbled) is skipped with a warning, never fatal; a
torn last line is cut off so the next append starts on a line of its own.

Compaction (`compact`, called by the writer once it has been idle a while):
once the database holds every case at the journal's newest revision or later,
the file is truncated; if it has grown past `compact_bytes` with cases still
unwritten, it is rewritten with only their newest lines. Snapshots the database refuses for
good (`CaseConflict`) are copied to `rejected.jsonl` before they stop holding
the journal back, so no snapshot is ever dropped silently.

Contains raw caller IDs: files are 0600 in a 0700 directory. An exclusive
`flock` on `journal.lock` keeps a second process off the same journal (two
writers would truncate each other's unwritten snapshots); a dead process's lock
goes with it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cases.lifecycle import Case, DialAttempt, MenuEvent
from routing.callers import Caller, CallerClass
from routing.escalation import AttemptOutcome

logger = logging.getLogger(__name__)

JOURNAL_NAME = "cases.jsonl"
REJECTED_NAME = "rejected.jsonl"
LOCK_NAME = "journal.lock"
FORMAT_VERSION = 1
COMPACT_BYTES = 1 << 20
SLOW_SYNC_S = 0.5


class JournalError(Exception):
    """The journal cannot be used."""


class JournalBusy(JournalError):
    """Another process holds this journal directory."""


class JournalClosed(JournalError):
    """The journal is not open (never opened, or closed)."""


class JournalFormatError(ValueError):
    """A journal line or serialised case is not what this version writes."""


# --- Case <-> JSON --------------------------------------------------------------------------------
#
# Field by field rather than through dataclasses.asdict: enums go by value,
# datetimes as ISO-8601 with their offset, and a field added to Case without
# being added here fails the round-trip test instead of vanishing silently.

def case_to_json(case: Case) -> dict[str, Any]:
    """A JSON-ready dict of every field of `case` (pure)."""
    caller = case.caller
    return {
        "case_id": case.case_id,
        "linkedid": case.linkedid,
        "caller": {
            "number": caller.number,
            "caller_class": CallerClass(caller.caller_class).value,
            "hospital_id": caller.hospital_id,
            "raw_safe": caller.raw_safe,
            "raw": caller.raw,
        },
        "started_at": _dt_out(case.started_at),
        "language": case.language,
        "team": case.team,
        "menu": [
            {"at": _dt_out(e.at), "choice": e.choice, "label": e.label} for e in case.menu
        ],
        "attempts": [
            {
                "seq": a.seq, "kind": a.kind, "surgeon_id": a.surgeon_id, "name": a.name,
                "phone": a.phone, "role": a.role, "started_at": _dt_out(a.started_at),
                "ended_at": _dt_out(a.ended_at), "ring_s": a.ring_s, "answered": a.answered,
                "outcome": None if a.outcome is None else AttemptOutcome(a.outcome).value,
            }
            for a in case.attempts
        ],
        "connected_at": _dt_out(case.connected_at),
        "connected_surgeon_id": case.connected_surgeon_id,
        "connected_seq": case.connected_seq,
        "ended_at": _dt_out(case.ended_at),
        "hangup_by": case.hangup_by,
        "recording_path": case.recording_path,
        "recording_s": case.recording_s,
        "voicemail_path": case.voicemail_path,
        "voicemail_at": _dt_out(case.voicemail_at),
        "fallback": case.fallback,
        "linked_case_id": case.linked_case_id,
        "revision": case.revision,
    }


def case_from_json(data: Any) -> Case:
    """The Case that `case_to_json` made `data` from (pure). Raises JournalFormatError.

    Datetimes come back as the same instant with the same UTC offset; a
    ZoneInfo's name is not kept (the service stamps cases in UTC).
    """
    try:
        c = _obj(data)
        k = _obj(c["caller"])
        caller = Caller(
            number=_opt(k["number"], str),
            caller_class=CallerClass(_req(k["caller_class"], str)),
            hospital_id=_opt(k["hospital_id"], int),
            raw_safe=_req(k["raw_safe"], str),
            raw=_opt(k["raw"], str),
        )
        menu = [
            MenuEvent(at=_dt_in(_req(e["at"], str)), choice=_req(e["choice"], str),
                      label=_req(e["label"], str))
            for e in map(_obj, _req(c["menu"], list))
        ]
        attempts = []
        for a in map(_obj, _req(c["attempts"], list)):
            kind = _req(a["kind"], str)
            if kind not in ("chain", "nurse"):
                raise JournalFormatError(f"unknown attempt kind {kind!r}")
            outcome = _opt(a["outcome"], str)
            attempts.append(DialAttempt(
                seq=_req(a["seq"], int), kind=kind, surgeon_id=_opt(a["surgeon_id"], int),
                name=_req(a["name"], str), phone=_req(a["phone"], str), role=_req(a["role"], str),
                started_at=_dt_in(_req(a["started_at"], str)),
                ended_at=_opt_dt(a["ended_at"]), ring_s=_opt(a["ring_s"], int),
                answered=_req(a["answered"], bool),
                outcome=None if outcome is None else AttemptOutcome(outcome),
            ))
        return Case(
            case_id=_req(c["case_id"], str),
            linkedid=_req(c["linkedid"], str),
            caller=caller,
            started_at=_dt_in(_req(c["started_at"], str)),
            language=_req(c["language"], str),
            team=_opt(c["team"], str),
            menu=menu,
            attempts=attempts,
            connected_at=_opt_dt(c["connected_at"]),
            connected_surgeon_id=_opt(c["connected_surgeon_id"], int),
            connected_seq=_opt(c["connected_seq"], int),
            ended_at=_opt_dt(c["ended_at"]),
            hangup_by=_opt(c["hangup_by"], str),
            recording_path=_opt(c["recording_path"], str),
            recording_s=_opt(c["recording_s"], int),
            voicemail_path=_opt(c["voicemail_path"], str),
            voicemail_at=_opt_dt(c["voicemail_at"]),
            fallback=_req(c["fallback"], bool),
            # Absent in journals written before callbacks linked cases.
            linked_case_id=_opt(c.get("linked_case_id"), str),
            revision=_req(c["revision"], int),
        )
    except JournalFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a missing key, a wrong enum value
        raise JournalFormatError(f"not a serialised case ({type(exc).__name__})") from None


@dataclass(frozen=True)
class JournalEntry:
    """One snapshot as journaled; `final` once the call has ended (attach its recording)."""

    case: Case
    final: bool = False


def encode_entry(case: Case, final: bool = False) -> bytes:
    """One journal line, newline included. Pure ASCII: JSON escapes NUL, CR, LF,
    non-ASCII and lone surrogates, so a hostile caller ID cannot split a line."""
    line = json.dumps(
        {"v": FORMAT_VERSION, "case_id": case.case_id, "revision": case.revision,
         "final": bool(final), "case": case_to_json(case)},
        ensure_ascii=True, allow_nan=False, separators=(",", ":"),
    )
    return line.encode("ascii") + b"\n"


def decode_entry(line: bytes) -> JournalEntry:
    """The entry of one journal line (with or without its newline). Raises JournalFormatError."""
    try:
        data = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        raise JournalFormatError("not a JSON line") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
        raise JournalFormatError("not a version 1 journal line")
    case = case_from_json(data.get("case"))
    if data.get("case_id") != case.case_id or data.get("revision") != case.revision:
        raise JournalFormatError("the line's case_id/revision do not match its case")
    final = data.get("final")
    if not isinstance(final, bool):
        raise JournalFormatError("final is not a boolean")
    return JournalEntry(case, final)


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JournalFormatError("expected an object")
    return value


def _req(value: Any, kind: type) -> Any:
    # type() rather than isinstance: True is not an int here, 1 is not a bool.
    if type(value) is not kind:
        raise JournalFormatError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _opt(value: Any, kind: type) -> Any:
    return None if value is None else _req(value, kind)


def _dt_out(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt_in(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else _dt_in(_req(value, str))


# --- the journal file -----------------------------------------------------------------------------

@dataclass
class _Tip:
    """The newest journaled snapshot of a case the database does not have yet."""

    revision: int
    final: bool
    line: bytes


class Journal:
    """The spool of case snapshots in one directory; see the module docstring.

    `append` may be called from any thread (the writer calls it on the loop
    thread); `applied`, `reject` and `compact` come from the writer's thread.
    """

    def __init__(self, directory: Path, *, compact_bytes: int = COMPACT_BYTES,
                 slow_sync_s: float = SLOW_SYNC_S) -> None:
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_NAME
        self.rejected_path = self.directory / REJECTED_NAME
        self.compact_bytes = compact_bytes
        self.slow_sync_s = slow_sync_s
        self._lock = threading.Lock()  # the fd, the counters, the tips
        self._cond = threading.Condition(self._lock)
        # Held around every fsync, and by whatever replaces or closes the fd,
        # so a fsync never runs on a closed (or reused) descriptor.
        self._io = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._tips: dict[str, _Tip] = {}
        self._size = 0
        self._appended = 0  # lines written since open
        self._synced = 0  # lines known to be on disk
        self._torn = False  # a failed write may have left half a line
        self._closing = False
        self._thread: threading.Thread | None = None
        self.syncs = 0
        self.sync_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> list[JournalEntry]:
        """Lock the directory, read the journal, and return the newest snapshot of
        every case in it (in the order the cases first appear) for replay."""
        if self._fd is not None:
            raise JournalError("the journal is already open")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalBusy(f"another process uses the journal in {self.directory}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                entries = self._load(fd)
                os.fsync(fd)
                _fsync_dir(self.directory)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        with self._lock:
            self._fd, self._lock_fd = fd, lock_fd
            self._closing = False
            self._appended = self._synced = 0
        self._thread = threading.Thread(target=self._sync_loop, name="case-journal", daemon=True)
        self._thread.start()
        return entries

    def close(self) -> None:
        """Sync what was appended, close the file and release the directory. Idempotent."""
        with self._lock:
            if self._fd is None:
                return
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()  # its last round syncs everything appended
        with self._io, self._lock:
            fd, lock_fd = self._fd, self._lock_fd
            self._fd = self._lock_fd = None
        if fd is not None:
            os.close(fd)
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock

    # -- writing -----------------------------------------------------------------------------------
    def append(self, case: Case, final: bool = False) -> None:
        """Journal one snapshot. Returns once the line is in the kernel (a process
        crash cannot lose it); the fsync follows on the journal's thread."""
        line = encode_entry(case, final)  # outside the lock: the CPU part
        with self._lock:
            if self._fd is None:
                raise JournalClosed("the journal is not open")
            tip = self._tips.get(case.case_id)
            if tip is not None and tip.final and not final:
                # A later snapshot of an ended call still needs its recording attached.
                final = True
                line = encode_entry(case, final)
            if self._torn:
                # Terminate the fragment a failed write left, so it spoils only itself.
                self._size += _write_all(self._fd, b"\n")
                self._torn = False
            try:
                self._size += _write_all(self._fd, line)
            except BaseException:
                self._torn = True
                raise
            self._appended += 1
            if tip is None or case.revision >= tip.revision:
                self._tips[case.case_id] = _Tip(case.revision, final, line)
            self._cond.notify_all()

    def wait_durable(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything appended so far has been fsync'ed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._appended
            while self._synced < target and self._fd is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._synced >= target

    def applied(self, case_id: str, revision: int) -> None:
        """The database now holds `case_id` at `revision` or newer. Safe after close."""
        with self._lock:
            tip = self._tips.get(case_id)
            if tip is not None and revision >= tip.revision:
                del self._tips[case_id]

    def reject(self, case: Case, revision: int) -> None:
        """The database refuses this snapshot for good: keep it in `rejected.jsonl`,
        and stop holding the journal back for it."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.rejected_path, flags, 0o600)
        try:
            _write_all(fd, encode_entry(case))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.applied(case.case_id, revision)

    # -- state -------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes in the journal file."""
        return self._size

    def unapplied(self) -> list[str]:
        """Case ids whose newest journaled snapshot the database may not have."""
        with self._lock:
            return list(self._tips)

    # -- compaction --------------------------------------------------------------------------------
    def compact(self) -> str | None:
        """Drop what the database already has: "truncated" (nothing left unwritten),
        "rewritten" (over `compact_bytes`: only the unwritten cases' newest lines
        kept) or None (nothing to do)."""
        with self._io, self._lock:
            fd = self._fd
            if fd is None:
                return None
            if not self._tips:
                if self._size == 0:
                    return None
                # No fsync: if the truncation is lost in a machine crash the old
                # lines come back and are replayed, which changes nothing.
                os.ftruncate(fd, 0)
                self._size = 0
                self._torn = False
                return "truncated"
            if self._size <= self.compact_bytes:
                return None
            # Rare (the writer is idle yet some case is unwritten): done under the
            # lock, so an append waits for a few small writes and one fsync.
            keep = b"".join(tip.line for tip in self._tips.values())
            tmp = self.directory / (JOURNAL_NAME + ".tmp")
            tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(tmp_fd, keep)
                os.fsync(tmp_fd)
            finally:
                os.close(tmp_fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
            os.close(fd)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            self._size = len(keep)
            self._torn = False
            self._synced = self._appended  # everything still needed is in the fsync'ed file
            self._cond.notify_all()
            return "rewritten"

    # -- internals ---------------------------------------------------------------------------------
    def _load(self, fd: int) -> list[JournalEntry]:
        data = _read_all(fd)
        newest: dict[str, JournalEntry] = {}
        finals: set[str] = set()
        end = data.rfind(b"\n") + 1  # the end of the last complete line
        lines = data[:end].split(b"\n")[:-1]
        tail = data[end:]
        skipped = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = decode_entry(line)
            except JournalFormatError as exc:
                skipped += 1
                logger.warning("journal %s line %d skipped: %s", self.path, number, exc)
                continue
            self._take(newest, finals, entry)
        if tail:
            try:
                entry = decode_entry(tail)
            except JournalFormatError:
                # Torn by a crash mid-write: cut it off, so the next line starts clean.
                logger.warning("journal %s ends in a torn line (%d bytes); cut off",
                               self.path, len(tail))
                os.ftruncate(fd, end)
                data = data[:end]
            else:
                self._take(newest, finals, entry)
                _write_all(fd, b"\n")  # complete but unterminated: just end the line
                data += b"\n"
        self._size = len(data)
        self._tips = {}
        entries = []
        for case_id, entry in newest.items():
            final = entry.final or case_id in finals
            entries.append(JournalEntry(entry.case, final))
            self._tips[case_id] = _Tip(entry.case.revision, final, encode_entry(entry.case, final))
        if entries or skipped:
            logger.info("journal %s: %d case(s) to replay, %d line(s) skipped",
                        self.path, len(entries), skipped)
        return entries

    @staticmethod
    def _take(newest: dict[str, JournalEntry], finals: set[str], entry: JournalEntry) -> None:
        case_id = entry.case.case_id
        if entry.final:
            finals.add(case_id)
        known = newest.get(case_id)
        if known is None or entry.case.revision >= known.case.revision:
            newest[case_id] = entry  # keeps the case's place: dict order is first appearance

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                while self._synced >= self._appended and not self._closing:
                    self._cond.wait()
                if self._synced >= self._appended:  # closing, and nothing left to sync
                    return
            with self._io:
                with self._lock:
                    fd, target = self._fd, self._appended
                if fd is None:
                    return
                started = time.monotonic()
                try:
                    os.fsync(fd)
                except OSError as exc:
                    # Linux may have dropped the pages already: nothing to retry.
                    # The snapshots are still queued for the database.
                    self.sync_errors += 1
                    logger.error("fsync of the case journal %s failed (%s)", self.path,
                                 type(exc).__name__)
                    time.sleep(0.1)
                took = time.monotonic() - started
            if took > self.slow_sync_s:
                logger.warning("fsync of the case journal took %.2fs", took)
            with self._cond:
                self.syncs += 1
                self._synced = max(self._synced, target)
                self._cond.notify_all()


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
