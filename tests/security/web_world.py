"""A small hotline world for the web attack tests: cases, a recording, a referral,
callback tasks, roster entries -- some doc1's (surgeon 1, team facial), some
another team's (surgeon 2 / 3, team replant) -- and a way to see that an attack
changed nothing.

    world = build_world(engine, recordings_dir)
    before = snapshot(engine)
    ...attack...
    assert snapshot(engine) == before

`seed_calls` (tests/adapters/test_console_calls.py) gives C-1..C-7 around NOW:
surgeon 1 took part in C-1, C-3, C-6; surgeon 2 in C-1, C-4; surgeon 3 in C-2,
C-7; surgeon 9 in C-5 (which has a recording).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, func, select

from cases.lifecycle import mark_ended, open_case, record_menu, set_team, set_voicemail
from db.callbacks import CallbackStore
from db.models import AuditRow, Base
from db.referrals import ReferralStore
from db.repo import CaseRepository, write_roster
from db.roster_store import RosterStore
from db.tokens import TokenStore
from hotline.rosterdesk import RosterDesk
from oncall.model import Role, Shift
from oncall.rotation import Leave
from routing.callers import classify
from tests.adapters.test_console_calls import NOW, seed_calls
from tests.support.clock import Clock
from tests.support.console import SURGEONS, TEAMS, seed_people
from tests.support.db_helpers import write_wav

UTC = timezone.utc
NOW_UTC = NOW.astimezone(UTC)
# Every table an attack could change (the audit log is checked on its own:
# a refusal adds a "denied" row there, and nothing else may).
WATCHED = ("cases", "case_notes", "case_menu_events", "dial_attempts", "callbacks", "referrals",
           "referral_events", "shifts", "overrides", "leave", "trades", "rotations", "teams",
           "surgeons", "users", "api_tokens", "partner_hospitals", "hospital_phones",
           "hospital_contacts", "blocked_numbers", "incidents", "roster_audit")


@dataclass(frozen=True)
class World:
    """Ids of what doc1 may and may not touch."""

    own_case: str  # doc1 took part
    other_case: str  # surgeon 3's (replant): doc1 took no part
    other_recording_case: str  # surgeon 9's, with a recording file
    other_referral: int  # on other_case
    own_task: int  # a facial callback (doc1 is on facial's roster)
    other_task: int  # a replant callback, owned by nobody
    owned_task: int  # a replant callback owned by surgeon 2
    other_trade: int  # surgeon 3's facial offer, taken by surgeon 2: waits for the head (9)
    swap_trade: int  # surgeon 2 asks surgeon 3 to swap replant shifts
    other_leave: int  # surgeon 2's leave
    tokens: dict[str, str]  # role -> bearer secret (doc1's surgeon token, an admin's ...)


def _voicemail(case_id: str, team: str, caller: str, at):
    case = open_case(case_id, f"L-{case_id}", classify(caller, {}), at)
    record_menu(case, at + timedelta(seconds=3), "2" if team == "replant" else "1", team)
    set_team(case, at + timedelta(seconds=3), team)
    set_voicemail(case, at + timedelta(seconds=60), f"vm/{case_id}.wav")
    mark_ended(case, at + timedelta(seconds=80), "system")
    return case


def build_world(engine: Engine, recordings: Path) -> World:
    seed_people(engine)
    (recordings / "2026").mkdir(parents=True, exist_ok=True)
    seed_calls(engine, recordings)
    write_wav(recordings / "2026" / "C-5.wav", 1.0)  # surgeon 9's recording
    # Last week doc1 was on facial's roster and surgeon 2 on replant's. Ahead:
    # surgeon 2 and 3 hold replant shifts (a swap between them), surgeon 3 a
    # facial one (offered, taken by 2). Nobody is on call when the voicemails
    # below come in, so their tasks start without an owner.
    def shift(team: str, surgeon: int, days: int) -> Shift:
        return Shift(team, surgeon, Role.PRIMARY, NOW_UTC + timedelta(days=days),
                     NOW_UTC + timedelta(days=days + 1))

    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, [
            shift("facial", 1, -8), shift("replant", 2, -8), shift("replant", 2, 1),
            shift("replant", 3, 5), shift("facial", 3, 3)])
    repo = CaseRepository(engine, clock=lambda: NOW_UTC)
    at = NOW_UTC - timedelta(hours=2)
    repo.save(_voicemail("V-facial", "facial", "13912345601", at))
    repo.save(_voicemail("V-replant", "replant", "13912345602", at))
    repo.save(_voicemail("V-owned", "replant", "13912345603", at))
    callbacks = CallbackStore(engine, clock=lambda: NOW_UTC)
    own, other, owned = (callbacks.for_case(c) for c in ("V-facial", "V-replant", "V-owned"))
    assert own and other and owned and other.owner_surgeon_id is None
    callbacks.assign(owned.id, 2, "test")
    referral = ReferralStore(engine, clock=lambda: NOW_UTC).create("C-2", actor="test")
    desk = RosterDesk(RosterStore(engine, clock=lambda: NOW_UTC), clock=lambda: NOW_UTC)
    def day(n: int):
        return NOW_UTC + timedelta(days=n)

    offer = desk.offer(by=3, team="facial", role=Role.PRIMARY, start=day(3), end=day(4),
                       actor="test")
    desk.take(offer.id, by=2, actor="test")
    swap = desk.swap(by=2, team="replant", role=Role.PRIMARY, start=day(1), end=day(2),
                     with_surgeon=3, their_start=day(5), their_end=day(6), actor="test")
    leave = desk.add_leave(Leave(2, NOW_UTC + timedelta(days=10), NOW_UTC + timedelta(days=11), "x"),
                           actor="test")
    tokens = TokenStore(engine, clock=lambda: NOW_UTC)
    secrets = {key: tokens.create(f"web-{key}", role, surgeon_id=surgeon)[1]
               for key, role, surgeon in (("surgeon", "surgeon", 1), ("admin", "admin", None),
                                          ("surgeon2", "surgeon", 2))}
    return World(own_case="C-1", other_case="C-2", other_recording_case="C-5",
                 other_referral=referral.id, own_task=own.id, other_task=other.id,
                 owned_task=owned.id, other_trade=offer.id, swap_trade=swap.id,
                 other_leave=leave, tokens=secrets)


def clock() -> Clock:
    return Clock(NOW_UTC)


def snapshot(engine: Engine, tables: tuple[str, ...] = WATCHED) -> dict[str, list[tuple]]:
    """Every row of the watched tables, in a stable order (a token's `last_used_at`
    left out: using a token is not changing anything)."""
    found: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        for name in tables:
            table = Base.metadata.tables[name]
            columns = [c for c in table.c if c.name != "last_used_at"]
            found[name] = sorted(tuple(map(repr, r)) for r in conn.execute(select(*columns)))
    return found


def audit_count(engine: Engine, action: str | None = None) -> int:
    query = select(func.count()).select_from(AuditRow)
    if action is not None:
        query = query.where(AuditRow.action == action)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def audit_actions_since(engine: Engine, after_id: int) -> list[str]:
    with engine.connect() as conn:
        return [r.action for r in conn.execute(
            select(AuditRow.action).where(AuditRow.id > after_id).order_by(AuditRow.id))]


def last_audit_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(AuditRow.id), 0))).scalar_one()
