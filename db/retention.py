"""The retention purge: delete what has outlived its period, in batches, and audit each kind.

`purge` works kind by kind (recordings first, then cases, notices, sessions,
block list, audit log). Each batch is its own transaction, so a million old
cases never make one long transaction, and a purge cut short keeps the
batches it finished (the next run does the rest). Each kind leaves one
audit_log row per run (actor "retention", action "retention_purge", subject
"retention", subject_id the kind) with its counts, written after the kind's
last batch: a run that dies mid-kind leaves that kind's finished batches
unaudited, and the next run's row counts what was left.

Files: a recording or voicemail is deleted only when `privacy.files.locate`
finds a regular file inside `recordings_dir` (no symlink, no `..` out); the
case's path is cleared only for a file deleted or already gone. A path
outside the dir, or a carrier URL, stays as it is, counted as refused.

Linked cases: a callback's own case names the case it calls back
(`linked_case_id`, no foreign key). An old case that a kept case names --
directly or up a chain -- is held back until that kept case is old too, so a
kept case never names a deleted one. A kept callback task that names a
deleted case as its placed call (`callback_case_id`) has that name cleared.
Children go explicitly (not only by ON DELETE CASCADE), so the counts are
exact and nothing depends on a dialect's foreign-key setting.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from db.models import (AuditRow, BlockedNumberRow, CallbackRow, CaseNoteRow, CasePhotoRow,
                       CaseRow, ConsoleSessionRow, DialAttemptRow, MenuEventRow, NoticeRow,
                       ReferralEventRow, ReferralRow, RosterAuditRow)
from db.users import audit_row
from privacy.files import Where, locate
from privacy.retention import DataKind, RetentionPolicy, cutoffs
from routing.callers import safe_text

logger = logging.getLogger(__name__)

ACTOR = "retention"
ACTION = "retention_purge"
_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and psycopg's parameter limits

CASES = CaseRow.__table__
_ORDER = (DataKind.RECORDINGS, DataKind.CASES, DataKind.NOTICES, DataKind.SESSIONS,
          DataKind.BLOCKLIST, DataKind.AUDIT)


@dataclass
class KindReport:
    """What the purge did (or, in a dry run, would do) to one kind; `counts` by what."""

    kind: DataKind
    days: int
    cutoff: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass
class PurgeReport:
    now: datetime
    dry_run: bool
    kinds: dict[DataKind, KindReport] = field(default_factory=dict)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        out = []
        for report in self.kinds.values():
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing"
            out.append(f"{report.kind.value:10} older than {report.cutoff:%Y-%m-%d %H:%M}Z "
                       f"({report.days} d): {verb} {counts}")
        return out


def purge(engine: Engine, policy: RetentionPolicy, now: datetime, recordings_dir: Path, *,
          dry_run: bool = False, batch: int = 1000, actor: str = ACTOR,
          detail: dict[str, Any] | None = None) -> PurgeReport:
    """Delete every kind's data older than its cut-off at `now`; the counts per kind.

    `dry_run` counts (files included) and changes nothing, audit log included.
    `detail` is added to each audit row (e.g. who ran it from the CLI). A kind
    that fails is audited with its partial counts and the error's type, then
    the error propagates (the kinds after it wait for the next run).
    """
    if batch < 1:
        raise ValueError("batch: at least 1")
    edges = cutoffs(policy, now)
    report = PurgeReport(now, dry_run)
    root = Path(recordings_dir)
    steps: dict[DataKind, Callable[[KindReport], None]] = {
        DataKind.RECORDINGS: lambda r: (_recordings(engine, r, root, now, dry_run, batch),
                                        _photos(engine, r, root, dry_run, batch)),
        DataKind.CASES: lambda r: _cases(engine, r, root, dry_run, batch),
        DataKind.NOTICES: lambda r: _rows(engine, r, NoticeRow.__table__.c.id, or_(
            NoticeRow.sent_at < r.cutoff, NoticeRow.gave_up_at < r.cutoff), "notices", dry_run, batch),
        DataKind.SESSIONS: lambda r: _rows(engine, r, ConsoleSessionRow.__table__.c.sid,
                                           ConsoleSessionRow.created_at < r.cutoff, "sessions",
                                           dry_run, batch),
        DataKind.BLOCKLIST: lambda r: _rows(engine, r, BlockedNumberRow.__table__.c.id,
                                            BlockedNumberRow.removed_at < r.cutoff, "entries",
                                            dry_run, batch),
        DataKind.AUDIT: lambda r: _audit(engine, r, dry_run, batch),
    }
    for kind in _ORDER:
        kind_report = KindReport(kind, policy.days(kind), edges[kind])
        report.kinds[kind] = kind_report
        try:
            steps[kind](kind_report)
        except Exception as exc:
            if not dry_run:
                _audit_kind(engine, now, actor, kind_report, detail,
                            error=type(exc).__name__)
            logger.error("retention purge of %s failed after %s (%s)", kind.value,
                         kind_report.counts, type(exc).__name__)
            raise
        if not dry_run:
            _audit_kind(engine, now, actor, kind_report, detail)
        logger.info("retention %s%s: %s", "dry run " if dry_run else "", kind.value,
                    kind_report.counts or "nothing")
    return report


def _audit_kind(engine: Engine, now: datetime, actor: str, report: KindReport,
                extra: dict[str, Any] | None, error: str | None = None) -> None:
    detail: dict[str, Any] = {"days": report.days, "cutoff": report.cutoff.isoformat(),
                              **report.counts, **(extra or {})}
    if error is not None:
        detail["error"] = error
    with engine.begin() as conn:
        audit_row(conn, now, actor, ACTION, "retention", report.kind.value, detail)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _after(last: tuple[datetime, str] | None) -> ColumnElement[bool] | None:
    """Keyset paging on (started_at, case_id): rows kept back are never read twice."""
    if last is None:
        return None
    at, case_id = last
    return or_(CASES.c.started_at > at, and_(CASES.c.started_at == at, CASES.c.case_id > case_id))


def _old_cases(engine: Engine, cutoff: datetime, batch: int,
               *where: ColumnElement[bool]) -> Iterator[list[Any]]:
    """Cases started before `cutoff` (and matching `where`), `batch` at a time,
    oldest first; each batch is read in its own short transaction."""
    last: tuple[datetime, str] | None = None
    while True:
        query = (select(CASES.c.case_id, CASES.c.started_at, CASES.c.recording_path,
                        CASES.c.voicemail_path)
                 .where(CASES.c.started_at < cutoff, *where)
                 .order_by(CASES.c.started_at, CASES.c.case_id).limit(batch))
        after = _after(last)
        if after is not None:
            query = query.where(after)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        last = (rows[-1].started_at, rows[-1].case_id)
        yield rows


def _remove(root: Path, stored: str, dry_run: bool, report: KindReport) -> bool:
    """Delete one recording file if it is safely ours; True if the case may forget the path."""
    located = locate(root, stored)
    if located.where is Where.INSIDE:
        if not dry_run:
            try:
                located.path.unlink()  # type: ignore[union-attr]
            except FileNotFoundError:
                report.add("files_missing")
                return True
            except OSError as exc:
                logger.error("retention: cannot delete a recording file (%s)", type(exc).__name__)
                report.add("files_failed")
                return False
        report.add("files_deleted")
        return True
    if located.where is Where.MISSING:
        report.add("files_missing")
        return True
    report.add("files_remote" if located.where is Where.REMOTE else "files_refused")
    return False


# -- recordings ----------------------------------------------------------------


def _recordings(engine: Engine, report: KindReport, root: Path, now: datetime, dry_run: bool,
                batch: int) -> None:
    has_file = or_(CASES.c.recording_path.is_not(None), CASES.c.voicemail_path.is_not(None))
    for rows in _old_cases(engine, report.cutoff, batch, has_file):
        cleared: list[tuple[str, str, str]] = []  # (case_id, column, the path deleted)
        for row in rows:
            for column in ("recording_path", "voicemail_path"):
                stored = getattr(row, column)
                if stored is None:
                    continue
                if _remove(root, stored, dry_run, report):
                    cleared.append((row.case_id, column, stored))
                else:
                    logger.warning("retention: case %s keeps its %s (outside the recordings dir "
                                   "or not deletable)", safe_text(row.case_id), column)
        report.add("cases_touched", len({case_id for case_id, _, _ in cleared}))
        if not dry_run and cleared:
            with engine.begin() as conn:
                for case_id, column, stored in cleared:
                    # Only the path that was deleted, and only an old case. The
                    # revision moves on so a stale snapshot (a journal replay)
                    # cannot put the path back.
                    conn.execute(update(CASES).where(
                        CASES.c.case_id == case_id, CASES.c.started_at < report.cutoff,
                        CASES.c[column] == stored,
                    ).values({column: None, "revision": CASES.c.revision + 1, "updated_at": now}))
        if len(rows) < batch:
            return


def _photos(engine: Engine, report: KindReport, root: Path, dry_run: bool, batch: int) -> None:
    """Wound photos go with the recordings' period: their files (photo and
    thumbnail) and rows, for cases started before the cut-off."""
    photos = CasePhotoRow.__table__
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(photos.c.id, photos.c.path, photos.c.thumb_path)
                .join(CASES, CASES.c.case_id == photos.c.case_id)
                .where(CASES.c.started_at < report.cutoff, photos.c.id > last)
                .order_by(photos.c.id).limit(batch)).all()
        if not rows:
            return
        last = rows[-1].id
        gone = []
        for row in rows:
            kept = [stored for stored in (row.path, row.thumb_path)
                    if stored and not _remove(root, stored, dry_run, report)]
            if kept:
                logger.warning("retention: photo %d keeps a file outside the recordings dir "
                               "or not deletable", row.id)
            else:
                gone.append(row.id)
        report.add("photos", len(gone))
        if not dry_run and gone:
            with engine.begin() as conn:
                conn.execute(photos.delete().where(photos.c.id.in_(gone)))


# -- cases -----------------------------------------------------------------------


def held_back(engine: Engine, cutoff: datetime) -> set[str]:
    """Old cases that a case kept past `cutoff` names, directly or up a chain of callbacks."""
    young_links = (select(CASES.c.linked_case_id)
                   .where(CASES.c.started_at >= cutoff, CASES.c.linked_case_id.is_not(None)))
    with engine.connect() as conn:
        held = set(conn.execute(select(CASES.c.case_id).where(
            CASES.c.started_at < cutoff, CASES.c.case_id.in_(young_links))).scalars())
        frontier = set(held)
        while frontier:
            parents: set[str] = set()
            for chunk in _chunks(sorted(frontier)):
                parents.update(conn.execute(select(CASES.c.linked_case_id).where(
                    CASES.c.case_id.in_(chunk), CASES.c.linked_case_id.is_not(None))).scalars())
            frontier = parents - held
            held |= frontier
    return held


_CHILDREN = (
    ("notes", CaseNoteRow.__table__),
    ("menu_events", MenuEventRow.__table__),
    ("attempts", DialAttemptRow.__table__),
    ("callbacks", CallbackRow.__table__),
)


def _cases(engine: Engine, report: KindReport, root: Path, dry_run: bool, batch: int) -> None:
    keep = held_back(engine, report.cutoff)
    if keep:
        report.add("held_back", len(keep))
    referrals = ReferralRow.__table__
    events = ReferralEventRow.__table__
    callbacks = CallbackRow.__table__
    for rows in _old_cases(engine, report.cutoff, batch):
        doomed = [r for r in rows if r.case_id not in keep]
        # A file the recordings step could not delete (it failed, or the
        # recordings period was just raised past a case's) goes with its case;
        # one outside the dir is left alone but its case goes all the same. (A
        # dry run's recordings step has counted these files already.)
        for row in doomed if not dry_run else ():
            for stored in (row.recording_path, row.voicemail_path):
                if stored is not None:
                    _remove(root, stored, dry_run, report)
        ids = [r.case_id for r in doomed]
        with (engine.connect() if dry_run else engine.begin()) as conn:
            for chunk in _chunks(ids):
                ref_ids = select(referrals.c.id).where(referrals.c.case_id.in_(chunk))
                _count_or_delete(conn, report, "referral_events", events,
                                 events.c.referral_id.in_(ref_ids), dry_run)
                _count_or_delete(conn, report, "referrals", referrals,
                                 referrals.c.case_id.in_(chunk), dry_run)
                for name, table in _CHILDREN:
                    _count_or_delete(conn, report, name, table, table.c.case_id.in_(chunk), dry_run)
                if not dry_run:
                    # A task kept (its case held back) forgets a placed call deleted here.
                    conn.execute(update(callbacks).where(callbacks.c.callback_case_id.in_(chunk))
                                 .values(callback_case_id=None))
                _count_or_delete(conn, report, "cases", CASES, and_(
                    CASES.c.case_id.in_(chunk), CASES.c.started_at < report.cutoff), dry_run)
        if len(rows) < batch:
            return


def _count_or_delete(conn: Any, report: KindReport, name: str, table: Any,
                     where: ColumnElement[bool], dry_run: bool) -> None:
    if dry_run:
        n = conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
    else:
        n = conn.execute(delete(table).where(where)
                         .execution_options(preserve_rowcount=True)).rowcount
    if n:
        report.add(name, n)


# -- plain rows ------------------------------------------------------------------


def _rows(engine: Engine, report: KindReport, key: Any, condition: ColumnElement[bool],
          name: str, dry_run: bool, batch: int) -> None:
    """Delete rows of one table matching `condition`, `batch` at a time, paged by `key`."""
    table = key.table
    last = None
    while True:
        query = select(key).where(condition).order_by(key).limit(batch)
        if last is not None:
            query = query.where(key > last)
        with engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        if not ids:
            return
        last = ids[-1]
        if dry_run:
            report.add(name, len(ids))
        else:
            with engine.begin() as conn:
                _count_or_delete(conn, report, name, table, and_(key.in_(ids), condition), False)
        if len(ids) < batch:
            return


def _audit(engine: Engine, report: KindReport, dry_run: bool, batch: int) -> None:
    _rows(engine, report, AuditRow.__table__.c.id, AuditRow.at < report.cutoff, "audit_log",
          dry_run, batch)
    _rows(engine, report, RosterAuditRow.__table__.c.id, RosterAuditRow.at < report.cutoff,
          "roster_audit", dry_run, batch)
