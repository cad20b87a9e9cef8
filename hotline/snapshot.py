"""A snapshot read from the database on a thread, which the call path reads without waiting.

Routing must never wait on the database: it reads the last snapshot, and a
thread reloads it. A full reload runs every `refresh_s`; in between, a cheap
`version()` probe every `poll_s` reloads as soon as something it covers was
written, from whichever process. While the database is away the last snapshot
keeps serving (and says since when in the log).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable, Generic, TypeVar

logger = logging.getLogger(__name__)

S = TypeVar("S")


class PolledSnapshot(Generic[S]):
    """Subclasses say how to load (`_load(now)`) and what to note on a change (`_loaded`)."""

    name = "snapshot"  # in log lines and the thread's name

    def __init__(self, initial: S, clock: Callable[[], datetime], *, refresh_s: float,
                 poll_s: float, version: Callable[[], object] | None = None,
                 on_refresh: Callable[[], None] | None = None):
        self._snapshot = initial
        self._clock = clock
        self.refresh_s = refresh_s
        self.poll_s = poll_s
        self._version = version
        self._seen_version: object = None
        self._on_refresh = on_refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded_at: datetime | None = None

    def _load(self, now: datetime) -> S:
        raise NotImplementedError

    def _loaded(self, old: S, new: S, version: object, version_moved: bool) -> None:
        """Called after each successful load (log a line per change here)."""

    def refresh(self) -> bool:
        """Load now; False (keeping the old snapshot) if the load failed."""
        now = self._clock()
        try:
            # The version is read first: a write landing during the load is
            # then seen as new at the next probe, never missed.
            version = self._version() if self._version is not None else None
            new = self._load(now)
        except Exception as exc:
            logger.warning("%s refresh failed (%s); keeping the snapshot from %s",
                           self.name, type(exc).__name__, self.loaded_at)
            return False
        old, self._snapshot, self.loaded_at = self._snapshot, new, now
        moved, self._seen_version = version != self._seen_version, version
        self._loaded(old, new, version, moved)
        if self._on_refresh is not None:
            try:
                self._on_refresh()
            except Exception:
                logger.exception("%s refresh listener failed", self.name)
        return True

    def changed(self) -> bool:
        """Whether the database's version moved since the last load."""
        if self._version is None:
            return False
        try:
            return self._version() != self._seen_version
        except Exception as exc:
            logger.debug("%s version probe failed (%s)", self.name, type(exc).__name__)
            return False

    def start(self):
        self.refresh()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        step = min(self.poll_s, self.refresh_s) if self._version is not None else self.refresh_s
        since_full = 0.0
        while not self._stop.wait(step):
            since_full += step
            if since_full >= self.refresh_s or self.changed():
                since_full = 0.0
                self.refresh()
