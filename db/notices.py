"""The notice outbox in the database (`hotline.rosterjobs.NoticeOutbox`).

Each notice is one row, unique by key: INSERT .. ON CONFLICT DO NOTHING makes
adding idempotent across runs, restarts and two threads at once. Rows are kept
after sending (they are the record that a surgeon was reminded).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from db.models import NoticeRow
from hotline.rosterjobs import PendingNotice
from oncall.notices import Notice

UTC = timezone.utc
KEEP = timedelta(days=90)  # the contract asks for 30 days at least


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NoticeRepository:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def add(self, notices: Iterable[Notice]) -> list[Notice]:
        batch: dict[str, Notice] = {}
        for notice in notices:
            batch.setdefault(notice.key, notice)  # of repeats in one batch the first counts
        if not batch:
            return []
        now = self._clock()
        new: list[Notice] = []
        with self._engine.begin() as conn:
            for key, n in batch.items():
                stmt = (self._insert(NoticeRow).values(
                    key=key, kind=n.kind, team=n.team, surgeon_id=n.surgeon_id, due_at=n.due_at,
                    text_zh=n.text_zh, text_en=n.text_en, created_at=now, attempts=0)
                    .on_conflict_do_nothing(index_elements=["key"]).returning(NoticeRow.key))
                if conn.execute(stmt).first() is not None:
                    new.append(n)
        return new

    def pending(self, now: datetime, limit: int = 100) -> list[PendingNotice]:
        query = (select(NoticeRow)
                 .where(NoticeRow.sent_at.is_(None), NoticeRow.gave_up_at.is_(None),
                        NoticeRow.due_at <= now,
                        or_(NoticeRow.next_attempt_at.is_(None), NoticeRow.next_attempt_at <= now))
                 .order_by(NoticeRow.due_at, NoticeRow.key).limit(limit))
        with self._engine.connect() as conn:
            return [PendingNotice(Notice(r.key, r.kind, r.team, r.surgeon_id, r.due_at,
                                         r.text_zh, r.text_en), r.attempts)
                    for r in conn.execute(query)]

    def mark_sent(self, key: str, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(NoticeRow).where(NoticeRow.key == key, NoticeRow.sent_at.is_(None))
                         .values(sent_at=at))

    def mark_failed(self, key: str, at: datetime, error: str, retry_at: datetime | None) -> None:
        values = {"attempts": NoticeRow.attempts + 1, "last_error": error[:500],
                  "next_attempt_at": retry_at}
        if retry_at is None:
            values["gave_up_at"] = at
        with self._engine.begin() as conn:
            conn.execute(update(NoticeRow).where(NoticeRow.key == key).values(values))

    def prune(self, now: datetime, keep: timedelta = KEEP) -> int:
        """Forget notices due more than `keep` ago; returns how many."""
        with self._engine.begin() as conn:
            result = conn.execute(delete(NoticeRow).where(NoticeRow.due_at < now - keep)
                                  .execution_options(preserve_rowcount=True))
            return max(0, result.rowcount)
