"""The last-known roster and partner numbers, refreshed from the database on a thread.

Routing reads only this snapshot, so a slow or restarting database never
delays a caller; while the database is away the last snapshot keeps serving.
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
                 refresh_s: float = 30.0, window: timedelta = timedelta(days=2)):
        self._load_roster = load_roster
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
            roster = self._load_roster(now - self.window, now + self.window)
            partners = dict(self._load_partners())
        except Exception as exc:
            logger.warning("roster refresh failed (%s); keeping the snapshot from %s",
                           type(exc).__name__, self.loaded_at)
            return False
        self._roster, self._partners, self.loaded_at = roster, partners, now
        return True

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
        while not self._stop.wait(self.refresh_s):
            self.refresh()
