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
from datetime import datetime, timedelta
from typing import Callable, Mapping

from hotline.snapshot import PolledSnapshot
from oncall.model import Roster

logger = logging.getLogger(__name__)


class RosterCache(PolledSnapshot[tuple[Roster, Mapping[str, int]]]):
    name = "roster-cache"

    def __init__(self, load_roster: Callable[[datetime, datetime], Roster],
                 load_partners: Callable[[], Mapping[str, int]], clock: Callable[[], datetime],
                 refresh_s: float = 30.0, window: timedelta = timedelta(days=2),
                 version: Callable[[], object] | None = None, poll_s: float = 2.0,
                 on_refresh: Callable[[], None] | None = None):
        super().__init__((Roster(), {}), clock, refresh_s=refresh_s, poll_s=poll_s,
                         version=version, on_refresh=on_refresh)
        self._load_roster = load_roster
        self._load_partners = load_partners
        self.window = window

    def roster(self) -> Roster:
        return self._snapshot[0]

    def partner_numbers(self) -> Mapping[str, int]:
        return self._snapshot[1]

    def _load(self, now: datetime) -> tuple[Roster, Mapping[str, int]]:
        return (self._load_roster(now - self.window, now + self.window),
                dict(self._load_partners()))

    def _loaded(self, old, new, version: object, version_moved: bool) -> None:
        if version_moved:
            # One line per change that routing now follows (not per timed reload).
            logger.info("routing snapshot reloaded: version %s, %d partner numbers",
                        version, len(new[1]))
