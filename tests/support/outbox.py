"""An in-memory `NoticeOutbox` for tests, and the contract any outbox must keep.

`check_outbox_contract(outbox)` runs the Protocol's rules against an empty
outbox; the database outbox's tests can call it too.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from hotline.rosterjobs import NoticeOutbox, PendingNotice
from oncall.notices import ROSTER_GAP, SHIFT_REMINDER, Notice


@dataclass
class _Row:
    notice: Notice
    attempts: int = 0
    sent_at: datetime | None = None
    retry_at: datetime | None = None
    gave_up: bool = False
    error: str = ""


class MemoryOutbox:
    """Keeps every notice ever added; thread-safe, like the database one."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def add(self, notices: Iterable[Notice]) -> list[Notice]:
        with self._lock:
            new = []
            for notice in notices:
                if notice.key not in self._rows:
                    self._rows[notice.key] = _Row(notice)
                    new.append(notice)
            return new

    def pending(self, now: datetime, limit: int = 100) -> list[PendingNotice]:
        with self._lock:
            due = [r for r in self._rows.values()
                   if r.sent_at is None and not r.gave_up and r.notice.due_at <= now
                   and (r.retry_at is None or r.retry_at <= now)]
            due.sort(key=lambda r: (r.notice.due_at, r.notice.key))
            return [PendingNotice(r.notice, r.attempts) for r in due[:limit]]

    def mark_sent(self, key: str, at: datetime) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                row.sent_at = at

    def mark_failed(self, key: str, at: datetime, error: str, retry_at: datetime | None) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                row.attempts += 1
                row.error = error
                row.retry_at = retry_at
                row.gave_up = retry_at is None

    # -- for assertions
    def row(self, key: str) -> _Row:
        with self._lock:
            return self._rows[key]

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._rows)


T0 = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)


def _notice(key: str, due: datetime, text: str = "提醒") -> Notice:
    return Notice(key, SHIFT_REMINDER if key.startswith("remind") else ROSTER_GAP, "facial",
                  None if key.endswith("desk") else 7, due, text, text)


def check_outbox_contract(outbox: NoticeOutbox, t0: datetime = T0) -> None:
    """The `NoticeOutbox` rules, on an empty outbox (which it fills)."""
    minute = timedelta(minutes=1)
    a = _notice("remind:a", t0)
    b = _notice("remind:b", t0 - minute)
    later = _notice("gap:c:desk", t0 + 10 * minute)
    # add: new keys only, in the given order; repeats in one batch count once
    assert outbox.add([a, b, a]) == [a, b]
    assert outbox.add([_notice("remind:a", t0, "changed"), later]) == [later]
    assert outbox.add([]) == []
    # pending: due ones, earliest first, with the stored (first) version
    got = outbox.pending(t0)
    assert [p.notice for p in got] == [b, a] and [p.attempts for p in got] == [0, 0]
    assert got[1].notice.text_zh == "提醒"
    assert [p.notice.key for p in outbox.pending(t0, limit=1)] == ["remind:b"]
    assert [p.notice.key for p in outbox.pending(t0 + 10 * minute)] == ["remind:b", "remind:a",
                                                                         "gap:c:desk"]
    # mark_sent: never pending again, and still known to add
    outbox.mark_sent("remind:b", t0)
    outbox.mark_sent("remind:b", t0)  # twice is fine
    assert [p.notice.key for p in outbox.pending(t0)] == ["remind:a"]
    assert outbox.add([b]) == []
    # mark_failed: counted, not pending before retry_at, given up with None
    outbox.mark_failed("remind:a", t0, "down", t0 + minute)
    assert outbox.pending(t0 + minute - timedelta(seconds=1)) == []
    assert outbox.pending(t0 + minute) == [PendingNotice(a, 1)]
    outbox.mark_failed("remind:a", t0 + minute, "down again", t0 + 3 * minute)
    assert outbox.pending(t0 + 3 * minute) == [PendingNotice(a, 2)]
    outbox.mark_failed("remind:a", t0 + 3 * minute, "no", None)
    assert [p.notice.key for p in outbox.pending(t0 + 60 * minute)] == ["gap:c:desk"]
    assert outbox.add([a]) == []
    # unknown keys are ignored
    outbox.mark_sent("nope", t0)
    outbox.mark_failed("nope", t0, "x", None)
