"""Writes case snapshots to the database on its own thread, so no AGI handler waits on I/O.

Snapshots are coalesced per case (only the newest is written) and retried with
backoff while the database is unavailable, round-robin, so one case that keeps
failing does not hold the others back. On the final snapshot of a call it
attaches the recording once Asterisk has finished writing it (MixMonitor closes
the file just after the hang-up). Waiting for that file never holds the thread:
a case whose recording is not settled yet is set aside and looked at again
`recording_settle_s` later, for at most `recording_wait_s`, while the other
cases are written.

With a `Journal`, every snapshot is journaled in `submit` before it is queued,
and `start` replays the journal's newest snapshot of every case: a service
that crashed, or stopped while the database was away, loses no case; the next
one writes what it had not. Replaying a snapshot the database already has
changes nothing (the repository ignores stale revisions and rewrites an equal
one in place). `stop(timeout_s)` gives up retrying at its timeout and leaves the
unwritten snapshots in the journal.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import Protocol

from cases import lifecycle
from cases.lifecycle import Case
from db.repo import CaseConflict
from hotline.journal import Journal
from recordings.prompts import wav_duration_s
from vault import Vault, seal_case_audio

logger = logging.getLogger(__name__)


# _write's answer for a final snapshot whose recording is still being written.
_NOT_SETTLED = "recording not settled"


class CaseStore(Protocol):
    def save(self, case: Case) -> object: ...


class CaseWriter:
    def __init__(self, store: CaseStore, recordings_dir: Path,
                 backoff_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0),
                 recording_settle_s: float = 0.5, recording_wait_s: float = 5.0,
                 journal: Journal | None = None, compact_idle_s: float = 1.0,
                 vault: Vault | None = None):
        self.store = store
        self.recordings_dir = recordings_dir
        self.vault = vault  # None: recordings stay plain WAV (tests, or sealing switched off)
        self.backoff_s = backoff_s
        self.recording_settle_s = recording_settle_s
        self.recording_wait_s = recording_wait_s
        self.journal = journal
        # Compact the journal after this long without work: not after every
        # write, since a truncation holds the journal lock that submit() needs.
        self.compact_idle_s = compact_idle_s
        self._pending: dict[str, tuple[Case, bool]] = {}
        self._order: list[str] = []
        # Final snapshots set aside until their recording settles: not before
        # this monotonic time; and per case, when it was first looked for and
        # the size seen last.
        self._not_before: dict[str, float] = {}
        self._recording_seen: dict[str, tuple[float, int]] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._stopped = False
        self._recovered = journal is None
        self._recover_lock = threading.Lock()
        self._compact_due = False
        self._thread = threading.Thread(target=self._run, name="case-writer", daemon=True)
        self.written = 0
        self.failures = 0
        self.replayed = 0
        self.journal_errors = 0

    def start(self) -> "CaseWriter":
        """Open the journal (if any), queue its unwritten snapshots, start the thread."""
        self._recover()
        self._thread.start()
        return self

    def submit(self, case: Case, final: bool = False) -> None:
        """Queue a copy of `case`; with a journal, journal it first (see Journal.append:
        about 10 us, no fsync on this thread)."""
        snapshot = copy.deepcopy(case)
        if self.journal is not None:
            try:
                self._recover()  # a no-op once started
                self.journal.append(snapshot, final)
            except Exception as exc:  # a full or failing disk must not fail the call
                self.journal_errors += 1
                logger.error("journaling case %s failed (%s); it is queued in memory only",
                             case.case_id, type(exc).__name__)
        self._enqueue(snapshot, final)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                if self._stopped:
                    return False  # nobody is left to write them
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, for at most `timeout_s`; then stop retrying and close
        the journal. What is still unwritten stays in the journal for the next start.

        Returns within `timeout_s` (50 ms more at worst) unless the thread is stuck
        inside store.save(); then it is left behind (a daemon) after that time."""
        deadline = time.monotonic() + timeout_s
        if self._stopped:
            return
        self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            # The thread wakes from its backoff at once; it can only be slower if
            # it is inside store.save() (a connect that hangs, SQLite's busy wait).
            self._thread.join(max(0.05, deadline - time.monotonic()))
        with self._cond:
            self._stopped = True
            unwritten = len(self._pending) + (1 if self._busy else 0)
            self._cond.notify_all()
        if self._thread.is_alive():
            logger.warning("case writer still inside a save at stop; left behind")
        if unwritten:
            if self.journal is not None and self.journal.is_open:
                logger.warning("stopping with %d case(s) not written to the database; "
                               "they stay in the journal %s for the next start",
                               unwritten, self.journal.path)
            else:
                logger.error("stopping with %d case(s) not written to the database and "
                             "no journal: they are lost", unwritten)
        if self.journal is not None:
            if not self._thread.is_alive():
                self._compact()
            self.journal.close()

    def _recover(self) -> None:
        """Once: open the journal and queue the newest snapshot of every case in it."""
        if self._recovered:
            return
        with self._recover_lock:
            if self._recovered:
                return
            assert self.journal is not None
            entries = self.journal.open()
            for entry in entries:
                self._enqueue(entry.case, entry.final, replay=True)
            self.replayed = len(entries)
            self._recovered = True
        if entries:
            logger.warning("replaying %d case(s) from the journal %s", len(entries),
                           self.journal.path)

    def _enqueue(self, case: Case, final: bool, replay: bool = False) -> None:
        with self._cond:
            previous = self._pending.get(case.case_id)
            if previous is None:
                self._order.append(case.case_id)
            elif replay and previous[0].revision >= case.revision:
                case = previous[0]  # submitted before start, and newer than the journal's
            self._pending[case.case_id] = (case, final or (previous is not None and previous[1]))
            self._cond.notify_all()

    def _run(self) -> None:
        streak = 0  # saves failed in a row: picks the backoff
        while True:
            item = None
            with self._cond:
                ready = None
                while not self._stopping:
                    now = time.monotonic()
                    ready = next((cid for cid in self._order
                                  if self._not_before.get(cid, 0.0) <= now), None)
                    if ready is not None:
                        break
                    if self._order:  # only cases waiting for their recording to settle
                        self._cond.wait(max(0.01, min(self._not_before[cid] for cid in self._order) - now))
                    elif not self._compact_due:
                        self._cond.wait()
                    elif not self._cond.wait_for(lambda: self._order or self._stopping,
                                                 self.compact_idle_s):
                        self._compact_due = False
                        break  # idle for a while: time to compact
                if self._stopping:
                    # stop() has waited for its flush: what is left stays journaled.
                    return
                if ready is not None:
                    self._order.remove(ready)
                    self._not_before.pop(ready, None)
                    item = self._pending.pop(ready)
                    self._busy = True
            if item is None:
                self._compact()  # drop what the database has from the journal
                continue
            case, final = item
            try:
                error = self._write(case, final)
            except Exception:  # the thread must outlive any one case
                logger.exception("writing case %s failed", case.case_id)
                error = None  # not retried: it was no database error
            delay = 0.0
            with self._cond:
                self._busy = False
                if error is _NOT_SETTLED:
                    # Back in the queue behind the others, looked at again shortly.
                    newer = self._pending.get(case.case_id)
                    if newer is None:
                        self._order.append(case.case_id)
                        self._pending[case.case_id] = (case, final)
                    self._not_before[case.case_id] = time.monotonic() + self.recording_settle_s
                    self._cond.notify_all()
                    continue
                if error is None:
                    streak = 0
                    self._compact_due = self.journal is not None
                else:
                    delay = self.backoff_s[min(streak, len(self.backoff_s) - 1)]
                    streak += 1
                self._cond.notify_all()
            if error is not None:
                logger.warning("saving case %s failed (%s); retrying in %.1fs",
                               case.case_id, error, delay)
                with self._cond:
                    # Not a busy loop: sleep, but wake at once for stop().
                    self._cond.wait_for(lambda: self._stopping, delay)

    def _write(self, case: Case, final: bool) -> str | None:
        """One try at saving the snapshot: None when done with it, else the error's
        type name (the snapshot is queued again to retry)."""
        revision = case.revision  # as journaled; attaching the recording bumps it
        if final and not self._recording_settled(case):
            return _NOT_SETTLED
        if final:
            try:
                self._attach_recording(case)
            except Exception:  # a bad recording must not cost the case itself
                logger.exception("attaching the recording of case %s failed", case.case_id)
            self._seal_audio(case)
        try:
            self.store.save(case)
        except CaseConflict:
            if self._absorb_into_stored(case):
                return None
            # Another case already holds this linkedid: retrying cannot help.
            logger.error("case %s conflicts with a stored case for linkedid %s; not saved",
                         case.case_id, case.linkedid)
            self.failures += 1
            if self.journal is not None:
                try:
                    self.journal.reject(case, revision)
                except Exception as exc:
                    logger.error("keeping the rejected case %s failed (%s)", case.case_id,
                                 type(exc).__name__)
            return None
        except Exception as exc:  # the database is down or locked: keep trying
            self.failures += 1
            with self._cond:
                newer = self._pending.get(case.case_id)
                if newer is None:
                    # To the back of the queue: the others get their turn. The
                    # recording was looked for already; the next try does not wait again.
                    self._order.append(case.case_id)
                    self._pending[case.case_id] = (case, False)
                else:
                    # A newer snapshot supersedes this one (and needs the recording too).
                    self._pending[case.case_id] = (newer[0], newer[1] or final)
            # The type only: a driver's message may carry the URL and its password.
            return type(exc).__name__
        self.written += 1
        if self.journal is not None:
            self.journal.applied(case.case_id, revision)
        return None

    def _compact(self) -> None:
        if self.journal is None:
            return
        try:
            done = self.journal.compact()
        except Exception as exc:
            logger.error("compacting the case journal failed (%s)", type(exc).__name__)
        else:
            if done == "rewritten":
                logger.info("case journal rewritten with %d unwritten case(s)",
                            len(self.journal.unapplied()))

    def _absorb_into_stored(self, late: Case) -> bool:
        """A restarted service opened a second case for a call it found already
        running: fold its end into the stored case instead of rejecting it."""
        get = getattr(self.store, "get_by_linkedid", None)
        try:
            stored = get(late.linkedid) if get is not None else None
            if stored is None or stored.case_id == late.case_id:
                return False
            if lifecycle.absorb_end(stored, late):
                self.store.save(stored)
            logger.warning("case %s: its end came through a restarted service; merged",
                           stored.case_id)
            return True
        except Exception as exc:
            logger.error("merging the end of call %s failed (%s)", late.linkedid,
                         type(exc).__name__)
            return False


    def _seal_audio(self, case: Case) -> None:
        """Seal the call's recording and voicemail files in place (vault/), once the
        call is over and the recording's length is known; names and paths stay."""
        if self.vault is None:
            return
        try:
            seal_case_audio((case.recording_path, case.voicemail_path), self.vault,
                            self.recordings_dir)
        except Exception as exc:  # the daily sweep (vault.seal_tree) tries again
            logger.error("sealing the audio of case %s failed (%s)", case.case_id,
                         type(exc).__name__)

    def _recording_settled(self, case: Case) -> bool:
        """Whether a final snapshot can be written now: its recording has stopped
        growing (the same size, more than a WAV header, at two looks), or there is
        none to wait for, or `recording_wait_s` has passed since the first look."""
        if case.recording_path is not None or case.connected_seq is None:
            return True
        try:
            size = (self.recordings_dir / f"{case.case_id}.wav").stat().st_size
        except OSError:
            size = -1
        now = time.monotonic()
        first, last = self._recording_seen.get(case.case_id, (now, -2))
        if (size > 44 and size == last) or now - first >= self.recording_wait_s:
            self._recording_seen.pop(case.case_id, None)
            return True
        self._recording_seen[case.case_id] = (first, size)
        return False

    def _attach_recording(self, case: Case) -> None:
        if case.recording_path is not None or case.connected_seq is None:
            return
        path = self.recordings_dir / f"{case.case_id}.wav"
        seconds = wav_duration_s(path)
        if seconds is not None and seconds > 0:
            lifecycle.set_recording(case, case.ended_at or case.started_at, str(path),
                                    int(round(seconds)))
        else:
            logger.warning("case %s was connected but has no recording at %s", case.case_id, path)
