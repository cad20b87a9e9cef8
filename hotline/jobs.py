"""Scheduled jobs of the hotline service (APScheduler 3.x).

Exactly one scheduler may run these (a 3.x job store cannot be shared by
processes): the service that owns the scheduler adds them at start.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler

from hotline.reconcile import ReconcileReport, Reconciler

logger = logging.getLogger(__name__)

RECONCILE_JOB_ID = "hotline-reconcile"
RECONCILE_EVERY = timedelta(minutes=5)
RECONCILE_WINDOW = timedelta(hours=1)
# The first run waits a little: the service has just started and Asterisk's
# records of calls it missed while down are what this job is for.
RECONCILE_FIRST_DELAY = timedelta(seconds=30)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def reconcile_job(reconciler: Reconciler, window: timedelta = RECONCILE_WINDOW,
                  clock: Callable[[], datetime] = utcnow) -> ReconcileReport | None:
    """Reconcile the last `window`; log what changed. Never raises (the next run retries)."""
    now = clock()
    try:
        report = reconciler.run(now - window, now)
    except Exception:
        logger.exception("reconcile job failed")
        return None
    if report.changed or report.errors:
        for line in report.log_lines():  # numbers masked: this is the service log
            logger.info("reconcile: %s", line)
    else:
        logger.debug("reconcile: %s", report.summary())
    return report


def add_reconcile_job(
    scheduler: BaseScheduler,
    reconciler: Reconciler,
    *,
    every: timedelta = RECONCILE_EVERY,
    window: timedelta = RECONCILE_WINDOW,
    first_delay: timedelta = RECONCILE_FIRST_DELAY,
    clock: Callable[[], datetime] = utcnow,
) -> Job:
    """Run reconciliation every `every` over the last `window`.

    One run at a time (max_instances=1); runs missed while the process was
    busy or asleep collapse into one (coalesce). Adding it again replaces it.
    The window overlaps the previous runs on purpose: reconciling is idempotent,
    and a call that was still going on (or had just ended) is picked up later.
    """
    if window <= every:
        raise ValueError("the window must be longer than the interval, or calls slip through")
    return scheduler.add_job(
        reconcile_job,
        trigger="interval",
        seconds=every.total_seconds(),
        args=(reconciler, window, clock),
        id=RECONCILE_JOB_ID,
        name="reconcile cases with Asterisk's CDR/CEL",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=int(every.total_seconds()),
        next_run_time=clock() + first_delay,
    )


SEAL_JOB_ID = "hotline-seal-recordings"
SEAL_EVERY = timedelta(hours=1)
SEAL_QUIET_S = 3600.0  # a file untouched this long is no longer being recorded


def seal_recordings_job(recordings_dir, vault, engine=None) -> tuple[int, int] | None:
    """Seal recordings the case writer did not (service stopped, sealing newly on,
    a rotated key), and, given the database, case notes stored plain (generated,
    imported, written without a vault); never raises (the next run retries)."""
    import time

    from db.calls_query import seal_plain_notes
    from photos.files import seal_photo_tree
    from vault import seal_tree

    try:
        sealed, failed = seal_tree(recordings_dir, vault, quiet_s=SEAL_QUIET_S, now=time.time())
        photos_sealed, photos_failed = seal_photo_tree(recordings_dir, vault)
        sealed, failed = sealed + photos_sealed, failed + photos_failed
        notes_sealed = seal_plain_notes(engine, vault) if engine is not None else 0
    except Exception:
        logger.exception("sealing recordings failed")
        return None
    if sealed or failed:
        logger.info("recordings sealed: %d, could not be sealed: %d", sealed, failed)
    if notes_sealed:
        logger.info("case notes sealed: %d", notes_sealed)
    return sealed + notes_sealed, failed


def add_seal_job(scheduler: BaseScheduler, recordings_dir, vault, engine=None, *,
                 every: timedelta = SEAL_EVERY) -> Job:
    """The hourly sweep that seals what is left plain: recordings, photos, notes."""
    return scheduler.add_job(
        seal_recordings_job, trigger="interval", seconds=every.total_seconds(),
        args=(recordings_dir, vault, engine), id=SEAL_JOB_ID, name="seal recordings at rest",
        replace_existing=True, max_instances=1, coalesce=True,
        next_run_time=utcnow() + timedelta(minutes=5))


def log_job_runs(scheduler: BaseScheduler, instance: str) -> None:
    """Log each job run with its instance, due time, start and end (one line when it ends).

    In a cluster these lines show which instance ran what, and that no two ran
    one job at once (docs/deployment.md).
    """
    import time

    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED

    started: dict[tuple[str, object], float] = {}

    def on_event(event) -> None:
        due = event.scheduled_run_times[0] if getattr(event, "scheduled_run_times", None) \
            else getattr(event, "scheduled_run_time", None)
        key = (event.job_id, due)
        if event.code == EVENT_JOB_SUBMITTED:
            started[key] = time.time()
            return
        began = started.pop(key, None)
        logger.info("job run: job=%s instance=%s due=%s started=%.3f ended=%.3f ok=%s",
                    event.job_id, instance, due.isoformat() if due else "-",
                    began if began is not None else -1.0, time.time(),
                    "yes" if event.code == EVENT_JOB_EXECUTED else "no")

    scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
