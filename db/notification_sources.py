"""What the network's notices are made from, read from the database (`hotline.networkjobs.NetworkSource`).

Read only: the cases table for calls nobody accepted, the callbacks table
for open tasks that have come due. Each call is one short read.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Select, and_, or_, select

from db.models import CallbackRow, CaseRow, PartnerHospitalRow
from network.notifications import MISSED_OUTCOMES, DueCallback, MissedCall

BATCH = 500  # rows per read; a window holding more is read batch after batch


class NotificationSources:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def missed_calls(self, since: datetime, until: datetime) -> list[MissedCall]:
        """Cases that ended in [since, until] with nobody accepting, after a team was chosen.

        Oldest first. "fallback" cases (the static dialplan while the service
        was down) and cases without a team are not missed calls.
        """
        query = (select(CaseRow.case_id, CaseRow.team, CaseRow.outcome, CaseRow.started_at,
                        CaseRow.ended_at, CaseRow.caller_number, CaseRow.caller_class,
                        PartnerHospitalRow.name.label("hospital"))
                 .join(PartnerHospitalRow, PartnerHospitalRow.id == CaseRow.partner_hospital_id,
                       isouter=True)
                 .where(CaseRow.outcome.in_(MISSED_OUTCOMES), CaseRow.team.is_not(None),
                        CaseRow.ended_at.is_not(None), CaseRow.ended_at >= since,
                        CaseRow.ended_at <= until))
        rows = self._all(query, CaseRow.ended_at, CaseRow.case_id, "ended_at", "case_id")
        return [MissedCall(case_id=r.case_id, team=r.team, outcome=r.outcome,
                           started_at=r.started_at, ended_at=r.ended_at,
                           caller_number=r.caller_number, partner=r.caller_class == "partner",
                           hospital=r.hospital)
                for r in rows]

    def due_callbacks(self, since: datetime, until: datetime) -> list[DueCallback]:
        """Open callback tasks due in [since, until], earliest first; the number to call
        is the task's own, else the case's caller."""
        query = (select(CallbackRow.id, CallbackRow.case_id, CallbackRow.reason,
                        CallbackRow.due_at, CallbackRow.team, CallbackRow.owner_surgeon_id,
                        CallbackRow.number, CaseRow.caller_number, CaseRow.team.label("case_team"))
                 .join(CaseRow, CaseRow.case_id == CallbackRow.case_id, isouter=True)
                 .where(CallbackRow.status == "open", CallbackRow.due_at >= since,
                        CallbackRow.due_at <= until))
        rows = self._all(query, CallbackRow.due_at, CallbackRow.id, "due_at", "id")
        return [DueCallback(id=r.id, case_id=r.case_id, reason=r.reason, due_at=r.due_at,
                            team=r.team or r.case_team, owner_surgeon_id=r.owner_surgeon_id,
                            number=r.number or r.caller_number)
                for r in rows]

    def _all(self, query: Select, time_col, id_col, time_key: str, id_key: str) -> list:
        """Every row of `query`, oldest first, read BATCH at a time (keyset pagination).

        A mass-casualty window may hold more than one batch: taking only the
        oldest BATCH would leave the newer calls without a notice until the old
        ones left the look-back window, hours later.
        """
        rows: list = []
        after = None
        with self._engine.connect() as conn:
            while True:
                page = query.order_by(time_col, id_col).limit(BATCH)
                if after is not None:
                    page = page.where(or_(time_col > after[0],
                                          and_(time_col == after[0], id_col > after[1])))
                batch = conn.execute(page).all()
                rows.extend(batch)
                if len(batch) < BATCH:
                    return rows
                last = batch[-1]
                after = (getattr(last, time_key), getattr(last, id_key))
