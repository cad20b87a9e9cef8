"""Reconciliation adapter: Asterisk's CDR/CEL files -> `cases.reconcile` -> the case store.

Asterisk writes every CDR and CEL record into two SQLite files in the
instance's log dir (`cdr.db`, `cel.db`; see dialplans/templates/
cdr_sqlite3_custom.conf.j2 and cel_sqlite3_custom.conf.j2), which the sandbox
bind-mounts at the same path the service sees. This module reads the calls
that had any event in a window, loads each call's case by linkedid, lets the
pure domain decide, saves what changed and reports it. Used by
`hotline reconcile` and by the scheduled job (hotline/jobs.py).

The files are opened read-only: Asterisk is their only writer.
"""
from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

from cases.lifecycle import Case
from cases.reconcile import (
    SETTLE_S,
    CdrRow,
    CelEvent,
    Directory,
    Reconciled,
    parse_cdr,
    parse_cel,
    reconcile_call,
    recording_paths,
)
from oncall.model import HOTLINE_TZ
from routing.callers import mask_number, safe_text
from vault import Vault, seal_case_audio

logger = logging.getLogger(__name__)

CDR_FILE = "cdr.db"  # Asterisk names the file after the config's category, plus ".db"
CEL_FILE = "cel.db"
_CHUNK = 400  # linkedids per IN (...): below SQLite's bound-parameter limit


class ReconcileError(RuntimeError):
    """Asterisk's records could not be read."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- reading Asterisk's files ---------------------------------------------------
@dataclass
class CallRows:
    cdrs: list[CdrRow] = field(default_factory=list)
    events: list[CelEvent] = field(default_factory=list)


class AsteriskRecords:
    """The CDR and CEL SQLite files of one Asterisk instance."""

    def __init__(self, log_dir: Path, busy_timeout_s: float = 5.0) -> None:
        self.cdr_path = log_dir / CDR_FILE
        self.cel_path = log_dir / CEL_FILE
        self.busy_timeout_s = busy_timeout_s

    def calls(self, since: datetime, until: datetime) -> dict[str, CallRows]:
        """Every row of each call that had a CEL event (or a CDR ending) in [since, until).

        A call that began before `since` or goes on after `until` is read whole.
        """
        low, high = since.timestamp(), until.timestamp()
        linkedids: set[str] = set()
        cel = self._query(self.cel_path, "cel", "SELECT DISTINCT linkedid FROM cel "
                          "WHERE CAST(eventtime AS REAL) >= ? AND CAST(eventtime AS REAL) < ?",
                          (low, high))
        linkedids.update(str(row["linkedid"]) for row in cel)
        cdr = self._query(self.cdr_path, "cdr", "SELECT DISTINCT linkedid FROM cdr "
                          "WHERE CAST(end_ts AS REAL) >= ? AND CAST(end_ts AS REAL) < ?",
                          (low, high))
        linkedids.update(str(row["linkedid"]) for row in cdr)
        found: dict[str, CallRows] = {}
        ordered = sorted(linkedids)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._query(self.cel_path, "cel",
                                   f"SELECT * FROM cel WHERE linkedid IN ({marks}) ORDER BY AcctId",
                                   chunk):
                event = parse_cel(row)
                if event is not None:
                    found.setdefault(event.linkedid, CallRows()).events.append(event)
            for row in self._query(self.cdr_path, "cdr",
                                   f"SELECT * FROM cdr WHERE linkedid IN ({marks}) ORDER BY AcctId",
                                   chunk):
                record = parse_cdr(row)
                if record is not None:
                    found.setdefault(record.linkedid, CallRows()).cdrs.append(record)
        return found

    def _query(self, path: Path, table: str, sql: str, params: Sequence[object]) -> list[dict]:
        if not path.exists():
            return []  # Asterisk creates the file with its first record
        uri = f"file:{quote(str(path))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s)
        except sqlite3.Error as exc:
            raise ReconcileError(f"cannot open {path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (table,)).fetchone()
            if exists is None:
                return []
            return [dict(row) for row in conn.execute(sql, tuple(params))]
        except sqlite3.Error as exc:
            raise ReconcileError(f"cannot read {path}: {exc}") from exc
        finally:
            conn.close()


# -- the run ------------------------------------------------------------------------
class NodesRecords:
    """The CDR and CEL files of several Asterisk nodes, read as one.

    Linkedids carry each node's systemname, so calls never collide; a node
    whose files cannot be read is skipped (logged) and the others still count.
    """

    def __init__(self, records: Sequence[AsteriskRecords]) -> None:
        self.records = tuple(records)

    def calls(self, since: datetime, until: datetime) -> dict[str, CallRows]:
        found: dict[str, CallRows] = {}
        for records in self.records:
            try:
                found.update(records.calls(since, until))
            except ReconcileError as exc:
                logger.warning("reconcile: %s skipped (%s)", records.cel_path.parent, exc)
        return found


class CaseStore(Protocol):
    def get_by_linkedid(self, linkedid: str) -> Case | None: ...

    def save(self, case: Case) -> bool: ...


class CallRecords(Protocol):
    def calls(self, since: datetime, until: datetime) -> dict[str, CallRows]: ...


@dataclass
class ReconcileReport:
    since: datetime
    until: datetime
    dry_run: bool
    results: list[Reconciled] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # per call: could not be saved

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def changed(self) -> list[Reconciled]:
        return [r for r in self.results if r.changed]

    def summary(self) -> str:
        changes = sum(len(r.changes) for r in self.changed)
        return (f"{len(self.results)} calls: {self.count('created')} new cases, "
                f"{self.count('updated')} completed, {self.count('unchanged')} unchanged, "
                f"{self.count('in-progress')} in progress, {self.count('ignored')} ignored, "
                f"{self.count('error') + len(self.errors)} errors; {changes} changes "
                + ("found, none saved" if self.dry_run else "saved"))

    def lines(self) -> list[str]:
        """The report for a terminal or a log: a summary, then each change. Escaped text only."""
        lines = [f"reconciled {_iso(self.since)} .. {_iso(self.until)}"
                 + (" (dry run: nothing saved)" if self.dry_run else ""), self.summary()]
        for result in self.results:
            if result.changed:
                case_id = result.case.case_id if result.case is not None else "-"
                lines.append(f"call {result.linkedid} case {case_id} ({result.status}):")
                lines.extend(f"  {change}" for change in result.changes)
            if result.note and result.status != "ignored":
                lines.append(f"call {result.linkedid}: {result.status}: {result.note}")
        lines.extend(f"error: {error}" for error in self.errors)
        return lines

    def log_lines(self) -> list[str]:
        """`lines()` for the service log: every phone number masked (docs/privacy.md).

        The numbers of each call's case (its caller, every phone rung) are masked
        wherever they appear, and so is any other run of seven or more digits
        standing alone (a number the case does not hold, a dialled leg): a log
        must not hold a whole number. Case ids and linkedids are not numbers
        (their digits touch '-' or '.') and stay readable.
        """
        numbers: set[str] = set()
        for result in self.results:
            if result.case is not None:
                numbers.add(result.case.caller.raw_safe or "")
                numbers.update(a.phone for a in result.case.attempts)
        return [mask_numbers(line, numbers) for line in self.lines()]


class Reconciler:
    """Reads a window of Asterisk's records and completes the cases. One run at a time."""

    def __init__(
        self,
        records: CallRecords,
        cases: CaseStore,
        directory: Callable[[datetime, datetime], Directory],
        recordings_dir: Path,
        clock: Callable[[], datetime] = utcnow,
        settle_s: float = SETTLE_S,
        recording_length: Callable[[Path], float | None] | None = None,
        vault: Vault | None = None,
    ) -> None:
        self.records = records
        # Seals the recording or voicemail a reconciled case now names, as the
        # case writer does for the calls it saw (vault/); None: left plain.
        self.vault = vault
        self.cases = cases
        self.directory = directory
        self.recordings_dir = recordings_dir.resolve()
        self.clock = clock
        self.settle_s = settle_s
        if recording_length is None:
            from recordings.prompts import wav_duration_s

            recording_length = wav_duration_s
        self.recording_length = recording_length

    def run(self, since: datetime, until: datetime, dry_run: bool = False) -> ReconcileReport:
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("reconcile needs timezone-aware times")
        if since >= until:
            raise ValueError("the window is empty: since must be before until")
        report = ReconcileReport(since, until, dry_run)
        calls = self.records.calls(since, until)
        if not calls:
            return report
        directory = self.directory(since - timedelta(days=1), until + timedelta(days=1))
        now = self.clock()
        for linkedid in sorted(calls, key=lambda lid: _first_at(calls[lid].events) or now):
            rows = calls[linkedid]
            stored = self.cases.get_by_linkedid(linkedid)
            result = reconcile_call(
                linkedid, rows.cdrs, rows.events, stored, directory, now,
                recordings=self._recordings(rows.events, linkedid), settle_s=self.settle_s)
            report.results.append(result)
            if not result.changed or result.case is None or dry_run:
                continue
            try:
                if not self.cases.save(result.case):
                    report.errors.append(f"call {linkedid}: a newer snapshot of case "
                                         f"{result.case.case_id} is stored; not saved")
                    continue
            except Exception as exc:  # one call's failure must not cost the others
                logger.exception("reconcile: saving case %s failed", result.case.case_id)
                report.errors.append(f"call {linkedid}: not saved ({type(exc).__name__}: "
                                     f"{safe_text(str(exc), limit=200)})")
                continue
            logger.info("reconcile: %s case=%s linkedid=%s changes=%d", result.status,
                        result.case.case_id, linkedid, len(result.changes))
            self._seal_audio(result.case)
        return report

    def _seal_audio(self, case: Case) -> None:
        """Seal the case's recording and voicemail in place; never raises."""
        if self.vault is None:
            return
        try:
            seal_case_audio((case.recording_path, case.voicemail_path), self.vault,
                            self.recordings_dir)
        except Exception as exc:
            logger.error("reconcile: sealing the audio of case %s failed (%s)", case.case_id,
                         type(exc).__name__)

    def _recordings(self, events: Iterable[CelEvent], linkedid: str) -> dict[str, int | None]:
        """Recording files of this call that exist under the recordings dir, with lengths."""
        found: dict[str, int | None] = {}
        for path in recording_paths(events, linkedid):
            file = Path(path).resolve()
            if not file.is_relative_to(self.recordings_dir) or not file.is_file():
                continue
            seconds = self.recording_length(file)
            found[path] = round(seconds) if seconds is not None else None
        return found


_STANDALONE_NUMBER = re.compile(r"(?<![\w.\-])\+?[0-9]{7,}(?![\w.\-])", re.ASCII)


def mask_numbers(text: str, numbers: Iterable[str] = ()) -> str:
    """`text` with each of `numbers`, and any standalone run of 7+ digits, masked.

    >>> mask_numbers("attempt #1 13700000201: no-answer; caller 043188888888", ["13700000201"])
    'attempt #1 137****0201: no-answer; caller 043*****8888'
    >>> mask_numbers("case 20261125-190512-3fa9c1 linkedid 1764061512.42")
    'case 20261125-190512-3fa9c1 linkedid 1764061512.42'
    """
    for number in sorted({n for n in numbers if n and len(n) >= 3}, key=len, reverse=True):
        text = text.replace(number, mask_number(number))
    return _STANDALONE_NUMBER.sub(lambda m: mask_number(m.group(0)), text)


def _first_at(events: Sequence[CelEvent]) -> datetime | None:
    return min((e.at for e in events), default=None)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- composition (CLI and service) ---------------------------------------------------
def build_reconciler(config, engine, clock: Callable[[], datetime] = utcnow,
                     settle_s: float = SETTLE_S, vault: Vault | None = None) -> Reconciler:
    """A Reconciler for one instance: its Asterisk log dir, its database, its menu,
    and its vault (`config.vault()` unless given) to seal the audio it attaches."""
    from db.repo import CaseRepository, RosterRepository
    from ivr.menu import load_menu

    from ivr.calls import menu_choice, menu_teams

    menu = load_menu(config.menu_file)
    rosters = RosterRepository(engine)
    # A key read from CEL is recorded as the service records it; the "call me
    # back" key is left out: from the records alone it must not open a task.
    menu_keys: dict[str, tuple[str, str] | None] = {key: menu_choice(menu, key) for key in menu_teams(menu)}
    menu_keys[menu.english_key] = menu_choice(menu, "english")
    if menu.callback_key:
        menu_keys[menu.callback_key] = None

    def directory(start: datetime, end: datetime) -> Directory:
        return Directory(nurse_phone=menu.duty_nurse_number,
                         partner_numbers=rosters.partner_numbers(),
                         roster=rosters.load(start, end), language=menu.default_language,
                         menu_keys=menu_keys)

    # Every node this service serves whose log dir this host can read.
    log_dirs = [Path(node.log_dir) for node in config.nodes() if node.log_dir]
    records = (AsteriskRecords(log_dirs[0]) if len(log_dirs) == 1
               else NodesRecords([AsteriskRecords(d) for d in log_dirs]))
    return Reconciler(records, CaseRepository(engine),
                      directory, config.recordings_dir, clock=clock, settle_s=settle_s,
                      vault=vault if vault is not None else config.vault())


def reconcile_window(config, since: datetime, until: datetime, dry_run: bool = False,
                     settle_s: float = SETTLE_S) -> ReconcileReport:
    """One run with an engine of its own (the CLI)."""
    from db.session import make_engine

    engine = make_engine(config.db_url)
    try:
        return build_reconciler(config, engine, settle_s=settle_s).run(since, until, dry_run)
    finally:
        engine.dispose()


# -- "--since 2h" ------------------------------------------------------------------
_RELATIVE = re.compile(r"([0-9]{1,6})\s*([smhdw])", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime, tz: str = HOTLINE_TZ) -> datetime:
    """A time for --since/--until: `now`, `30m`/`2h`/`1d`/`1w` ago, or ISO 8601.

    An ISO time without an offset is the hotline's local time (Asia/Shanghai),
    the way cases are shown.

    >>> now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    >>> parse_when("2h", now).isoformat()
    '2026-11-25T10:00:00+00:00'
    """
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.fullmatch(value.lower())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a time: {safe_text(value)!r} (use 30m, 2h, 1d or an ISO time)") from None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when.astimezone(timezone.utc)
