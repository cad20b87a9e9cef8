"""Which service instance runs the scheduled jobs: one per cluster, elected in PostgreSQL.

APScheduler 3.x keeps its jobs in each process; two processes with the same
jobs would run every job twice (field-notes.md). Every instance therefore
builds its scheduler *paused*, and `SchedulerElection` resumes it only in the
instance that holds the cluster's PostgreSQL session advisory lock
(`pg_try_advisory_lock`). The lock lives as long as the connection that took
it: when the holder dies -- killed, its host gone, its connection cut -- the
server ends the session, the lock is free, and another instance's next poll
takes it (within `poll_s`, plus the time the server needs to notice a
vanished peer; a killed process's socket closes at once).

A holder that can no longer reach the server stops its jobs at once (it may
have lost the lock): for a moment no instance runs jobs, never two.

SQLite has one host and one service: that instance is elected at start.

Why a hand-written loop and not a library: the lock is one SQL call; what
matters is what happens around it (a connection of its own, outside the pool
and out of any transaction; stepping down on the first failed check), and
that is clearer here than in a general leader-election package.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

POLL_S = 1.0
# What the holder's connection calls itself in pg_stat_activity: `hotline
# cluster status` reads the holder's instance name from there.
APPLICATION_PREFIX = "hotline-scheduler:"


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for the election `name` (signed, as PostgreSQL's bigint)."""
    digest = hashlib.sha256(f"hotline-scheduler:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SchedulerElection:
    """Polls for the cluster's scheduler lock; calls `on_elected` / `on_deposed` (from its thread).

    `holder` names this instance in pg_stat_activity (`hotline-scheduler:<holder>`).
    """

    def __init__(self, engine: Engine, name: str, holder: str,
                 on_elected: Callable[[], None], on_deposed: Callable[[], None],
                 poll_s: float = POLL_S) -> None:
        self.engine = engine
        self.name = name
        self.key = lock_key(name)
        self.holder = holder
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.poll_s = poll_s
        self.leader = False
        self.elected_at: datetime | None = None
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def shared(self) -> bool:
        """True where an election is held (PostgreSQL); SQLite's one instance just leads."""
        return self.engine.dialect.name == "postgresql"

    def start(self) -> None:
        if not self.shared:
            self._elected()
            return
        self._thread = threading.Thread(target=self._run, name="scheduler-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and give the lock back (closing the connection frees it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._close()

    def poll_once(self) -> bool:
        """One round: take the lock if free, or check we still hold it. True while leader."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            if self.leader:
                # A dead connection means the lock may be gone: step down now.
                self._conn.execute(text("SELECT 1"))
            elif self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
                self._elected()
        except Exception as exc:
            logger.warning("scheduler election: database unreachable (%s)", type(exc).__name__)
            self._close()
            if self.leader:
                self._deposed()
        return self.leader

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_s)

    def _connect(self) -> Connection:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # set_config() takes the name as a bound value: no quoting of our own.
        conn.execute(text("SELECT set_config('application_name', :n, false)"),
                     {"n": (APPLICATION_PREFIX + self.holder)[:63]})
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # never back into the pool: the session (and lock) must end
            except Exception:
                pass

    def _elected(self) -> None:
        self.leader = True
        self.elected_at = datetime.now().astimezone()
        logger.info("scheduler election %r: %s now runs the scheduled jobs", self.name, self.holder)
        self.on_elected()

    def _deposed(self) -> None:
        self.leader = False
        logger.warning("scheduler election %r: %s stopped running the scheduled jobs",
                       self.name, self.holder)
        self.on_deposed()


def current_holder(engine: Engine, name: str) -> str | None:
    """The instance holding election `name`'s lock now (from pg_stat_activity), or None.

    Advisory locks on a bigint key show in pg_locks as classid (high 32 bits)
    and objid (low 32 bits) with objsubid 1.
    """
    if engine.dialect.name != "postgresql":
        return None
    key = lock_key(name)
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid::bigint = :high AND l.objid::bigint = :low"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"high": high, "low": low}).first()
    if row is None:
        return None
    app = row[0] or ""
    return app[len(APPLICATION_PREFIX):] if app.startswith(APPLICATION_PREFIX) else app


def rebase_jobs(scheduler, now: datetime) -> int:
    """Move every job whose run is already due to its next run after `now`; how many moved.

    A newly elected scheduler starts its jobs as a restarted single service
    would: slots that fell due while it waited belonged to the previous holder
    (which ran them, or died running them), so they are not run again here.
    """
    moved = 0
    for job in scheduler.get_jobs():
        due = job.next_run_time
        if due is not None and due <= now:
            job.modify(next_run_time=job.trigger.get_next_fire_time(None, now))
            moved += 1
    return moved
