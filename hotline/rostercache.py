"""The last-known roster and partner numbers, refreshed from the database on a thread.

Routing reads only this snapshot, so a slow or restarting database never
delays a caller; while the database is away the last snapshot keeps serving.

A full reload runs every `refresh_s`; in between, a cheap `version()` probe
every `poll_s` (the newest roster audit entry and the newest hospital or
block-list audit entry: every such write leaves one) reloads as soon as a
swap, cover, roster import or newly registered hospital number lands, from
whichever process.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Callable, Mapping

from oncall.model import Roster

logger = logging.getLogger(__name__)


class RosterCache:
    def __init__(self, load_roster: Callable[[datetime, datetime], Roster],
                 load_partners: Callable[[], Mapping[str, int]], clock: Callable[[], datetime],
                 refresh_s: float = 30.0, window: timedelta = timedelta(days=2),
                 version: Callable[[], object] | None = None, poll_s: float = 2.0,
                 on_refresh: Callable[[], None] | None = None):
        self._load_roster = load_roster
        self._version = version
        self._seen_version: object = None
        self.poll_s = poll_s
        self._on_refresh = on_refresh
        self._load_partners = load_partners
        self._clock = clock
        self.refresh_s = refresh_s
        self.window = window
        self._roster = Roster()
        self._partners: Mapping[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded_at: datetime | None = None

    def roster(self) -> Roster:
        return self._roster

    def partner_numbers(self) -> Mapping[str, int]:
        return self._partners

    def refresh(self) -> bool:
        now = self._clock()
        try:
            # The version is read first: a write landing during the load is
            # then seen as new at the next probe, never missed.
            version = self._version() if self._version is not None else None
            roster = self._load_roster(now - self.window, now + self.window)
            partners = dict(self._load_partners())
        except Exception as exc:
            logger.warning("roster refresh failed (%s); keeping the snapshot from %s",
                           type(exc).__name__, self.loaded_at)
            return False
        self._roster, self._partners, self.loaded_at = roster, partners, now
        if version != self._seen_version:
            # One line per change that routing now follows (not per timed reload).
            logger.info("routing snapshot reloaded: version %s, %d partner numbers",
                        version, len(partners))
        self._seen_version = version
        if self._on_refresh is not None:
            try:
                self._on_refresh()
            except Exception:
                logger.exception("roster refresh listener failed")
        return True

    def changed(self) -> bool:
        """Whether the database's roster version moved since the last load."""
        if self._version is None:
            return False
        try:
            return self._version() != self._seen_version
        except Exception as exc:
            logger.debug("roster version probe failed (%s)", type(exc).__name__)
            return False

    def start(self) -> "RosterCache":
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="roster-cache", daemon=True)
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
