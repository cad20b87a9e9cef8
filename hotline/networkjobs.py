"""The network's scheduled job (APScheduler 3.x): missed-call and callback-due notices.

One collect job, every 30 s: the calls that ended in the last
`MISSED_LOOKBACK` with nobody accepting, and the open callback tasks that
came due in the last `CALLBACK_LOOKBACK`, become notices
(`network.notifications`) in the same outbox as the roster's notices; the
roster's deliver job (`hotline.rosterjobs`) sends them through the same
notifier, with the same retries.

Restarts: nothing is remembered but the outbox. Each run looks back over the
whole window, and the outbox keeps each key once, so a notice made before a
restart is not made again, and a call that ended while the service was down
(or whose case was written late, from the journal) is still announced --
unless it ended longer ago than the look-back window, when it is stale.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler

from hotline.notify import escape
from hotline.rosterjobs import NoticeOutbox
from network.notifications import (DueCallback, MissedCall, callback_due_notices,
                                   missed_call_notices)
from oncall.model import Roster
from oncall.notices import Notice

logger = logging.getLogger(__name__)

NETWORK_COLLECT_JOB_ID = "network-collect-notices"
NETWORK_COLLECT_EVERY = timedelta(seconds=30)
MISSED_LOOKBACK = timedelta(hours=12)  # a missed call older than this is not announced any more
CALLBACK_LOOKBACK = timedelta(hours=24)  # nor a callback due longer ago than this


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NetworkSource(Protocol):
    """Where the notices come from (`db.notification_sources.NotificationSources`)."""

    def missed_calls(self, since: datetime, until: datetime) -> list[MissedCall]:
        """Cases that ended in [since, until] with nobody accepting, a team chosen."""
        ...

    def due_callbacks(self, since: datetime, until: datetime) -> list[DueCallback]:
        """Open callback tasks due in [since, until]."""
        ...


def collect_network_notices(source: NetworkSource, roster: Roster, outbox: NoticeOutbox,
                            now: datetime, *, missed_lookback: timedelta = MISSED_LOOKBACK,
                            callback_lookback: timedelta = CALLBACK_LOOKBACK) -> list[Notice]:
    """Missed-call and callback-due notices as of `now` into the outbox; the new ones.

    Never raises: a producer that fails is logged and the other still runs;
    an outbox that fails is logged and the next run adds the same notices.
    """
    made: list[Notice] = []
    try:
        made += missed_call_notices(roster, source.missed_calls(now - missed_lookback, now))
    except Exception:
        logger.exception("making missed-call notices failed")
    try:
        made += callback_due_notices(roster, source.due_callbacks(now - callback_lookback, now),
                                     now)
    except Exception:
        logger.exception("making callback-due notices failed")
    if not made:
        return []
    try:
        new = outbox.add(made)
    except Exception:
        logger.exception("storing %d network notices failed; the next run makes them again",
                         len(made))
        return []
    for notice in new:
        logger.info("%s notice %s made", notice.kind, escape(notice.key))
    return new


def network_collect_job(source: NetworkSource, roster: Callable[[], Roster], outbox: NoticeOutbox,
                        clock: Callable[[], datetime] = utcnow) -> list[Notice]:
    """The scheduled form of `collect_network_notices`: the current roster, the clock's now."""
    try:
        snapshot, now = roster(), clock()
    except Exception:
        logger.exception("collecting network notices: no roster")
        return []
    return collect_network_notices(source, snapshot, outbox, now)


def add_network_jobs(scheduler: BaseScheduler, *, source: NetworkSource,
                     roster: Callable[[], Roster], outbox: NoticeOutbox,
                     clock: Callable[[], datetime] = utcnow,
                     every: timedelta = NETWORK_COLLECT_EVERY) -> Job:
    """Add the collect job (now, then every `every`); adding again replaces it.

    `roster` must cover `MISSED_LOOKBACK` back (the primary is the one on
    call when the call came in) and now; the roster jobs' snapshot (a day
    back) does. Delivery is the roster jobs' deliver job, on the same outbox.
    """
    return scheduler.add_job(
        network_collect_job, trigger="interval", seconds=every.total_seconds(),
        args=(source, roster, outbox, clock), id=NETWORK_COLLECT_JOB_ID,
        name="collect network notices (missed calls, callbacks due)",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=int(every.total_seconds()),
        next_run_time=utcnow(),
    )
