"""What the network's notices are made from, read from the database (`hotline.networkjobs.NetworkSource`).

Read only: the cases table for calls nobody accepted, the callbacks table
for open tasks that have come due. Each call is one short read.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from db.models import CallbackRow, CaseRow, PartnerHospitalRow
from network.notifications import MISSED_OUTCOMES, DueCallback, MissedCall

BATCH = 500  # rows per read; more than that in one window would be a flood anyway


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
                        CaseRow.ended_at <= until)
                 .order_by(CaseRow.ended_at, CaseRow.case_id).limit(BATCH))
        with self._engine.connect() as conn:
            return [MissedCall(case_id=r.case_id, team=r.team, outcome=r.outcome,
                               started_at=r.started_at, ended_at=r.ended_at,
                               caller_number=r.caller_number, partner=r.caller_class == "partner",
                               hospital=r.hospital)
                    for r in conn.execute(query)]

    def due_callbacks(self, since: datetime, until: datetime) -> list[DueCallback]:
        """Open callback tasks due in [since, until], earliest first; the number to call
        is the task's own, else the case's caller."""
        query = (select(CallbackRow.id, CallbackRow.case_id, CallbackRow.reason,
                        CallbackRow.due_at, CallbackRow.team, CallbackRow.owner_surgeon_id,
                        CallbackRow.number, CaseRow.caller_number, CaseRow.team.label("case_team"))
                 .join(CaseRow, CaseRow.case_id == CallbackRow.case_id, isouter=True)
                 .where(CallbackRow.status == "open", CallbackRow.due_at >= since,
                        CallbackRow.due_at <= until)
                 .order_by(CallbackRow.due_at, CallbackRow.id).limit(BATCH))
        with self._engine.connect() as conn:
            return [DueCallback(id=r.id, case_id=r.case_id, reason=r.reason, due_at=r.due_at,
                                team=r.team or r.case_team, owner_surgeon_id=r.owner_surgeon_id,
                                number=r.number or r.caller_number)
                    for r in conn.execute(query)]
