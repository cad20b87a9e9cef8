"""The roster's scheduled jobs (APScheduler 3.x): notices, and the chain push at each handoff.

Three jobs on the service's one scheduler:

- collect (every minute): shift reminders, the daily digests and roster
  alerts as of now (`oncall.notices`) go into the `NoticeOutbox`, which keeps
  each key once;
- deliver (every 30 s): what the outbox has due goes to the `Notifier`; a
  failure is retried after 1, 2, 4, ... minutes and given up after
  `MAX_ATTEMPTS` attempts, loudly;
- handoff (a `date` job, rescheduled after every run): just after the next
  moment any team's on-call changes, push every team's chain into the chain mirror.

Surviving a restart: the scheduler keeps APScheduler's default memory job
store. A 3.x job store cannot be shared by processes, and these jobs hold
callables (the roster snapshot, the outbox, the notifier) that do not belong
in a pickle; so the jobs are added afresh at every start and nothing of the
scheduler's state is kept. Nothing is lost that way, because what the jobs
produce is recomputed, not remembered: collection looks back (a reminder is
still made up to 30 minutes after its stint began, today's digest all day, a
roster alert as long as its finding is not over), the durable outbox stores
each key once so nothing is made twice, and delivery picks up whatever is
stored and unsent, retries included. The handoff job is recomputed from the
roster at start. Delivery is at least once: a crash between a send and
`mark_sent` sends that notice again at the next start.

Every job function logs and returns instead of raising: the next run retries.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Protocol

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler

from hotline.notify import Notifier, NotifyError
from oncall.model import Roster, Surgeon
from oncall.notices import (GAP_DAYS, HANDOFF_HORIZON, Notice, clean, digests_due, gap_alerts,
                            next_handoff, shift_reminders)

logger = logging.getLogger(__name__)

COLLECT_JOB_ID = "roster-collect-notices"
DELIVER_JOB_ID = "roster-deliver-notices"
HANDOFF_JOB_ID = "roster-handoff-push"

COLLECT_EVERY = timedelta(minutes=1)
DELIVER_EVERY = timedelta(seconds=30)
DELIVER_FIRST_DELAY = timedelta(seconds=5)  # let the first collection go first
DELIVER_BATCH = 100
MAX_ATTEMPTS = 5
RETRY_FIRST = timedelta(minutes=1)  # then 2, 4, 8 ... minutes
HANDOFF_MARGIN = timedelta(seconds=1)  # push just after the handoff, when the new chain holds
HANDOFF_RECHECK = timedelta(hours=1)  # no handoff in sight (or far away): look again then
HANDOFF_RETRY = timedelta(seconds=30)  # a failed push is tried again this soon
MAX_ERROR_CHARS = 500


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- the outbox


@dataclass(frozen=True)
class PendingNotice:
    """A stored notice due for a delivery attempt; `attempts`: failed attempts so far."""

    notice: Notice
    attempts: int = 0


class NoticeOutbox(Protocol):
    """Durable store of roster notices, one per key: what makes the jobs idempotent.

    The collect and deliver jobs may call it at the same time from two
    scheduler threads; each call is one transaction. All times are aware (the
    jobs pass UTC). A key, once stored, stays known -- whether pending, sent
    or given up -- for as long as the notice could be made again: a
    reminder's for `REMINDER_LOOKBACK` after its stint starts, a digest's for
    its local day, a roster alert's for as long as its finding lasts (a
    never-fixed gap is made every minute). Keep keys 30 days after `due_at`
    at least; a pruned key whose notice is still being made is sent again.
    """

    def add(self, notices: Iterable[Notice]) -> list[Notice]:
        """Store the notices whose key was never stored; return those, in the given order.

        A notice whose key is known is dropped, even if its texts differ (the
        first version stands); of repeats within `notices` the first counts.
        Stored means durable (committed) when this returns; on an error it
        raises and stores nothing, and the caller adds the same notices again
        later.
        """
        ...

    def pending(self, now: datetime, limit: int = 100) -> list[PendingNotice]:
        """Stored notices neither sent nor given up, with `due_at <= now` and no
        `retry_at` after `now`: at most `limit`, earliest `due_at` first, then by key."""
        ...

    def mark_sent(self, key: str, at: datetime) -> None:
        """The notice was delivered at `at`: never pending again. Unknown key: ignored."""
        ...

    def mark_failed(self, key: str, at: datetime, error: str, retry_at: datetime | None) -> None:
        """One more failed attempt (`attempts` + 1) at `at`, for the reason `error` (one
        line, at most 500 characters). Not pending before `retry_at`; `retry_at` None:
        given up, never pending again. Unknown key: ignored."""
        ...


# --------------------------------------------------------------------------- collect


def collect_notices(roster: Roster, outbox: NoticeOutbox, now: datetime, *,
                    gap_days: int = GAP_DAYS) -> list[Notice]:
    """Reminders, digests and roster alerts as of `now` into the outbox; the new ones.

    Never raises: a producer that fails is logged and the others still run;
    an outbox that fails is logged and the next run adds the same notices.
    """
    made: list[Notice] = []
    producers: Sequence[tuple[str, Callable[[], list[Notice]]]] = (
        ("shift reminders", lambda: shift_reminders(roster, now)),
        ("roster digests", lambda: digests_due(roster, now)),
        ("roster alerts", lambda: gap_alerts(roster, now, days=gap_days)),
    )
    for what, produce in producers:
        try:
            made += produce()
        except Exception:
            logger.exception("making %s failed", what)
    if not made:
        return []
    try:
        new = outbox.add(made)
    except Exception:
        logger.exception("storing %d roster notices failed; the next run makes them again",
                         len(made))
        return []
    if new:
        logger.info("roster notices: %d new of %d made", len(new), len(made))
    return new


def collect_job(roster: Callable[[], Roster], outbox: NoticeOutbox,
                clock: Callable[[], datetime] = utcnow, gap_days: int = GAP_DAYS) -> list[Notice]:
    """The scheduled form of `collect_notices`: the current snapshot, the clock's now."""
    try:
        snapshot, now = roster(), clock()
    except Exception:
        logger.exception("collecting roster notices: no roster")
        return []
    return collect_notices(snapshot, outbox, now, gap_days=gap_days)


# --------------------------------------------------------------------------- deliver


class Delivery(NamedTuple):
    """What one deliver run did."""

    sent: int = 0
    failed: int = 0  # to be retried
    gave_up: int = 0


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: 1, 2, 4, 8 ... minutes."""
    return RETRY_FIRST * 2 ** (attempts - 1)


def deliver_notices(outbox: NoticeOutbox, notifier: Notifier, surgeons: Mapping[int, Surgeon],
                    now: datetime, max_attempts: int = MAX_ATTEMPTS, *,
                    limit: int = DELIVER_BATCH) -> Delivery:
    """Send what the outbox has due; mark each sent, or failed with a backoff.

    A notice to a surgeon not in `surgeons` fails like a send would (the
    roster may be reloading) and is retried. After `max_attempts` failed
    attempts it is given up and logged as an error. Any exception from the
    notifier counts as a failure; one from the outbox ends the run (the next
    one starts over). Never raises.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    sent = failed = gave_up = 0
    try:
        due = outbox.pending(now, limit)
    except Exception:
        logger.exception("reading the notice outbox failed")
        return Delivery()
    for item in due:
        notice = item.notice
        try:
            recipient = None if notice.surgeon_id is None else surgeons.get(notice.surgeon_id)
            if notice.surgeon_id is not None and recipient is None:
                raise NotifyError(f"surgeon {notice.surgeon_id} is not in the roster")
            notifier.send(notice, recipient)
        except Exception as exc:
            if not isinstance(exc, NotifyError):
                logger.exception("notifier crashed on notice %s", notice.key)
            attempts = item.attempts + 1
            error = clean(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
            retry_at = None if attempts >= max_attempts else now + retry_delay(attempts)
            try:
                outbox.mark_failed(notice.key, now, error, retry_at)
            except Exception:
                logger.exception("recording a failed notice in the outbox failed")
                break
            if retry_at is None:
                gave_up += 1
                logger.error("GAVE UP on %s notice %s to %s after %d attempts: %s",
                             notice.kind, notice.key, _who(notice), attempts, error)
            else:
                failed += 1
                logger.warning("%s notice %s to %s failed (attempt %d of %d, next at %s): %s",
                               notice.kind, notice.key, _who(notice), attempts, max_attempts,
                               retry_at.isoformat(), error)
            continue
        try:
            outbox.mark_sent(notice.key, now)
        except Exception:
            # Sent but not marked: it goes out again later (at least once).
            logger.exception("marking notice %s sent failed", notice.key)
            break
        sent += 1
    if sent or failed or gave_up:
        logger.info("roster notices delivered: %d sent, %d to retry, %d given up",
                    sent, failed, gave_up)
    return Delivery(sent, failed, gave_up)


def deliver_job(outbox: NoticeOutbox, notifier: Notifier, roster: Callable[[], Roster],
                clock: Callable[[], datetime] = utcnow,
                max_attempts: int = MAX_ATTEMPTS) -> Delivery:
    """The scheduled form of `deliver_notices`: the snapshot's surgeons, the clock's now."""
    try:
        surgeons, now = roster().surgeons, clock()
    except Exception:
        logger.exception("delivering roster notices: no roster")
        return Delivery()
    return deliver_notices(outbox, notifier, surgeons, now, max_attempts)


def _who(notice: Notice) -> str:
    return "the duty desk" if notice.surgeon_id is None else f"surgeon {notice.surgeon_id}"


# --------------------------------------------------------------------------- handoffs


class HandoffPusher:
    """Runs `push_chains` just after each handoff of `teams`, as one self-rescheduling job.

    Each run pushes, then looks at the roster as it is now for the next
    handoff (`oncall.notices.next_handoff`) and replaces the `date` job
    (`HANDOFF_JOB_ID`) with one at that handoff + `margin`. With no handoff
    within the horizon, or a later one, it wakes after `recheck` anyway (and
    pushes; the mirror sends only what changed); a failed push is tried
    again after `retry`. A roster write calls `reschedule()` so a new
    override's start is not missed.

    `clock` is the roster's time (the service clock); the scheduler runs on
    `wall`. They are the same clock in the service; should they differ (a
    test's fixed clock), the job is placed by the same offset, so a clock
    that stands still cannot make the job fire again and again.
    """

    def __init__(self, scheduler: BaseScheduler, push_chains: Callable[[], object],
                 roster: Callable[[], Roster], teams: Iterable[str], *,
                 clock: Callable[[], datetime] = utcnow, margin: timedelta = HANDOFF_MARGIN,
                 recheck: timedelta = HANDOFF_RECHECK, retry: timedelta = HANDOFF_RETRY,
                 horizon: timedelta = HANDOFF_HORIZON, job_id: str = HANDOFF_JOB_ID,
                 wall: Callable[[], datetime] = utcnow):
        self.scheduler = scheduler
        self._push = push_chains
        self._roster = roster
        self.teams = tuple(teams)
        self._clock = clock
        self._wall = wall
        self.margin, self.recheck, self.retry, self.horizon = margin, recheck, retry, horizon
        self.job_id = job_id
        self._lock = threading.Lock()
        self.handoff: datetime | None = None  # what the scheduled run is for; None: a recheck
        self._pushed_for: datetime | None = None  # the last handoff pushed

    def reschedule(self, *, retry: bool = False) -> Job:
        """(Re)place the job at the next handoff + margin, or at the recheck; thread-safe."""
        with self._lock:
            now = self._clock()
            # Strictly after the handoff just pushed, even on a clock that lags.
            after = max(now, self._pushed_for) if self._pushed_for is not None else now
            try:
                handoff = next_handoff(self._roster(), self.teams, after, horizon=self.horizon)
            except Exception:
                logger.exception("finding the next handoff failed; looking again in %s",
                                 self.retry)
                handoff, retry = None, True
            run_at = now + (self.retry if retry else self.recheck)
            if handoff is not None and handoff + self.margin <= run_at:
                run_at = handoff + self.margin
            else:
                handoff = None
            self.handoff = handoff
            if self._clock is not self._wall:
                run_at += self._wall() - now
            job = self.scheduler.add_job(
                self.run, trigger="date", run_date=run_at, id=self.job_id,
                name="push the on-call chains to the chain mirror at the next handoff",
                replace_existing=True, max_instances=1, coalesce=True,
                # A late handoff push is still wanted; a dropped one would end the cycle.
                misfire_grace_time=None,
            )
            logger.debug("next chain push at %s (%s)", run_at.isoformat(),
                         "handoff" if handoff is not None else "recheck")
            return job

    def run(self) -> None:
        """The job: push, then reschedule. Never raises."""
        handoff, ok = self.handoff, True
        try:
            self._push()
        except Exception as exc:
            ok = False
            logger.warning("pushing the chains to the chain mirror failed (%s: %s); again in %s",
                           type(exc).__name__, clean(str(exc))[:MAX_ERROR_CHARS], self.retry)
        else:
            if handoff is not None:
                self._pushed_for = handoff
                logger.info("pushed the on-call chains at the handoff of %s", handoff.isoformat())
        try:
            self.reschedule(retry=not ok)
        except Exception:
            logger.exception("rescheduling the handoff push failed")


# --------------------------------------------------------------------------- wiring


def add_roster_jobs(
    scheduler: BaseScheduler,
    *,
    roster: Callable[[], Roster],
    outbox: NoticeOutbox,
    notifier: Notifier,
    push_chains: Callable[[], object],
    teams: Iterable[str],
    clock: Callable[[], datetime] = utcnow,
    gap_days: int = GAP_DAYS,
) -> list[Job]:
    """Add the collect, deliver and handoff jobs (in that order); adding again replaces them.

    `roster` returns the current snapshot; it must hold the shifts, overrides
    and leave from a day back to `gap_days` (+1) ahead, or the roster alerts
    report gaps that are not there (the service's `RosterCache` window is
    two days: give it a wider one, or pass `gap_days=1`). `push_chains` blocks
    until the chains are pushed (or raises); `teams` are the team codes it
    pushes. Collection runs at once and every minute, delivery 5 s later and
    every 30 s; one run of each at a time, missed runs collapsed into one.
    The handoff job's `func` is `HandoffPusher.run`: `handoff_pusher(jobs)`
    gives the pusher, whose `reschedule()` a roster write calls.
    """
    wall = utcnow()  # the scheduler's own time frame
    collect = scheduler.add_job(
        collect_job, trigger="interval", seconds=COLLECT_EVERY.total_seconds(),
        args=(roster, outbox, clock, gap_days), id=COLLECT_JOB_ID,
        name="collect roster notices (reminders, digests, alerts)",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=int(COLLECT_EVERY.total_seconds()),
        next_run_time=wall,
    )
    deliver = scheduler.add_job(
        deliver_job, trigger="interval", seconds=DELIVER_EVERY.total_seconds(),
        args=(outbox, notifier, roster, clock), id=DELIVER_JOB_ID,
        name="deliver roster notices",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=int(DELIVER_EVERY.total_seconds()),
        next_run_time=wall + DELIVER_FIRST_DELAY,
    )
    pusher = HandoffPusher(scheduler, push_chains, roster, teams, clock=clock)
    return [collect, deliver, pusher.reschedule()]


def handoff_pusher(jobs: Iterable[Job]) -> HandoffPusher:
    """The `HandoffPusher` behind the handoff job of `add_roster_jobs`'s result."""
    for job in jobs:
        pusher = getattr(job.func, "__self__", None)
        if job.id == HANDOFF_JOB_ID and isinstance(pusher, HandoffPusher):
            return pusher
    raise LookupError("no handoff job among these")
