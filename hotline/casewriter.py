"""Writes case snapshots to the database on its own thread, so no AGI handler waits on I/O.

Snapshots are coalesced per case (only the newest is written) and retried with
backoff while the database is unavailable; nothing is dropped. On the final
snapshot of a call it attaches the recording once Asterisk has finished
writing it (MixMonitor closes the file just after the hang-up).
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
from recordings.prompts import wav_duration_s

logger = logging.getLogger(__name__)


class CaseStore(Protocol):
    def save(self, case: Case) -> None: ...


class CaseWriter:
    def __init__(self, store: CaseStore, recordings_dir: Path,
                 backoff_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0),
                 recording_settle_s: float = 0.5, recording_wait_s: float = 5.0):
        self.store = store
        self.recordings_dir = recordings_dir
        self.backoff_s = backoff_s
        self.recording_settle_s = recording_settle_s
        self.recording_wait_s = recording_wait_s
        self._pending: dict[str, tuple[Case, bool]] = {}
        self._order: list[str] = []
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="case-writer", daemon=True)
        self.written = 0
        self.failures = 0

    def start(self) -> "CaseWriter":
        self._thread.start()
        return self

    def submit(self, case: Case, final: bool = False) -> None:
        snapshot = copy.deepcopy(case)
        with self._cond:
            previous = self._pending.get(case.case_id)
            if previous is None:
                self._order.append(case.case_id)
            self._pending[case.case_id] = (snapshot, final or (previous is not None and previous[1]))
            self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._order and not self._stopping:
                    self._cond.wait()
                if not self._order:
                    return
                case_id = self._order.pop(0)
                case, final = self._pending.pop(case_id)
                self._busy = True
            try:
                if final:
                    try:
                        self._attach_recording(case)
                    except Exception:  # a bad recording must not cost the case itself
                        logger.exception("attaching the recording of case %s failed", case.case_id)
                self._save(case)
            except Exception:  # the thread must outlive any one case
                logger.exception("writing case %s failed", case.case_id)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _save(self, case: Case) -> None:
        attempt = 0
        while True:
            try:
                self.store.save(case)
                self.written += 1
                return
            except CaseConflict:
                # Another case already holds this linkedid: retrying cannot help.
                logger.error("case %s conflicts with a stored case for linkedid %s; not saved",
                             case.case_id, case.linkedid)
                self.failures += 1
                return
            except Exception as exc:  # the database is down or locked: keep trying
                self.failures += 1
                delay = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
                logger.warning("saving case %s failed (%s); retrying in %.1fs",
                               case.case_id, type(exc).__name__, delay)
                attempt += 1
                with self._cond:
                    # A newer snapshot of the same case supersedes this one.
                    if case.case_id in self._pending or self._stopping and attempt > 20:
                        return
                time.sleep(delay)

    def _attach_recording(self, case: Case) -> None:
        if case.recording_path is not None or case.connected_seq is None:
            return
        path = self.recordings_dir / f"{case.case_id}.wav"
        deadline = time.monotonic() + self.recording_wait_s
        last_size = -1
        while time.monotonic() < deadline:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = -1
            if size > 44 and size == last_size:
                break
            last_size = size
            time.sleep(self.recording_settle_s)
        seconds = wav_duration_s(path)
        if seconds is not None and seconds > 0:
            lifecycle.set_recording(case, case.ended_at or case.started_at, str(path),
                                    int(round(seconds)))
        else:
            logger.warning("case %s was connected but has no recording at %s", case.case_id, path)
