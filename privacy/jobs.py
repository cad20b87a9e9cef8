"""The daily retention purge as an APScheduler 3.x job (adapter; the service adds it).

03:30 Asia/Shanghai: the quietest hour of the hotline's day, after the
network's midnight jobs. One run at a time; runs missed while the service
was down collapse into one, still run if the service is back within 6 hours.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from db.retention import PurgeReport, purge
from oncall.model import HOTLINE_TZ
from privacy.retention import RetentionPolicy

logger = logging.getLogger(__name__)

RETENTION_JOB_ID = "privacy-retention-purge"
RETENTION_AT = (3, 30)  # hour, minute, hotline local time
RETENTION_GRACE_S = 6 * 3600


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def retention_job(engine: Engine, policy: RetentionPolicy, recordings_dir: Path,
                  clock: Callable[[], datetime] = utcnow, batch: int = 1000) -> PurgeReport | None:
    """One purge as of the clock's now; logs the counts. Never raises (tomorrow's run retries)."""
    try:
        report = purge(engine, policy, clock(), recordings_dir, batch=batch)
    except Exception:
        logger.exception("retention purge failed; the audit log has the counts so far")
        return None
    for line in report.lines():
        logger.info("retention: %s", line)
    return report


def add_retention_job(scheduler: BaseScheduler, engine: Engine, policy: RetentionPolicy,
                      recordings_dir: Path, *, clock: Callable[[], datetime] = utcnow,
                      at: tuple[int, int] = RETENTION_AT, tz: str = HOTLINE_TZ,
                      batch: int = 1000) -> Job:
    """Run the purge daily at `at` (hour, minute) in `tz`; adding it again replaces it."""
    hour, minute = at
    return scheduler.add_job(
        retention_job, trigger="cron", hour=hour, minute=minute, timezone=ZoneInfo(tz),
        args=(engine, policy, Path(recordings_dir), clock, batch), id=RETENTION_JOB_ID,
        name="retention purge (cases, recordings, audit log, notices, sessions, block list)",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=RETENTION_GRACE_S,
    )
